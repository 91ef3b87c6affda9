"""DVS128 Gesture (Amir et al., CVPR 2017) from IBM's release or from tonic's preprocessed copy.

11 gestures by 29 subjects under 5 lighting conditions, recorded by a 128 x 128 DVS.
Samples are cut per labelled gesture, timed from the gesture start, and by default
limited to the first 1.5 s and pooled to 32 x 32 (4 x 4 pixel blocks).

IBM's release, ``DvsGesture.tar.gz``, extracts to::

    DvsGesture/
        trials_to_train.txt              one recording name per line (98 recordings)
        trials_to_test.txt               (24 recordings, users 24-29)
        userNN_<lighting>.aedat          AEDAT 3.1 recording (see read_aedat31)
        userNN_<lighting>_labels.csv     one gesture per row (see read_gesture_labels)

Every CSV row becomes one sample: 1176 train and 288 test samples.

tonic's preprocessed copy, as ``tonic.datasets.DVSGesture(save_to)`` reads it
(neuromorphs/tonic, ``tonic/datasets/dvsgesture.py``; the ``DVSGesture`` folder is the
class name that ``tonic/dataset.py`` appends to ``save_to``)::

    <save_to>/DVSGesture/ibmGestureTrain/userNN_<lighting>/<label0>.npy
    <save_to>/DVSGesture/ibmGestureTest/userNN_<lighting>/<label0>.npy

Each ``.npy`` holds one whole gesture as a plain ``(N, 4)`` array with columns
``x, y, p, t`` (tonic's ``ordering``) and ``t`` in milliseconds: tonic's
``__getitem__`` multiplies column 3 by 1000 to get microseconds. The label is the
file name, ``class - 1``. There is one file per class and recording, so a class
repeated within a recording is there once (1077 train and 264 test samples). The
files do not record the CSV start time, so the first event marks the gesture start.
The stored dtype is not documented; integer and floating-point arrays are both read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sast.data.aedat import check_addresses, read_aedat31, sorted_by_time
from sast.data.events import EVENT_DTYPE, EventSet, SensorSize, make_events
from sast.data.npyfile import load_npy

DVSGESTURE_READER_VERSION = 1

GESTURE_CLASSES = (
    "hand_clapping",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_clockwise",
    "right_arm_counter_clockwise",
    "left_arm_clockwise",
    "left_arm_counter_clockwise",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other_gestures",
)
"""Class names in label order: label ``k`` is class ``k + 1`` of IBM's ``gesture_mapping.csv``."""

DVS128_SENSOR_SIZE: SensorSize = (128, 128, 2)

LABEL_DTYPE = np.dtype([("label0", "<i8"), ("start_us", "<i8"), ("end_us", "<i8")])

_INT64_MAX = (1 << 63) - 1
_LABELS_HEADER = "class,startTime_usec,endTime_usec"
_SPLIT_FILES = {"train": "trials_to_train.txt", "test": "trials_to_test.txt"}
_TONIC_FOLDERS = {"train": "ibmGestureTrain", "test": "ibmGestureTest"}
_RELEASE_LAYOUT = (
    "IBM's release: the DvsGesture/ folder of DvsGesture.tar.gz with trials_to_train.txt, "
    "trials_to_test.txt and userNN_<lighting>.aedat + userNN_<lighting>_labels.csv"
)
_TONIC_LAYOUT = (
    "tonic's copy: DVSGesture/ibmGestureTrain|ibmGestureTest/userNN_<lighting>/<label0>.npy"
)


def read_gesture_labels(path: str | os.PathLike) -> np.ndarray:
    """Gestures of one recording: a ``LABEL_DTYPE`` array ``(label0, start_us, end_us)``.

    The file has the header ``class,startTime_usec,endTime_usec`` and one row per
    gesture: class 1..11 (``label0 = class - 1``) and its start and end in
    microseconds on the recording's clock. Blank lines are ignored. ``ValueError``
    naming the file and line for a bad header or row (column count, integers,
    class range, end after start, times beyond int64), or naming the byte offset of
    text that is not UTF-8.
    """
    name = os.fspath(path)
    lines = _read_lines(path)
    if not lines or lines[0].strip() != _LABELS_HEADER:
        raise ValueError(f"{name}, line 1: expected the header {_LABELS_HEADER!r}")
    rows = [
        _parse_label_row(line, name, number)
        for number, line in enumerate(lines[1:], start=2)
        if line.strip()
    ]
    return np.array(rows, dtype=LABEL_DTYPE)


