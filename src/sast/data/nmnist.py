"""N-MNIST recordings: the 5-byte ATIS event format, the ``Train``/``Test`` folder layout,
and a vectorised loader for a whole split.

File format (Orchard et al. 2015; SLAYER's ``.bs2`` files use the same one): no header,
5 bytes per event, most significant byte first::

    byte 0: x            byte 1: y
    byte 2: bit 7 = polarity (1 = ON), bits 6..0 = timestamp bits 22..16
    byte 3: timestamp bits 15..8      byte 4: timestamp bits 7..0     (t in microseconds)

Timestamp overflow, exactly as tonic's ``read_mnist_file`` honours it: an event with
``y == 240`` adds ``2**13`` µs to its own timestamp and to every later one in the same
file, then all ``y == 240`` events are dropped.

Behaviour on odd input:

- a length that is not a multiple of 5: ``ValueError`` naming the file;
- x or y outside the sensor: ``ValueError`` naming the file, the sensor size and the
  offending maximum;
- timestamps that decrease (never seen in the real recordings): the file's events are
  sorted stably by time and a ``UserWarning`` names the file, since binning and the
  first-saccade cut assume time order;
- an empty file: a sample without events (``read_nmnist_file`` and ``load_nmnist`` warn).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sast.data.events import EVENT_DTYPE, EventSet, SensorSize, _check_sensor_size

NMNIST_SENSOR_SIZE: SensorSize = (34, 34, 2)
NMNIST_READER_VERSION = 1
"""Version of the decoding rules; caches of decoded data hash it. Bump on any change."""

BYTES_PER_EVENT = 5
OVERFLOW_Y = 240
OVERFLOW_US = 1 << 13
FIRST_SACCADE_US = 100_000
"""``first_saccade_only`` keeps ``t < FIRST_SACCADE_US``, as tonic does."""

_SPLIT_FOLDERS = {"train": "Train", "test": "Test"}
_LAYOUT = "DIR/Train/<digit>/*.bin and DIR/Test/<digit>/*.bin (the unzipped Train.zip/Test.zip)"
_CHUNK_BYTES = 1 << 25  # raw bytes decoded per vectorised pass of load_nmnist (~6.7 M events)
_FIELD_OFFSET = {name: EVENT_DTYPE.fields[name][1] for name in EVENT_DTYPE.names}


def decode_nmnist(
    raw: bytes | np.ndarray,
    source: str = "<bytes>",
    sensor_size: Sequence[int] = NMNIST_SENSOR_SIZE,
) -> np.ndarray:
    """Decode the bytes of one N-MNIST ``.bin`` file into an ``EVENT_DTYPE`` array.

    See the module docstring for the format, the overflow rule and the handling of odd
    input; ``source`` names the data in errors and warnings.
    """
    buf = _as_byte_array(raw, source)
    size = _check_sensor_size(sensor_size)
    _check_lengths(np.array([len(buf)]), [source])
    out = np.empty(len(buf) // BYTES_PER_EVENT, dtype=EVENT_DTYPE)
    kept = _decode_into(buf, np.array([len(out)]), [source], size, out, first_saccade_only=False)
    return out if kept[0] == len(out) else out[: kept[0]].copy()


def read_nmnist_file(
    path: str | os.PathLike, sensor_size: Sequence[int] = NMNIST_SENSOR_SIZE
) -> np.ndarray:
    """Events of one N-MNIST ``.bin`` (or SLAYER ``.bs2``) file; warns when it is empty."""
    raw = Path(path).read_bytes()
    if not raw:
        warnings.warn(f"{os.fspath(path)} is empty: no events", stacklevel=2)
    return decode_nmnist(raw, os.fspath(path), sensor_size)


def nmnist_index(root: str | os.PathLike, split: str) -> tuple[list[Path], np.ndarray]:
    """Paths and labels of the ``.bin`` files of ``split`` (``"train"`` or ``"test"``).

    Layout: ``root/Train/<digit>/*.bin`` and ``root/Test/<digit>/*.bin``; any number of
    files per digit folder works. Files are ordered by digit, then by file name. Names
    starting with ``.`` are skipped; other entries beside the digit folders are ignored with
    a warning. ``FileNotFoundError`` names the folder when the split folder, its digit
    folders or its ``.bin`` files are missing.
    """
    split_dir = _split_dir(Path(root), split)
    paths: list[Path] = []
    labels: list[int] = []
    for digit, folder in _digit_folders(split_dir):
        names = sorted(
            entry.name
            for entry in os.scandir(folder)
            if entry.name.endswith(".bin") and not entry.name.startswith(".") and entry.is_file()
        )
        paths += [folder / name for name in names]
        labels += [digit] * len(names)
    if not paths:
        raise FileNotFoundError(
            f"no .bin files in the digit folders of {split_dir}; expected {_LAYOUT}"
        )
    return paths, np.asarray(labels, dtype=np.int64)


def load_nmnist(
    root: str | os.PathLike,
    split: str,
    first_saccade_only: bool = False,
    progress: bool = True,
    sensor_size: Sequence[int] = NMNIST_SENSOR_SIZE,
) -> EventSet:
    """Decode every file of ``split`` (see ``nmnist_index``) into one ``EventSet``.

    ``first_saccade_only`` keeps events with ``t < 100 000`` µs. Empty files give empty
    samples, with one warning.
    """
    paths, labels = nmnist_index(root, split)
    return load_nmnist_files(paths, labels, first_saccade_only, progress, sensor_size,
                             desc=f"N-MNIST {split}")


def load_nmnist_files(
    paths: Sequence[Path],
    labels: np.ndarray,
    first_saccade_only: bool = False,
    progress: bool = True,
    sensor_size: Sequence[int] = NMNIST_SENSOR_SIZE,
    desc: str = "N-MNIST",
) -> EventSet:
    """Decode the given ``.bin`` files (with their labels) into one ``EventSet``.

    The raw bytes of consecutive files, about ``_CHUNK_BYTES`` at a time, are concatenated
    and decoded in one vectorised pass, with per-file offsets so that the overflow rule
    restarts in every file.
    """
    size = _check_sensor_size(sensor_size)
    paths = list(paths)
    file_bytes = np.fromiter((os.path.getsize(p) for p in paths), np.int64, len(paths))
    _check_lengths(file_bytes, paths)
    _warn_empty(file_bytes, paths)
    out = np.empty(int(file_bytes.sum()) // BYTES_PER_EVENT, dtype=EVENT_DTYPE)
    kept = np.zeros(len(paths), dtype=np.int64)
    n_out = 0
    bar = tqdm(total=len(paths), unit="file", desc=desc, disable=not progress)
    with bar:
        for start, stop in _chunks(file_bytes, _CHUNK_BYTES):
            raw = _read_files(paths[start:stop], file_bytes[start:stop])
            counts = file_bytes[start:stop] // BYTES_PER_EVENT
            kept[start:stop] = _decode_into(
                raw, counts, paths[start:stop], size, out[n_out:], first_saccade_only
            )
            n_out += int(kept[start:stop].sum())
            bar.update(stop - start)
    events = out if n_out == len(out) else out[:n_out].copy()
    return EventSet(events, _offsets(kept), np.asarray(labels, dtype=np.int64), size)


def _as_byte_array(raw: bytes | np.ndarray, source: str) -> np.ndarray:
    if isinstance(raw, np.ndarray):
        if raw.dtype != np.uint8:
            raise TypeError(f"{source}: expected raw bytes as a uint8 array, got {raw.dtype}")
        return np.ascontiguousarray(raw).ravel()
    return np.frombuffer(raw, dtype=np.uint8)


def _check_lengths(file_bytes: np.ndarray, sources: Sequence[str | os.PathLike]) -> None:
    bad = np.flatnonzero(file_bytes % BYTES_PER_EVENT)
    if len(bad):
        more = f" ({len(bad) - 1} more files like it)" if len(bad) > 1 else ""
        raise ValueError(
            f"{os.fspath(sources[bad[0]])} is {file_bytes[bad[0]]} bytes, not a multiple of "
            f"{BYTES_PER_EVENT}: truncated or not an N-MNIST .bin file{more}"
        )


def _warn_empty(file_bytes: np.ndarray, paths: Sequence[Path]) -> None:
    empty = np.flatnonzero(file_bytes == 0)
    if len(empty):
        names = ", ".join(str(paths[i]) for i in empty[:3])
        warnings.warn(
            f"{len(empty)} empty N-MNIST files give samples without events (first: {names})",
            stacklevel=3,
        )


def _split_dir(root: Path, split: str) -> Path:
    if split not in _SPLIT_FOLDERS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_FOLDERS)}, got {split!r}")
    split_dir = root / _SPLIT_FOLDERS[split]
    if not split_dir.is_dir():
        hint = ""
        if root.name in _SPLIT_FOLDERS.values():
            hint = f" ({root} looks like a split folder itself: pass its parent)"
        raise FileNotFoundError(
            f"N-MNIST {split} split not found: {split_dir} is not a folder{hint}; "
            f"expected {_LAYOUT}"
        )
    return split_dir


def _digit_folders(split_dir: Path) -> list[tuple[int, Path]]:
    entries = [entry for entry in os.scandir(split_dir) if not entry.name.startswith(".")]
    digits = [e for e in entries if e.name in tuple("0123456789") and e.is_dir()]
    folders = sorted((int(e.name), Path(e.path)) for e in digits)
    others = sorted({e.name for e in entries} - {e.name for e in digits})
    if not folders:
        raise FileNotFoundError(
            f"{split_dir} has no digit folders 0..9 (found {others[:5] or 'nothing'}); "
            f"expected {_LAYOUT}"
        )
    if others:
        warnings.warn(
            f"{split_dir}: ignoring {len(others)} entries that are not digit folders: "
            f"{others[:5]}",
            stacklevel=3,
        )
    return folders


def _chunks(file_bytes: np.ndarray, budget: int) -> Iterator[tuple[int, int]]:
    """Consecutive file ranges ``[start, stop)`` of about ``budget`` bytes, each non-empty."""
    ends = np.cumsum(file_bytes)
    start = 0
    while start < len(file_bytes):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + budget, side="right")))
        yield start, stop
        start = stop


def _read_files(paths: Sequence[Path], file_bytes: np.ndarray) -> np.ndarray:
    """The files' bytes, concatenated into one uint8 array."""
    buf = np.empty(int(file_bytes.sum()), dtype=np.uint8)
    view = memoryview(buf)
    pos = 0
    for path, n in zip(paths, file_bytes.tolist(), strict=True):
        with open(path, "rb", buffering=0) as f:
            got = f.readinto(view[pos : pos + n])
        if got != n:
            raise OSError(f"{path} changed while being read: expected {n} bytes, read {got}")
        pos += n
    return buf


def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _decode_into(
    raw: np.ndarray,
    counts: np.ndarray,
    sources: Sequence[str | os.PathLike],
    sensor_size: SensorSize,
    out: np.ndarray,
    first_saccade_only: bool,
) -> np.ndarray:
    """Decode files concatenated in ``raw`` (``counts`` events each) into ``out[:k]``.

    Steps: unpack the records, apply the overflow rule per file, drop the markers (and
    late events when ``first_saccade_only``), check coordinates, sort any file whose
    timestamps decrease. Returns the number of events kept per file.
    """
    records = raw.reshape(-1, BYTES_PER_EVENT)
    events = out[: len(records)]
    _unpack_into(records, events)
    offsets = _offsets(counts)
    keep = None
    marker = records[:, 1] == OVERFLOW_Y
    if marker.any():
        _add_overflow(events["t"], marker, offsets)
        keep = ~marker
    if first_saccade_only:
        early = events["t"] < FIRST_SACCADE_US
        keep = early if keep is None else keep & early
    if keep is not None:
        offsets = _compact(events, keep, offsets)
        events = out[: offsets[-1]]
    _check_coordinates(events, offsets, sources, sensor_size)
    _sort_decreasing(events, offsets, sources)
    return np.diff(offsets)


def _unpack_into(records: np.ndarray, events: np.ndarray) -> None:
    """Fill ``events`` from ``[n, 5]`` uint8 records by moving bytes, not integers.

    Every ``EVENT_DTYPE`` field is little-endian, so x and y are (record byte, 0),
    p is ``byte2 >> 7`` and the int64 t is ``(byte4, byte3, byte2 & 0x7F, 0, 0, 0, 0, 0)``.
    """
    b = events.view(np.uint8).reshape(len(events), EVENT_DTYPE.itemsize)
    x, y, t, p = (_FIELD_OFFSET[name] for name in "xytp")
    b[:, x] = records[:, 0]
    b[:, y] = records[:, 1]
    b[:, [x + 1, y + 1]] = 0
    b[:, t] = records[:, 4]
    b[:, t + 1] = records[:, 3]
    np.bitwise_and(records[:, 2], 0x7F, out=b[:, t + 2])
    b[:, t + 3 : t + 8] = 0
    np.right_shift(records[:, 2], 7, out=b[:, p])


def _add_overflow(t: np.ndarray, marker: np.ndarray, offsets: np.ndarray) -> None:
    """``t += 2**13 · (markers at or before each event within its own file)``.

    The running marker count over all files, minus its value just before the file's
    first event, restarts the count in every file.
    """
    running = np.cumsum(marker)
    before_file = np.concatenate(([0], running))[offsets[:-1]]
    t += OVERFLOW_US * (running - np.repeat(before_file, np.diff(offsets)))


def _compact(events: np.ndarray, keep: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move the kept events to the front of ``events``; return the new per-file offsets."""
    kept = events[keep]
    events[: len(kept)] = kept
    return np.concatenate(([0], np.cumsum(keep)))[offsets]


def _file_of(index: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.searchsorted(offsets, index, side="right") - 1


def _check_coordinates(
    events: np.ndarray,
    offsets: np.ndarray,
    sources: Sequence[str | os.PathLike],
    sensor_size: SensorSize,
) -> None:
    if len(events) == 0:
        return
    for field, limit, axis in (("x", sensor_size[0], "width"), ("y", sensor_size[1], "height")):
        values = events[field]
        if values.max() < limit:
            continue
        f = _file_of(np.flatnonzero(values >= limit)[:1], offsets)[0]
        top = int(values[offsets[f] : offsets[f + 1]].max())
        raise ValueError(
            f"{os.fspath(sources[f])}: max {field} = {top} is outside the sensor: "
            f"sensor_size = {sensor_size} allows {field} in [0, {limit - 1}] ({axis} {limit})"
        )


def _sort_decreasing(
    events: np.ndarray, offsets: np.ndarray, sources: Sequence[str | os.PathLike]
) -> None:
    t = events["t"]
    drops = np.flatnonzero(t[1:] < t[:-1])
    if len(drops) == 0:
        return
    file_before, file_after = _file_of(drops, offsets), _file_of(drops + 1, offsets)
    files = np.unique(file_before[file_before == file_after])
    for f in files:
        segment = events[offsets[f] : offsets[f + 1]]
        segment[:] = segment[np.argsort(segment["t"], kind="stable")]
    if len(files):
        names = ", ".join(os.fspath(sources[f]) for f in files[:3])
        warnings.warn(
            f"timestamps decrease in {len(files)} file(s) ({names}); "
            "their events were sorted stably by time",
            stacklevel=4,
        )
