"""The evaluation protocol: outputs per spike mode, threshold calibration, robustness, the
run-folder files it writes and the report built from them."""

import numpy as np
import pytest
import torch

from sast.cli import main
from sast.config import RunConfig
from sast.data import FrameSet
from sast.evaluation.accuracy import (
    MARGIN_EDGES,
    ModeOutputs,
    collect_outputs,
    evaluate_clean,
    evaluate_mode,
    robustness_curve,
)
from sast.evaluation.thresholds import calibrate_thresholds, threshold_scales
from sast.layers import LIF
from sast.models import build_model
from sast.runs.folder import read_json
from sast.training.loop import fit

from ..conftest import assert_figure


def toy_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(n, 6, 2, 34, 34, generator=g) < 0.15).to(torch.uint8)
    return FrameSet(frames, torch.randint(0, 10, (n,), generator=g), 10)


def toy_model():
    torch.manual_seed(0)
    return build_model("nmnist-mlp", hidden=(12,))


@pytest.mark.parametrize("mode", ["surrogate", "hard"])
def test_outputs_firing_rates_and_margins_against_a_direct_computation(mode):
    model, data = toy_model(), toy_data()
    out = collect_outputs(model, data, mode, batch_size=16)
    assert evaluate_mode(model, data, mode)["accuracy"] == pytest.approx(out.accuracy())

    frames, _ = data.batch(slice(None))
    x = frames.transpose(0, 1).float()
    lif = model[2]
    lif.record, lif.spike_mode = True, mode
    with torch.no_grad():
        model(x)
    u = lif.membrane.double()
    lif.record, lif.spike_mode, lif.membrane = False, "surrogate", None
    s = (u > 1.0).double() if mode == "hard" else torch.sigmoid(5.0 * (u - 1.0))
    assert out.firing_rates[0] == pytest.approx(float(s.mean()), rel=1e-6)
    margin = (u - 1.0).abs().flatten().numpy()
    assert out.margin_counts[0].sum() == margin.size
    expected = np.histogram(np.minimum(margin, 1e9), bins=[*MARGIN_EDGES, np.inf])[0]
    assert np.array_equal(out.margin_counts[0], expected)
    within = out.margin_fractions()[0]
    assert within["0.1"] == pytest.approx(float((margin < 0.1).mean()))
    collect_outputs(model, data, mode)
    assert not lif.record and lif.membrane is None


@pytest.mark.parametrize("mode", ["surrogate", "hard"])
def test_logits_alone_equal_the_recorded_pass_in_any_batch_size(mode):
    """The logits-only pass (temperature fitting) gives the recorded pass's logits, and the
    evaluation batch size changes no logit beyond float rounding."""
    from sast.evaluation.accuracy import collect_logits

    model, data = toy_model(), toy_data()
    recorded = collect_outputs(model, data, mode, batch_size=16)
    for batch_size in (1, 7, 16, 40):
        logits, labels = collect_logits(model, data, mode, batch_size=batch_size)
        assert torch.equal(labels, recorded.labels)
        torch.testing.assert_close(logits, recorded.logits, rtol=1e-5, atol=1e-6)
    assert model[2].spike_mode == "surrogate" and not model[2].record


def test_margin_fractions_by_hand():
    counts = np.zeros(len(MARGIN_EDGES), dtype=np.int64)
    counts[0], counts[1], counts[3], counts[-1] = 2, 3, 1, 4  # bins [0,.05), [.05,.1), [.15,.2)
    out = ModeOutputs(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), [0.0], [counts])
    assert out.margin_fractions()[0] == {"0.05": 0.2, "0.1": 0.5, "0.2": 0.6}


def test_evaluate_clean_reports_both_modes_and_calibration():
    model, data = toy_model(), toy_data()
    result = evaluate_clean(model, data, toy_data(seed=1))
    for mode in ("surrogate", "hard"):
        r = result[mode]
        assert 0 <= r["accuracy"] <= 1 and r["n"] == len(data)
        assert {"ece", "mce", "brier", "nll", "temperature",
                "ece_temperature_scaled"} <= set(r["calibration"])
        assert len(r["firing_rates"]) == 1
    gap = 100 * (result["surrogate"]["accuracy"] - result["hard"]["accuracy"])
    assert result["transfer_gap_pp"] == pytest.approx(gap)