def _parse_label_row(line: str, name: str, number: int) -> tuple[int, int, int]:
    where = f"{name}, line {number}"
    fields = line.split(",")
    if len(fields) != 3:
        raise ValueError(f"{where}: expected 3 columns ({_LABELS_HEADER}), got {len(fields)}")
    try:
        cls, start, end = (int(field) for field in fields)
    except ValueError:
        raise ValueError(f"{where}: expected three integers, got {line.strip()!r}") from None
    if not 1 <= cls <= len(GESTURE_CLASSES):
        raise ValueError(f"{where}: class {cls} outside 1..{len(GESTURE_CLASSES)}")
    if start < 0 or end <= start:
        raise ValueError(f"{where}: need 0 <= startTime_usec < endTime_usec, got {start}, {end}")
    if end > _INT64_MAX:
        raise ValueError(f"{where}: endTime_usec {end} is beyond int64 microseconds")
    return cls - 1, start, end


def read_trial_list(path: str | os.PathLike) -> list[str]:
    """Recording names (``userNN_<lighting>.aedat``) listed one per line; blank lines ignored.
    ``ValueError`` naming the file (and line) for a name that is not a plain ``.aedat`` file
    name in the list's folder, or for text that is not UTF-8."""
    names = []
    for number, line in enumerate(_read_lines(path), start=1):
        name = line.strip()
        if not name:
            continue
        if not name.endswith(".aedat") or Path(name).name != name or "\\" in name or "\0" in name:
            raise ValueError(
                f"{os.fspath(path)}, line {number}: {name!r} is not an .aedat file name"
            )
        names.append(name)
    return names


def _read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark is skipped), split at line breaks
    only, so that line numbers match a text editor's."""
    try:
        return Path(path).read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{os.fspath(path)}: not UTF-8 text (byte {err.start}: {err.reason})"
        ) from None


def downsampled_size(sensor_size: Sequence[int], factor: int) -> SensorSize:
    """``(ceil(W / factor), ceil(H / factor), P)``: the sensor after ``downsample_events``."""
    width, height, n_pol = (int(s) for s in sensor_size)
    return -(-width // factor), -(-height // factor), n_pol


def downsample_events(events: np.ndarray, factor: int, sensor_size: Sequence[int]) -> np.ndarray:
    """A copy of ``events`` with ``factor x factor`` pixel blocks merged: ``x // factor``,
    ``y // factor``; the new sensor is ``downsampled_size(sensor_size, factor)``."""
    _check_factor(factor)
    events = np.asarray(events)
    if events.dtype != EVENT_DTYPE:
        raise ValueError(f"events must have dtype EVENT_DTYPE, got {events.dtype}")
    check_addresses(events, tuple(sensor_size), "downsample_events")
    out = events.copy()
    out["x"] //= factor
    out["y"] //= factor
    return out


def _check_load_arguments(split: str, window_us: int | None, downsample: int) -> None:
    _check_split(split)
    _check_window(window_us)
    _check_factor(downsample)


def _check_factor(factor: int) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"downsample factor must be an integer >= 1, got {factor!r}")


def _check_window(window_us: int | None) -> None:
    if window_us is not None and (int(window_us) != window_us or window_us <= 0):
        raise ValueError(f"window_us must be a positive number of microseconds or None, "
                         f"got {window_us!r}")


def _check_split(split: str) -> None:
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _cut(
    events: np.ndarray, start: int, end: int, window_us: int | None, factor: int
) -> np.ndarray:
    """Events with ``start <= t < min(end, start + window_us)``, timed from ``start`` and
    downsampled; ``events`` must be sorted by ``t``."""
    stop = end if window_us is None else min(end, start + int(window_us))
    lo, hi = np.searchsorted(events["t"], [start, stop], side="left")
    sample = downsample_events(events[lo:hi], factor, DVS128_SENSOR_SIZE)
    sample["t"] -= start
    return sample


def load_dvsgesture(
    root: str | os.PathLike,
    split: str,
    window_us: int | None = 1_500_000,
    downsample: int = 4,
    progress: bool = True,
) -> EventSet:
    """One sample per labelled gesture of ``split`` (``"train"`` or ``"test"``).

    ``root`` is IBM's extracted ``DvsGesture/`` folder or its parent, or tonic's copy
    (its ``save_to`` folder or the ``DVSGesture/`` folder in it; read by
    ``load_dvsgesture_tonic``). A sample holds the events with
    ``start <= t < min(end, start + window_us)`` (``window_us=None``: the whole
    gesture), ``t`` measured from ``start``, and ``x, y`` divided by ``downsample``
    (``downsample_events``; sensor ``(128 // d, 128 // d, 2)`` for ``d`` dividing 128).
    Labels are ``class - 1``. Samples come in split-file order, then CSV row order.
    """
    _check_load_arguments(split, window_us, downsample)
    layout, folder = _find_layout(Path(root), split)
    if layout == "tonic":
        return load_dvsgesture_tonic(folder, split, window_us, downsample, progress)
    trials = _release_trials(folder, split)
    samples, labels = [], []
    for recording, labels_csv in tqdm(
        trials, desc=f"DVS Gesture {split}", unit="recording", disable=not progress
    ):
        events = read_aedat31(recording)
        for label0, start, end in read_gesture_labels(labels_csv).tolist():
            samples.append(_cut(events, start, end, window_us, downsample))
            labels.append(label0)
    return EventSet.from_samples(
        samples, labels, downsampled_size(DVS128_SENSOR_SIZE, downsample)
    )


