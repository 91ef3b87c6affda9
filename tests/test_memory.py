"""Per-run peak memory: an earlier, larger allocation in the same process does not count."""

import sys

import numpy as np
import pytest

from sast.memory import PeakMemory, _vm_kib


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM reset is Linux-only")
def test_peak_memory_is_measured_from_the_reset():
    big = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    big += 1
    del big
    peak_before_reset = (_vm_kib("VmHWM") or 0) / 1024
    memory = PeakMemory("cpu")
    if memory.scope != "rss-since-run-start":
        pytest.skip("this kernel does not let a process reset its peak RSS (clear_refs)")
    before = memory.peak_mb()
    small = np.ones(50 * 2**20 // 8)
    small += 1
    after = memory.peak_mb()
    del small
    assert after - before == pytest.approx(50, abs=15)
    # the 300 MiB allocated before the reset is not in the peak
    assert after < peak_before_reset - 200


def test_scope_names_what_was_measured():
    assert PeakMemory("cpu").scope in ("rss-since-run-start", "process")
