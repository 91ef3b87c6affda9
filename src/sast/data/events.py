"""Event-camera records and their binning into frames.

An event is one brightness change reported by a dynamic vision sensor. The record
uses tonic's field names: ``x`` column, ``y`` row, ``t`` timestamp in microseconds,
``p`` polarity (1 = ON, brightness increased; 0 = OFF). Sensor sizes are given as
tonic does, ``(W, H, P)``: width, height, number of polarities.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from sast.data.npyfile import check_npz
from sast.infra.atomicio import atomic_write

EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "<u1")])

SensorSize = tuple[int, int, int]

_EVENTSET_KEYS = ("events", "offsets", "labels", "sensor_size")
_EXTRA_PREFIX = "extra__"
BINNING_MODES = ("time", "count", "tonic")
_BINCOUNT_BUDGET = 1 << 23  # cells per bincount call in eventset_to_frames (64 MiB of int64)


def make_events(x: ArrayLike, y: ArrayLike, t: ArrayLike, p: ArrayLike) -> np.ndarray:
    """Build a structured event array of dtype ``EVENT_DTYPE`` from four equal-length columns."""
    columns = {"x": x, "y": y, "t": t, "p": p}
    columns = {name: np.asarray(values).ravel() for name, values in columns.items()}
    n = len(columns["x"])
    for name, values in columns.items():
        if len(values) != n:
            raise ValueError(f"field {name!r} has {len(values)} entries, expected {n} (as 'x')")
        _check_fits(name, values)
    events = np.empty(n, dtype=EVENT_DTYPE)
    for name, values in columns.items():
        events[name] = values
    return events


def _check_fits(name: str, values: np.ndarray) -> None:
    field = EVENT_DTYPE[name]
    if len(values) == 0 or not np.issubdtype(field, np.unsignedinteger):
        return
    low, high = values.min(), values.max()
    if low < 0 or high > np.iinfo(field).max:
        raise ValueError(
            f"field {name!r} must lie in [0, {np.iinfo(field).max}], got [{low}, {high}]"
        )


def _as_events(events: np.ndarray, what: str = "events") -> np.ndarray:
    events = np.asarray(events)
    if events.dtype == EVENT_DTYPE:
        return events
    if events.dtype.names is None or set(events.dtype.names) != set(EVENT_DTYPE.names):
        raise ValueError(
            f"{what} must be a structured array with fields {EVENT_DTYPE.names}, "
            f"got dtype {events.dtype}"
        )
    return events.astype(EVENT_DTYPE)


def _check_sensor_size(sensor_size: Sequence[int]) -> SensorSize:
    size = tuple(int(s) for s in sensor_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"sensor_size must be (W, H, P) with positive entries, got {sensor_size}")
    return size  # type: ignore[return-value]


def _check_inside_sensor(events: np.ndarray, sensor_size: SensorSize, what: str) -> None:
    if len(events) == 0:
        return
    for field, limit, axis in zip("xyp", sensor_size, "WHP", strict=True):
        top = int(events[field].max())
        if top >= limit:
            raise ValueError(
                f"{what}: {field} must lie in [0, {limit - 1}] for sensor_size "
                f"{sensor_size} ({axis} = {limit}), found {field} = {top}"
            )


class EventSet:
    """Many event samples stored as one concatenated array.

    Sample ``i`` is ``events[offsets[i]:offsets[i + 1]]`` with label ``labels[i]``;
    ``sensor_size`` is ``(W, H, P)``.
    """

    def __init__(
        self,
        events: np.ndarray,
        offsets: ArrayLike,
        labels: ArrayLike,
        sensor_size: Sequence[int],
    ) -> None:
        self.events = _as_events(events)
        self.offsets = np.asarray(offsets, dtype=np.int64).ravel()
        self.labels = np.asarray(labels, dtype=np.int64).ravel()
        self.sensor_size = _check_sensor_size(sensor_size)
        self._validate()

    def _validate(self) -> None:
        if self.events.ndim != 1:
            raise ValueError(f"events must be one-dimensional, got shape {self.events.shape}")
        offsets, n_events = self.offsets, len(self.events)
        if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != n_events:
            raise ValueError(
                f"offsets must start at 0 and end at len(events) = {n_events}, "
                f"got {offsets[:1].tolist()} ... {offsets[-1:].tolist()}"
            )
        if np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must be non-decreasing")
        if len(self.labels) != len(self):
            raise ValueError(
                f"labels has {len(self.labels)} entries, expected one per sample ({len(self)})"
            )
        _check_inside_sensor(self.events, self.sensor_size, "EventSet")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample index {i} out of range for {n} samples")
        i %= n
        return self.events[self.offsets[i] : self.offsets[i + 1]], int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"EventSet({len(self)} samples, {len(self.events)} events, "
            f"sensor_size={self.sensor_size})"
        )

    @property
    def lengths(self) -> np.ndarray:
        """Number of events in each sample."""
        return np.diff(self.offsets)

    @classmethod
    def from_samples(
        cls,
        samples: Sequence[np.ndarray],
        labels: ArrayLike,
        sensor_size: Sequence[int],
    ) -> EventSet:
        """Concatenate a list of per-sample event arrays."""
        arrays = [_as_events(s, f"sample {i}") for i, s in enumerate(samples)]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        events = np.concatenate(arrays) if arrays else np.empty(0, dtype=EVENT_DTYPE)
        return cls(events, offsets, labels, sensor_size)

    @classmethod
    def concatenate(cls, parts: Sequence[EventSet], sensor_size: Sequence[int]) -> EventSet:
        """The samples of ``parts`` one after the other (all on ``sensor_size``)."""
        size = _check_sensor_size(sensor_size)
        for part in parts:
            if tuple(part.sensor_size) != size:
                raise ValueError(f"cannot concatenate event sets of sensor sizes "
                                 f"{tuple(part.sensor_size)} and {size}")
        if not parts:
            return cls.from_samples([], [], size)
        lengths = np.concatenate([part.lengths for part in parts])
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.concatenate([part.events for part in parts]), offsets,
                   np.concatenate([part.labels for part in parts]), size)

    def subset(self, indices: ArrayLike) -> EventSet:
        """The samples at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset indices out of range for {len(self)} samples")
        idx %= max(len(self), 1)
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        lengths = ends - starts
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Gather index of every kept event: start of its sample + position within it.
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        gather = np.repeat(starts, lengths) + within
        return EventSet(self.events[gather], offsets, self.labels[idx], self.sensor_size)

    def save(self, path: str | os.PathLike, extra: Mapping[str, ArrayLike] | None = None) -> None:
        """Write an uncompressed ``.npz`` at exactly ``path``, atomically.

        The file is written next to ``path`` under a temporary name and moved into
        place (:func:`sast.infra.atomicio.atomic_write`), so readers never see a half-written file.
        ``extra`` arrays are stored alongside and come back from ``load_with_extra``.
        """
        arrays = {
            "events": self.events,
            "offsets": self.offsets,
            "labels": self.labels,
            "sensor_size": np.asarray(self.sensor_size, dtype=np.int64),
        }
        for name, value in (extra or {}).items():
            arrays[_EXTRA_PREFIX + name] = np.asarray(value)
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> EventSet:
        """Read a file written by ``save``; ``ValueError`` naming the file if it is not one."""
        return cls.load_with_extra(path)[0]

    @classmethod
    def load_with_extra(cls, path: str | os.PathLike) -> tuple[EventSet, dict[str, np.ndarray]]:
        """Like ``load``, also returning the ``extra`` arrays given to ``save``. The archive's
        headers are checked first (:func:`sast.data.npyfile.check_npz`), so a damaged file
        never allocates more than its bytes can hold; ``events`` must have ``EVENT_DTYPE`` and
        ``offsets``, ``labels`` and ``sensor_size`` integer dtypes, as ``save`` writes them."""
        try:
            check_npz(path)
            with np.load(path, allow_pickle=False) as data:
                missing = [key for key in _EVENTSET_KEYS if key not in data.files]
                if missing:
                    raise ValueError(f"missing arrays {missing}")
                fields = {key: data[key] for key in _EVENTSET_KEYS}
                _check_saved_dtypes(fields)
                extra = {
                    key[len(_EXTRA_PREFIX) :]: data[key]
                    for key in data.files
                    if key.startswith(_EXTRA_PREFIX)
                }
            eventset = cls(**fields)
        except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile,
                zlib.error) as err:
            raise ValueError(f"{os.fspath(path)!r} is not a valid EventSet file: {err}") from err
        return eventset, extra