def dvsgesture_files(root: str | os.PathLike, split: str) -> list[Path]:
    """Every file that ``load_dvsgesture(root, split)`` reads (for cache fingerprints)."""
    _check_split(split)
    layout, folder = _find_layout(Path(root), split)
    if layout == "tonic":
        return [path for path, _ in _tonic_files(_tonic_split_folder(folder, split))]
    trials = _release_trials(folder, split)
    return [folder / _SPLIT_FILES[split], *(p for trial in trials for p in trial)]


def subject_of(recording: str) -> int:
    """The subject number of a recording or trial name ``userNN_<lighting>[.aedat]``."""
    head = Path(recording).name.split("_", 1)[0]
    if not (head.startswith("user") and head[4:].isascii() and head[4:].isdigit()):
        raise ValueError(f"{recording!r}: expected a recording name userNN_<lighting>")
    return int(head[4:])


def dvsgesture_subjects(root: str | os.PathLike, split: str) -> np.ndarray:
    """The subject of every sample of ``load_dvsgesture(root, split)``, in its sample order,
    read from the split file and labels CSVs (or tonic's folder names) without decoding any
    events: what a validation split groups by, so no subject sits on both sides."""
    _check_split(split)
    layout, folder = _find_layout(Path(root), split)
    if layout == "tonic":
        files = _tonic_files(_tonic_split_folder(folder, split))
        return np.array([subject_of(path.parent.name) for path, _ in files], dtype=np.int64)
    subjects = []
    for recording, labels_csv in _release_trials(folder, split):
        subjects += [subject_of(recording.name)] * len(read_gesture_labels(labels_csv))
    return np.array(subjects, dtype=np.int64)


def dvsgesture_has_split(root: str | os.PathLike, split: str) -> bool:
    """Whether ``split`` of DVS Gesture can be found under ``root``."""
    try:
        layout, folder = _find_layout(Path(root), split)
    except FileNotFoundError:
        return False
    if layout == "tonic":
        return (folder / _TONIC_FOLDERS[split]).is_dir()
    return (folder / _SPLIT_FILES[split]).is_file()


def _find_layout(root: Path, split: str) -> tuple[str, Path]:
    """``("release", DvsGesture folder)`` or ``("tonic", DVSGesture folder)`` under ``root``."""
    for folder in (root, root / "DvsGesture"):
        if any((folder / name).is_file() for name in _SPLIT_FILES.values()):
            return "release", folder
    for folder in (root, root / "DVSGesture"):
        if any((folder / name).is_dir() for name in _TONIC_FOLDERS.values()):
            return "tonic", folder
    raise FileNotFoundError(
        f"no DVS Gesture data in {os.fspath(root)}: expected {_SPLIT_FILES[split]} in it or in "
        f"its DvsGesture/ folder ({_RELEASE_LAYOUT}), or {_TONIC_FOLDERS[split]}/ in it or in "
        f"its DVSGesture/ folder ({_TONIC_LAYOUT})"
    )


def _release_trials(folder: Path, split: str) -> list[tuple[Path, Path]]:
    """``(recording, labels CSV)`` of each trial in the split file, all checked to exist."""
    split_file = folder / _SPLIT_FILES[split]
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file} not found; expected {_RELEASE_LAYOUT}")
    trials = []
    for name in read_trial_list(split_file):
        recording = folder / name
        labels_csv = folder / (name.removesuffix(".aedat") + "_labels.csv")
        for path in (recording, labels_csv):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found (listed in {split_file}); expected {_RELEASE_LAYOUT}"
                )
        trials.append((recording, labels_csv))
    return trials


