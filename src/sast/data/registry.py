"""The datasets ``sast`` can read, and their frames, built once and then read from the cache.

Each dataset describes a split as an :class:`EventSource`: how many samples, the sensor size
after any downsampling, a fingerprint of its source (for the cache key), and a generator of
consecutive :class:`~sast.data.events.EventSet` chunks, so that no dataset has to be decoded
into memory whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sast.data.cache import FrameCache, files_fingerprint
from sast.data.corruptions import Corruption, corrupt_eventset
from sast.data.dvsgesture import (
    DVS128_SENSOR_SIZE,
    DVSGESTURE_READER_VERSION,
    downsample_events,
    downsampled_size,
    dvsgesture_files,
    dvsgesture_has_split,
    dvsgesture_subjects,
    load_dvsgesture,
)
from sast.data.events import EventSet, eventset_to_frames
from sast.data.frames import FrameSet
from sast.data.nmnist import (
    NMNIST_READER_VERSION,
    NMNIST_SENSOR_SIZE,
    load_nmnist_files,
    nmnist_index,
)
from sast.data.synthetic import SYNTHETIC_NMNIST_VERSION, synthetic_nmnist
from sast.data.synthetic_gesture import (
    GESTURE_SENSOR_SIZE,
    SYNTHETIC_GESTURE_VERSION,
    synthetic_gesture,
)

SYNTHETIC_DATA_SEED = 0
"""Seed of the built-in synthetic datasets: fixed, so runs with different seeds share data."""


@dataclass(frozen=True)
class EventSource:
    """One split of a dataset, ready to be binned chunk by chunk.

    ``fingerprint`` is cheap to compute and goes into the cache key; ``open`` does the
    expensive part (reading or generating events) and is only called when the frames are not
    in the cache: it returns the number of samples and an iterator of consecutive chunks.
    """

    sensor_size: tuple[int, int, int]
    fingerprint: dict[str, Any]
    open: Callable[[], tuple[int, Iterator[EventSet]]]
    t_window: tuple[int, int] | None = None
    """Fixed binning window in µs for every sample; None: each sample's own [t_first, t_last]."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    sensor_size: tuple[int, int, int]
    n_classes: int
    needs: str
    description: str
    source: Callable[..., EventSource]
    needs_root: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    """Dataset-specific preprocessing options and their defaults."""
    has_split: Callable[[str, Path | None], bool] = lambda split, root: True
    """Whether ``split`` is on disk under ``root`` (a partial copy may lack the test split)."""
    origin: str = ""
    """Where the real data comes from (nothing is downloaded by sast)."""
    groups: Callable[[str, Path | None], np.ndarray | None] = lambda split, root: None
    """The group (subject, recording) of each sample of ``split``, when samples share one:
    held-out parts then take whole groups. None: every sample is its own."""


CHUNK_SAMPLES = 4096
"""Samples decoded and binned at a time while a cache entry is built."""


def _in_chunks(events: EventSet) -> tuple[int, Iterator[EventSet]]:
    size = CHUNK_SAMPLES
    chunks = (events.subset(np.arange(start, min(start + size, len(events))))
              for start in range(0, len(events), size))
    return len(events), chunks


def _synthetic_nmnist_source(split: str, data_root: Path | None,
                             cache_dir: Path | None) -> EventSource:
    fingerprint = {"version": SYNTHETIC_NMNIST_VERSION, "seed": SYNTHETIC_DATA_SEED}
    return EventSource(NMNIST_SENSOR_SIZE, fingerprint, lambda: _in_chunks(
        synthetic_nmnist(split, seed=SYNTHETIC_DATA_SEED, cache_dir=cache_dir)))


def _window_us(window_ms: float | None) -> int | None:
    return None if window_ms is None else int(round(window_ms * 1000))


def _downsampled(events: EventSet, factor: int) -> EventSet:
    if factor == 1:
        return events
    return EventSet(downsample_events(events.events, factor, events.sensor_size),
                    events.offsets, events.labels, downsampled_size(events.sensor_size, factor))


