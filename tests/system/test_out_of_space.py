"""A run whose writes start failing (a full disk, simulated with a file-size limit) stops with
an error naming the file, and keeps every earlier checkpoint and result intact."""

import resource
import signal
import subprocess
import sys

import pytest

from sast.cli import main
from sast.runs.folder import RunFolder, load_checkpoint, read_json

TRAIN = ["train", "--method", "surrogate", "--max-train-samples", "64", "--hidden", "8",
         "--time-bins", "4", "--batch-size", "32", "--no-progress"]


def limited(max_bytes):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return preexec


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="no file-size limit here")
def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_last_one(tmp_path):
    run = tmp_path / "run"
    assert main([*TRAIN, "--epochs", "1", "--out", str(run)]) == 0
    size = (run / "checkpoint.pt").stat().st_size
    done = subprocess.run([sys.executable, "-m", "sast.cli", *TRAIN, "--epochs", "3", "--out",
                           str(run), "--resume"], capture_output=True, text=True, timeout=300,
                          preexec_fn=limited(size // 2))
    assert done.returncode == 2
    assert f"cannot write {run / 'checkpoint.pt'}: File too large" in done.stderr
    assert "Traceback" not in done.stderr
    status = read_json(run / "status.json")
    assert status["status"] == "failed" and "File too large" in status["message"]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1  # the last good one, whole
    assert not list(run.glob(".*.tmp"))
    # with room again, the run resumes from that checkpoint and finishes
    assert main([*TRAIN, "--epochs", "3", "--out", str(run), "--resume"]) == 0
    assert [r["epoch"] for r in RunFolder(run).read_metrics()] == [1, 2, 3]
