import json
import math

import numpy as np
import pytest
import torch
from scipy import optimize

from sast.evaluation.calibration import (
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)

NEG = -1e4  # a logit whose softmax probability is exactly 0 in float64


def _random_case(n: int, c: int, seed: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, c, (n,), generator=g)
    return logits, labels


def _boundary_case(c: int = 15, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose confidence is 1/k (k equal top logits), k/15 (two classes) or 1."""
    rows = []
    for k in range(1, c + 1):
        rows.append([0.0] * k + [NEG] * (c - k))
    for k in range(8, 15):
        p = k / 15
        rows.append([math.log(p), math.log(1 - p)] + [NEG] * (c - 2))
    rows.append([50.0] + [0.0] * (c - 1))
    logits = torch.tensor(rows * 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return logits, torch.randint(0, c, (len(logits),), generator=g)


def _torchmetrics_ce(logits: torch.Tensor, labels: torch.Tensor, n_bins: int, norm: str) -> float:
    classification = pytest.importorskip("torchmetrics.functional.classification")
    # torchmetrics softmaxes its input only when some value lies outside [0, 1]; logits that
    # happen to lie inside [0, 1] would be read as probabilities, so hand it probabilities.
    probabilities = torch.softmax(logits.double(), dim=1)
    return classification.multiclass_calibration_error(
        probabilities, labels, num_classes=logits.shape[1], n_bins=n_bins, norm=norm).item()


RANDOM_CASES = [(1, 2, 0, 1.0), (50, 2, 1, 1.0), (1000, 10, 2, 3.0), (3000, 5, 3, 0.5),
                (257, 100, 4, 12.0)]


@pytest.mark.parametrize(("n", "c", "seed", "scale"), RANDOM_CASES)
def test_ece_mce_match_torchmetrics_on_random_logits(n, c, seed, scale):
    logits, labels = _random_case(n, c, seed, scale)
    assert expected_calibration_error(logits, labels) == pytest.approx(
        _torchmetrics_ce(logits, labels, 15, "l1"), abs=1e-6)
    assert maximum_calibration_error(logits, labels) == pytest.approx(
        _torchmetrics_ce(logits, labels, 15, "max"), abs=1e-6)


@pytest.mark.parametrize("n_bins", [1, 4, 10, 15, 20])
def test_ece_mce_match_torchmetrics_on_bin_boundaries(n_bins):
    logits, labels = _boundary_case()
    boundaries = torch.linspace(0, 1, 16)
    confidences = torch.softmax(logits, dim=1).max(dim=1).values.float()
    on_boundary = (confidences[:, None] == boundaries[None, :]).any(dim=1)
    assert on_boundary.sum() >= 10
    assert (confidences == 1).any()
    assert expected_calibration_error(logits, labels, n_bins) == pytest.approx(
        _torchmetrics_ce(logits, labels, n_bins, "l1"), abs=1e-6)
    assert maximum_calibration_error(logits, labels, n_bins) == pytest.approx(
        _torchmetrics_ce(logits, labels, n_bins, "max"), abs=1e-6)


def test_a_confidence_on_a_boundary_goes_to_the_bin_above_and_one_to_the_point_bin():
    # Uniform over 3 classes: confidence 1/3, which is boundary 5 of 15 in float32.
    logits = torch.tensor([[0.0, 0.0, 0.0], [60.0, 0.0, 0.0]])
    bins = reliability_bins(logits, torch.tensor([0, 0]), n_bins=15)
    assert len(bins["count"]) == 16
    assert bins["count"][5] == 1 and bins["lower"][5] == pytest.approx(1 / 3)
    assert bins["count"][15] == 1 and bins["lower"][15] == bins["upper"][15] == 1.0
    assert sum(bins["count"]) == 2


def test_hand_computed_example():
    # Two classes, probabilities from log-odds: [log 3, 0] → [0.75, 0.25], [0, 0] → [0.5, 0.5].
    logits = torch.tensor([[math.log(3), 0.0],   # conf 0.75, predicts 0, y = 0: correct
                           [0.0, math.log(3)],   # conf 0.75, predicts 1, y = 0: wrong
                           [0.0, 0.0],           # conf 0.5, predicts 0 (first max), y = 1: wrong
                           [math.log(9), 0.0]])  # conf 0.9, predicts 0, y = 0: correct
    labels = torch.tensor([0, 0, 1, 0])
    # 4 bins [0, .25) [.25, .5) [.5, .75) [.75, 1) and {1}: 0.5 → bin 2; 0.75, 0.75, 0.9 → bin 3.
    bins = reliability_bins(logits, labels, n_bins=4)
    assert bins["count"] == [0, 0, 1, 3, 0]
    assert bins["confidence"] == pytest.approx([0, 0, 0.5, (0.75 + 0.75 + 0.9) / 3, 0])
    assert bins["accuracy"] == pytest.approx([0, 0, 0, 2 / 3, 0])
    # bin 2: |0 − 0.5| = 0.5 with weight 1/4; bin 3: |2/3 − 0.8| = 2/15 with weight 3/4.
    assert expected_calibration_error(logits, labels, n_bins=4) == pytest.approx(
        0.25 * 0.5 + 0.75 * 2 / 15)  # = 0.225
    assert maximum_calibration_error(logits, labels, n_bins=4) == pytest.approx(0.5)
    # Σ_c (p_c − 1[c = y])² per sample: 0.0625 + 0.0625, 0.5625 + 0.5625, 0.25 + 0.25, 0.01 + 0.01.
    assert brier_score(logits, labels) == pytest.approx((0.125 + 1.125 + 0.5 + 0.02) / 4)
    assert negative_log_likelihood(logits, labels) == pytest.approx(
        -(math.log(0.75) + math.log(0.25) + math.log(0.5) + math.log(0.9)) / 4)


def _calibrated_group(p: float, n: int, n_correct: int) -> tuple[list[list[float]], list[int]]:
    """``n`` two-class rows of confidence ``p`` in class 0, ``n_correct`` of them labelled 0."""
    return [[math.log(p), math.log(1 - p)]] * n, [0] * n_correct + [1] * (n - n_correct)


def test_perfectly_calibrated_case_has_zero_ece():
    rows, labels = [], []
    for p, n, n_correct in [(0.6, 5, 3), (0.75, 4, 3), (0.9, 10, 9)]:
        group_rows, group_labels = _calibrated_group(p, n, n_correct)
        rows += group_rows
        labels += group_labels
    rows += [[0.0, 0.0]] * 2  # confidence 0.5, predicts class 0
    labels += [0, 1]
    logits, labels = torch.tensor(rows, dtype=torch.float64), torch.tensor(labels)
    assert expected_calibration_error(logits, labels) == pytest.approx(0.0, abs=1e-12)
    assert maximum_calibration_error(logits, labels) == pytest.approx(0.0, abs=1e-12)
    bins = reliability_bins(logits, labels)
    assert sum(bins["count"]) == len(labels)
    assert sum(n > 0 for n in bins["count"]) == 4


@pytest.mark.parametrize(("n", "c", "seed", "scale"), RANDOM_CASES)
def test_reliability_counts_sum_to_n_and_edges_tile_unit_interval(n, c, seed, scale):
    bins = reliability_bins(*_random_case(n, c, seed, scale), n_bins=15)
    assert sum(bins["count"]) == n
    assert bins["lower"][0] == 0.0 and bins["upper"][14] == 1.0
    assert bins["lower"][1:15] == pytest.approx(bins["upper"][:14])
    json.dumps(bins, allow_nan=False)


def _sampled_labels(true_logits: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.softmax(true_logits, dim=1), 1, generator=g).squeeze(1)


def _true_logits(n: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64) * 2


def test_fit_temperature_recovers_the_overconfidence_factor():
    true_logits = _true_logits(20000, 10, 0)
    labels = _sampled_labels(true_logits, 1)
    assert fit_temperature(true_logits * 3, labels) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(true_logits / 2, labels) == pytest.approx(0.5, rel=0.1)


def test_fit_temperature_is_about_one_for_calibrated_logits():
    true_logits = _true_logits(20000, 10, 2)
    labels = _sampled_labels(true_logits, 3)
    assert fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("factor", [0.2, 1.0, 4.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_temperature_scaling_never_increases_nll_on_its_fitting_data(factor, seed):
    true_logits = _true_logits(500, 4, seed)
    for labels in (_sampled_labels(true_logits, seed + 10), torch.randint(0, 4, (500,))):
        logits = true_logits * factor
        t = fit_temperature(logits, labels)
        assert t > 0
        assert negative_log_likelihood(logits / t, labels) <= negative_log_likelihood(
            logits, labels)


@pytest.mark.parametrize("factor", [0.3, 1.0, 2.5, 6.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_fit_temperature_matches_scipy_minimize_scalar_on_the_same_logits(factor, seed):
    """The fitted temperature against scipy's bounded Brent search over ``u = log T`` of the
    NLL written in numpy: the same minimiser to 1e-4 in T, and no lower NLL than scipy's."""
    true_logits = _true_logits(2000, 7, seed)
    labels = _sampled_labels(true_logits, seed + 20)
    logits = (true_logits * factor).numpy()
    y = labels.numpy()

    def nll(u: float) -> float:
        z = logits * np.exp(-u)
        top = z.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        return float(np.mean(log_norm - z[np.arange(len(y)), y]))

    best = optimize.minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded",
                                    options={"xatol": 1e-10})
    assert best.success
    t = fit_temperature(torch.from_numpy(logits), labels)
    assert t == pytest.approx(math.exp(best.x), rel=1e-4)
    assert nll(math.log(t)) <= best.fun + 1e-12
    assert t == pytest.approx(factor, rel=0.15)


