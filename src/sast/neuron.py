"""The math of the method: admissible surrogates, spike modes and the LIF scan.

Leaky integrate-and-fire dynamics, zero initial state, time-first, with one of two resets:

    ``reset="subtract"`` (the default):  u[t] = β·u[t−1] + I[t] − r·s[t−1]
    ``reset="zero"``:                    u[t] = β·(1 − s[t−1])·u[t−1] + I[t]

    s[t] = spike(u[t] − ϑ),      u[−1] = s[−1] = 0

The subtracted amount r is ϑ when the reset follows the leak (the default, as snnTorch's
``Leaky``) and β·ϑ with ``reset_before_leak=True``, u[t] = β·(u[t−1] − ϑ·s[t−1]) + I[t] (as
SpikingJelly's soft reset and Norse's subtractive reset). The reset to zero is the same either
way. β = 1 is an integrate-and-fire neuron.

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

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from sast.surrogate import (
    SigmoidSurrogate,
    Surrogate,
    check_current,
    check_reset,
    check_spike_mode,
    resolve_surrogate,
    spike,
)


def lif_scan_reference(
    current: Tensor,
    beta: float | Tensor = 0.9,
    threshold: float | Tensor = 1.0,
    surrogate: str | Surrogate = "sigmoid",
    mode: str = "surrogate",
    slope: float | None = None,
    reset: str = "subtract",
    reset_before_leak: bool = False,
) -> tuple[Tensor, Tensor]:
    """LIF scan in plain autograd (any order of derivatives; β and ϑ may be tensors that
    broadcast against one time step and may require grad).

    Returns ``(spikes, membrane)``, both ``[T, B, ...]``. See the module docstring for the
    dynamics and the two resets.
    """
    check_current(current)
    check_spike_mode(mode)
    check_reset(reset)
    sg = resolve_surrogate(surrogate, slope)
    if current.shape[0] == 0:  # no time steps: empty spikes and membrane
        return current.clone(), current.clone()
    u = torch.zeros_like(current[0])
    s = torch.zeros_like(current[0])
    reset_by = beta * threshold if reset_before_leak else threshold
    spikes, membrane = [], []
    for i_t in current.unbind(0):
        if reset == "subtract":
            u = beta * u + i_t - reset_by * s
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

        subtract:  g[t] = ḡ_u[t] + d[t]·(ḡ_s[t] − r·g[t+1]) + β·g[t+1]
        zero:      g[t] = ḡ_u[t] + d[t]·(ḡ_s[t] − β·u[t]·g[t+1]) + β·(1 − s[t])·g[t+1]

    The bracket is ∂L/∂s[t] (the spike's own gradient plus its reset path, ∂u[t+1]/∂s[t] =
    −r or −β·u[t], r the subtracted amount of the module docstring); the factor of g[t+1]
    outside it is the direct ∂u[t+1]/∂u[t]. Both passes run one time step at a time on slices
    of ``[B, ...]``, so that the few operations of a step read and write memory the cache
    already holds. In surrogate mode the sigmoid's
    d = k·s·(1 − s) is read from the saved spikes, and with the subtractive reset the backward
    pass needs no membrane at all: the forward pass then keeps only the current step's state
    unless the membrane is asked for. Other surrogates, the ste mode and the zero reset read
    σ_k′ or u[t] from the saved membrane.

    The forward pass of the subtractive reset in surrogate mode runs on the scaled distance to
    threshold x[t] = k·(u[t] − ϑ), so that the spike is the surrogate of x[t] itself:

        x[0] = k·(I[0] − ϑ),   x[t] = β·x[t−1] + k·I[t] + k·ϑ·(β − 1) − k·r·s[t−1],
        s[t] = σ_1(x[t]),      u[t] = x[t]/k + ϑ.
    """

    @staticmethod
    def forward(ctx, current, beta, threshold, reset_by, surrogate, mode, reset, keep_membrane):  # noqa: ANN001, E501
        ctx.set_materialize_grads(False)
        d_from_spikes = mode == "surrogate" and isinstance(surrogate, SigmoidSurrogate)
        backward_reads_membrane = mode == "ste" or (
            mode == "surrogate" and (reset == "zero" or not d_from_spikes))
        keep = keep_membrane or backward_reads_membrane
        if reset == "subtract" and mode == "surrogate":
            spikes, membrane = _forward_scaled(current, beta, threshold, reset_by, surrogate, keep)
        else:
            spikes, membrane = _forward_direct(current, beta, threshold, reset_by, surrogate, mode,
                                               reset, keep)
        ctx.save_for_backward(membrane if backward_reads_membrane else None, spikes)
        ctx.beta, ctx.threshold, ctx.surrogate, ctx.mode = beta, threshold, surrogate, mode
        ctx.reset, ctx.d_from_spikes, ctx.reset_by = reset, d_from_spikes, reset_by
        return spikes, membrane if keep_membrane else None

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes, grad_membrane):  # noqa: ANN001
        membrane, spikes = ctx.saved_tensors
        beta, threshold, surrogate, reset = ctx.beta, ctx.threshold, ctx.surrogate, ctx.reset
        if grad_spikes is None and grad_membrane is None:
            return None, None, None, None, None, None, None, None
        reset_by = ctx.reset_by
        spike_path = ctx.mode != "hard"
        grad_current = torch.empty_like(spikes)
        d_buffer = torch.empty_like(spikes[0]) if ctx.d_from_spikes else None
        ds_buffer = torch.empty_like(spikes[0])
        scale = surrogate.slope if ctx.d_from_spikes else 1.0
        for t in range(spikes.shape[0] - 1, -1, -1):
            g = grad_current[t]
            g_next = grad_current[t + 1] if t + 1 < spikes.shape[0] else None
            # the direct path, ∂u[t+1]/∂u[t]·g[t+1], plus ḡ_u[t]
            if g_next is None:
                g.zero_()
            elif reset == "subtract":
                torch.mul(g_next, beta, out=g)
            else:
                torch.addcmul(g_next, spikes[t], g_next, value=-1.0, out=g).mul_(beta)
            if grad_membrane is not None:
                g.add_(grad_membrane[t])
            if not spike_path or (grad_spikes is None and g_next is None):
                continue
            # the spike path, d[t]·∂L/∂s[t]; d = scale·(what is computed here)
            if ctx.d_from_spikes:
                s_t = spikes[t]
                d = torch.addcmul(s_t, s_t, s_t, value=-1.0, out=d_buffer)
            else:
                d = surrogate.derivative(membrane[t] - threshold)
            if g_next is None:
                ds = grad_spikes[t]
            elif reset == "subtract":
                ds = (torch.mul(g_next, -reset_by, out=ds_buffer) if grad_spikes is None else
                      torch.add(grad_spikes[t], g_next, alpha=-reset_by, out=ds_buffer))
            else:
                ds = torch.mul(membrane[t], g_next, out=ds_buffer).mul_(-beta)
                if grad_spikes is not None:
                    ds.add_(grad_spikes[t])
            g.addcmul_(d, ds, value=scale)
        return grad_current, None, None, None, None, None, None, None