def _synthetic_gesture_source(split: str, data_root: Path | None, cache_dir: Path | None,
                              window_ms: float | None, downsample: int) -> EventSource:
    fingerprint = {"version": SYNTHETIC_GESTURE_VERSION, "seed": SYNTHETIC_DATA_SEED}
    window = _window_us(window_ms)
    return EventSource(
        downsampled_size(GESTURE_SENSOR_SIZE, downsample), fingerprint,
        lambda: _in_chunks(_downsampled(
            synthetic_gesture(split, seed=SYNTHETIC_DATA_SEED, cache_dir=cache_dir), downsample)),
        t_window=None if window is None else (0, window),
    )


def _dvsgesture_source(split: str, data_root: Path, cache_dir: Path | None,
                       window_ms: float | None, downsample: int) -> EventSource:
    fingerprint = {"reader": DVSGESTURE_READER_VERSION,
                   **files_fingerprint(dvsgesture_files(data_root, split))}
    window = _window_us(window_ms)
    return EventSource(
        downsampled_size(DVS128_SENSOR_SIZE, downsample), fingerprint,
        lambda: _in_chunks(load_dvsgesture(data_root, split, window, downsample)),
        t_window=None if window is None else (0, window),
    )


def _nmnist_source(split: str, data_root: Path, cache_dir: Path | None,
                   first_saccade_only: bool) -> EventSource:
    paths, labels = nmnist_index(data_root, split)

    def chunks() -> Iterator[EventSet]:
        size = CHUNK_SAMPLES
        for start in range(0, len(paths), size):
            yield load_nmnist_files(paths[start:start + size], labels[start:start + size],
                                    first_saccade_only, progress=False)

    fingerprint = {"reader": NMNIST_READER_VERSION, **files_fingerprint(paths)}
    return EventSource(NMNIST_SENSOR_SIZE, fingerprint, lambda: (len(paths), chunks()))


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "synthetic-nmnist", (34, 34, 2), 10, "nothing (built in, generated once and cached)",
            "scikit-learn's 1797 handwritten 8×8 digits shown to a simulated event camera making "
            "N-MNIST's three saccades on a 34×34 sensor (about 300 ms, ON/OFF events)",
            _synthetic_nmnist_source,
        ),
        DatasetSpec(
            "nmnist", NMNIST_SENSOR_SIZE, 10,
            "--data-root DIR holding the unzipped release: DIR/Train/<digit>/*.bin and "
            "DIR/Test/<digit>/*.bin (a partial copy works)",
            "N-MNIST (Orchard et al. 2015): MNIST digits recorded by an ATIS camera making three "
            "saccades, 34×34, ~300 ms per sample, 60 000 train / 10 000 test",
            _nmnist_source, needs_root=True, options={"first_saccade_only": False},
            origin="https://www.garrickorchard.com/datasets/n-mnist (Train.zip, Test.zip; "
            "CC BY-SA 4.0), or the files tonic.datasets.NMNIST downloaded",
            has_split=lambda split, root: (Path(root) / split.capitalize()).is_dir(),
        ),
        DatasetSpec(
            "synthetic-gesture", GESTURE_SENSOR_SIZE, 11,
            "nothing (built in, generated once and cached)",
            "11 classes of moving shapes (orbits clockwise and counter-clockwise, sweeps in four "
            "directions, expanding and contracting rings, blink, figure-8, jitter) shown to a "
            "simulated 128×128 event camera for 1.5 s; each direction pair is a time reversal, "
            "so only the order of events tells them apart. Downsampled to 32×32 by default",
            _synthetic_gesture_source, options={"window_ms": 1500.0, "downsample": 4},
        ),
        DatasetSpec(
            "dvsgesture", DVS128_SENSOR_SIZE, 11,
            "--data-root DIR holding IBM's extracted DvsGesture/ (the .aedat recordings, their "
            "_labels.csv files, trials_to_train.txt and trials_to_test.txt), or tonic's "
            "DVSGesture/ folder (ibmGestureTrain/, ibmGestureTest/)",
            "DVS128 Gesture (Amir et al. 2017): 11 hand and arm gestures by 29 subjects, "
            "128×128 DVS, one sample per labelled gesture (official 98/24 trial split); "
            "downsampled to 32×32 and cut to the first 1.5 s by default",
            _dvsgesture_source, needs_root=True,
            origin="IBM Research's DvsGesture.tar.gz, "
            "https://research.ibm.com/interactive/dvsgesture/ (CC BY 4.0), or tonic's "
            "preprocessed copy (tonic.datasets.DVSGesture)",
            options={"window_ms": 1500.0, "downsample": 4},
            has_split=lambda split, root: dvsgesture_has_split(root, split),
            groups=lambda split, root: dvsgesture_subjects(root, split),
        ),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