def test_fit_temperature_is_deterministic_and_keeps_one_when_nll_is_flat():
    logits, labels = _random_case(300, 6, 5, 2.0)
    assert fit_temperature(logits, labels) == fit_temperature(logits, labels)
    assert fit_temperature(torch.zeros(10, 3), torch.arange(10) % 3) == 1.0


def test_fit_temperature_goes_to_the_lower_bound_when_everything_is_correct():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    t = fit_temperature(logits, torch.tensor([0, 1, 0]))
    assert t == pytest.approx(math.exp(-5), rel=1e-4)


def test_calibration_report_with_and_without_temperature():
    logits, labels = _random_case(400, 5, 6, 3.0)
    report = calibration_report(logits, labels, n_bins=10)
    assert set(report) == {"ece", "mce", "brier", "nll", "reliability"}
    assert report["ece"] == expected_calibration_error(logits, labels, 10)
    assert len(report["reliability"]["count"]) == 11
    scaled = calibration_report(logits, labels, 10, temperature=2.5)
    assert scaled["temperature"] == 2.5
    for key, metric in [("ece", expected_calibration_error), ("mce", maximum_calibration_error)]:
        assert scaled[f"{key}_temperature_scaled"] == metric(logits / 2.5, labels, 10)
    for key, metric in [("brier", brier_score), ("nll", negative_log_likelihood)]:
        assert scaled[f"{key}_temperature_scaled"] == pytest.approx(metric(logits / 2.5, labels))
        assert scaled[key] == report[key]
    json.dumps(scaled, allow_nan=False)