def _forward_scaled(
    current: Tensor, beta: float, threshold: float, reset_by: float, surrogate: Surrogate,
    keep_membrane: bool,
) -> tuple[Tensor, Tensor | None]:
    """Subtractive reset, surrogate mode, on x = k·(u − ϑ) (see :class:`_LIFScan`); the
    membrane is written only if ``keep_membrane``."""
    k = surrogate.slope
    spikes = torch.empty_like(current)
    membrane = torch.empty_like(current) if keep_membrane else None
    x = torch.empty_like(current[0])
    for t in range(current.shape[0]):
        if t == 0:
            torch.mul(current[0], k, out=x).sub_(k * threshold)
        else:
            x.mul_(beta).add_(current[t], alpha=k).sub_(spikes[t - 1], alpha=k * reset_by)
            x.add_(k * threshold * (beta - 1.0))
        surrogate.of_scaled(x, out=spikes[t])
        if membrane is not None:
            torch.div(x, k, out=membrane[t]).add_(threshold)
    return spikes, membrane


def _forward_direct(
    current: Tensor, beta: float, threshold: float, reset_by: float, surrogate: Surrogate,
    mode: str, reset: str, keep_membrane: bool,
) -> tuple[Tensor, Tensor | None]:
    """The membrane recurrence as written in the module docstring, one step at a time; the
    membrane is written only if ``keep_membrane``, else one step's state is kept."""
    spikes = torch.empty_like(current)
    membrane = torch.empty_like(current) if keep_membrane else None
    state = None if keep_membrane else torch.empty_like(current[0])
    for t, i_t in enumerate(current.unbind(0)):
        u_t = state if membrane is None else membrane[t]
        if t == 0:
            u_t.copy_(i_t)
        else:
            u_prev = state if membrane is None else membrane[t - 1]
            s_prev = spikes[t - 1]
            if reset == "subtract":
                torch.add(i_t, u_prev, alpha=beta, out=u_t)
                u_t.sub_(s_prev, alpha=reset_by)
            else:  # zero: β·((1 − s)·u) + I
                torch.addcmul(u_prev, u_prev, s_prev, value=-1.0, out=u_t)
                torch.add(i_t, u_t, alpha=beta, out=u_t)
        s_t = spikes[t]
        if mode == "hard" or mode == "ste":
            torch.gt(u_t, threshold, out=s_t)
        else:
            s_t.copy_(surrogate(u_t - threshold))
    return spikes, membrane


