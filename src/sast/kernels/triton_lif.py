"""The fused LIF scan as two Triton kernels, for CUDA.

:func:`sast.lif_scan` runs here automatically when its current is a CUDA tensor of float32,
float16 or bfloat16, the surrogate is one of the three built-in families and Triton can be
imported; everything else (CPU tensors, float64, a custom :class:`~sast.surrogate.Surrogate`) takes
the PyTorch scan. The environment variable ``SAST_LIF_BACKEND`` chooses:

- ``auto`` (or unset): as above;
- ``torch``: always the PyTorch scan;
- ``triton``: as ``auto``, but an error where Triton cannot be imported instead of a silent
  fallback.

The dynamics and the backward-through-time are those of :class:`sast.neuron._LIFScan` (see
:mod:`sast.neuron`): one forward kernel, in which each program keeps the state of a block of
neurons in registers and walks forward over time, and one backward kernel that walks back over
time computing g[t] = dL/du[t] = dL/dI[t] from the upstream gradients of the spikes and the
membrane (either may be absent) and the saved membrane (and spikes, for the zero reset).
Arithmetic is float32 whatever the storage dtype; half-precision outputs are rounded once per
step on store, while the state carried to the next step stays float32.

Triton is imported only when a kernel first runs. With ``TRITON_INTERPRET=1`` in the
environment before that, the kernels run in Triton's interpreter on CPU tensors (slowly): that
is how the tests check them on machines without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os

import torch
from torch import Tensor

from sast.surrogate import (
    AtanSurrogate,
    ErfSurrogate,
    SigmoidSurrogate,
    Surrogate,
    check_current,
    check_reset,
    check_spike_mode,
    get_surrogate,
)

BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")
DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
_SURROGATE_IDS: dict[type, int] = {SigmoidSurrogate: 0, AtanSurrogate: 1, ErfSurrogate: 2}
_MODE_IDS = {"surrogate": 0, "hard": 1, "ste": 2}
_RESET_IDS = {"subtract": 0, "zero": 1}


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether Triton can be imported (checked once per process)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install failing in its own way
        return False
    return True


def backend() -> str:
    """The value of ``SAST_LIF_BACKEND`` (``auto`` when unset)."""
    value = os.environ.get("SAST_LIF_BACKEND", "").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"SAST_LIF_BACKEND={value!r}; expected one of {BACKENDS}")
    return value


def use_triton(current: Tensor, surrogate: Surrogate) -> bool:
    """Whether :func:`sast.lif_scan` should run this scan with the Triton kernels."""
    choice = backend()
    if choice == "torch":
        return False
    fits = (current.is_cuda and current.dtype in DTYPES
            and type(surrogate) in _SURROGATE_IDS)
    if not fits:
        return False
    if not triton_available():
        if choice == "triton":
            raise RuntimeError("SAST_LIF_BACKEND=triton, but Triton cannot be imported")
        return False
    return True


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _launch_config(n: int, device: torch.device) -> tuple[int, dict]:
    """BLOCK, the largest block that still gives two programs per SM, and the launch options.

    No fused multiply-add: the kernels round as PyTorch's elementwise ops do, so that a hard
    spike at u ≈ ϑ comes out as in the PyTorch scan (and they are memory-bound anyway)."""
    block = 128
    if device.type == "cuda":  # (else the interpreter: one numpy array per program)
        sms = _sm_count(device.index if device.index is not None else
                        torch.cuda.current_device())
        block = 1024
        while block > 128 and -(-n // block) < 2 * sms:
            block //= 2
    return block, {"num_warps": max(1, min(8, block // 128)), "enable_fp_fusion": False}


def _time_major_dense(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x, torch.empty_like(x))`` when ``x`` is one dense block of memory with time outermost
    (contiguous, or channels-last per step), so that element (t, n) lies at t·N + (its offset
    in step 0); else the same for a contiguous copy of ``x``. The kernels take the neurons in
    storage order."""
    out = torch.empty_like(x)  # x's strides where x is dense, else contiguous
    if x.stride(0) == math.prod(x.shape[1:]) and out.stride() == x.stride():
        return x, out
    x = x.contiguous()
    return x, torch.empty_like(x)


def _like(g: Tensor, ref: Tensor) -> Tensor:
    """``g`` in the memory layout of ``ref`` (a copy only when the strides differ)."""
    if g.stride() == ref.stride() and g.dtype == ref.dtype:
        return g
    return torch.empty_like(ref).copy_(g)


