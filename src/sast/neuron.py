"""The math of the method: admissible surrogates, spike modes and the LIF scan.

Leaky integrate-and-fire dynamics, zero initial state, time-first, with one of two resets:

    ``reset="subtract"`` (the default):  u[t] = β·u[t−1] + I[t] − ϑ·s[t−1]
    ``reset="zero"``:                    u[t] = β·(1 − s[t−1])·u[t−1] + I[t]

    s[t] = spike(u[t] − ϑ),      u[−1] = s[−1] = 0

u[t] is the membrane *before* its own reset: a neuron that fires at t (s[t] = 1) enters step
t + 1 at u[t] − ϑ (subtraction) or at 0 (zero). With hard spikes the zero reset sets the
membrane to 0 after a spike, as NIR's LIF does with v_reset = 0; with graded surrogate spikes
s ∈ (0, 1) it keeps the fraction 1 − s of the membrane, the smooth form of the same rule.

where ``spike`` depends on the spike mode:

- ``"surrogate"``: s = σ_k(u − ϑ), a smooth, bounded, monotone function. The network is then an
  ordinary smooth function of its weights and backpropagation gives its exact gradient.
- ``"hard"``: s = H(u − ϑ), the Heaviside step with H(0) = 0 (a neuron exactly at threshold does
  not fire). Used for deployment. Its derivative is zero almost everywhere, so no gradient flows
  through the spikes.
- ``"ste"``: H(u − ϑ) forward, σ_k′(u − ϑ) backward: the conventional surrogate-gradient method
  (a biased gradient estimator), kept as a baseline.

:func:`lif_scan` is the hot loop: one :class:`torch.autograd.Function` with a hand-derived
backward-through-time. :func:`lif_scan_reference` is the same dynamics in plain autograd, used
by the tests and wherever second derivatives are needed.
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


def _check_current(current: Tensor) -> None:
    if not isinstance(current, Tensor):
        raise TypeError(f"current must be a torch.Tensor, got {type(current).__name__}")
    if current.dim() < 2:
        raise ValueError(
            "current must be time-first [T, B, ...] with at least 2 dimensions, "
            f"got shape {tuple(current.shape)}"
        )
    if not current.is_floating_point():
        raise TypeError(f"current must be a floating-point tensor, got dtype {current.dtype}")


def lif_scan_reference(
    current: Tensor,
    beta: float | Tensor = 0.9,
    threshold: float | Tensor = 1.0,
    surrogate: str | Surrogate = "sigmoid",
    mode: str = "surrogate",
    slope: float | None = None,
    reset: str = "subtract",
) -> tuple[Tensor, Tensor]:
    """LIF scan in plain autograd (any order of derivatives; β and ϑ may be tensors that
    broadcast against one time step and may require grad).

    Returns ``(spikes, membrane)``, both ``[T, B, ...]``. See the module docstring for the
    dynamics and the two resets.
    """
    _check_current(current)
    check_spike_mode(mode)
    check_reset(reset)
    sg = _surrogate_of(surrogate, slope)
    u = torch.zeros_like(current[0])
    s = torch.zeros_like(current[0])
    spikes, membrane = [], []
    for i_t in current.unbind(0):
        if reset == "subtract":
            u = beta * u + i_t - threshold * s
        else:
            u = beta * ((1.0 - s) * u) + i_t
        s = spike(u - threshold, sg, mode)
        spikes.append(s)
        membrane.append(u)
    return torch.stack(spikes), torch.stack(membrane)


class _LIFScan(torch.autograd.Function):
    """Fused LIF scan with a hand-derived backward-through-time.

    With d[t] = ∂s[t]/∂u[t] (σ_k′(u[t] − ϑ) in surrogate and ste modes, 0 in hard mode) and
    upstream gradients ḡ_s[t], ḡ_u[t] of the loss with respect to the returned spikes and
    membrane, the total gradient g[t] = dL/du[t] obeys, with g[T] = 0 and dL/dI[t] = g[t],

        subtract:  g[t] = ḡ_u[t] + d[t]·(ḡ_s[t] − ϑ·g[t+1]) + β·g[t+1]
        zero:      g[t] = ḡ_u[t] + d[t]·(ḡ_s[t] − β·u[t]·g[t+1]) + β·(1 − s[t])·g[t+1]

    The bracket is ∂L/∂s[t] (the spike's own gradient plus its reset path, ∂u[t+1]/∂s[t] =
    −ϑ or −β·u[t]); the factor of g[t+1] outside it is the direct ∂u[t+1]/∂u[t]. Their sum,
    β − ϑ·d[t] or β·(1 − s[t]) − β·u[t]·d[t], is the local state Jacobian.
    """

    @staticmethod
    def forward(ctx, current, beta, threshold, surrogate, mode, reset):  # noqa: ANN001
        spikes = torch.empty_like(current)
        membrane = torch.empty_like(current)
        u_prev = s_prev = None
        for t, i_t in enumerate(current.unbind(0)):
            u_t = membrane[t]
            if u_prev is None:
                u_t.copy_(i_t)
            elif reset == "subtract":
                torch.add(i_t, u_prev, alpha=beta, out=u_t)
                u_t.sub_(s_prev, alpha=threshold)
            else:  # zero: β·((1 − s)·u) + I
                torch.mul(u_prev, 1.0 - s_prev, out=u_t)
                torch.add(i_t, u_t, alpha=beta, out=u_t)
            x = u_t - threshold
            s_t = spikes[t]
            if mode == "hard" or mode == "ste":
                s_t.copy_(x > 0)
            else:
                s_t.copy_(surrogate(x))
            u_prev, s_prev = u_t, s_t
        if reset == "subtract":
            ctx.save_for_backward(membrane)
        else:
            ctx.save_for_backward(membrane, spikes)
        ctx.beta, ctx.threshold, ctx.surrogate, ctx.mode = beta, threshold, surrogate, mode
        ctx.reset = reset
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):  # noqa: ANN001
        if ctx.reset == "zero":
            return _LIFScan._backward_zero(ctx, grad_spikes, grad_membrane)
        (membrane,) = ctx.saved_tensors
        beta, threshold, surrogate, mode = ctx.beta, ctx.threshold, ctx.surrogate, ctx.mode
        grad_current = torch.empty_like(membrane)
        g_next = None
        # One time step at a time, so that every operand stays in cache.
        for t in range(membrane.shape[0] - 1, -1, -1):
            g_t = grad_current[t]
            # reset path: ∂L/∂s[t] = ḡ_s[t] − ϑ·g[t+1]
            if grad_spikes is None:
                grad_s = None if g_next is None else g_next * -threshold
            elif g_next is None:
                grad_s = grad_spikes[t]
            else:
                grad_s = torch.add(grad_spikes[t], g_next, alpha=-threshold)
            if mode == "hard" or grad_s is None:
                g_t.zero_()
            else:
                torch.mul(surrogate.derivative(membrane[t] - threshold), grad_s, out=g_t)
            if g_next is not None:
                g_t.add_(g_next, alpha=beta)
            if grad_membrane is not None:
                g_t.add_(grad_membrane[t])
            g_next = g_t
        return grad_current, None, None, None, None, None

    @staticmethod
    def _backward_zero(ctx, grad_spikes, grad_membrane):  # noqa: ANN001, ANN205
        membrane, spikes = ctx.saved_tensors
        beta, threshold, surrogate, mode = ctx.beta, ctx.threshold, ctx.surrogate, ctx.mode
        grad_current = torch.empty_like(membrane)
        g_next = None
        for t in range(membrane.shape[0] - 1, -1, -1):
            g_t = grad_current[t]
            # reset path: ∂L/∂s[t] = ḡ_s[t] − β·u[t]·g[t+1]
            grad_s = None
            if g_next is not None:
                grad_s = torch.mul(g_next, membrane[t]).mul_(-beta)
            if grad_spikes is not None:
                grad_s = grad_spikes[t] if grad_s is None else grad_s.add_(grad_spikes[t])
            if mode == "hard" or grad_s is None:
                g_t.zero_()
            else:
                torch.mul(surrogate.derivative(membrane[t] - threshold), grad_s, out=g_t)
            if g_next is not None:  # direct path: β·(1 − s[t])·g[t+1]
                g_t.add_(g_next * (1.0 - spikes[t]), alpha=beta)
            if grad_membrane is not None:
                g_t.add_(grad_membrane[t])
            g_next = g_t
        return grad_current, None, None, None, None, None


def _surrogate_of(surrogate: str | Surrogate, slope: float | None) -> Surrogate:
    if slope is not None and isinstance(surrogate, Surrogate):
        raise ValueError("give the slope either in the Surrogate instance or as slope=, not both")
    return get_surrogate(surrogate, slope)


def lif_scan(
    current: Tensor,
    beta: float = 0.9,
    threshold: float = 1.0,
    surrogate: str | Surrogate = "sigmoid",
    mode: str = "surrogate",
    slope: float | None = None,
    reset: str = "subtract",
) -> tuple[Tensor, Tensor]:
    """Run LIF neurons over all time steps; return ``(spikes, membrane)``, each ``[T, B, ...]``.

    ``current`` is the input current I, time-first ``[T, B, ...]``. Dynamics (zero initial
    state)::

        u[t] = β·u[t−1] + I[t] − ϑ·s[t−1]        (reset="subtract", the default)
        u[t] = β·(1 − s[t−1])·u[t−1] + I[t]      (reset="zero")
        s[t] = spike(u[t] − ϑ)

    with ``spike`` = σ_k (``"surrogate"``), H with H(0) = 0 (``"hard"``) or H forward and σ_k′
    backward (``"ste"``); ``slope`` is the surrogate's k (default: the family's, 5), as in
    ``lif_scan(x, surrogate="atan", slope=2)``. β (``beta``) and ϑ (``threshold``) are Python
    numbers here; the fused
    backward is first-order only. For tensor-valued or learnable β and ϑ, or for second
    derivatives, use :func:`lif_scan_reference`, which computes the same values.

    On CUDA, float32/float16/bfloat16 currents with a built-in surrogate run as two fused Triton
    kernels (:mod:`sast.triton_lif`) when Triton can be imported; ``SAST_LIF_BACKEND=torch`` in
    the environment forces the PyTorch scan.

    >>> import torch
    >>> s, u = lif_scan(torch.tensor([[0.6], [0.6], [0.6]]), beta=0.5, threshold=1.0,
    ...                 mode="hard")
    >>> [round(v, 4) for v in u.flatten().tolist()], s.flatten().tolist()
    ([0.6, 0.9, 1.05], [0.0, 0.0, 1.0])
    """
    _check_current(current)
    check_spike_mode(mode)
    check_reset(reset)
    if isinstance(beta, Tensor) or isinstance(threshold, Tensor):
        raise TypeError(
            "lif_scan takes beta and threshold as Python numbers; use lif_scan_reference for "
            "tensor-valued or learnable parameters"
        )
    if current.is_cuda:  # the fused Triton kernels, unless SAST_LIF_BACKEND=torch
        from .triton_lif import lif_scan_triton, use_triton

        if use_triton(current, sg := _surrogate_of(surrogate, slope)):
            return lif_scan_triton(current, float(beta), float(threshold), sg, mode, reset)
    return _LIFScan.apply(current, float(beta), float(threshold),
                          _surrogate_of(surrogate, slope), mode, reset)
