"""Post-training weight quantisation and the integer rescale of a synaptic sum.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

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
