"""Accuracy in each spike mode, the transfer gap, calibration, margins and robustness.

The transfer gap is the accuracy lost when the trained network's surrogate spikes σ_k are
swapped for hard spikes H, weights and neuron parameters unchanged::

    transfer_gap_pp = 100 · (accuracy_surrogate − accuracy_hard)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sast.data import FrameSet, time_first
from sast.data.corruptions import Corruption, make_corruption
from sast.evaluation.calibration import (
    calibration_report,
    fit_temperature,
    negative_log_likelihood,
)
from sast.layers import lif_attributes, lif_layers, spike_mode
from sast.surrogate import check_spike_mode, spike

EVAL_MODES = ("surrogate", "hard")
DROP_LEVELS = tuple(round(0.1 * i, 1) for i in range(10))
"""Event-drop probabilities of the robustness protocol: 0, 0.1, …, 0.9."""


@torch.no_grad()
def evaluate_mode(
    model: nn.Module, data: FrameSet, mode: str, device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> dict[str, float]:
    """Accuracy (fraction in [0, 1]) and mean negative log-likelihood of ``model`` on ``data``
    with every LIF layer in spike mode ``mode``."""
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    was_training = model.training
    model.eval()
    correct, nll = 0, 0.0
    try:
        with spike_mode(model, mode):
            for start in range(0, len(data), batch_size):
                frames, labels = data.batch(slice(start, start + batch_size))
                x, y = time_first(frames, device), labels.to(device)
                logits = model(x)
                nll += nn.functional.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
    finally:
        model.train(was_training)
    return {"accuracy": correct / len(data), "loss": nll / len(data), "n": len(data)}


def evaluate_spike_modes(
    model: nn.Module, data: FrameSet, device: torch.device | str = "cpu", batch_size: int = 256,
) -> dict[str, object]:
    """:func:`evaluate_mode` in surrogate and hard mode, and the transfer gap in percentage
    points."""
    result: dict[str, object] = {
        mode: evaluate_mode(model, data, mode, device, batch_size) for mode in EVAL_MODES
    }
    result["transfer_gap_pp"] = 100.0 * (
        result["surrogate"]["accuracy"] - result["hard"]["accuracy"]  # type: ignore[index]
    )
    return result


MARGIN_EDGES = np.linspace(0.0, 3.0, 61)
"""Histogram edges of membrane margins |u − ϑ| (membrane units); larger margins are counted in
a last, open bin."""
MARGIN_DELTAS = (0.05, 0.1, 0.2)


def margin_histogram(margin: torch.Tensor) -> np.ndarray:
    """Counts of |margin| in the bins [e_b, e_{b+1}) of MARGIN_EDGES and a last open bin
    [3, ∞), computed in the margin's own precision (``torch.histc``: a value within rounding of
    an edge may land in the neighbouring bin)."""
    m = margin.detach().abs().float()
    top = float(MARGIN_EDGES[-1])
    n_bins = len(MARGIN_EDGES) - 1
    hist = torch.histc(m, bins=n_bins, min=0.0, max=top).to(torch.int64)
    at_top = int((m == top).sum())  # histc closes its last bin; here 3 belongs to the open bin
    hist[-1] -= at_top
    open_bin = int((m >= top).sum())
    return np.append(hist.cpu().numpy(), open_bin)


@dataclass
class ModeOutputs:
    """Everything one evaluation pass in one spike mode yields."""

    logits: torch.Tensor
    labels: torch.Tensor
    firing_rates: list[float]
    """Mean spike value per hidden LIF layer (spikes per neuron per step)."""
    margin_counts: list[np.ndarray]
    """Per hidden LIF layer, counts of |u − ϑ| in MARGIN_EDGES bins (+ one open bin)."""

    def accuracy(self) -> float:
        return float((self.logits.argmax(1) == self.labels).double().mean())

    def margin_fractions(self) -> list[dict[str, float]]:
        """Per layer, the fraction of state-steps with |u − ϑ| < δ for each δ in
        MARGIN_DELTAS (δ on the histogram's edges)."""
        out = []
        for counts in self.margin_counts:
            total = max(int(counts.sum()), 1)
            out.append({f"{d:g}": float(counts[: int(round(d / MARGIN_EDGES[1]))].sum() / total)
                        for d in MARGIN_DELTAS})
        return out


@torch.no_grad()
def collect_outputs(
    model: nn.Module, data: FrameSet, mode: str, device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> ModeOutputs:
    """Logits, firing rates and membrane-margin histograms of ``model`` on ``data`` with every
    LIF layer in ``mode``."""
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    n_layers = len(list(lif_layers(model)))
    was_training = model.training
    model.eval()
    logits, labels = [], []
    spike_sums = [0.0] * n_layers
    counts = [np.zeros(len(MARGIN_EDGES), dtype=np.int64) for _ in range(n_layers)]
    n_states = [0] * n_layers
    try:
        with lif_attributes(model, "membrane", record=True,
                            spike_mode=check_spike_mode(mode)) as layers:
            for start in range(0, len(data), batch_size):
                frames, y = data.batch(slice(start, start + batch_size))
                logits.append(model(time_first(frames, device)).cpu())
                labels.append(y)
                for i, layer in enumerate(layers):
                    margin = layer.membrane - layer.threshold
                    spikes = spike(margin, layer.surrogate, mode)
                    spike_sums[i] += float(spikes.sum(dtype=torch.float64))
                    n_states[i] += margin.numel()
                    counts[i] += margin_histogram(margin)
    finally:
        model.train(was_training)
    return ModeOutputs(torch.cat(logits), torch.cat(labels),
                       [s / max(n, 1) for s, n in zip(spike_sums, n_states, strict=True)],
                       counts)


@torch.no_grad()
def collect_logits(
    model: nn.Module, data: FrameSet, mode: str, device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of ``model`` on ``data`` with every LIF layer in ``mode``, recording
    nothing else (several times cheaper than :func:`collect_outputs`)."""
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        with spike_mode(model, check_spike_mode(mode)):
            for start in range(0, len(data), batch_size):
                frames, y = data.batch(slice(start, start + batch_size))
                logits.append(model(time_first(frames, device)).cpu())
                labels.append(y)
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def evaluate_clean(
    model: nn.Module, test: FrameSet, val: FrameSet | None = None,
    device: torch.device | str = "cpu", batch_size: int = 256, n_bins: int = 15,
) -> dict[str, Any]:
    """The clean protocol in both spike modes: accuracy, NLL, calibration (ECE/MCE/Brier,
    reliability bins, and ECE after temperature scaling fitted on ``val``), firing rates and
    membrane margins per hidden layer, and the transfer gap."""
    result: dict[str, Any] = {}
    for mode in EVAL_MODES:
        out = collect_outputs(model, test, mode, device, batch_size)
        temperature = None
        if val is not None and len(val):
            val_logits, val_labels = collect_logits(model, val, mode, device, batch_size)
            temperature = fit_temperature(val_logits, val_labels)
        result[mode] = {
            "accuracy": out.accuracy(),
            "loss": negative_log_likelihood(out.logits, out.labels),
            "n": len(out.labels),
            "calibration": calibration_report(out.logits, out.labels, n_bins, temperature),
            "firing_rates": out.firing_rates,
            "margin": {
                "edges": MARGIN_EDGES.tolist(),
                "counts": [c.tolist() for c in out.margin_counts],
                "fraction_within": out.margin_fractions(),
            },
        }
    result["transfer_gap_pp"] = 100.0 * (
        result["surrogate"]["accuracy"] - result["hard"]["accuracy"]
    )
    return result


def robustness_curve(
    model: nn.Module, frames_under: Callable[[Corruption | None, int], FrameSet],
    corruption: str = "drop", levels: Sequence[float] = DROP_LEVELS,
    seeds: Sequence[int] = (0, 1, 2), device: torch.device | str = "cpu",
    batch_size: int = 256, progress: bool = False,
) -> dict[str, Any]:
    """Accuracy in both spike modes against corruption severity: for each level and corruption
    seed, the evaluation frames are rebuilt from corrupted events (``frames_under(corruption,
    seed)``), so every number is exact and reproducible. Severity 0 is the clean data (one
    evaluation, the same for every seed). Returns mean and std over seeds per level."""
    raw: dict[str, list[list[float]]] = {mode: [] for mode in EVAL_MODES}
    jobs = [(level, seed) for level in levels for seed in seeds]
    bar = tqdm(total=len(jobs), desc=f"robustness ({corruption})", disable=not progress,
               leave=False)
    for level in levels:
        per_seed: dict[str, list[float]] = {mode: [] for mode in EVAL_MODES}
        if level == 0:
            clean = frames_under(None, 0)
            accs = {m: evaluate_mode(model, clean, m, device, batch_size)["accuracy"]
                    for m in EVAL_MODES}
            for mode in EVAL_MODES:
                per_seed[mode] = [accs[mode]] * len(seeds)
            bar.update(len(seeds))
        else:
            for seed in seeds:
                data = frames_under(make_corruption(corruption, level), seed)
                for mode in EVAL_MODES:
                    per_seed[mode].append(
                        evaluate_mode(model, data, mode, device, batch_size)["accuracy"])
                bar.update(1)
        for mode in EVAL_MODES:
            raw[mode].append(per_seed[mode])
    bar.close()
    out: dict[str, Any] = {"corruption": corruption, "levels": list(levels),
                           "seeds": list(seeds)}
    for mode in EVAL_MODES:
        a = np.asarray(raw[mode])
        out[mode] = {"mean": a.mean(1).tolist(), "std": a.std(1).tolist(), "raw": a.tolist()}
    return out
