"""Does the training step slow down as training goes on, and do flushed denormals stop it?

The N-MNIST MLP (2312 → 256 LIF → 10 leaky readout, T = 20, batch 128, sigmoid surrogate
k = 5, Adam 1e-3) trains for ``--steps`` steps on one fixed batch of random events (``--data
random``, as a step-time benchmark feeds it) or on the built-in synthetic N-MNIST data, once with
``torch.set_flush_denormal(False)`` and once with ``True``, each in a fresh process (glibc's
large blocks kept on the heap in both), in ``--rounds`` alternating rounds. Per step it records
the step's thread CPU time (one torch thread, so other load on the machine inflates it little)
and the share of subnormal floats (0 < |x| < 2⁻¹²⁶) in the gradient of the loss with respect to
the hidden LIF layer's input current: the spikes' surrogate derivative k·σ(1 − σ) underflows
there for membranes far below threshold.

Usage: ``python benchmarks/bench_denormal.py [--steps 60] [--rounds 2] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SMALLEST_NORMAL = 1.1754943508222875e-38


def batches(data: str):  # noqa: ANN201
    """Endless (frames[B, T, P, H, W], labels): the synthetic N-MNIST training part shuffled by
    epoch, or (``random``) one fixed batch of random labels and event counts (Bernoulli(0.1)
    events of 1–3 counts each, as ``bench_peers.py`` feeds its nets)."""
    import torch

    from sast.config import RunConfig
    from sast.runs.splits import prepare_data
    from sast.training.epoch import batch_loader, epoch_generator

    if data == "random":
        g = torch.Generator().manual_seed(0)
        shape = (128, 20, 2, 34, 34)
        frames = ((torch.rand(shape, generator=g) < 0.1)
                  * torch.randint(1, 4, shape, generator=g)).to(torch.uint8)
        labels = torch.randint(0, 10, (128,), generator=g)
        while True:
            yield frames, labels
    train = prepare_data(RunConfig(dataset="synthetic-nmnist", time_bins=20)).train
    epoch = 0
    while True:
        yield from batch_loader(train, 128, epoch_generator(0, epoch), True)
        epoch += 1


def worker(flush: bool, steps: int, data: str) -> dict:
    import torch
    from torch import nn

    from sast.data import time_first
    from sast.infra.runtime import _keep_heap
    from sast.models import build_model

    _keep_heap()
    torch.set_flush_denormal(flush)
    torch.set_num_threads(1)
    source = batches(data)
    torch.manual_seed(0)
    model = build_model("nmnist-mlp", slope=5.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lif = model[2]
    shares: list[float] = []

    def record(grad: torch.Tensor) -> None:
        g = grad.abs()
        shares.append(float(((g > 0) & (g < SMALLEST_NORMAL)).float().mean()))

    times: list[float] = []
    for _ in range(steps):
        frames, labels = next(source)
        x = time_first(frames)
        t0 = time.thread_time()
        opt.zero_grad(set_to_none=True)
        current = model[1](model[0](x))
        current.register_hook(record)
        logits = model[3](lif(current))
        nn.functional.cross_entropy(logits, labels).backward()
        opt.step()
        times.append(time.thread_time() - t0)
    return {"flush": flush, "times_ms": [1e3 * t for t in times], "subnormal_share": shares}


def summarise(rows: list[dict], steps: int) -> str:
    early, late = slice(0, 10), slice(max(10, steps - 20), steps)
    lines = ["| flush denormals | step time, steps 1–10 (ms) | step time, last 20 steps (ms) | "
             "subnormal share of ∂L/∂I, first step | last step |", "|---|---|---|---|---|"]
    for flush in (False, True):
        mine = [r for r in rows if r["flush"] == flush]
        first = statistics.median(statistics.median(r["times_ms"][early]) for r in mine)
        last = statistics.median(statistics.median(r["times_ms"][late]) for r in mine)
        lines.append(f"| {'on' if flush else 'off'} | {first:.1f} | {last:.1f} | "
                     f"{100 * mine[0]['subnormal_share'][0]:.2f} % | "
                     f"{100 * mine[0]['subnormal_share'][-1]:.2f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", choices=["synthetic", "random"], default="random",
                        help="synthetic N-MNIST, or one fixed batch of random events")
    parser.add_argument("--json", help="write every step's time and subnormal share here")
    parser.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker == "on", args.steps, args.data)))
        return
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(args.rounds):
        for flag in ("off", "on"):
            cmd = [sys.executable, __file__, "--worker", flag, "--steps", str(args.steps),
                   "--data", args.data]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(summarise(rows, args.steps))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f)


if __name__ == "__main__":
    main()
