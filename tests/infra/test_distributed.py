"""One run on two processes (gloo on CPU) is the one-process run with the same global batch."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler

from sast.config import RunConfig
from sast.infra import distributed
from sast.runs.folder import read_json
from sast.runs.load import make_model
from sast.runs.splits import prepare_data
from sast.training.epoch import batch_loader, epoch_generator
from sast.training.loop import fit

SRC = Path(__file__).resolve().parents[2] / "src"
# 60 training samples in global batches of 16: three full batches and one of 12 per epoch.
# Two processes sum the gradient in another order than one, so the runs differ by rounding,
# and what the optimiser does with rounding decides the tolerance: plain SGD at a stable
# learning rate keeps it at ~1e-7. (Adam divides each coordinate by its own gradient scale and
# turns rounding where a gradient is ~0 into steps of up to ~lr: ~1e-5 after these 8 steps,
# growing with more; SGD at lr 0.05 with this ρ is unstable and amplifies rounding tenfold a
# step, even between two orders of summation within one process.)
SMALL = dict(max_train_samples=60, hidden=(16,), time_bins=6, batch_size=16, epochs=2,
             eval_batch_size=512, val_fraction=0.03, device="cpu", optimizer="sgd", lr=0.01)
SAM_CASES = {"sast-same": dict(method="sast", sam_policy="same"),
             "sast-independent": dict(method="sast", sam_policy="independent")}
CLI_CASE = {"method": "surrogate"}
CLI_ARGS = ["--method", "surrogate", "--max-train-samples", "60", "--hidden", "16",
            "--time-bins", "6", "--batch-size", "16", "--epochs", "2", "--eval-batch-size",
            "512", "--val-fraction", "0.03", "--device", "cpu", "--optimizer", "sgd",
            "--lr", "0.01"]
ATOL = 1e-5


def quiet(*_):
    pass


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def _assert_same_run(one: Path, two: Path) -> float:
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=ATOL, rtol=0)
    timing_a, timing_b = (read_json(r / "final.json")["timing"] for r in (one, two))
    assert timing_a["grad_evals_total"] == timing_b["grad_evals_total"]
    metrics = [[json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
               for r in (one, two)]
    for ra, rb in zip(*metrics, strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-5)
        assert rb["train_accuracy"] == pytest.approx(ra["train_accuracy"])
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _rank_main(out: Path) -> None:
    """One rank of the two that the test starts with torchrun (this file is its script)."""
    torch.set_num_threads(1)
    # unequal blocks (a last partial batch): g = Σ n_r·g_r / Σ n_r, the full batch's gradient
    with distributed.process_group(torch.device("cpu")) as ctx:
        rank = ctx.rank
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(4, 5, generator=gen), torch.randint(0, 3, (4,), generator=gen)
        model = torch.nn.Linear(5, 3)
        distributed.broadcast_model(model)
        full = torch.autograd.grad(
            torch.nn.functional.cross_entropy(model(x), y), list(model.parameters()))
        rows = slice(0, 3) if rank == 0 else slice(3, 4)
        torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
        distributed.average_gradients(model, len(y[rows]))
        for p, g in zip(model.parameters(), full, strict=True):
            torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)
    # SAM, both policies, through the Python API
    for name, changes in SAM_CASES.items():
        final = fit(RunConfig(**SMALL, **changes), out / name, progress=False, log=quiet)
        assert (final != {}) == (rank == 0)
    # the plain method through the command line, `python -m sast train ...`
    sys.argv = ["sast", "train", "--out", str(out / "cli"), "--no-progress", *CLI_ARGS]
    try:
        runpy.run_module("sast", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        assert done.code == 0, done.code


def test_two_processes_train_the_one_process_run(tmp_path):
    for name, changes in {**SAM_CASES, "cli": CLI_CASE}.items():  # also fills the frame cache
        fit(RunConfig(**SMALL, **changes), tmp_path / "one" / name, progress=False, log=quiet)

    # `torchrun --nproc-per-node 2` running this file: each rank runs _rank_main
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", __file__, str(tmp_path / "two")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("final.json") == 1  # rank 0 alone reports

    train = prepare_data(RunConfig(**SMALL), progress=False).train
    init = make_model(RunConfig(**SMALL), train.input_shape, train.n_classes).state_dict()
    for name in [*SAM_CASES, "cli"]:
        one, two = tmp_path / "one" / name, tmp_path / "two" / name
        diff = _assert_same_run(one, two)
        print(f"{name}: max |w_2 - w_1| = {diff:.2e}")
        moved = max(float((_weights(one)[k] - init[k]).abs().max()) for k in init)
        assert moved > 100 * ATOL  # training moved the weights far beyond the tolerance
        assert read_json(two / "env.json")["world_size"] == 2
        assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


def test_each_rank_takes_its_block_of_one_global_batch(tmp_path):
    splits = prepare_data(RunConfig(**SMALL), progress=False)
    data = splits.train
    for stream in (0, 1):  # the first minibatches, and the independent policy's second ones
        whole = list(batch_loader(data, 16, epoch_generator(0, 3, stream)).sampler)
        ranks = [list(batch_loader(data, 16, epoch_generator(0, 3, stream),
                                   shard=(r, 2)).sampler) for r in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) == len(whole) == 4
        for batch, a, b in zip(whole, *ranks, strict=True):
            assert not set(a) & set(b)
            assert a + b == batch and len(a) == len(b)
    # a last batch of 3 on 2 ranks: blocks of 2 and 1; a last batch of 1: skipped by both
    assert [distributed.shard([7, 8, 9], r, 2) for r in (0, 1)] == [[7, 8], [9]]
    for n, kept in ((35, 3), (33, 2)):
        batches = BatchSampler(range(n), 16, drop_last=False)
        sharded = [distributed.ShardedBatches(batches, r, 2) for r in (0, 1)]
        assert [len(s) for s in sharded] == [kept, kept]
        assert [len(list(s)) for s in sharded] == [kept, kept]
        covered = sorted(i for s in sharded for b in s for i in b)
        assert covered == list(range(n if kept == 3 else 32))


def test_batch_size_must_split_equally():
    ctx = distributed.Context(0, 3, 0, torch.device("cpu"), "gloo")
    with pytest.raises(ValueError, match=r"batch_size \(--batch-size\) 16 .* divisible .* 3"):
        ctx.check_batch_size(16)
    ctx.check_batch_size(15)


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