def test_metrics_accept_float32_logits_with_grad():
    logits, labels = _random_case(64, 3, 7, 1.0)
    grad_logits = logits.float().requires_grad_()
    assert negative_log_likelihood(grad_logits, labels) == pytest.approx(
        negative_log_likelihood(logits.float(), labels))
    assert isinstance(calibration_report(grad_logits, labels)["ece"], float)


GOOD_LOGITS, GOOD_LABELS = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize(("logits", "labels", "match"), [
    (torch.zeros(4), GOOD_LABELS, r"shape \[N, C\]"),
    (torch.zeros(2, 4, 3), GOOD_LABELS, r"shape \[N, C\]"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "at least one sample"),
    (torch.zeros(4, 1), GOOD_LABELS, "at least 2 classes"),
    (torch.zeros(4, 3, dtype=torch.long), GOOD_LABELS, "floating-point"),
    (GOOD_LOGITS, torch.tensor([0, 1, 2]), r"shape \[N\]"),
    (GOOD_LOGITS, GOOD_LABELS[:, None], r"shape \[N\]"),
    (GOOD_LOGITS, GOOD_LABELS.float(), "integer"),
    (GOOD_LOGITS, torch.tensor([0, 1, 3, 0]), r"in \[0, 3\)"),
    (GOOD_LOGITS, torch.tensor([0, -1, 2, 0]), r"in \[0, 3\)"),
    (torch.tensor([[0.0, math.nan, 0.0]] * 4), GOOD_LABELS, "finite"),
])
def test_bad_inputs_raise(logits, labels, match):
    for metric in (expected_calibration_error, maximum_calibration_error, reliability_bins,
                   brier_score, negative_log_likelihood, fit_temperature, calibration_report):
        with pytest.raises(ValueError, match=match):
            metric(logits, labels)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(GOOD_LOGITS, GOOD_LABELS, n_bins=0)
    with pytest.raises(ValueError, match="temperature"):
        calibration_report(GOOD_LOGITS, GOOD_LABELS, temperature=0.0)
    with pytest.raises(ValueError, match="log_t_bounds"):
        fit_temperature(GOOD_LOGITS, GOOD_LABELS, log_t_bounds=(1.0, -1.0))
    with pytest.raises(TypeError):
        brier_score(GOOD_LOGITS.numpy(), GOOD_LABELS)
