"""Threshold calibration: the cheap alternative to SAST for hard-spike deployment.

After ordinary training, each LIF layer's threshold is rescaled for hard-spike inference,
ϑ_ℓ ← c_ℓ·ϑ_ℓ (in the firing condition and in the reset by subtraction alike), with the scales
c_ℓ fitted on the validation split only. The search is greedy, layer by layer in network order:
for layer ℓ, with the scales of earlier layers fixed, c_ℓ is the candidate with the highest
hard-mode validation accuracy (ties: lower validation NLL, then the scale closest to 1 by
ratio). Candidates are 2^(k/6) for k = −12 … 6 (0.25 … 2).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from sast.data import FrameSet, time_first
from sast.evaluation.accuracy import evaluate_mode
from sast.layers import lif_attributes, lif_layers, spike_mode

SCALES = tuple(float(c) for c in np.round(2.0 ** (np.arange(-12, 7) / 6), 4))
"""Candidate scales c = 2^(k/6), k = −12 … 6: 0.25 … 2, about 12 % apart."""


@contextmanager
def threshold_scales(model: nn.Module, scales: Sequence[float]) -> Iterator[nn.Module]:
    """Temporarily multiply the threshold of LIF layer ℓ by ``scales[ℓ]``."""
    n_layers = len(list(lif_layers(model)))
    if len(scales) != n_layers:
        raise ValueError(f"expected {n_layers} threshold scales, got {len(scales)}")
    with lif_attributes(model, "threshold") as layers:
        for layer, c in zip(layers, scales, strict=True):
            layer.threshold = float(c) * layer.threshold
        yield model


@torch.no_grad()
def _score_candidates(
    model: nn.Module, val: FrameSet, layer: int, trials: list[list[float]],
    device: torch.device | str, batch_size: int,
) -> list[tuple[float, float]]:
    """(hard accuracy, NLL) on ``val`` of each trial's threshold scales, which differ only in
    LIF layer ``layer``. Everything before that layer is the same in every trial, so in a
    sequential model it is computed once per batch and only the rest runs per trial (the same
    operations as a full evaluation, in the same order)."""
    lif = list(lif_layers(model))[layer]
    children = list(model) if isinstance(model, nn.Sequential) else None
    start = next((i for i, m in enumerate(children or []) if m is lif), None)
    if start is None:  # not a plain sequence of layers: evaluate each trial whole
        out = []
        for trial in trials:
            with threshold_scales(model, trial):
                r = evaluate_mode(model, val, "hard", device, batch_size)
            out.append((r["accuracy"], r["loss"]))
        return out
    correct = [0] * len(trials)
    nll = [0.0] * len(trials)
    was_training = model.training
    model.eval()
    try:
        with spike_mode(model, "hard"):
            for first in range(0, len(val), batch_size):
                frames, labels = val.batch(slice(first, first + batch_size))
                labels = labels.to(device)
                with threshold_scales(model, trials[0]):
                    h = time_first(frames, device)
                    for module in children[:start]:
                        h = module(h)
                for k, trial in enumerate(trials):
                    with threshold_scales(model, trial):
                        logits = h
                        for module in children[start:]:
                            logits = module(logits)
                    nll[k] += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
                    correct[k] += int((logits.argmax(1) == labels).sum())
    finally:
        model.train(was_training)
    return [(c / len(val), n / len(val)) for c, n in zip(correct, nll, strict=True)]


def calibrate_thresholds(
    model: nn.Module, val: FrameSet, candidates: Sequence[float] = SCALES,
    device: torch.device | str = "cpu", batch_size: int = 256,
) -> dict[str, Any]:
    """Fit per-layer threshold scales for hard spikes on ``val`` (see the module docstring).
    The model is returned unchanged; the result holds the scales and validation accuracies."""
    if len(val) == 0:
        raise ValueError("threshold calibration needs a non-empty validation split")
    n_layers = len(list(lif_layers(model)))
    scales = [1.0] * n_layers

    def score(trial: list[float]) -> tuple[float, float]:
        with threshold_scales(model, trial):
            r = evaluate_mode(model, val, "hard", device, batch_size)
        return r["accuracy"], r["loss"]

    before = score(scales)
    for layer in range(n_layers):
        trials = [[*scales[:layer], float(c), *scales[layer + 1:]] for c in candidates]
        results = _score_candidates(model, val, layer, trials, device, batch_size)
        best = max(zip(results, candidates, strict=True),
                   key=lambda rc: (rc[0][0], -rc[0][1], -abs(np.log(rc[1]))))
        scales[layer] = float(best[1])
    after = score(scales)
    return {
        "scales": scales,
        "candidates": [float(c) for c in candidates],
        "val_hard_accuracy_before": before[0],
        "val_hard_accuracy_after": after[0],
    }
