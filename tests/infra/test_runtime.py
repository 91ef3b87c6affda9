"""Process tuning: flushed denormals and large blocks kept on glibc's heap."""

import json
import os
import subprocess
import sys

import pytest
import torch

from sast.infra.runtime import tune_process

PROBE = """
import ctypes, json, resource, torch
from sast.infra.runtime import tune_process
applied = tune_process()
tiny = torch.tensor([1e-20]) * torch.tensor([1e-20])      # 1e-40 is subnormal in float32
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
faults = []
for _ in range(3):                                          # 64 MiB, above glibc's mmap limit
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 << 20)
    libc.memset(block, 1, 64 << 20)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "tiny": float(tiny), "faults": faults}))
"""


def probe(tuning: str) -> dict:
    env = {**os.environ, "SAST_PROCESS_TUNING": tuning}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_tuned_process_flushes_denormals_and_reuses_large_blocks():
    tuned, plain = probe("1"), probe("0")
    assert tuned["applied"] == {"flush_denormal": True, "keep_heap": True}
    assert plain["applied"] == {"flush_denormal": False, "keep_heap": False}
    assert tuned["tiny"] == 0.0 and plain["tiny"] > 0.0
    pages = 64 * 2**20 // 4096
    # untuned, every 64 MiB block is a fresh mmap, faulted in page by page; tuned, the freed
    # block is reused
    assert min(plain["faults"][1:]) > pages // 2
    assert max(tuned["faults"][1:]) < pages // 10


def flushes() -> bool:
    return float(torch.tensor([1e-20]) * torch.tensor([1e-20])) == 0.0


def test_denormal_mode_is_set_again_after_other_code_changed_it(monkeypatch):
    monkeypatch.delenv("SAST_PROCESS_TUNING", raising=False)
    was = flushes()
    try:
        tune_process()
        torch.set_flush_denormal(False)
        assert not flushes()
        assert tune_process()["flush_denormal"] and flushes()
    finally:
        torch.set_flush_denormal(was)
