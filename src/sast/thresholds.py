"""Threshold calibration: the cheap alternative to SAST for hard-spike deployment.

After ordinary training, each LIF layer's threshold is rescaled for hard-spike inference,
ϑ_ℓ ← c_ℓ·ϑ_ℓ (in the firing condition and in the reset by subtraction alike), with the scales
c_ℓ fitted on the validation split only. The search is greedy, layer by layer in network order:
for layer ℓ, with the scales of earlier layers fixed, c_ℓ is the candidate with the highest
hard-mode validation accuracy (ties: lower validation NLL, then the scale closest to 1).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from sast.data import FrameSet
from sast.evaluate import evaluate_mode
from sast.layers import lif_attributes, lif_layers

SCALES = tuple(float(c) for c in np.round(np.linspace(0.5, 1.5, 21), 3))


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
        best = None
        for c in candidates:
            trial = [*scales[:layer], float(c), *scales[layer + 1:]]
            acc, nll = score(trial)
            key = (acc, -nll, -abs(c - 1.0))
            if best is None or key > best[0]:
                best = (key, float(c))
        scales[layer] = best[1]
    after = score(scales)
    return {
        "scales": scales,
        "candidates": [float(c) for c in candidates],
        "val_hard_accuracy_before": before[0],
        "val_hard_accuracy_after": after[0],
    }
