"""Calibration of a classifier's predicted probabilities.

Every function takes ``logits`` ``[N, C]`` (float) and ``labels`` ``[N]`` (integers in
``[0, C)``), turns the logits into probabilities ``p = softmax(logits)`` in float64 and returns
Python numbers, so results can be written to JSON as they are.

Binning follows torchmetrics' ``MulticlassCalibrationError`` exactly, so ECE and MCE agree with
it: the confidence of a sample is its largest probability ``max_c p_c``, the boundaries are
``torch.linspace(0, 1, n_bins + 1)`` in float32, and a sample goes to bin
``b = bucketize(float32(confidence), boundaries, right=True) − 1``, i.e.

* bin ``b < n_bins`` holds ``boundary_b ≤ confidence < boundary_{b+1}`` (left-closed: a
  confidence equal to a boundary goes to the bin above it);
* bin ``n_bins`` holds the confidences equal to 1 (after rounding to float32).

So there are ``n_bins + 1`` bins, the last one the single point 1. Bin statistics are
accumulated in float64; only the bin assignment uses the float32 confidence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "brier_score", "calibration_report", "expected_calibration_error", "fit_temperature",
    "maximum_calibration_error", "negative_log_likelihood", "reliability_bins",
]


def _checked(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits`` as float64 ``[N, C]`` and ``labels`` as int64 ``[N]`` on the CPU, detached,
    after checking shapes, dtypes and values."""
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("logits and labels must be torch tensors")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [N, C], got {tuple(logits.shape)}")
    n, c = logits.shape
    if n == 0:
        raise ValueError("logits must hold at least one sample, got N = 0")
    if c < 2:
        raise ValueError(f"logits must have at least 2 classes, got C = {c}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape [N] = [{n}], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    logits = logits.detach().to(device="cpu", dtype=torch.float64)
    labels = labels.detach().to(device="cpu", dtype=torch.int64)
    if not torch.isfinite(logits).all():
        raise ValueError("logits must be finite")
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"labels must lie in [0, {c}), got values in "
                         f"[{labels.min().item()}, {labels.max().item()}]")
    return logits, labels


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def _confidences_and_hits(
    logits: torch.Tensor, labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence ``max_c p_c`` and hit ``1[argmax_c p_c = y]`` of each sample, float64; ties in
    the argmax go to the lowest class index."""
    confidences, predictions = torch.softmax(logits, dim=1).max(dim=1)
    return confidences, (predictions == labels).to(torch.float64)


def _bin_index(confidences: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin of each confidence, ``bucketize(float32(conf), linspace(0, 1, n_bins + 1),
    right=True) − 1`` in float32, as torchmetrics bins: values in ``0 … n_bins``."""
    boundaries = torch.linspace(0, 1, n_bins + 1, dtype=torch.float32)
    return torch.bucketize(confidences.float(), boundaries, right=True) - 1


def _binned(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bin count ``n_b``, mean confidence ``conf_b`` and accuracy ``acc_b`` (float64,
    ``n_bins + 1`` bins; ``conf_b = acc_b = 0`` where ``n_b = 0``)."""
    _check_n_bins(n_bins)
    logits, labels = _checked(logits, labels)
    confidences, hits = _confidences_and_hits(logits, labels)
    index = _bin_index(confidences, n_bins)
    zeros = torch.zeros(n_bins + 1, dtype=torch.float64)
    count = zeros.index_add(0, index, torch.ones_like(confidences))
    denominator = count.clamp(min=1)
    confidence = zeros.index_add(0, index, confidences) / denominator
    accuracy = zeros.index_add(0, index, hits) / denominator
    return count, confidence, accuracy


def reliability_bins(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
) -> dict[str, list[float] | list[int]]:
    """Reliability diagram: per bin its ``lower`` and ``upper`` edge, sample ``count``, mean
    confidence ``confidence`` and fraction correct ``accuracy``.

    Bin ``b < n_bins`` covers ``[b / n_bins, (b + 1) / n_bins)``; the last bin (``n_bins``) is
    the single point ``[1, 1]`` (see the module docstring), so each list has ``n_bins + 1``
    entries and the counts sum to ``N``. An empty bin has ``count = 0`` and ``confidence =
    accuracy = 0.0`` (as in torchmetrics; a NaN would not be valid JSON).
    """
    count, confidence, accuracy = _binned(logits, labels, n_bins)
    lower = [b / n_bins for b in range(n_bins)] + [1.0]
    upper = [(b + 1) / n_bins for b in range(n_bins)] + [1.0]
    return {
        "lower": lower,
        "upper": upper,
        "count": [int(n) for n in count.tolist()],
        "confidence": confidence.tolist(),
        "accuracy": accuracy.tolist(),
    }


def expected_calibration_error(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
) -> float:
    """Expected calibration error (L1), torchmetrics' ``norm="l1"``::

        ECE = Σ_b (n_b / N) · |acc_b − conf_b|

    over the bins of :func:`reliability_bins`."""
    count, confidence, accuracy = _binned(logits, labels, n_bins)
    return float(((count / count.sum()) * (accuracy - confidence).abs()).sum())


def maximum_calibration_error(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
) -> float:
    """Maximum calibration error, torchmetrics' ``norm="max"``::

        MCE = max_{b : n_b > 0} |acc_b − conf_b|

    over the bins of :func:`reliability_bins`."""
    count, confidence, accuracy = _binned(logits, labels, n_bins)
    return float((accuracy - confidence)[count > 0].abs().max())


def brier_score(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Multiclass Brier score, summed over classes and averaged over samples::

        Brier = (1/N) Σ_n Σ_c (p_nc − 1[c = y_n])²

    It lies in ``[0, 2]``; 0 for certain, correct predictions."""
    logits, labels = _checked(logits, labels)
    probabilities = torch.softmax(logits, dim=1)
    one_hot = F.one_hot(labels, logits.shape[1]).to(torch.float64)
    return float(((probabilities - one_hot) ** 2).sum(dim=1).mean())


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood (cross-entropy) in nats::

        NLL = −(1/N) Σ_n log softmax(logits_n)_{y_n}
    """
    logits, labels = _checked(logits, labels)
    return float(F.cross_entropy(logits, labels))


def _golden_section_minimum(
    f: Callable[[float], float], lo: float, hi: float, tol: float, max_iter: int,
) -> float:
    """Argmin of a unimodal ``f`` on ``[lo, hi]`` by golden-section search, to ``tol``."""
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(max_iter):
        if b - a <= tol:
            break
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, log_t_bounds: tuple[float, float] = (-5.0, 5.0),
    tol: float = 1e-7, max_iter: int = 200,
) -> float:
    """Temperature ``T > 0`` minimising the NLL of ``logits / T`` on the given (validation) data::

        T = exp(argmin_{u ∈ [u_lo, u_hi]} NLL(logits · e^{−u}, labels))

    With ``β = 1/T`` the NLL ``(1/N) Σ_n [logsumexp(β z_n) − β z_{n,y_n}]`` is convex in ``β``,
    hence unimodal in ``u = log T``, so a golden-section search over ``u`` (to ``tol``) finds
    the minimum; it is deterministic. When the NLL keeps falling towards an end of the
    interval (e.g. every sample is already classified correctly, so sharper is always better)
    the result is that end, ``exp(u_lo)`` or ``exp(u_hi)``. ``T = 1`` is returned unless the
    search found a strictly lower NLL, so the fitted temperature never raises the NLL on the
    data it was fitted on, and logits whose NLL does not depend on ``T`` keep ``T = 1``.
    """
    logits, labels = _checked(logits, labels)
    lo, hi = log_t_bounds
    if not lo < hi:
        raise ValueError(f"log_t_bounds must be an increasing pair, got {log_t_bounds}")

    def nll_at(u: float) -> float:
        return float(F.cross_entropy(logits * math.exp(-u), labels))

    u = _golden_section_minimum(nll_at, lo, hi, tol, max_iter)
    if lo <= 0.0 <= hi and nll_at(0.0) <= nll_at(u):
        return 1.0
    return math.exp(u)


def calibration_report(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
    temperature: float | None = None,
) -> dict[str, Any]:
    """ECE, MCE, Brier score, NLL and reliability bins of ``logits``; with a ``temperature``
    (e.g. from :func:`fit_temperature` on validation data) also ECE, MCE, Brier score and NLL
    of ``logits / temperature``, under ``*_temperature_scaled`` keys."""
    report: dict[str, Any] = {
        "ece": expected_calibration_error(logits, labels, n_bins),
        "mce": maximum_calibration_error(logits, labels, n_bins),
        "brier": brier_score(logits, labels),
        "nll": negative_log_likelihood(logits, labels),
        "reliability": reliability_bins(logits, labels, n_bins),
    }
    if temperature is None:
        return report
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    scaled = logits.detach().to(torch.float64) / temperature
    report.update({
        "temperature": float(temperature),
        "ece_temperature_scaled": expected_calibration_error(scaled, labels, n_bins),
        "mce_temperature_scaled": maximum_calibration_error(scaled, labels, n_bins),
        "brier_temperature_scaled": brier_score(scaled, labels),
        "nll_temperature_scaled": negative_log_likelihood(scaled, labels),
    })
    return report
