"""Process settings that make CPU training fast, applied by ``sast`` commands and :func:`fit`.

Two settings, both process-wide and both measured in ``benchmarks/bench_peers.py`` and
``benchmarks/bench_denormal.py``:

- **Flush denormals** (``torch.set_flush_denormal(True)``): subnormal floats (|x| < 2⁻¹²⁶ ≈
  1.2·10⁻³⁸) are read and written as zero. The sigmoid surrogate's derivative k·σ(1 − σ)
  underflows into that range for membranes far below threshold, and x86 CPUs take a slow path
  for every arithmetic operation on a subnormal, so without flushing a training step slows down
  as training drives neurons below threshold. Flushing changes values only below 10⁻³⁸.
- **Keep large blocks on the heap** (glibc ``mallopt``: no ``mmap`` for large blocks, no trimming
  of the heap's top): by default glibc serves every block above 32 MiB with a fresh ``mmap``
  and returns it on ``free``, so every time-major activation tensor of a conv net is
  page-faulted in anew on every call. With the setting, freed blocks are reused; the process's
  resident memory stays at its peak instead of shrinking after it. Only on glibc (Linux); a no-op
  elsewhere.

``SAST_PROCESS_TUNING=0`` in the environment leaves the process as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_applied: dict[str, bool] | None = None


def _keep_heap() -> bool:
    """glibc: serve large blocks from the heap and never trim it; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def tune_process() -> dict[str, bool]:
    """Apply the settings above (unless ``SAST_PROCESS_TUNING=0``); returns which took effect,
    e.g. ``{"flush_denormal": True, "keep_heap": True}``. The allocator is set once per process;
    the denormal mode is set again on every call, since other code may have changed it."""
    global _applied
    if os.environ.get("SAST_PROCESS_TUNING", "1") == "0":
        return {"flush_denormal": False, "keep_heap": False}
    if _applied is None:
        _applied = {"keep_heap": _keep_heap()}
    return {"flush_denormal": bool(torch.set_flush_denormal(True)), **_applied}
