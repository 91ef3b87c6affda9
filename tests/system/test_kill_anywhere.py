"""Kill anywhere: a run SIGKILLed at any moment and resumed ends bit for bit where an
uninterrupted run ends; a sweep killed mid-way, even while it rewrites its results table, ends
with the same table.

Each trial runs ``sast`` in a child process that pauses at a chosen point — inside an epoch,
halfway through writing a checkpoint, during the final evaluation, halfway through rewriting
``results.jsonl`` — and tells the parent, which then SIGKILLs its whole process group; then at
seeded random moments. The child is started again with ``--resume`` (or the sweep re-run)
until it finishes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sast.runs.folder import read_json

TRAIN = ["--method", "sast", "--rho", "0.1", "--epochs", "3", "--max-train-samples", "96",
         "--hidden", "8", "--time-bins", "4", "--batch-size", "32", "--lr-schedule", "cosine",
         "--no-progress"]

# The child: patches one point of sast to announce itself (a marker file) and hang there.
CHILD = r"""
import os, sys, time
from pathlib import Path
point, marker = os.environ["KILL_POINT"], Path(os.environ["KILL_MARKER"])

def hang():
    marker.write_text(str(os.getpid()))
    time.sleep(600)

import sast.infra.atomicio as atomicio
import sast.training.loop as train
import sast.training.steps as steps
if point == "epoch":
    real = steps.KIND_STEPS["exact"]
    calls = {"n": 0}
    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == int(os.environ["KILL_STEP"]):
            hang()
        return real(*args, **kwargs)
    steps.KIND_STEPS["exact"] = step
elif point in ("checkpoint", "results"):
    real_write = atomicio.atomic_write
    name = "checkpoint.pt" if point == "checkpoint" else "results.jsonl"
    seen = {"n": 0}
    def write(path, writer):
        if Path(path).name == name:
            seen["n"] += 1
            if seen["n"] == int(os.environ["KILL_STEP"]):
                def half(fh):
                    writer(fh)
                    fh.flush()
                    fh.truncate(max(1, fh.tell() // 2))
                    fh.flush()
                    hang()
                return real_write(path, half)
        return real_write(path, writer)
    atomicio.atomic_write = write
elif point == "final":
    def final(*args, **kwargs):
        hang()
    train.final_evaluation = final
from sast.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_child(args, point, step, marker, cwd):
    env = {**os.environ, "KILL_POINT": point, "KILL_STEP": str(step),
           "KILL_MARKER": str(marker)}
    marker.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=cwd, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.time() + 240
    while not marker.exists() and child.poll() is None:
        assert time.time() < deadline, "the child never reached its kill point"
        time.sleep(0.02)
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return "killed"
    return "finished" if child.returncode == 0 else child.stderr.read().decode()


def same_metrics(a, b):
    """The metrics logs agree in everything but wall-clock time and memory."""
    timing = ("epoch_time_s", "step_time_s_median", "peak_memory_mb", "peak_memory_scope")

    def rows(folder):
        lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]

    return rows(a) == rows(b)


@pytest.mark.slow
def test_a_run_killed_anywhere_resumes_bit_for_bit(tmp_path):
    # every run in a fresh process, like the killed ones: this process's thread count and
    # denormal mode are whatever earlier tests left
    def train(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "sast.cli", "train", *TRAIN, *args], cwd=tmp_path,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    train("--out", str(tmp_path / "straight"))
    run, marker = tmp_path / "killed", tmp_path / "marker"
    # (kill point, which occurrence): mid-epoch steps, half-written checkpoints, final evaluation
    plan = [("epoch", 2), ("checkpoint", 1), ("epoch", 3), ("checkpoint", 2), ("final", 1)]
    outcomes = []
    for i, (point, step) in enumerate(plan):
        args = ["train", *TRAIN, "--out", str(run)] + (["--resume"] if i else [])
        outcomes.append(run_child(args, point, step, marker, tmp_path))
    assert outcomes == ["killed"] * len(plan)
    # then at random moments (seeded delays): wherever they fall, or after the run finished
    for delay in np.random.default_rng(0).uniform(0.5, 6.0, size=4):
        child = subprocess.Popen([sys.executable, "-m", "sast.cli", "train", *TRAIN, "--out",
                                  str(run), "--resume"], cwd=tmp_path, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    train("--out", str(run), "--resume")

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    fa, fb = (read_json(d / "final.json") for d in (tmp_path / "straight", run))
    assert fa["surrogate"] == fb["surrogate"] and fa["hard"] == fb["hard"]
    assert same_metrics(tmp_path / "straight", run)
    assert not list(run.glob(".*.tmp"))  # no half-written file was left behind


GRID = """\
grid:
  dataset: synthetic-nmnist
  method: [surrogate, sast]
  rho: 0.1
  seed: [0, 1]
  epochs: 2
  max_train_samples: 64
  hidden: [8]
  time_bins: 4
  batch_size: 32
"""


@pytest.mark.slow
def test_a_sweep_killed_while_rewriting_its_results_ends_with_the_same_table(tmp_path):
    from sast.cli import main

    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    assert main(["sweep", str(grid), "--out", str(tmp_path / "straight"), "--workers", "2"]) == 0
    out, marker = tmp_path / "killed", tmp_path / "marker"
    args = ["sweep", str(grid), "--out", str(out), "--workers", "2"]
    # killed halfway through its 3rd rewrite of results.jsonl, then after its first
    assert run_child(args, "results", 3, marker, tmp_path) == "killed"
    assert run_child(args, "results", 2, marker, tmp_path) == "killed"
    assert main(args) == 0

    def rows(folder):
        drop = ("epoch_time_s", "step_time_s", "peak_memory_mb")
        return [{k: v for k, v in json.loads(line).items() if k not in drop}
                for line in (folder / "results.jsonl").read_text().splitlines()]

    assert rows(out) == rows(tmp_path / "straight") and len(rows(out)) == 4
