"""The membrane leak β as a discrete operation on integer membrane words.

Two ways, chosen per deployment (both this package's choices):

- ``"multiplier"``: β is rounded to F_β fraction bits, β_q = round(β·2^F_β) (ties to even), and

      leak(U) = (U·β_q + 2^(F_β−1)) >> F_β        (the product rounded to nearest, ties to +∞)

  so the effective leak is β_q / 2^F_β.
- ``"shift"``: no multiplier at all, one subtraction and one shift,

      leak(U) = U − (U >> s)                      (>> is the arithmetic shift, ⌊U / 2^s⌋)

  with s ∈ {0, …, 30} the shift whose factor 1 − 2^−s is nearest to β (ties: the smaller s);
  the effective leak is 1 − 2^−s (β = 0.9 becomes 0.875). Because ⌊·⌋ rounds towards −∞, a
  small positive membrane stops decaying once U < 2^s and a negative one decays to 0.

:attr:`Leak.beta_error` is the effective β minus the trained β.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from sast.deploy.fixedpoint import round_shift

LEAK_MODES = ("multiplier", "shift")
MAX_LEAK_BITS = 30
"""The most fraction bits of the leak multiplier, and the largest shift."""


@dataclass(frozen=True)
class Leak:
    """A discrete leak: ``mode``, the trained β, and the integer factor (β_q for
    ``"multiplier"``, the shift s for ``"shift"``), each a number or one per neuron."""

    mode: str
    beta: np.ndarray
    factor: np.ndarray
    fraction_bits: int

    @classmethod
    def from_beta(cls, beta: ArrayLike, mode: str = "multiplier", fraction_bits: int = 12) -> Leak:
        """The leak nearest to ``beta`` in ``mode`` (see the module docstring).

        >>> leak = Leak.from_beta(0.9, "shift")
        >>> int(leak.factor), float(leak.effective_beta), round(float(leak.beta_error), 6)
        (3, 0.875, -0.025)
        """
        if mode not in LEAK_MODES:
            raise ValueError(f"unknown leak mode {mode!r}; expected one of {LEAK_MODES}")
        if not (isinstance(fraction_bits, (int, np.integer))
                and 0 <= fraction_bits <= MAX_LEAK_BITS):
            raise ValueError(f"leak fraction bits must be an integer in 0..{MAX_LEAK_BITS}, "
                             f"got {fraction_bits!r}")
        b = np.asarray(beta, dtype=np.float64)
        if not (np.all(b >= 0) and np.all(b < 1)):
            raise ValueError(f"beta must lie in [0, 1), got {b.min():g}…{b.max():g}")
        if mode == "multiplier":
            factor = np.asarray(np.round(b * (1 << fraction_bits)), dtype=np.int64)
        else:
            shifts = np.arange(MAX_LEAK_BITS + 1)
            candidates = 1.0 - 2.0 ** -shifts.astype(np.float64)
            distance = np.abs(b[..., None] - candidates)
            # argmin takes the first of equally near shifts: the smaller s
            factor = np.asarray(shifts[np.argmin(distance, axis=-1)], dtype=np.int64)
        return cls(mode, b, factor, int(fraction_bits))

    @property
    def effective_beta(self) -> np.ndarray:
        """β_q / 2^F_β (multiplier) or 1 − 2^−s (shift)."""
        if self.mode == "multiplier":
            return np.asarray(self.factor / float(1 << self.fraction_bits))
        return np.asarray(1.0 - 2.0 ** -self.factor.astype(np.float64))

    @property
    def beta_error(self) -> np.ndarray:
        """Effective β − trained β."""
        return np.asarray(self.effective_beta - self.beta)

    def apply(self, u: Tensor) -> Tensor:
        """leak(U) for an int64 membrane tensor ``u`` ([B, *neurons]; a per-neuron factor
        broadcasts against one sample)."""
        factor = torch.as_tensor(self.factor, dtype=torch.int64, device=u.device)
        if self.mode == "multiplier":
            return round_shift(u * factor, self.fraction_bits)
        return u - torch.bitwise_right_shift(u, factor)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: mode, β, effective β and its error (numbers, or mean and largest
        absolute error for per-neuron values)."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.mode == "multiplier":
            out["fraction_bits"] = self.fraction_bits
        if self.beta.ndim == 0:
            out.update(beta=float(self.beta), beta_effective=float(self.effective_beta),
                       beta_error=float(self.beta_error),
                       **({"shift": int(self.factor)} if self.mode == "shift"
                          else {"multiplier": int(self.factor)}))
        else:
            out.update(beta_mean=float(self.beta.mean()),
                       beta_effective_mean=float(self.effective_beta.mean()),
                       beta_error_mean=float(self.beta_error.mean()),
                       beta_error_max_abs=float(np.abs(self.beta_error).max()))
        return out
