"""An epoch of N-MNIST frames from the frame cache vs decoded from the .bin files.

Side by side, in one process, medians over repetitions:

- decode: read and decode every .bin file, bin into T frames, then walk the batches;
- cached: open the cache entry (memory-mapped) and walk the same batches, unpacking the
  nibble-packed counts of each batch.

It also reports the entry's size on disk and its projection to the full release (70 000
samples). Usage: ``python benchmarks/bench_cache.py [--root ../shared/data/nmnist] [--T 20]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import sast.data.cache as cache_mod
from sast.data import load_frames
from sast.data.events import eventset_to_frames
from sast.data.nmnist import load_nmnist_files, nmnist_index

FULL_RELEASE = 70_000


def walk(frames: torch.Tensor | None, frameset, batch: int) -> int:  # noqa: ANN001
    """Produce every uint8 batch of an epoch, as the training loader does."""
    total = 0
    n = len(frameset) if frameset is not None else frames.shape[0]
    for start in range(0, n, batch):
        if frameset is not None:
            x, _ = frameset.batch(slice(start, start + batch))
        else:
            x = frames[start:start + batch]
        total += x.numel()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist"
    parser.add_argument("--root", type=Path, default=default_root)
    parser.add_argument("--T", type=int, default=20)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    paths, labels = nmnist_index(args.root, "train")
    with tempfile.TemporaryDirectory() as cache_dir:
        t0 = time.perf_counter()
        load_frames("nmnist", "train", args.T, data_root=args.root, cache_dir=cache_dir)
        build = time.perf_counter() - t0
        entry = next((Path(cache_dir) / "frames").iterdir())
        disk = sum(f.stat().st_size for f in entry.iterdir())

        def decode() -> None:
            events = load_nmnist_files(paths, labels, progress=False)
            frames = torch.from_numpy(eventset_to_frames(events, args.T, dtype=np.uint8))
            walk(frames, None, args.batch)

        def cached() -> None:
            cache_mod._verified.clear()  # include the checksum a new process does once
            fs = load_frames("nmnist", "train", args.T, data_root=args.root,
                             cache_dir=cache_dir)
            walk(None, fs, args.batch)

        times: dict[str, list[float]] = {"decode": [], "cached": []}
        for _ in range(args.reps):
            for name, fn in (("decode", decode), ("cached", cached)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(paths)
    print(f"N-MNIST train, {n} files, T={args.T}, batch {args.batch} (median of {args.reps})")
    print(f"  decode + bin + batches   {med['decode']:7.3f} s   {n / med['decode']:9.0f} samples/s")
    print(f"  cache  + batches         {med['cached']:7.3f} s   {n / med['cached']:9.0f} samples/s")
    print(f"  cached epoch is {med['decode'] / med['cached']:.1f}× faster")
    print(f"  cache entry {disk / 2**20:.1f} MiB on disk; {FULL_RELEASE} samples → "
          f"{disk / n * FULL_RELEASE / 2**30:.2f} GiB")
    print(f"  building the entry (decode, bin, pack, checksum, write) took {build:.2f} s; "
          f"{FULL_RELEASE} samples → {build / n * FULL_RELEASE:.0f} s")


if __name__ == "__main__":
    main()