def split_available(name: str, split: str, data_root: str | Path | None = None) -> bool:
    """Whether ``split`` of dataset ``name`` can be read (a partial copy of a real dataset may
    hold only its training files)."""
    return get_dataset(name).has_split(split, None if data_root is None else Path(data_root))


def resolve_options(spec: DatasetSpec, options: dict[str, Any]) -> dict[str, Any]:
    """The dataset's option defaults updated with the given (non-None) options; an option the
    dataset does not have is an error."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        allowed = ", ".join(sorted(spec.options)) or "none"
        raise ValueError(f"dataset {spec.name} has no option {', '.join(unknown)} "
                         f"(its options: {allowed})")
    return {**spec.options, **given}


def sample_groups(name: str, split: str, data_root: str | Path | None = None) -> np.ndarray | None:
    """The group of every sample of ``split`` (e.g. DVS Gesture's subjects), or None when the
    dataset's samples share none (see :attr:`DatasetSpec.groups`)."""
    return get_dataset(name).groups(split, None if data_root is None else Path(data_root))


@dataclass(frozen=True)
class _Resolved:
    spec: DatasetSpec
    source: EventSource
    params: dict[str, Any]
    """Every preprocessing parameter: the frame cache key."""


def _resolve(name: str, split: str, time_bins: int, binning: str,
             data_root: str | Path | None, cache_dir: str | Path | None,
             options: dict[str, Any]) -> _Resolved:
    spec = get_dataset(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if spec.needs_root and data_root is None:
        raise ValueError(f"dataset {name} is read from disk: give --data-root DIR ({spec.needs})")
    if data_root is not None and not spec.needs_root:
        raise ValueError(f"dataset {name} is built in and takes no data root")
    opts = resolve_options(spec, options)
    root = None if data_root is None else Path(data_root).resolve()
    source = spec.source(split, root, None if cache_dir is None else Path(cache_dir), **opts)
    params = {
        "dataset": name, "split": split, "time_bins": time_bins, "binning": binning,
        "options": opts, "root": None if root is None else str(root),
        "source": source.fingerprint, "t_window": source.t_window,
    }
    return _Resolved(spec, source, params)


def _binned_chunks(
    chunks: Iterable[tuple[EventSet, np.ndarray]], n_samples: int, time_bins: int, binning: str,
    t_window: tuple[int, int] | None, corruption: Corruption | None, corruption_seed: int,
    desc: str, progress: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frames, labels) of each chunk of (events, sample keys), corrupted first when asked."""
    window = t_window if binning == "time" else None
    with tqdm(total=n_samples, desc=desc, unit="sample", disable=not progress,
              leave=False) as bar:
        for chunk, keys in chunks:
            if corruption is not None:
                chunk = corrupt_eventset(chunk, corruption, corruption_seed, keys)
            frames = eventset_to_frames(chunk, time_bins, mode=binning, t_window=window,
                                        dtype=np.uint8)
            bar.update(len(chunk))
            yield frames, chunk.labels


def _in_memory(shape: tuple[int, ...], chunks: Iterator[tuple[np.ndarray, np.ndarray]],
               n_classes: int) -> FrameSet:
    frames = np.empty(shape, dtype=np.uint8)
    labels = np.empty(shape[0], dtype=np.int64)
    start = 0
    for chunk_frames, chunk_labels in chunks:
        frames[start:start + len(chunk_labels)] = chunk_frames
        labels[start:start + len(chunk_labels)] = chunk_labels
        start += len(chunk_labels)
    return FrameSet(torch.from_numpy(frames), torch.from_numpy(labels), n_classes)


def _keyed(chunks: Iterator[EventSet]) -> Iterator[tuple[EventSet, np.ndarray]]:
    done = 0
    for chunk in chunks:
        yield chunk, np.arange(done, done + len(chunk))
        done += len(chunk)


def load_frames(
    name: str, split: str, time_bins: int, binning: str = "time",
    data_root: str | Path | None = None, cache_dir: str | Path | None = None,
    progress: bool = False, corruption: Corruption | None = None, corruption_seed: int = 0,
    **options: Any,
) -> FrameSet:
    """The samples of ``split`` (``"train"`` or ``"test"``) binned into ``time_bins`` frames
    each, read from the frame cache or built into it first.

    With a ``corruption`` (see :mod:`sast.data.corruptions`) the events of sample i are
    corrupted with a generator seeded by (``corruption_seed``, i) before binning, so the result
    is exact and reproducible; corrupted frames are built in memory, not cached (to evaluate
    many corruptions of one split, decode it once with :func:`load_events`)."""
    r = _resolve(name, split, time_bins, binning, data_root, cache_dir, options)
    w, h, p = r.source.sensor_size

    def build() -> tuple[tuple[int, ...], Iterator[tuple[np.ndarray, np.ndarray]]]:
        n_samples, chunks = r.source.open()
        return (n_samples, time_bins, p, h, w), _binned_chunks(
            _keyed(chunks), n_samples, time_bins, binning, r.source.t_window, corruption,
            corruption_seed, f"binning {name}/{split}", progress)

    if corruption is not None:
        shape, chunks = build()
        return _in_memory(shape, chunks, r.spec.n_classes)
    entry, _ = FrameCache(cache_dir).get_or_build(r.params, build)
    return FrameSet(torch.from_numpy(entry.frames), torch.from_numpy(entry.labels),
                    r.spec.n_classes, packed_width=entry.packed_width)


@dataclass(frozen=True)
class DecodedSplit:
    """The events of one split decoded once, to be corrupted and binned many times
    (:meth:`frames`): a robustness curve decodes its evaluation split once, not once per
    severity and seed."""

    events: EventSet
    keys: np.ndarray
    """The samples' indices in the whole split: the corruption generators' keys, so a subset
    is corrupted exactly as the same samples inside the whole split."""
    n_classes: int
    t_window: tuple[int, int] | None

    def subset(self, rows: np.ndarray) -> DecodedSplit:
        rows = np.asarray(rows, dtype=np.int64)
        return DecodedSplit(self.events.subset(rows), self.keys[rows], self.n_classes,
                            self.t_window)

    def frames(self, time_bins: int, binning: str = "time", corruption: Corruption | None = None,
               corruption_seed: int = 0) -> FrameSet:
        """The samples binned into ``time_bins`` frames (in memory), corrupted first when a
        ``corruption`` is given, exactly as :func:`load_frames` bins them."""
        n = len(self.events)
        w, h, p = self.events.sensor_size
        chunks = ((self.events.subset(np.arange(a, min(a + CHUNK_SAMPLES, n))),
                   self.keys[a:a + CHUNK_SAMPLES]) for a in range(0, n, CHUNK_SAMPLES))
        binned = _binned_chunks(chunks, n, time_bins, binning, self.t_window, corruption,
                                corruption_seed, "binning", False)
        return _in_memory((n, time_bins, p, h, w), binned, self.n_classes)


def load_events(
    name: str, split: str, data_root: str | Path | None = None,
    cache_dir: str | Path | None = None, **options: Any,
) -> DecodedSplit:
    """Every sample of ``split``, decoded (or generated) once and held in memory."""
    r = _resolve(name, split, 0, "time", data_root, cache_dir, options)
    _, chunks = r.source.open()
    events = EventSet.concatenate(list(chunks), r.source.sensor_size)
    return DecodedSplit(events, np.arange(len(events)), r.spec.n_classes, r.source.t_window)