def test_threshold_calibration_picks_the_best_scale_and_restores_the_model():
    model, val = toy_model(), toy_data(n=60, seed=3)
    candidates = (0.3, 0.6, 1.0, 1.4)
    fitted = calibrate_thresholds(model, val, candidates)
    assert [m.threshold for m in model.modules() if isinstance(m, LIF)] == [1.0]
    brute = {}
    for c in candidates:
        with threshold_scales(model, [c]):
            brute[c] = evaluate_mode(model, val, "hard")["accuracy"]
    assert fitted["val_hard_accuracy_after"] == max(brute.values())
    assert brute[fitted["scales"][0]] == max(brute.values())
    assert fitted["val_hard_accuracy_before"] == brute[1.0]
    with pytest.raises(ValueError, match="threshold scales"):
        with threshold_scales(model, [1.0, 1.0]):
            pass


def test_candidate_scores_reuse_the_prefix_and_equal_whole_evaluations():
    from sast.evaluation.thresholds import _score_candidates

    torch.manual_seed(1)
    model = build_model("nmnist-conv", channels=(3, 4), slope=2.0)
    val = toy_data(n=30, seed=4)
    # trials of one call differ only in the layer being calibrated
    trials_of = {0: [[c, 1.3] for c in (0.5, 1.0, 1.7)], 1: [[0.8, c] for c in (0.4, 1.0, 2.0)]}
    for layer, trials in trials_of.items():
        fast = _score_candidates(model, val, layer, trials, "cpu", 8)
        for trial, (acc, nll) in zip(trials, fast, strict=True):
            with threshold_scales(model, trial):
                whole = evaluate_mode(model, val, "hard", batch_size=8)
            assert acc == whole["accuracy"] and nll == pytest.approx(whole["loss"], rel=1e-6)


def _direct_accuracy(model, data, mode):
    """Accuracy from one forward pass over all of ``data``, argmax of the logits."""
    frames, labels = data.batch(slice(None))
    for layer in model.modules():
        if isinstance(layer, LIF):
            layer.spike_mode = mode
    try:
        with torch.no_grad():
            logits = model.eval()(frames.transpose(0, 1).float())
    finally:
        for layer in model.modules():
            if isinstance(layer, LIF):
                layer.spike_mode = "surrogate"
    return float((logits.argmax(-1) == labels).double().mean())


def test_robustness_curve_against_a_direct_recomputation():
    """Every level's mean and (population) std over corruption seeds equal those of accuracies
    recomputed here, one forward pass per corrupted copy of the data; level 0 is the clean data."""
    model, data = toy_model(), toy_data()
    with torch.no_grad():  # weights large enough to fire, labels the clean surrogate predictions
        for weight in (p for p in model.parameters() if p.dim() > 1):
            weight.mul_(4)
        frames, _ = data.batch(slice(None))
        data = FrameSet(frames, model.eval()(frames.transpose(0, 1).float()).argmax(-1), 10)
    calls = []

    def drop(seed, p):
        frames, labels = data.batch(slice(None))
        g = torch.Generator().manual_seed(seed)
        keep = torch.rand(frames.shape, generator=g) >= p
        return FrameSet(frames * keep, labels, 10)

    def frames_under(corruption, seed):
        calls.append((corruption, seed))
        return data if corruption is None else drop(seed, corruption.p)

    levels, seeds = (0.0, 0.3, 0.6), (0, 1, 2)
    curve = robustness_curve(model, frames_under, "drop", levels, seeds=seeds)
    assert calls[0] == (None, 0) and [s for _, s in calls[1:]] == [*seeds, *seeds]
    for mode in ("surrogate", "hard"):
        for i, level in enumerate(levels):
            accs = [_direct_accuracy(model, data if level == 0 else drop(seed, level), mode)
                    for seed in seeds]
            mean = sum(accs) / len(accs)
            std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
            assert curve[mode]["mean"][i] == pytest.approx(mean, abs=1e-12), (mode, level)
            assert curve[mode]["std"][i] == pytest.approx(std, abs=1e-12), (mode, level)
        assert curve[mode]["std"][0] == pytest.approx(0, abs=1e-15)
    assert curve["surrogate"]["mean"][0] == 1 and curve["surrogate"]["mean"][2] < 0.5
    assert min(curve["hard"]["std"][1:]) > 0.05


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    base = dict(max_train_samples=128, hidden=(16,), time_bins=6, batch_size=32, epochs=2,
                val_fraction=0.1)
    for method in ("surrogate", "sast"):
        for seed in (0, 1):
            fit(RunConfig(method=method, seed=seed, **base), root / f"{method}{seed}",
                progress=False, log=lambda *_: None)
    return root


