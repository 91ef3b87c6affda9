"""Decode speed of ``load_nmnist``: the real 1000-file sample and a synthetic full-size tree.

Rows of the report:

- ``real``: the 1000 real training files under ``--root``;
- ``real, per-file loop``: the same files through ``read_nmnist_file`` one by one, the way a
  per-sample reader (tonic's) works, for comparison;
- ``synthetic``: ``--files`` files of random valid events (N(4100, 600) events each, time
  steps uniform in [0, 150] µs so a file spans ~0.3 s), written to a temporary folder in the
  official layout, to extrapolate to the 70 000-file release.

Files are read from the page cache (the synthetic ones were just written; the real ones are
read once before timing), so the numbers measure decoding, not the disk. Each row is the
median of ``--reps`` runs; "70 000 files" projects the time for the full release at that rate.

Usage: ``python benchmarks/bench_nmnist_decode.py [--root DIR] [--files 20000] [--reps 5]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sast.data.nmnist import load_nmnist, nmnist_index, read_nmnist_file

FULL_RELEASE_FILES = 70_000
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist"


def write_synthetic_tree(root: Path, n_files: int, seed: int = 0, batch: int = 2000) -> int:
    """Write ``root/Train/<digit>/NNNNN.bin`` files of random valid events; return the total.

    Events are packed with the format's own rule: x, y, then ``p << 7 | t >> 16``,
    ``t >> 8 & 0xFF``, ``t & 0xFF``.
    """
    rng = np.random.default_rng(seed)
    for digit in range(10):
        (root / "Train" / str(digit)).mkdir(parents=True, exist_ok=True)
    total = 0
    for first in range(0, n_files, batch):
        counts = np.clip(rng.normal(4100, 600, min(batch, n_files - first)), 1000, 7200)
        counts = counts.astype(np.int64)
        records = random_records(rng, counts)
        ends = np.cumsum(counts) * 5
        for i, (start, stop) in enumerate(zip(ends - counts * 5, ends, strict=True)):
            index = first + i + 1
            records[start:stop].tofile(root / "Train" / str(index % 10) / f"{index:05d}.bin")
        total += int(counts.sum())
    return total


def random_records(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """Concatenated 5-byte records, timestamps non-decreasing within each file."""
    n = int(counts.sum())
    steps = rng.integers(0, 151, n)
    running = np.cumsum(steps)
    file_start = np.repeat(np.cumsum(counts) - counts, counts)
    t = running - (running[file_start] - steps[file_start])
    p = rng.integers(0, 2, n)
    columns = [rng.integers(0, 34, n), rng.integers(0, 34, n),
               (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF]
    return np.stack(columns, axis=1).astype(np.uint8).ravel()


def median_seconds(run: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_file_loop(root: Path) -> list[np.ndarray]:
    paths, _ = nmnist_index(root, "train")
    return [read_nmnist_file(path) for path in paths]


def report_row(name: str, n_files: int, n_events: int, seconds: float) -> str:
    files_s, events_s = n_files / seconds, n_events / seconds
    projected = FULL_RELEASE_FILES / files_s
    return (f"{name:<22} {n_files:>7} {n_events / 1e6:>8.1f} {seconds:>8.3f} "
            f"{files_s:>10.0f} {events_s / 1e6:>9.1f} {projected:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help="N-MNIST folder holding Train/<digit>/*.bin")
    parser.add_argument("--files", type=int, default=20_000, help="synthetic files to write")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    def load(root: Path) -> object:
        return load_nmnist(root, "train", progress=False)

    print(f"{'data':<22} {'files':>7} {'M events':>8} {'median s':>8} "
          f"{'files/s':>10} {'M ev/s':>9} {'70k files s':>10}")
    if (args.root / "Train").is_dir():
        real = load(args.root)
        n_files, n_events = len(real), len(real.events)
        print(report_row("real", n_files, n_events, median_seconds(lambda: load(args.root),
                                                                   args.reps)))
        loop = median_seconds(lambda: per_file_loop(args.root), args.reps)
        print(report_row("real, per-file loop", n_files, n_events, loop))
    else:
        print(f"(no real files at {args.root / 'Train'})")
    with tempfile.TemporaryDirectory(prefix="nmnist-bench-") as tmp:
        n_events = write_synthetic_tree(Path(tmp), args.files)
        seconds = median_seconds(lambda: load(Path(tmp)), args.reps)
        print(report_row("synthetic", args.files, n_events, seconds))


if __name__ == "__main__":
    main()
