"""Peak memory of one run, measured from the run's own start.

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the start of
  the run (tensors PyTorch allocated; the caching allocator's reserve is not counted).
- CPU on Linux: the process's peak resident set size (``VmHWM``), reset at the start of the
  run by writing ``5`` to ``/proc/self/clear_refs`` — so a sweep worker that ran other runs
  before, or decoded a dataset, does not carry their peak into this one. The run's own data
  loading and evaluation count; memory held from before the run (the interpreter, PyTorch,
  earlier runs' caches) counts too where it is still resident.
- CPU elsewhere: the process's lifetime peak RSS (``getrusage``), which cannot be reset;
  ``scope`` then says ``"process"`` and the figure is an upper bound of the run's own.
"""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _vm_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """The peak memory of whatever runs between :meth:`reset` (called on construction) and
    :meth:`peak_mb`, in MiB; :attr:`scope` names what was measured."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.scope = ""
        self.reset()

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.scope = "cuda-allocated"
            return
        try:
            _CLEAR_REFS.write_text("5")
            self.scope = "rss-since-run-start" if _vm_kib("VmHWM") is not None else "process"
        except OSError:
            self.scope = "process"

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.scope == "rss-since-run-start":
            kib = _vm_kib("VmHWM")
            if kib is not None:
                return kib / 1024
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
