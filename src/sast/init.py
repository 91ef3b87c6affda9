"""Data-dependent initialisation: every LIF layer firing at a chosen rate from the first step.

A spiking layer whose membrane never reaches threshold at initialisation passes almost nothing
forward in hard mode and only the small sub-threshold values σ_k(u − ϑ) in surrogate mode; deep
or convolutional SNNs then sit at chance for epochs. In the spirit of LSUV (Mishkin & Matas,
2016), :func:`calibrate_firing_rates` walks the network in order on one batch and rescales,
for each LIF layer ℓ, the weight and bias of the affine layer feeding it (the last Conv2d,
Linear or batch norm before it) by one factor c_ℓ, so that

    r_ℓ(c) = mean over samples, steps and neurons of 1[u_ℓ(c) > ϑ]  ≈  target

in the training (surrogate-forward) dynamics. Scaling the affine layer's weight and bias by c
scales the input current I → c·I exactly, so each trial only reruns the LIF scan; c is found
by bisection on log c (r grows with c). Layers are calibrated in order, each on the output of
the already-calibrated layers before it. This is a choice of this package, not the paper's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from sast.layers import LIF, lif_attributes

AFFINE = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
SCALE_RANGE = (1e-3, 1e3)


def feeding_affine(module: nn.Module) -> nn.Module | None:
    """The last Conv2d, Linear or batch norm inside ``module`` (the one whose output is the
    input current of the LIF layer after it), or None."""
    found = None
    for m in module.modules():
        if isinstance(m, AFFINE):
            found = m
    return found


HOMOGENEOUS = (nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)
"""Layers f with f(c·x) = c·f(x) for c > 0: the affine layer feeding a LIF layer may sit before
them (snnTorch's tutorial nets pool between the convolution and the neuron)."""


def _positively_homogeneous(module: nn.Module) -> bool:
    if getattr(module, "positively_homogeneous", False):
        return True
    inner = [m for m in module.modules() if m is not module]
    return bool(inner) and all(isinstance(m, HOMOGENEOUS) or getattr(
        m, "positively_homogeneous", False) for m in inner) or isinstance(module, HOMOGENEOUS)


def _feeding_index(children: list[nn.Module], i: int) -> int:
    """The index of the child holding the affine layer whose output, through positively
    homogeneous layers only, is the input current of LIF child ``i``."""
    k = i - 1
    while k >= 0 and feeding_affine(children[k]) is None and _positively_homogeneous(
            children[k]):
        k -= 1
    if k < 0 or feeding_affine(children[k]) is None:
        raise ValueError(f"LIF layer at position {i} has no Linear, Conv2d or batch norm before "
                         "it (through pooling, flattening or dropout only) to rescale")
    return k


def _above_threshold_rate(layer: LIF, current: Tensor) -> float:
    """The rate of state-steps with u > ϑ, from the layer's own scan (so the rate reported is
    the rate the model runs at, to the last rounding, even where tied currents sit at ϑ)."""
    record, layer.record = layer.record, True
    try:
        layer(current)
        u = layer.membrane
    finally:
        layer.record, layer.membrane = record, None
    return float((u > layer.threshold).double().mean())


def _scale_for_rate(layer: LIF, current: Tensor, target: float, iterations: int) -> float:
    lo, hi = (math.log(v) for v in SCALE_RANGE)
    if _above_threshold_rate(layer, math.exp(hi) * current) < target:
        return math.exp(hi)
    if _above_threshold_rate(layer, math.exp(lo) * current) > target:
        return math.exp(lo)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if _above_threshold_rate(layer, math.exp(mid) * current) < target:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


@torch.no_grad()
def calibrate_firing_rates(
    model: nn.Sequential, frames: Tensor, target: float = 0.1, iterations: int = 30,
) -> list[dict[str, Any]]:
    """Rescale ``model`` in place so every LIF layer's rate of state-steps above threshold on
    ``frames`` (time-first ``[T, B, ...]``) is ``target`` (see the module docstring). Returns,
    per LIF layer, the scale applied and the rate before and after."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target firing rate must lie in (0, 1), got {target}")
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"the firing-rate initialisation walks an nn.Sequential layer by layer; "
                        f"got {type(model).__name__} (sast.convert gives a Sequential)")
    children = list(model)
    report: list[dict[str, Any]] = []
    h = frames.float() if not frames.is_floating_point() else frames
    inputs: list[Tensor] = []  # the input of each child, as calibrated so far
    with lif_attributes(model, spike_mode="surrogate"):
        for i, module in enumerate(children):
            if isinstance(module, LIF):
                k = _feeding_index(children, i)
                affine = feeding_affine(children[k])
                current = h
                before = _above_threshold_rate(module, current)
                c = _scale_for_rate(module, current, target, iterations)
                affine.weight.mul_(c)
                if affine.bias is not None:
                    affine.bias.mul_(c)
                current = inputs[k]
                for child in children[k:i]:
                    current = child(current)
                report.append({"layer": len(report), "scale": c, "rate_before": before,
                               "rate_after": _above_threshold_rate(module, current)})
                h = current
            inputs.append(h)
            h = module(h)
    return report
