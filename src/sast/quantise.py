"""Weight quantisation, in one place: symmetric b-bit weights after training (what
``sast deploy`` runs), the integer rescale of a synaptic sum, and quantisation-aware
training (QAT), whose forward passes see the same quantised weights.

**Post-training.**
Symmetric b-bit quantisation, with q_max = 2^(b−1) − 1 (the code −2^(b−1) is left unused, so
the range is symmetric):

    s = max|W| / q_max                      per tensor, or per output channel c: max over W[c]
    q = clamp(round(W / s), −q_max, q_max)  (ties to even), W ≈ s·q

A channel (or tensor) of zeros gets s = 1 and q = 0.

The synaptic sum A = Σ q·x of integer weights and integer inputs stands for s·A in membrane
units; on the membrane's Q(I.F) grid that is s·2^F·A. That real factor is applied as an integer
multiplier m and a right shift r per output channel (:func:`requantiser`):

    x = s·2^F = f·2^e with f ∈ [1/2, 1),   r = 15 − e,   m = round(f·2^15) ∈ [2^14, 2^15]

(m = 2^15 is renormalised to 2^14 with r − 1; where r would be negative, r = 0 and m =
round(x)), so m/2^r equals x to a relative 2^−15 and m fits a 16-bit signed word.

**Quantisation-aware training (QAT).** synaptic weights fake-quantised in the forward pass, the
gradient passed straight through to the float weights.

A run with ``qat_weight_bits = b`` keeps float master weights W (what the optimiser steps and
the checkpoint holds), but every forward pass — training, validation, the final evaluation —
sees each synaptic weight (every ``Conv2d`` and ``Linear`` weight: the layers ``sast deploy``
quantises) as

    Ŵ = s·q,   q = clamp(round(W/s), −q_max, q_max),   s = max|W| / q_max,   q_max = 2^(b−1) − 1

with s per output channel (``qat_per_channel: true``) or per tensor. Ŵ is
:func:`quantise_weight`'s dequantised weight — the same function, called
on the same float32 weights as ``sast deploy --weight-bits b`` — so the integers q of the
trained network are exactly those its integer network carries. Biases, thresholds and leaks stay
float here (``sast deploy`` places them on the membrane grid).

Backward: the straight-through estimator on the weights only,

    ∂L/∂W := ∂L/∂Ŵ  (evaluated at Ŵ),

i.e. the rounding and the scale's dependence on max|W| are treated as the identity. The
spikes are untouched: surrogate forward (or hard / STE, as the method says).

:func:`fake_quantised_weights` implements this by copying Ŵ into each weight for the duration
of a forward–backward pass and restoring W afterwards: the autograd graph then holds Ŵ, and
the gradient it leaves in ``W.grad`` is ∂L/∂Ŵ. With SAM the perturbation ε is added to the
float weights (w + ε), and each of its two passes sees the fake-quantised weights of the point
it is taken at, Q(w) and then Q(w + ε).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

GRANULARITIES = ("per-tensor", "per-channel")
MIN_BITS, MAX_BITS = 2, 16
MULTIPLIER_BITS = 15
"""Significant bits of the requantisation multiplier m (a positive 16-bit signed word)."""


def check_bits(bits: int) -> int:
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) \
            or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"weight bits must be an integer in {MIN_BITS}..{MAX_BITS}, "
                         f"got {bits!r}")
    return int(bits)


def check_granularity(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown quantisation granularity {granularity!r}; expected one of "
                         f"{GRANULARITIES}")
    return granularity


@dataclass(frozen=True)
class QuantisedWeight:
    """Integer weights ``q`` (int64, the layer's shape) and one scale per output channel
    (``scale[c]``, float64; equal for every channel when quantised per tensor)."""

    q: Tensor
    scale: Tensor
    bits: int
    granularity: str

    @property
    def q_max(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def dequantised(self) -> Tensor:
        """s·q in float64."""
        return self.q.double() * self.scale.reshape((-1,) + (1,) * (self.q.dim() - 1))


def quantise_weight(weight: Tensor, bits: int = 8, granularity: str = "per-channel"
                    ) -> QuantisedWeight:
    """Symmetric ``bits``-bit quantisation of ``weight`` (output channels first), per tensor or
    per output channel (see the module docstring), computed in float64 on the weight's own
    device (IEEE division and round-half-to-even give the same q and s on CPU and GPU).

    >>> qw = quantise_weight(torch.tensor([[0.5, -1.0], [0.01, 0.02]]), bits=4,
    ...                      granularity="per-channel")
    >>> qw.q.tolist(), [round(s, 5) for s in qw.scale.tolist()]
    ([[4, -7], [4, 7]], [0.14286, 0.00286])
    """
    bits, granularity = check_bits(bits), check_granularity(granularity)
    w = weight.detach().to(torch.float64)
    q_max = (1 << (bits - 1)) - 1
    if granularity == "per-channel":
        peak = w.abs().reshape(w.shape[0], -1).amax(1)
    else:
        peak = w.abs().amax().expand(w.shape[0])
    scale = torch.where(peak > 0, peak / q_max, torch.ones_like(peak))
    q = torch.round(w / scale.reshape((-1,) + (1,) * (w.dim() - 1)))
    q = torch.clamp(q, -q_max, q_max).to(torch.int64)
    return QuantisedWeight(q, scale.clone(), bits, granularity)


def requantiser(factor: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Integer multipliers m and right shifts r with m/2^r ≈ ``factor`` (non-negative, one per
    channel), as the module docstring defines them.

    >>> requantiser([0.75, 3.0, 0.0])
    (array([24576, 24576,     0]), array([15, 13,  0]))
    """
    x = np.asarray(factor, dtype=np.float64)
    if np.any(x < 0) or not np.all(np.isfinite(x)):
        raise ValueError("requantisation factors must be finite and non-negative")
    m = np.zeros(x.shape, dtype=np.int64)
    r = np.zeros(x.shape, dtype=np.int64)
    for i, value in np.ndenumerate(x):
        if value == 0:
            continue
        frac, exp = math.frexp(float(value))
        shift = MULTIPLIER_BITS - exp
        mult = round(frac * (1 << MULTIPLIER_BITS))
        if mult == 1 << MULTIPLIER_BITS:
            mult, shift = mult >> 1, shift - 1
        if shift < 0:
            mult, shift = round(float(value)), 0
        m[i], r[i] = mult, shift
    return m, r

def synaptic_layers(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    """The layers whose weights are quantised: every ``Conv2d`` and ``Linear`` of ``model``, in
    order (the synaptic stages :func:`sast.deploy.read_topology` reads)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def fake_quantised(weight: Tensor, bits: int, granularity: str = "per-channel") -> Tensor:
    """Ŵ = s·q of ``weight`` (see the module docstring), in the weight's dtype and device,
    detached."""
    qw = quantise_weight(weight, bits, granularity)
    return qw.dequantised().to(dtype=weight.dtype, device=weight.device)


@torch.no_grad()
def quantise_weights_(model: nn.Module, bits: int, granularity: str = "per-channel") -> nn.Module:
    """Replace every synaptic weight of ``model`` by its fake-quantised value Ŵ, for good (a
    trained QAT network as it was evaluated); returns the model."""
    bits, granularity = check_bits(bits), check_granularity(granularity)
    for layer in synaptic_layers(model):
        layer.weight.copy_(fake_quantised(layer.weight, bits, granularity))
    return model


@contextmanager
def fake_quantised_weights(model: nn.Module, bits: int, granularity: str = "per-channel"
                           ) -> Iterator[nn.Module]:
    """Within the block, every synaptic weight W of ``model`` holds Ŵ; on exit (even after an
    exception) W is restored bit for bit. A forward *and* backward pass inside the block leave
    ``∂L/∂Ŵ`` in ``W.grad``: the straight-through estimator. Step the optimiser outside it.

    >>> lin = nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.30, -0.70]]))
    >>> with fake_quantised_weights(lin, bits=3):      # q_max = 3, s = 0.7/3
    ...     [round(v, 4) for v in lin.weight.tolist()[0]]
    [0.2333, -0.7]
    >>> [round(v, 4) for v in lin.weight.tolist()[0]]
    [0.3, -0.7]
    """
    bits, granularity = check_bits(bits), check_granularity(granularity)
    layers = synaptic_layers(model)
    saved: list[Tensor] = []
    try:
        with torch.no_grad():
            for layer in layers:
                saved.append(layer.weight.detach().clone())
                layer.weight.copy_(fake_quantised(layer.weight, bits, granularity))
        yield model
    finally:
        with torch.no_grad():
            for layer, weight in zip(layers, saved, strict=False):
                layer.weight.copy_(weight)
