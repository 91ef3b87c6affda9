"""Signed fixed-point membrane words Q(I.F): parsing, placing constants on the grid, saturation
and the rounding right shift every integer rescale uses.

A Q(I.F) word holds I + F bits in two's complement: I integer bits *including the sign bit* and
F fraction bits, so the integer U stands for the value U·2^−F and

    U ∈ [−2^(I+F−1), 2^(I+F−1) − 1],   i.e. values in [−2^(I−1), 2^(I−1) − 2^−F].

``Q8.8`` is a 16-bit word with values in [−128, 128 − 1/256] and a step of 1/256. These choices
(the sign inside I, saturation, the rounding modes below) are this package's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

MAX_WORD_BITS = 32
"""The widest membrane word: products with a leak factor of up to 30 fraction bits then fit
in int64 with room to spare."""

_FORMAT = re.compile(r"^[Qq](\d+)\.(\d+)$")


@dataclass(frozen=True)
class QFormat:
    """A signed, saturating fixed-point format Q(I.F) (see the module docstring)."""

    integer_bits: int
    fraction_bits: int

    def __post_init__(self) -> None:
        i, f = self.integer_bits, self.fraction_bits
        if not (isinstance(i, int) and isinstance(f, int)) or i < 1 or f < 0:
            raise ValueError(f"a fixed-point format needs at least 1 integer bit (the sign) and "
                             f"0 or more fraction bits, got Q{i}.{f}")
        if i + f > MAX_WORD_BITS:
            raise ValueError(f"Q{i}.{f} is a {i + f}-bit word; at most {MAX_WORD_BITS} bits "
                             "are supported")

    @classmethod
    def parse(cls, text: str | QFormat) -> QFormat:
        """``"Q8.8"`` → QFormat(8, 8); a QFormat passes through.

        >>> QFormat.parse("Q8.8").max_int, QFormat.parse("Q8.8").min_int
        (32767, -32768)
        """
        if isinstance(text, QFormat):
            return text
        match = _FORMAT.match(str(text).strip())
        if match is None:
            raise ValueError(f"expected a fixed-point format Q<I>.<F> (I integer bits including "
                             f"the sign, F fraction bits), e.g. Q8.8; got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"Q{self.integer_bits}.{self.fraction_bits}"

    @property
    def word_bits(self) -> int:
        return self.integer_bits + self.fraction_bits

    @property
    def min_int(self) -> int:
        """−2^(I+F−1), the most negative word."""
        return -(1 << (self.word_bits - 1))

    @property
    def max_int(self) -> int:
        """2^(I+F−1) − 1, the most positive word."""
        return (1 << (self.word_bits - 1)) - 1

    @property
    def one(self) -> int:
        """2^F, the integer that stands for 1.0."""
        return 1 << self.fraction_bits

    def saturate(self, u: Tensor) -> Tensor:
        """clamp(U, min_int, max_int): a value beyond the range sticks at its end (never
        wraps)."""
        return torch.clamp(u, self.min_int, self.max_int)

    def to_grid(self, value: ArrayLike) -> np.ndarray:
        """Place real constants on the grid: U = clamp(round(v·2^F)) as int64, rounding to the
        nearest step with ties to even (``numpy.round``), saturating like the membrane.

        >>> QFormat(8, 8).to_grid([1.0, -0.5, 1000.0]).tolist()
        [256, -128, 32767]
        """
        scaled = np.round(np.asarray(value, dtype=np.float64) * self.one)
        return np.asarray(np.clip(scaled, self.min_int, self.max_int), dtype=np.int64)

    def threshold_on_grid(self, threshold: ArrayLike) -> np.ndarray:
        """The firing threshold on the grid, Θ = round(ϑ·2^F); ``ValueError`` when it is not a
        positive word (too few fraction bits for a small ϑ, too few integer bits for a
        large one)."""
        theta = np.asarray(threshold, dtype=np.float64)
        exact = np.round(theta * self.one)
        if np.any(exact < 1) or np.any(exact > self.max_int):
            raise ValueError(f"threshold {theta.min():g}…{theta.max():g} is not a positive "
                             f"{self} word (step {2.0 ** -self.fraction_bits:g}, largest "
                             f"{self.max_int / self.one:g}); choose a membrane format with more "
                             "integer or fraction bits")
        return np.asarray(exact, dtype=np.int64)


def round_shift(x: Tensor, shift: Tensor | int) -> Tensor:
    """x·2^−r rounded to the nearest integer, ties towards +∞, in integer arithmetic:

        round_shift(x, r) = (x + ⌊2^r / 2⌋) >> r        (arithmetic shift: ⌊·/2^r⌋)

    so r = 0 leaves x unchanged. ``shift`` may be a tensor that broadcasts against ``x`` (one
    shift per channel).

    >>> round_shift(torch.tensor([5, 6, 7, -5, -6, -7]), 2).tolist()
    [1, 2, 2, -1, -1, -2]
    """
    shift = torch.as_tensor(shift, dtype=torch.int64, device=x.device)
    half = torch.bitwise_right_shift(torch.bitwise_left_shift(torch.ones_like(shift), shift), 1)
    return torch.bitwise_right_shift(x + half, shift)
