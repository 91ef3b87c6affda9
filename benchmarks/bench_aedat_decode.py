"""Time ``read_aedat31`` on a synthetic AEDAT 3.1 recording the size of a DVS Gesture trial.

The file (60 MB by default, like ``user01_natural.aedat`` at 67 MB) holds polarity packets
of ``0.5..1.5 x --events-per-packet`` events with increasing timestamps, 0.1 % of events
marked invalid, and a special-event packet (type 0) after every 10th polarity packet. It is
written to a temporary folder, read ``--reps`` times, and the median time is reported as
MB/s, events/s and seconds per 60 MB. The first read warms the page cache and is not counted.

Usage: ``python benchmarks/bench_aedat_decode.py [--mb 60] [--reps 5]
[--events-per-packet 4000] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from sast.data.dvsgesture import read_aedat31

HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
PACKET = struct.Struct("<hhiiiiii")


def polarity_words(rng: np.random.Generator, n: int, t0: int) -> tuple[np.ndarray, int]:
    """``(n, 2)`` words ``[data, timestamp]`` (bit layout in ``read_aedat31``) from ``t0``."""
    x, y, p = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
    valid = rng.random(n) >= 0.001
    t = t0 + np.cumsum(rng.integers(0, 40, n))
    words = np.empty((n, 2), dtype="<u4")
    words[:, 0] = (x << 17) | (y << 2) | (p << 1) | valid
    words[:, 1] = t
    return words, int(t[-1]) if n else t0


def write_recording(path: Path, n_bytes: int, events_per_packet: int, seed: int = 0) -> int:
    """Write about ``n_bytes`` of AEDAT 3.1; returns the number of valid polarity events."""
    rng = np.random.default_rng(seed)
    chunks, size, t, n_valid = [HEADER], len(HEADER), 0, 0
    while size < n_bytes:
        n = int(rng.integers(events_per_packet // 2, 3 * events_per_packet // 2 + 1))
        words, t = polarity_words(rng, n, t)
        valid = int(np.sum(words[:, 0] & 1))
        chunks += [PACKET.pack(1, 1, 8, 4, 0, n, n, valid), words.tobytes()]
        size += PACKET.size + words.nbytes
        n_valid += valid
        if len(chunks) % 20 == 1:
            special = np.array([[1, t]] * 2, dtype="<u4")
            chunks += [PACKET.pack(0, 1, 8, 4, 0, 2, 2, 2), special.tobytes()]
            size += PACKET.size + special.nbytes
    path.write_bytes(b"".join(chunks))
    return n_valid


def time_reads(path: Path, reps: int, n_valid: int) -> list[float]:
    read_aedat31(path)
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        events = read_aedat31(path)
        seconds.append(time.perf_counter() - start)
        if len(events) != n_valid:
            raise RuntimeError(f"decoded {len(events)} events, wrote {n_valid} valid ones")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=60.0, help="file size in MB (10^6 bytes)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--events-per-packet", type=int, default=4000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.aedat"
        n_valid = write_recording(path, int(args.mb * 1e6), args.events_per_packet)
        n_bytes = path.stat().st_size
        median = statistics.median(time_reads(path, args.reps, n_valid))
    result = {
        "file_mb": n_bytes / 1e6,
        "events": n_valid,
        "events_per_packet": args.events_per_packet,
        "median_s": median,
        "mb_per_s": n_bytes / 1e6 / median,
        "events_per_s": n_valid / median,
        "s_per_60_mb": 60e6 / (n_bytes / median),
    }
    print(
        f"read_aedat31: {result['file_mb']:.1f} MB, {n_valid:,} events "
        f"(~{args.events_per_packet} per packet), median of {args.reps}: {median:.3f} s | "
        f"{result['mb_per_s']:.0f} MB/s | {result['events_per_s'] / 1e6:.1f} M events/s | "
        f"{result['s_per_60_mb']:.2f} s per 60 MB"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
