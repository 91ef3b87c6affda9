"""Triton kernels of the fused LIF scan (imported only by :mod:`sast.kernels.triton_lif`, on
demand).

The kernel bodies are plain functions here; :func:`kernels` wraps them with ``triton.jit`` once
per interpreter setting, so that one process can run the compiled kernels on CUDA and, with
``TRITON_INTERPRET=1`` in the environment at the call, the interpreted ones on CPU tensors (the
tests), whenever Triton was imported. For that the kernels call only Triton's builtins, never a
function that Triton's library itself defines with ``@triton.jit`` (``tl.sigmoid``,
``tl.zeros``, ...): those are jitted once, at import, for the setting of that moment, and an
interpreted kernel cannot call a compiled one.

Layout: ``[T, N]``, time outermost, N = the number of neurons (all dimensions after time), one
dense block of memory per step (contiguous, or channels-last per step). Each
program owns ``BLOCK`` neurons and walks over time with the state in registers: one read of
I[t] and two writes (s[t], u[t]) per step forward; reads of ḡ_s[t], ḡ_u[t], u[t] (and s[t] for
the zero reset) and one write of dL/dI[t] per step backward. Arithmetic is float32 whatever the
storage dtype.

The number of time steps T is a compile-time constant: one compilation per sequence length, a
loop of fixed length (and ``range`` over a runtime argument breaks the interpreter of older
Triton with NumPy 2.4). The other constexpr switches: ``SURROGATE`` 0 sigmoid, 1 atan, 2 erf;
``MODE`` 0 surrogate, 1 hard, 2 ste; ``RESET`` 0 subtract, 1 zero.
"""

from __future__ import annotations

import functools
import os

try:
    import triton
    import triton.language as tl
except ImportError:  # still importable (pytest --doctest-modules imports every module);
    triton = tl = None  # sast.kernels.triton_lif checks for Triton before it comes here

# Cephes' atanf: range reduction at tan(3π/8) and tan(π/8), then a degree-9 odd polynomial;
# about 1e-7 relative error in float32. (The interpreter has no libdevice, so no tl atan.)
# Globals used inside a kernel must be constexpr.
_c = tl.constexpr if tl is not None else float
_TAN_3PI_8 = _c(2.414213562373095)
_TAN_PI_8 = _c(0.41421356237309503)
_PI = _c(3.141592653589793)
_PI_2 = _c(1.5707963267948966)
_PI_4 = _c(0.7853981633974483)
_INV_SQRT_2 = _c(0.7071067811865476)
_INV_SQRT_2PI = _c(0.3989422804014327)


def _lif_fwd(i_ptr, s_ptr, u_ptr, T: tl.constexpr, N, beta, threshold, reset_by, slope,
             SURROGATE: tl.constexpr, MODE: tl.constexpr, RESET: tl.constexpr,
             BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    off = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = off < N
    u = tl.full([BLOCK], 0.0, tl.float32)
    s = tl.full([BLOCK], 0.0, tl.float32)
    for _ in range(T):
        i_t = tl.load(i_ptr + off, mask=mask, other=0.0).to(tl.float32)
        if RESET == 0:  # subtract: u = β·u + I − r·s (r = ϑ, or β·ϑ before the leak)
            u = beta * u + i_t - reset_by * s
        else:  # zero: u = β·((1 − s)·u) + I
            u = beta * ((1.0 - s) * u) + i_t
        x = u - threshold
        if MODE == 0:
            kx = slope * x
            if SURROGATE == 0:
                s = 1.0 / (1.0 + tl.exp(-kx))
            elif SURROGATE == 1:
                a = tl.abs(kx)
                big = a > _TAN_3PI_8
                mid = a > _TAN_PI_8
                m = tl.minimum(a, _TAN_3PI_8)  # no inf/inf in the branch not taken
                r = tl.where(big, -1.0 / tl.maximum(a, 1.0),
                             tl.where(mid, (m - 1.0) / (m + 1.0), a))
                z = r * r
                p = (((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z
                     - 3.33329491539e-1) * z * r + r
                at = tl.where(big, _PI_2, tl.where(mid, _PI_4, 0.0)) + p
                at = tl.where(kx < 0, -at, at)
                s = 0.5 + at / _PI
            else:
                s = 0.5 * (1.0 + tl.math.erf(kx * _INV_SQRT_2))
        else:  # hard and ste: H(x), H(0) = 0
            s = tl.where(x > 0, 1.0, 0.0)
        tl.store(s_ptr + off, s.to(s_ptr.dtype.element_ty), mask=mask)
        tl.store(u_ptr + off, u.to(u_ptr.dtype.element_ty), mask=mask)
        off += N


def _lif_bwd(gs_ptr, gu_ptr, u_ptr, s_ptr, gi_ptr, T: tl.constexpr, N, last, beta, threshold,
             reset_by, slope,
             SURROGATE: tl.constexpr, MODE: tl.constexpr, RESET: tl.constexpr,
             HAS_GS: tl.constexpr, HAS_GU: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    base = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = base < N
    off = base + last  # last = (T − 1)·N: start at the final time step
    g_next = tl.full([BLOCK], 0.0, tl.float32)
    for _ in range(T):
        if HAS_GS:
            grad_s = tl.load(gs_ptr + off, mask=mask, other=0.0).to(tl.float32)
        else:
            grad_s = tl.full([BLOCK], 0.0, tl.float32)
        if RESET == 0:
            # ∂L/∂s[t] = ḡ_s[t] − r·g[t+1]; direct path β·g[t+1]
            grad_s = grad_s - reset_by * g_next
            g = beta * g_next
            if MODE != 1:
                u_t = tl.load(u_ptr + off, mask=mask, other=0.0).to(tl.float32)
        else:
            # ∂L/∂s[t] = ḡ_s[t] − β·u[t]·g[t+1]; direct path β·(1 − s[t])·g[t+1]
            u_t = tl.load(u_ptr + off, mask=mask, other=0.0).to(tl.float32)
            s_t = tl.load(s_ptr + off, mask=mask, other=0.0).to(tl.float32)
            grad_s = grad_s - beta * u_t * g_next
            g = beta * ((1.0 - s_t) * g_next)
        if MODE != 1:  # surrogate and ste: d[t] = σ_k′(u[t] − ϑ); hard: d[t] = 0
            kx = slope * (u_t - threshold)
            if SURROGATE == 0:
                sg = 1.0 / (1.0 + tl.exp(-kx))
                d = slope * sg * (1.0 - sg)
            elif SURROGATE == 1:
                d = slope / (_PI * (1.0 + kx * kx))
            else:
                d = slope * _INV_SQRT_2PI * tl.exp(-0.5 * kx * kx)
            g = g + d * grad_s
        if HAS_GU:
            g = g + tl.load(gu_ptr + off, mask=mask, other=0.0).to(tl.float32)
        tl.store(gi_ptr + off, g.to(gi_ptr.dtype.element_ty), mask=mask)
        g_next = g
        off -= N


@functools.cache
def _jitted(interpret: bool):  # noqa: ANN202, ARG001 (the key of the cache)
    return triton.jit(_lif_fwd), triton.jit(_lif_bwd)


def kernels():  # noqa: ANN201
    """``(forward, backward)`` jitted for the current ``TRITON_INTERPRET`` setting."""
    return _jitted(os.environ.get("TRITON_INTERPRET", "0") == "1")