def _check_saved_dtypes(fields: Mapping[str, np.ndarray]) -> None:
    if fields["events"].dtype != EVENT_DTYPE:
        raise ValueError(f"events have dtype {fields['events'].dtype}, expected {EVENT_DTYPE}")
    for key in ("offsets", "labels", "sensor_size"):
        if not np.issubdtype(fields[key].dtype, np.integer):
            raise ValueError(f"{key} have dtype {fields[key].dtype}, expected integers")


def _check_binning(n_time_bins: int, mode: str, t_window: tuple[int, int] | None) -> None:
    if int(n_time_bins) != n_time_bins or n_time_bins < 1:
        raise ValueError(f"n_time_bins must be an integer >= 1, got {n_time_bins!r}")
    if mode not in BINNING_MODES:
        raise ValueError(f"mode must be one of {BINNING_MODES}, got {mode!r}")
    if mode != "time" and t_window is not None:
        raise ValueError(f"t_window applies only to mode='time', not mode={mode!r}")


def _time_bins(
    t: np.ndarray, t0: np.ndarray, t1: np.ndarray, n_time_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each event and whether it is kept.

    ``bin = floor((t - t0) * T / (t1 - t0))``, kept when ``t0 <= t < t1``.
    """
    elapsed = t - t0
    span = t1 - t0
    if np.any(span <= 0):
        raise ValueError("time window must satisfy t1 > t0")
    keep = (elapsed >= 0) & (elapsed < span)
    return elapsed * n_time_bins // span, keep


def _tonic_bins(
    t: np.ndarray, t_first: np.ndarray, t_last: np.ndarray, n_time_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each event and whether it is kept, as tonic's ``ToFrame(n_time_bins=T)``.

    ``w = (t_last - t_first) // T``; ``bin = (t - t_first) // w``, kept when
    ``t_first <= t < t_first + T w`` and ``w > 0`` (with ``w == 0`` nothing is kept).
    """
    width = (t_last - t_first) // n_time_bins
    elapsed = t - t_first
    keep = (width > 0) & (elapsed >= 0) & (elapsed < width * n_time_bins)
    return elapsed // np.maximum(width, 1), keep


def _count_bins(position: np.ndarray, n: np.ndarray, n_time_bins: int) -> np.ndarray:
    """Chunk of the event at ``position`` when ``n`` ordered events are cut as ``np.array_split``.

    With ``q, r = divmod(n, T)`` the first ``r`` chunks hold ``q + 1`` events and the
    rest ``q``: ``bin = j // (q + 1)`` for ``j < r (q + 1)``, else ``r + (j - r (q + 1)) // q``.
    """
    q, r = np.divmod(n, n_time_bins)
    head = r * (q + 1)
    tail_bin = r + (position - head) // np.maximum(q, 1)
    return np.where(position < head, position // (q + 1), tail_bin)


def _default_window(t_window: tuple[int, int] | None, t: np.ndarray) -> tuple[int, int]:
    if t_window is not None:
        return int(t_window[0]), int(t_window[1])
    return int(t.min()), int(t.max()) + 1


def _clip_cast(counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        counts = np.minimum(counts, np.iinfo(dtype).max)
    return counts.astype(dtype)


def to_frames(
    events: np.ndarray,
    sensor_size: Sequence[int],
    n_time_bins: int,
    mode: str = "time",
    t_window: tuple[int, int] | None = None,
) -> np.ndarray:
    """Count events per time bin, polarity and pixel: a ``[T, P, H, W]`` uint16 array.

    ``mode="time"``: the window ``[t0, t1)`` (``t_window``, else ``[min t, max t + 1)``)
    is cut into ``T`` equal slices, ``bin = floor((t - t0) T / (t1 - t0))``; events
    outside the window are dropped. ``mode="count"``: the events in time order are cut
    into ``T`` consecutive chunks of nearly equal size, as ``np.array_split`` does.

    ``mode="tonic"``: the frames of tonic's ``ToFrame(sensor_size, n_time_bins=T)``
    (without overlap). With ``t_first = min t``, ``t_last = max t`` and whole
    microsecond bins of width ``w = (t_last - t_first) // T``, ``bin = (t - t_first) // w``
    for ``t < t_first + T w``; the tail ``t >= t_first + T w`` is dropped, and when
    ``w == 0`` (span shorter than ``T`` µs) every frame is empty. tonic takes the first
    and last event of the array and needs time-sorted events; min and max equal them for
    sorted input and make the result independent of event order, so unsorted input gives
    tonic's frames of the time-sorted events. ``t_window`` is refused. tonic counts in
    int16 (wrapping above 32767), so the frames match exactly while no cell exceeds 32767.

    Counts saturate at 65535. An empty sample gives zeros and a warning.
    """
    _check_binning(n_time_bins, mode, t_window)
    events = _as_events(events)
    width, height, n_pol = _check_sensor_size(sensor_size)
    _check_inside_sensor(events, (width, height, n_pol), "to_frames")
    shape = (n_time_bins, n_pol, height, width)
    if len(events) == 0:
        warnings.warn("empty event sample: returning all-zero frames", stacklevel=2)
        return np.zeros(shape, dtype=np.uint16)
    if mode == "time":
        t0, t1 = _default_window(t_window, events["t"])
        bins, keep = _time_bins(events["t"], np.int64(t0), np.int64(t1), n_time_bins)
        events, bins = events[keep], bins[keep]
    elif mode == "tonic":
        t = events["t"]
        bins, keep = _tonic_bins(t, t.min(), t.max(), n_time_bins)
        events, bins = events[keep], bins[keep]
    else:
        events = events[np.argsort(events["t"], kind="stable")]
        bins = _count_bins(np.arange(len(events)), np.int64(len(events)), n_time_bins)
    p = events["p"].astype(np.int64)
    flat = ((bins * n_pol + p) * height + events["y"]) * width + events["x"]
    counts = np.bincount(flat, minlength=int(np.prod(shape)))
    return _clip_cast(counts, np.uint16).reshape(shape)


def eventset_to_frames(
    eventset: EventSet,
    n_time_bins: int,
    mode: str = "time",
    t_window: tuple[int, int] | None = None,
    dtype: np.dtype | type = np.uint8,
) -> np.ndarray:
    """``to_frames`` for every sample at once: an ``[N, T, P, H, W]`` array.

    Same binning as ``to_frames``, with the sample index folded into the flat index
    ``(((s T + bin) P + p) H + y) W + x``. ``t_window`` is in absolute microseconds and
    shared by all samples; when ``None`` each sample uses its own ``[min t, max t + 1)``.
    ``mode="tonic"`` bins each sample as tonic's ``ToFrame(n_time_bins=T)`` from its own
    first and last event, ``w = (t_last - t_first) // T``, ``bin = (t - t_first) // w``,
    dropping ``t >= t_first + T w`` (see ``to_frames``).
    Integer counts saturate at ``dtype``'s maximum. Empty samples give zeros and a warning.
    """
    _check_binning(n_time_bins, mode, t_window)
    width, height, n_pol = eventset.sensor_size
    frame_cells = n_time_bins * n_pol * height * width
    out = np.zeros((len(eventset), n_time_bins, n_pol, height, width), dtype=dtype)
    n_empty = int(np.sum(eventset.lengths == 0))
    if n_empty:
        warnings.warn(f"{n_empty} empty event samples: their frames are all zero", stacklevel=2)
    chunk = max(1, _BINCOUNT_BUDGET // frame_cells)
    for start in range(0, len(eventset), chunk):
        stop = min(start + chunk, len(eventset))
        counts = _bin_samples(eventset, start, stop, n_time_bins, mode, t_window)
        out[start:stop] = _clip_cast(counts, out.dtype).reshape(out[start:stop].shape)
    return out


def _bin_samples(
    eventset: EventSet,
    start: int,
    stop: int,
    n_time_bins: int,
    mode: str,
    t_window: tuple[int, int] | None,
) -> np.ndarray:
    """Flat event counts of samples ``start:stop`` (see ``eventset_to_frames``)."""
    width, height, n_pol = eventset.sensor_size
    offsets = eventset.offsets[start : stop + 1]
    events = eventset.events[offsets[0] : offsets[-1]]
    lengths = np.diff(offsets)
    sample = np.repeat(np.arange(stop - start), lengths)
    if mode == "time":
        t0, t1 = _sample_windows(events["t"], lengths, t_window)
        bins, keep = _time_bins(
            events["t"], np.repeat(t0, lengths), np.repeat(t1, lengths), n_time_bins
        )
        events, bins, sample = events[keep], bins[keep], sample[keep]
    elif mode == "tonic":
        t_first, t_end = _sample_windows(events["t"], lengths, None)
        bins, keep = _tonic_bins(
            events["t"], np.repeat(t_first, lengths), np.repeat(t_end - 1, lengths), n_time_bins
        )
        events, bins, sample = events[keep], bins[keep], sample[keep]
    else:
        order = np.lexsort((events["t"], sample))
        events, sample = events[order], sample[order]
        position = np.arange(len(events)) - np.repeat(offsets[:-1] - offsets[0], lengths)
        bins = _count_bins(position, np.repeat(lengths, lengths), n_time_bins)
    p = events["p"].astype(np.int64)
    flat = (((sample * n_time_bins + bins) * n_pol + p) * height + events["y"]) * width
    flat += events["x"]
    return np.bincount(flat, minlength=(stop - start) * n_time_bins * n_pol * height * width)


def _sample_windows(
    t: np.ndarray, lengths: np.ndarray, t_window: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ``(t0, t1)``: the shared ``t_window``, else ``[min t, max t + 1)`` each."""
    n = len(lengths)
    if t_window is not None:
        return np.full(n, int(t_window[0]), np.int64), np.full(n, int(t_window[1]), np.int64)
    t0, t1 = np.zeros(n, np.int64), np.ones(n, np.int64)
    nonempty = lengths > 0
    if np.any(nonempty):
        starts = (np.cumsum(lengths) - lengths)[nonempty]
        t0[nonempty] = np.minimum.reduceat(t, starts)
        t1[nonempty] = np.maximum.reduceat(t, starts) + 1
    return t0, t1
