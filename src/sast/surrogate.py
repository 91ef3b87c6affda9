"""Surrogates, spike modes and resets: the neuron math every other room builds on (floor 1).

An admissible surrogate σ_k (:class:`Surrogate`: sigmoid, atan, erf) is smooth, monotone and
bounded, with σ_k(−∞) = 0, σ_k(+∞) = 1 and slope k at the threshold. The spike nonlinearity of
each mode, applied to x = u − ϑ (:func:`spike`):

- ``"surrogate"``: s = σ_k(x);
- ``"hard"``: s = H(x), the Heaviside step with H(0) = 0;
- ``"ste"``: H(x) forward, σ_k′(x) backward.

The LIF dynamics that use them are in :mod:`sast.neuron`. Imports nothing from ``sast``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

SpikeMode = Literal["surrogate", "hard", "ste"]
SPIKE_MODES: tuple[str, ...] = ("surrogate", "hard", "ste")
RESETS: tuple[str, ...] = ("subtract", "zero")
"""How a spike resets the membrane: subtract ϑ, or set it to zero (see the module docstring)."""


@dataclass(frozen=True)
class Surrogate:
    """An admissible surrogate σ_k: smooth, monotone, σ_k(−∞) = 0, σ_k(+∞) = 1, σ_k′ bounded.

    ``slope`` is k, the steepness at the threshold; σ_k → H as k → ∞.
    """

    slope: float = 5.0
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not (self.slope > 0 and math.isfinite(self.slope)):
            raise ValueError(f"surrogate slope must be a positive finite number, got {self.slope}")

    def __call__(self, x: Tensor) -> Tensor:
        """σ_k(x)."""
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:
        """σ_k′(x)."""
        raise NotImplementedError

    def of_scaled(self, z: Tensor, out: Tensor) -> Tensor:
        """σ_1(z) = σ_k(z/k) into ``out``: the surrogate of an argument already scaled by k."""
        raise NotImplementedError

    @property
    def sup_derivative(self) -> float:
        """sup_x σ_k′(x), the Lipschitz constant of σ_k used by the theory's bounds."""
        raise NotImplementedError


@dataclass(frozen=True)
class SigmoidSurrogate(Surrogate):
    """Logistic sigmoid: σ_k(x) = 1 / (1 + e^{−kx}), σ_k′ = k·σ_k·(1 − σ_k), sup σ_k′ = k/4."""

    name: ClassVar[str] = "sigmoid"

    def __call__(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.slope * x)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.slope * x)
        return self.slope * s * (1.0 - s)

    def of_scaled(self, z: Tensor, out: Tensor) -> Tensor:
        return torch.sigmoid(z, out=out)

    @property
    def sup_derivative(self) -> float:
        return self.slope / 4.0


@dataclass(frozen=True)
class AtanSurrogate(Surrogate):
    """Arctangent: σ_k(x) = 1/2 + arctan(kx)/π, σ_k′ = k / (π·(1 + (kx)²)), sup σ_k′ = k/π."""

    name: ClassVar[str] = "atan"

    def __call__(self, x: Tensor) -> Tensor:
        return 0.5 + torch.atan(self.slope * x) / math.pi

    def derivative(self, x: Tensor) -> Tensor:
        kx = self.slope * x
        return self.slope / (math.pi * (1.0 + kx * kx))

    def of_scaled(self, z: Tensor, out: Tensor) -> Tensor:
        return torch.atan(z, out=out).mul_(1.0 / math.pi).add_(0.5)

    @property
    def sup_derivative(self) -> float:
        return self.slope / math.pi


@dataclass(frozen=True)
class ErfSurrogate(Surrogate):
    """Gaussian CDF: σ_k(x) = Φ(kx) = (1 + erf(kx/√2))/2, σ_k′ = k·φ(kx), sup σ_k′ = k/√(2π)."""

    name: ClassVar[str] = "erf"

    def __call__(self, x: Tensor) -> Tensor:
        return 0.5 * (1.0 + torch.erf(self.slope * x / math.sqrt(2.0)))

    def derivative(self, x: Tensor) -> Tensor:
        kx = self.slope * x
        return self.slope / math.sqrt(2.0 * math.pi) * torch.exp(-0.5 * kx * kx)

    def of_scaled(self, z: Tensor, out: Tensor) -> Tensor:
        return torch.mul(z, 1.0 / math.sqrt(2.0), out=out).erf_().add_(1.0).mul_(0.5)

    @property
    def sup_derivative(self) -> float:
        return self.slope / math.sqrt(2.0 * math.pi)


SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (SigmoidSurrogate, AtanSurrogate, ErfSurrogate)
}


def get_surrogate(surrogate: str | Surrogate, slope: float | None = None) -> Surrogate:
    """Return a surrogate instance from a name (``"sigmoid"``, ``"atan"``, ``"erf"``) or pass one
    through unchanged."""
    if isinstance(surrogate, Surrogate):
        return surrogate
    try:
        cls = SURROGATES[surrogate]
    except KeyError:
        raise ValueError(
            f"unknown surrogate {surrogate!r}; expected one of {sorted(SURROGATES)}"
        ) from None
    return cls() if slope is None else cls(slope=float(slope))


def check_spike_mode(mode: str) -> str:
    if mode not in SPIKE_MODES:
        raise ValueError(f"unknown spike mode {mode!r}; expected one of {SPIKE_MODES}")
    return mode


def check_reset(reset: str) -> str:
    if reset not in RESETS:
        raise ValueError(f"unknown reset {reset!r}; expected one of {RESETS}")
    return reset


def heaviside(x: Tensor) -> Tensor:
    """H(x) = 1 if x > 0 else 0 (so H(0) = 0), in the dtype of ``x``."""
    return (x > 0).to(x.dtype)


def spike(x: Tensor, surrogate: Surrogate, mode: str) -> Tensor:
    """The spike nonlinearity of ``mode`` applied to x = u − ϑ, differentiable by plain autograd.

    ``ste`` is written σ_k(x) + (H(x) − σ_k(x)) with the bracket detached: H forward, σ_k′
    backward.
    """
    if mode == "surrogate":
        return surrogate(x)
    if mode == "hard":
        return heaviside(x)
    if mode == "ste":
        soft = surrogate(x)
        return soft + (heaviside(x) - soft).detach()
    raise ValueError(f"unknown spike mode {mode!r}; expected one of {SPIKE_MODES}")


def check_current(current: Tensor) -> None:
    if not isinstance(current, Tensor):
        raise TypeError(f"current must be a torch.Tensor, got {type(current).__name__}")
    if current.dim() < 2:
        raise ValueError(
            "current must be time-first [T, B, ...] with at least 2 dimensions, "
            f"got shape {tuple(current.shape)}"
        )
    if not current.is_floating_point():
        raise TypeError(f"current must be a floating-point tensor, got dtype {current.dtype}")


def resolve_surrogate(surrogate: str | Surrogate, slope: float | None) -> Surrogate:
    if slope is not None and isinstance(surrogate, Surrogate):
        raise ValueError("give the slope either in the Surrogate instance or as slope=, not both")
    return get_surrogate(surrogate, slope)
