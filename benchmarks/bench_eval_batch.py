"""Evaluation batch size on a CPU: 256 samples per batch vs 32 (the default).

Side by side, in one process, interleaved, medians over repetitions, on the regime's conv net
(``nmnist-conv``, 2→16→32, T = 20) and random event-count frames of N-MNIST's shape:

- ``evaluate_mode``: the plain pass (accuracy and NLL), as robustness, threshold calibration
  and temperature fitting use it;
- ``collect_outputs``: the recorded pass of the clean protocol (membranes, firing rates,
  margin histograms).

Both batch sizes give the same logits up to float rounding (tests/test_protocol.py).

Usage: ``python benchmarks/bench_eval_batch.py [--n 359] [--reps 3] [--arch nmnist-conv]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sast.data import FrameSet
from sast.evaluation.accuracy import collect_outputs, evaluate_mode
from sast.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="nmnist-conv")
    parser.add_argument("--n", type=int, default=359,
                        help="samples (synthetic N-MNIST's test part)")
    parser.add_argument("--T", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", default="256,32")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(args.n, args.T, 2, 34, 34, generator=g) < 0.03).to(torch.uint8)
    data = FrameSet(frames, torch.randint(0, 10, (args.n,), generator=g), 10)
    torch.manual_seed(0)
    model = build_model(args.arch, time_bins=args.T)
    passes = {"evaluate_mode": lambda bs: evaluate_mode(model, data, "hard", "cpu", bs),
              "collect_outputs": lambda bs: collect_outputs(model, data, "hard", "cpu", bs)}
    times: dict[tuple[str, int], list[float]] = {(p, s): [] for p in passes for s in sizes}
    for name, run in passes.items():
        run(sizes[-1])  # warm-up
        for _ in range(args.reps):
            for size in sizes:
                start = time.perf_counter()
                run(size)
                times[name, size].append(time.perf_counter() - start)
    print(f"{args.arch}, {args.n} samples, T = {args.T}, {torch.get_num_threads()} threads, "
          f"median of {args.reps}")
    for name in passes:
        medians = {s: statistics.median(times[name, s]) for s in sizes}
        cells = "  ".join(f"batch {s}: {m:.2f} s" for s, m in medians.items())
        ratio = medians[sizes[0]] / medians[sizes[-1]]
        print(f"  {name:16s} {cells}  → {ratio:.1f}× faster at batch {sizes[-1]}")


if __name__ == "__main__":
    main()
