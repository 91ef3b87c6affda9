"""A robustness evaluation's corrupted frames: the split decoded once vs once per (level, seed).

Side by side, in one process, interleaved, medians over repetitions, for the protocol's default
grid (event drop p ∈ {0.1, …, 0.9}, 3 corruption seeds: 27 corrupted copies of the test part):

- per level: ``load_frames(..., corruption=EventDrop(p), corruption_seed=s)`` for every
  (p, s), which reads and decodes the split's files each time, then takes the test rows
  (what ``sast evaluate --robustness`` did before the events were kept);
- decoded once: ``load_events`` once, then ``DecodedSplit.frames`` per (p, s) — corruption
  and binning only (what it does now).

Both give identical frames (checked here on the first pair, and in tests/test_selection.py).
The model's own evaluation time, the same in both, is not included.

Usage: ``python benchmarks/bench_robustness.py [--root ../shared/data/nmnist] [--reps 3]``
(real N-MNIST files with no Test/ folder: the test part is carved out of Train/, as a run does),
or ``--dataset synthetic-nmnist`` for the built-in data.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sast.config import RunConfig
from sast.data import FrameSet, load_frames
from sast.data.corruptions import EventDrop
from sast.data.registry import load_events
from sast.evaluation.accuracy import DROP_LEVELS
from sast.runs.splits import prepare_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist"
    parser.add_argument("--dataset", default="nmnist", choices=("nmnist", "synthetic-nmnist"))
    parser.add_argument("--root", type=Path, default=default_root)
    parser.add_argument("--T", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    root = str(args.root) if args.dataset == "nmnist" else None
    jobs = [(p, s) for p in DROP_LEVELS if p > 0 for s in range(args.seeds)]
    with tempfile.TemporaryDirectory() as cache_dir:
        cfg = RunConfig(dataset=args.dataset, data_root=root, time_bins=args.T,
                        cache_dir=cache_dir)
        plan = prepare_data(cfg).plan
        source, rows = plan.test.source, plan.test.rows

        def per_level() -> list[FrameSet]:
            out = []
            for p, s in jobs:
                frames = load_frames(args.dataset, source, args.T, data_root=root,
                                     cache_dir=cache_dir, corruption=EventDrop(p),
                                     corruption_seed=s)
                out.append(frames if rows is None else frames.subset(rows))
            return out

        def decoded_once() -> list[FrameSet]:
            decoded = load_events(args.dataset, source, root, cache_dir)
            if rows is not None:
                decoded = decoded.subset(rows)
            return [decoded.frames(args.T, corruption=EventDrop(p), corruption_seed=s)
                    for p, s in jobs]

        variants = {"per level": per_level, "decoded once": decoded_once}
        times: dict[str, list[float]] = {name: [] for name in variants}
        results = {}
        for _ in range(args.reps):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - t0)
        a, b = (results[n][0].batch(slice(None))[0] for n in variants)
        assert torch.equal(a, b), "the two paths gave different frames"
        n = len(results["decoded once"][0])
        print(f"{args.dataset}, test part of {n} samples ({source} split"
              f"{', carved' if rows is not None else ''}), T = {args.T}, "
              f"{len(jobs)} corrupted copies, {args.reps} repetitions (medians):")
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, median in medians.items():
            print(f"  {name:<13} {median:7.2f} s")
        print(f"  speed-up      {medians['per level'] / medians['decoded once']:7.1f}×")


if __name__ == "__main__":
    main()