@pytest.mark.slow
def test_evaluate_and_report_commands(two_runs, tmp_path, capsys):
    for name in ("surrogate0", "sast0"):
        assert main(["evaluate", str(two_runs / name), "--robustness", "--levels", "0,0.5",
                     "--corruption-seeds", "2", "--diagnostics", "--sharpness-rho", "0.2",
                     "--no-progress"]) == 0
    for name in ("surrogate1", "sast1"):
        assert main(["evaluate", str(two_runs / name), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ECE" in out and "threshold calibration" in out
    evaluation = read_json(two_runs / "sast0" / "evaluation.json")
    final = read_json(two_runs / "sast0" / "final.json")
    for mode in ("surrogate", "hard"):
        assert evaluation["clean"][mode]["accuracy"] == final[mode]["accuracy"]
    assert evaluation["overhead"]["grad_evals_per_step"] == 2
    diagnostics = read_json(two_runs / "sast0" / "diagnostics.json")
    assert diagnostics["sharpness"]["rho"] == 0.2 and diagnostics["samples"] == 128
    robustness = read_json(two_runs / "sast0" / "robustness.json")
    assert robustness["levels"] == [0.0, 0.5] and robustness["seeds"] == [0, 1]

    runs = [str(two_runs / n) for n in ("surrogate0", "surrogate1", "sast0", "sast1")]
    assert main(["report", *runs, "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "Built-in synthetic data" in report
    for section in ("Clean accuracy", "Calibration", "Threshold calibration", "Training overhead",
                    "Robustness", "Diagnostics", "Theory alignment"):
        assert section in report, section
    assert "| surrogate | 2 |" in report and "| sast ρ=0.3 | 2 |" in report
    for figure in ("reliability", "margins", "robustness", "loss_slice"):
        png = tmp_path / "rep" / "figures" / f"{figure}.png"
        assert_figure(png)
        assert f"figures/{figure}.png" in report


def test_report_needs_finished_runs(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no finished run: neither final.json nor run folders" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    assert "run folder without final.json: it never finished an epoch" in capsys.readouterr().err


def test_report_reads_a_sweep_folder(two_runs, tmp_path):
    from sast.study.report.runs import run_folders

    sweep = tmp_path / "sweep"
    (sweep / "runs").mkdir(parents=True)
    for name in ("surrogate0", "sast0"):
        (sweep / "runs" / name).symlink_to(two_runs / name)
    (sweep / "runs" / "unfinished").mkdir()
    assert [p.name for p in run_folders(sweep)] == ["sast0", "surrogate0"]
    assert main(["report", str(sweep), "--out", str(tmp_path / "rep")]) == 0
    assert "2 runs in 2 groups" in (tmp_path / "rep" / "report.md").read_text()


def test_the_overhead_table_says_when_runs_mix_schedules(tmp_path):
    from sast.study.report.runs import Run, group_runs
    from sast.study.report.tables import overhead_table

    def run(name, method, schedule, epoch_s):
        config = RunConfig(method=method, conv_schedule=schedule).to_dict()
        timing = {"epoch_time_s_median": epoch_s, "step_time_s_median": epoch_s / 10,
                  "grad_evals_per_step": 1, "grad_evals_total": 10, "peak_memory_mb": 1.0}
        return Run(tmp_path / name, {"config": config, "timing": timing, "seed": 0})

    same = group_runs([run("a", "surrogate", "all", 2.0), run("b", "sast", "all", 4.0)])
    table = overhead_table(same)
    assert "2.00×" in table and "differ in" not in table
    mixed = group_runs([run("a", "surrogate", "step", 3.0), run("b", "sast", "all", 4.0)])
    table = overhead_table(mixed)
    assert len(mixed) == 2 and "1.33×" in table
    assert 'differ in `conv_schedule` ("all", "step")' in table