def _device_guard(x: Tensor):  # noqa: ANN202
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


class _TritonLIFScan(torch.autograd.Function):
    """:class:`sast.neuron._LIFScan` with both passes as single Triton kernels."""

    @staticmethod
    def forward(ctx, current, beta, threshold, reset_by, surrogate, mode, reset):  # noqa: ANN001
        from sast.kernels.triton_kernels import kernels

        x, spikes = _time_major_dense(current)
        membrane = torch.empty_like(spikes)
        steps, n = x.shape[0], math.prod(x.shape[1:])
        block, options = _launch_config(n, x.device)
        if x.numel():
            fwd, _ = kernels()
            with _device_guard(x):
                fwd[(-(-n // block),)](
                    x, spikes, membrane, steps, n, beta, threshold, reset_by, surrogate.slope,
                    SURROGATE=_SURROGATE_IDS[type(surrogate)], MODE=_MODE_IDS[mode],
                    RESET=_RESET_IDS[reset], BLOCK=block, **options,
                )
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no load
        if reset == "subtract":
            ctx.save_for_backward(membrane)
        else:
            ctx.save_for_backward(membrane, spikes)
        ctx.beta, ctx.threshold, ctx.surrogate, ctx.mode = beta, threshold, surrogate, mode
        ctx.reset, ctx.reset_by = reset, reset_by
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):  # noqa: ANN001
        from sast.kernels.triton_kernels import kernels

        if grad_spikes is None and grad_membrane is None:
            return None, None, None, None, None, None, None
        membrane = ctx.saved_tensors[0]
        spikes = ctx.saved_tensors[1] if ctx.reset == "zero" else membrane  # unread if subtract
        gs = None if grad_spikes is None else _like(grad_spikes, membrane)
        gu = None if grad_membrane is None else _like(grad_membrane, membrane)
        grad_current = torch.empty_like(membrane)
        steps, n = membrane.shape[0], math.prod(membrane.shape[1:])
        block, options = _launch_config(n, membrane.device)
        if membrane.numel():
            _, bwd = kernels()
            with _device_guard(membrane):
                bwd[(-(-n // block),)](
                    membrane if gs is None else gs, membrane if gu is None else gu,
                    membrane, spikes, grad_current, steps, n, (steps - 1) * n,
                    ctx.beta, ctx.threshold, ctx.reset_by, ctx.surrogate.slope,
                    SURROGATE=_SURROGATE_IDS[type(ctx.surrogate)], MODE=_MODE_IDS[ctx.mode],
                    RESET=_RESET_IDS[ctx.reset], HAS_GS=gs is not None, HAS_GU=gu is not None,
                    BLOCK=block, **options,
                )
        return grad_current, None, None, None, None, None, None


def lif_scan_triton(
    current: Tensor,
    beta: float = 0.9,
    threshold: float = 1.0,
    surrogate: str | Surrogate = "sigmoid",
    mode: str = "surrogate",
    reset: str = "subtract",
    reset_before_leak: bool = False,
) -> tuple[Tensor, Tensor]:
    """:func:`sast.lif_scan` on the Triton kernels: same dynamics, same gradient.

    ``current`` is a float32, float16 or bfloat16 tensor ``[T, B, ...]`` on a CUDA device (or
    on the CPU under ``TRITON_INTERPRET=1``); β and ϑ are Python numbers; ``surrogate`` is a
    built-in family, by name or instance. Returns ``(spikes, membrane)`` in the dtype of
    ``current`` and in its memory layout when that is dense with time outermost (contiguous,
    or channels-last per step), contiguous otherwise. First-order gradients only.
    """
    check_current(current)
    check_spike_mode(mode)
    check_reset(reset)
    if isinstance(beta, Tensor) or isinstance(threshold, Tensor):
        raise TypeError("lif_scan_triton takes beta and threshold as Python numbers")
    if current.dtype not in DTYPES:
        raise TypeError(f"lif_scan_triton takes {DTYPES}, got {current.dtype}")
    sg = get_surrogate(surrogate)
    if type(sg) not in _SURROGATE_IDS:
        raise TypeError(f"lif_scan_triton has kernels for the built-in surrogates only, not "
                        f"{type(sg).__name__}")
    if not triton_available():
        raise RuntimeError("lif_scan_triton needs Triton (pip install 'sast[cuda]')")
    beta, threshold = float(beta), float(threshold)
    reset_by = beta * threshold if reset_before_leak else threshold
    return _TritonLIFScan.apply(current, beta, threshold, reset_by, sg, mode, reset)