def lif_scan(
    current: Tensor,
    beta: float = 0.9,
    threshold: float = 1.0,
    surrogate: str | Surrogate = "sigmoid",
    mode: str = "surrogate",
    slope: float | None = None,
    reset: str = "subtract",
    membrane: bool = True,
    reset_before_leak: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Run LIF neurons over all time steps; return ``(spikes, membrane)``, each ``[T, B, ...]``.

    ``current`` is the input current I, time-first ``[T, B, ...]``. Dynamics (zero initial
    state)::

        u[t] = β·u[t−1] + I[t] − ϑ·s[t−1]        (reset="subtract", the default)
        u[t] = β·(u[t−1] − ϑ·s[t−1]) + I[t]      (reset="subtract", reset_before_leak=True)
        u[t] = β·(1 − s[t−1])·u[t−1] + I[t]      (reset="zero")
        s[t] = spike(u[t] − ϑ)

    with ``spike`` = σ_k (``"surrogate"``), H with H(0) = 0 (``"hard"``) or H forward and σ_k′
    backward (``"ste"``); ``slope`` is the surrogate's k (default: the family's, 5), as in
    ``lif_scan(x, surrogate="atan", slope=2)``. β (``beta``) and ϑ (``threshold``) are Python
    numbers here; the fused
    backward is first-order only. For tensor-valued or learnable β and ϑ, or for second
    derivatives, use :func:`lif_scan_reference`, which computes the same values.

    ``membrane=False`` returns ``(spikes, None)``: on the CPU the scan then stores the membrane
    only where its backward pass needs it (the ste mode, surrogates other than the sigmoid, the
    zero reset in surrogate mode), which saves time and one ``[T, B, ...]`` tensor of memory
    (the Triton kernels always store it).

    On CUDA, float32/float16/bfloat16 currents with a built-in surrogate run as two fused Triton
    kernels (:mod:`sast.kernels.triton_lif`) when Triton can be imported;
    ``SAST_LIF_BACKEND=torch`` in
    the environment forces the PyTorch scan.

    >>> import torch
    >>> s, u = lif_scan(torch.tensor([[0.6], [0.6], [0.6]]), beta=0.5, threshold=1.0,
    ...                 mode="hard")
    >>> [round(v, 4) for v in u.flatten().tolist()], s.flatten().tolist()
    ([0.6, 0.9, 1.05], [0.0, 0.0, 1.0])
    """
    check_current(current)
    check_spike_mode(mode)
    check_reset(reset)
    if isinstance(beta, Tensor) or isinstance(threshold, Tensor):
        raise TypeError(
            "lif_scan takes beta and threshold as Python numbers; use lif_scan_reference for "
            "tensor-valued or learnable parameters"
        )
    if current.is_cuda:  # the fused Triton kernels, unless SAST_LIF_BACKEND=torch
        from sast.kernels.triton_lif import lif_scan_triton, use_triton

        if use_triton(current, sg := resolve_surrogate(surrogate, slope)):
            spikes, u = lif_scan_triton(current, float(beta), float(threshold), sg, mode, reset,
                                        reset_before_leak)
            return spikes, u if membrane else None
    if current.shape[0] == 0:  # no time steps: empty spikes and membrane
        return current.clone(), current.clone() if membrane else None
    beta, threshold = float(beta), float(threshold)
    reset_by = beta * threshold if reset_before_leak else threshold
    return _LIFScan.apply(current, beta, threshold, reset_by, resolve_surrogate(surrogate, slope),
                          mode, reset, bool(membrane))