def load_dvsgesture_tonic(
    root: str | os.PathLike,
    split: str,
    window_us: int | None = 1_500_000,
    downsample: int = 4,
    progress: bool = True,
) -> EventSet:
    """``load_dvsgesture`` for tonic's preprocessed copy (layout in the module docstring).

    ``root`` is tonic's ``save_to`` folder or the ``DVSGesture/`` folder in it. Each
    file is one gesture; its first event is taken as the gesture start, then the same
    window and downsampling apply. Samples come sorted by recording name, then label.
    """
    _check_load_arguments(split, window_us, downsample)
    files = _tonic_files(_tonic_split_folder(Path(root), split))
    samples = []
    for path, _ in tqdm(files, desc=f"DVS Gesture {split}", unit="sample", disable=not progress):
        events = read_tonic_sample(path)
        start = int(events["t"][0]) if len(events) else 0
        end = int(events["t"][-1]) + 1 if len(events) else 0
        samples.append(_cut(events, start, end, window_us, downsample))
    return EventSet.from_samples(
        samples, [label0 for _, label0 in files], downsampled_size(DVS128_SENSOR_SIZE, downsample)
    )


def _tonic_split_folder(root: Path, split: str) -> Path:
    for folder in (root, root / "DVSGesture"):
        if (folder / _TONIC_FOLDERS[split]).is_dir():
            return folder / _TONIC_FOLDERS[split]
    raise FileNotFoundError(
        f"no {_TONIC_FOLDERS[split]}/ folder in {os.fspath(root)} or {os.fspath(root)}/DVSGesture; "
        f"expected {_TONIC_LAYOUT}"
    )


def _tonic_files(folder: Path) -> list[tuple[Path, int]]:
    """``(path, label0)`` of every ``<trial>/<label0>.npy``, by trial name then label."""
    files = []
    for trial in sorted(p for p in folder.iterdir() if p.is_dir()):
        labelled = [(path, _tonic_label(path)) for path in trial.glob("*.npy")]
        files += sorted(labelled, key=lambda item: item[1])
    if not files:
        raise FileNotFoundError(f"no .npy files in {folder}; expected {_TONIC_LAYOUT}")
    return files


def _tonic_label(path: Path) -> int:
    stem = path.stem
    if not (stem.isascii() and stem.isdigit()) or int(stem) >= len(GESTURE_CLASSES):
        raise ValueError(f"{path}: file name must be the label 0..{len(GESTURE_CLASSES) - 1}")
    return int(stem)


def read_tonic_sample(path: str | os.PathLike) -> np.ndarray:
    """Events of one tonic ``.npy`` (columns ``x, y, p, t``, ``t`` in ms) with ``t`` in µs,
    ``t = round(1000 t_ms)``, sorted by time. ``ValueError`` naming the file for anything
    else: not a ``.npy`` array (checked before its announced size is allocated), not a
    real-valued ``(N, 4)`` array, addresses or polarities out of range, times that are not
    finite or overflow int64 microseconds."""
    array = load_npy(path)
    if array.ndim != 2 or array.shape[1] != 4 or not (
            np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(
            f"{os.fspath(path)}: expected an (N, 4) numeric array with columns x, y, p, t [ms] "
            f"(tonic's DVSGesture layout), got shape {array.shape} and dtype {array.dtype}"
        )
    x, y, p, t_ms = array.T
    for name, column, limit in (("x", x, 128), ("y", y, 128), ("p", p, 2)):
        _check_tonic_column(path, name, column, limit)
    _check_tonic_times(path, t_ms)
    if np.issubdtype(array.dtype, np.integer):
        t = t_ms.astype(np.int64) * 1000
    else:
        t = np.rint(t_ms.astype(np.float64) * 1000).astype(np.int64)
    x, y, p = (column.astype(np.int64) for column in (x, y, p))
    return sorted_by_time(make_events(x, y, t, p))


def _check_tonic_column(path: str | os.PathLike, name: str, column: np.ndarray, limit: int) -> None:
    if len(column) == 0:
        return
    if np.any(column != np.floor(column)) or column.min() < 0 or column.max() >= limit:
        raise ValueError(
            f"{os.fspath(path)}: column {name} must hold integers in 0..{limit - 1}, "
            f"found values in [{column.min()}, {column.max()}]"
        )


def _check_tonic_times(path: str | os.PathLike, t_ms: np.ndarray) -> None:
    if len(t_ms) == 0:
        return
    low, high = t_ms.min().item(), t_ms.max().item()
    limit = _INT64_MAX // 1000
    if not (math.isfinite(low) and math.isfinite(high) and -limit <= low and high <= limit):
        raise ValueError(
            f"{os.fspath(path)}: column t must hold finite milliseconds within +-{limit} "
            f"(int64 microseconds), found values in [{low}, {high}]"
        )
