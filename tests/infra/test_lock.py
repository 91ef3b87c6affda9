"""One process per run or sweep folder."""

import os
import signal
import subprocess
import sys
import time

import pytest

from sast.config import RunConfig
from sast.infra.lock import FolderInUse, folder_lock
from sast.protocol.evaluate import evaluate_run
from sast.training.loop import fit

TINY = RunConfig(method="surrogate", epochs=1, max_train_samples=32, hidden=(8,), time_bins=4)


def test_a_second_trainer_or_evaluator_is_refused_with_the_holder_named(tmp_path):
    run = tmp_path / "run"
    fit(TINY, run, progress=False, log=lambda *_: None)
    with folder_lock(run, "run folder"):
        with pytest.raises(FolderInUse, match=rf"run folder {run} is in use by another sast "
                                              rf"process \(pid {os.getpid()} on "):
            fit(TINY.replace(epochs=2), run, resume=True, progress=False, log=lambda *_: None)
        with pytest.raises(FolderInUse, match="wait for it to finish or stop it"):
            evaluate_run(run, "cpu")
    evaluate_run(run, "cpu")  # released


def test_a_second_sweep_process_is_refused(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("grid:\n  method: surrogate\n  epochs: 1\n  max_train_samples: 32\n"
                    "  hidden: [8]\n  time_bins: 4\n")
    out = tmp_path / "sweep"
    with folder_lock(out, "sweep folder"):
        done = subprocess.run([sys.executable, "-m", "sast.cli", "sweep", str(grid), "--out",
                               str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"sweep folder {out} is in use by another sast process (pid {os.getpid()}" \
        in done.stderr
    assert not (out / "runs").exists()  # nothing was trained


def test_the_lock_dies_with_its_holder_even_after_kill_9(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sast.infra.lock import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.time() + 10
    while True:
        try:
            with folder_lock(tmp_path):
                break
        except FolderInUse:
            assert time.time() < deadline
            time.sleep(0.05)
