"""Event corruptions for measuring how robust a model is to sensor defects.

Each corruption is a pure function ``f(events, sensor_size, rng, **params) -> events``
and a frozen dataclass holding ``params`` whose ``__call__(events, sensor_size, rng)``
applies it. The input is never modified; the output is a new ``EVENT_DTYPE`` array
sorted by ``t``. All randomness comes from the ``numpy.random.Generator`` passed in.

``corrupt_eventset`` applies one corruption to every sample of an
:class:`~sast.data.events.EventSet`, each sample with its own generator, and
``make_corruption(name, severity)`` builds a corruption of ``CORRUPTIONS`` from one number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from sast.data.events import (
    EventSet,
    SensorSize,
    _as_events,
    _check_inside_sensor,
    _check_sensor_size,
    make_events,
)

Corruption = Callable[[np.ndarray, SensorSize, np.random.Generator], np.ndarray]


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _check_nonnegative(name: str, value: float) -> None:
    if not 0.0 <= value < math.inf:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not float(value).is_integer() or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value}")


def _prepare(events: np.ndarray, sensor_size: Sequence[int]) -> tuple[np.ndarray, SensorSize]:
    events = _as_events(events)
    size = _check_sensor_size(sensor_size)
    _check_inside_sensor(events, size, "events")
    return events, size


def _is_time_sorted(t: np.ndarray) -> bool:
    return bool(np.all(t[1:] >= t[:-1]))


def _sort_by_time(events: np.ndarray) -> np.ndarray:
    """``events`` in stable time order (returned as is when already sorted)."""
    if _is_time_sorted(events["t"]):
        return events
    return events[np.argsort(events["t"], kind="stable")]


def _time_span(events: np.ndarray) -> tuple[int, int]:
    return int(events["t"].min()), int(events["t"].max())


# --- functions ------------------------------------------------------------------------------


def drop_events(
    events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator, p: float
) -> np.ndarray:
    """Keep each event independently with probability ``1 - p``.

    Event ``i`` is kept when ``u_i >= p`` with ``u = rng.random(len(events))``, so
    ``p = 0`` keeps every event and ``p = 1`` none.
    """
    _check_probability("p", p)
    events, _ = _prepare(events, sensor_size)
    keep = rng.random(len(events)) >= p
    return _sort_by_time(events[keep])


def add_background_noise(
    events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator, rate_hz: float
) -> np.ndarray:
    """Add ``rate_hz`` random events per pixel per second over the sample's time span.

    With ``[t0, t1]`` the first and last timestamps, ``n ~ Poisson(rate W H (t1 - t0) 1e-6)``
    events are added, each with pixel uniform on the ``W x H`` sensor, polarity uniform on
    ``{0, ..., P - 1}`` and ``t`` uniform on the integers of ``[t0, t1]``. An empty sample
    has no time span and stays empty.
    """
    _check_nonnegative("rate_hz", rate_hz)
    events, (width, height, n_pol) = _prepare(events, sensor_size)
    if len(events) == 0:
        return events.copy()
    t0, t1 = _time_span(events)
    n = int(rng.poisson(rate_hz * width * height * (t1 - t0) * 1e-6))
    noise = make_events(
        rng.integers(0, width, size=n),
        rng.integers(0, height, size=n),
        rng.integers(t0, t1, size=n, endpoint=True),
        rng.integers(0, n_pol, size=n),
    )
    merged = np.concatenate([events, noise])
    return merged[np.argsort(merged["t"], kind="stable")]


def jitter_time(
    events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator, std_us: float
) -> np.ndarray:
    """Shift each timestamp by rounded Gaussian noise, then re-sort stably by time.

    ``t' = max(0, t + round(std_us z))`` with ``z ~ N(0, 1)`` per event.
    """
    _check_nonnegative("std_us", std_us)
    events, _ = _prepare(events, sensor_size)
    out = events.copy()
    shift = np.rint(std_us * rng.standard_normal(len(events))).astype(np.int64)
    out["t"] = np.maximum(events["t"] + shift, 0)
    return out[np.argsort(out["t"], kind="stable")]


def jitter_space(
    events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator, std_px: float
) -> np.ndarray:
    """Move each event by ``(round(std_px z_x), round(std_px z_y))``, ``z ~ N(0, 1)``.

    Events moved off the ``W x H`` sensor are dropped.
    """
    _check_nonnegative("std_px", std_px)
    events, (width, height, _) = _prepare(events, sensor_size)
    shift = np.rint(std_px * rng.standard_normal((2, len(events)))).astype(np.int64)
    x = events["x"].astype(np.int64) + shift[0]
    y = events["y"].astype(np.int64) + shift[1]
    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    out = events[keep]
    out["x"], out["y"] = x[keep], y[keep]
    return _sort_by_time(out)


def flip_polarity(
    events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator, p: float
) -> np.ndarray:
    """Flip each event's polarity, ``p' = P - 1 - p``, independently with probability ``p``.

    With two polarities ON and OFF swap; a one-polarity sensor is left unchanged.
    """
    _check_probability("p", p)
    events, (_, _, n_pol) = _prepare(events, sensor_size)
    out = events.copy()
    flip = rng.random(len(events)) < p
    out["p"][flip] = n_pol - 1 - events["p"][flip]
    return _sort_by_time(out)


def add_hot_pixels(
    events: np.ndarray,
    sensor_size: Sequence[int],
    rng: np.random.Generator,
    n_pixels: int,
    rate_hz: float,
) -> np.ndarray:
    """Add ``n_pixels`` distinct random pixels that fire regularly at ``rate_hz``.

    Hot pixel ``j`` fires at ``t = t0 + floor(phi_j + k T)`` for ``k = 0, 1, ...`` while
    ``phi_j + k T <= t1 - t0``, with period ``T = 1e6 / rate_hz`` us, phase
    ``phi_j ~ U[0, T)`` and ``[t0, t1]`` the sample's time span, so it adds
    ``rate_hz (t1 - t0) 1e-6`` events on average. Each event's polarity is uniform on
    ``{0, ..., P - 1}``. An empty sample stays empty.
    """
    _check_count("n_pixels", n_pixels)
    _check_nonnegative("rate_hz", rate_hz)
    events, (width, height, n_pol) = _prepare(events, sensor_size)
    n_pixels = int(n_pixels)
    if n_pixels > width * height:
        raise ValueError(f"n_pixels must be at most W * H = {width * height}, got {n_pixels}")
    if len(events) == 0:
        return events.copy()
    t0, t1 = _time_span(events)
    pixels = rng.choice(width * height, size=n_pixels, replace=False)
    if rate_hz == 0.0:
        return events.copy()
    period = 1e6 / rate_hz
    phase = rng.random(n_pixels) * period
    fires = np.where(phase <= t1 - t0, np.floor((t1 - t0 - phase) / period) + 1, 0)
    fires = fires.astype(np.int64)
    total = int(fires.sum())
    k = np.arange(total) - np.repeat(np.cumsum(fires) - fires, fires)
    t = t0 + np.floor(np.repeat(phase, fires) + k * period).astype(np.int64)
    y, x = np.divmod(np.repeat(pixels, fires), width)
    hot = make_events(x, y, t, rng.integers(0, n_pol, size=total))
    merged = np.concatenate([events, hot])
    return merged[np.argsort(merged["t"], kind="stable")]


# --- parameter holders ----------------------------------------------------------------------


@dataclass(frozen=True)
class EventDrop:
    """Drop each event with probability ``p`` (see ``drop_events``)."""

    p: float

    def __post_init__(self) -> None:
        _check_probability("EventDrop.p", self.p)

    def __call__(
        self, events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator
    ) -> np.ndarray:
        return drop_events(events, sensor_size, rng, self.p)


@dataclass(frozen=True)
class BackgroundNoise:
    """Add ``rate_hz`` uniform random events per pixel per second (see ``add_background_noise``)."""

    rate_hz: float

    def __post_init__(self) -> None:
        _check_nonnegative("BackgroundNoise.rate_hz", self.rate_hz)

    def __call__(
        self, events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator
    ) -> np.ndarray:
        return add_background_noise(events, sensor_size, rng, self.rate_hz)


@dataclass(frozen=True)
class TimeJitter:
    """Add Gaussian noise of standard deviation ``std_us`` to timestamps (see ``jitter_time``)."""

    std_us: float

    def __post_init__(self) -> None:
        _check_nonnegative("TimeJitter.std_us", self.std_us)

    def __call__(
        self, events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator
    ) -> np.ndarray:
        return jitter_time(events, sensor_size, rng, self.std_us)


@dataclass(frozen=True)
class SpatialJitter:
    """Add rounded Gaussian noise of std ``std_px`` to ``x`` and ``y`` (see ``jitter_space``)."""

    std_px: float

    def __post_init__(self) -> None:
        _check_nonnegative("SpatialJitter.std_px", self.std_px)

    def __call__(
        self, events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator
    ) -> np.ndarray:
        return jitter_space(events, sensor_size, rng, self.std_px)


@dataclass(frozen=True)
class PolarityFlip:
    """Flip each event's polarity with probability ``p`` (see ``flip_polarity``)."""

    p: float

    def __post_init__(self) -> None:
        _check_probability("PolarityFlip.p", self.p)

    def __call__(
        self, events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator
    ) -> np.ndarray:
        return flip_polarity(events, sensor_size, rng, self.p)


@dataclass(frozen=True)
class HotPixels:
    """``n_pixels`` random pixels firing regularly at ``rate_hz`` (see ``add_hot_pixels``)."""

    n_pixels: int
    rate_hz: float = 100.0

    def __post_init__(self) -> None:
        _check_count("HotPixels.n_pixels", self.n_pixels)
        _check_nonnegative("HotPixels.rate_hz", self.rate_hz)

    def __call__(
        self, events: np.ndarray, sensor_size: Sequence[int], rng: np.random.Generator
    ) -> np.ndarray:
        return add_hot_pixels(events, sensor_size, rng, self.n_pixels, self.rate_hz)


CORRUPTIONS: dict[str, type] = {
    "drop": EventDrop,
    "noise": BackgroundNoise,
    "time_jitter": TimeJitter,
    "spatial_jitter": SpatialJitter,
    "polarity_flip": PolarityFlip,
    "hot_pixels": HotPixels,
}

SEVERITY_PARAMETER = {
    "drop": "p",
    "noise": "rate_hz",
    "time_jitter": "std_us",
    "spatial_jitter": "std_px",
    "polarity_flip": "p",
    "hot_pixels": "n_pixels",
}
"""The parameter that ``make_corruption``'s severity sets, for each corruption name."""


def make_corruption(name: str, severity: float) -> Corruption:
    """The corruption ``name`` with its main parameter set to ``severity``.

    ``drop``: ``EventDrop(p=severity)``; ``noise``: ``BackgroundNoise(rate_hz=severity)``;
    ``time_jitter``: ``TimeJitter(std_us=severity)``; ``spatial_jitter``:
    ``SpatialJitter(std_px=severity)``; ``polarity_flip``: ``PolarityFlip(p=severity)``;
    ``hot_pixels``: ``HotPixels(n_pixels=severity)`` (a whole number) at the default
    ``rate_hz = 100``. Severity 0 leaves events unchanged for every corruption.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {sorted(CORRUPTIONS)}")
    parameter = SEVERITY_PARAMETER[name]
    if name == "hot_pixels":
        _check_count("HotPixels.n_pixels", severity)
        severity = int(severity)
    return CORRUPTIONS[name](**{parameter: severity})


def sample_generator(seed: int, index: int) -> np.random.Generator:
    """The generator ``corrupt_eventset`` uses for the sample keyed ``index``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(index),)))


def corrupt_eventset(
    eventset: EventSet,
    corruption: Corruption,
    seed: int,
    sample_keys: ArrayLike | None = None,
) -> EventSet:
    """Apply ``corruption`` to every sample, sample ``i`` with ``sample_generator(seed, key_i)``.

    The keys default to the positions ``0, ..., N - 1``, so corrupting a subset gives other
    noise than the same samples inside the full set. Passing the samples' original indices
    as ``sample_keys`` makes the two agree:
    ``corrupt_eventset(es.subset(idx), c, s, sample_keys=idx)`` equals
    ``corrupt_eventset(es, c, s).subset(idx)``. Labels and sensor size are kept.
    ``EventDrop`` is applied with one mask over all events, drawn sample by sample from the
    same generators, which gives exactly the per-sample result.
    """
    n = len(eventset)
    keys = np.arange(n) if sample_keys is None else np.asarray(sample_keys, dtype=np.int64)
    if keys.shape != (n,):
        raise ValueError(f"sample_keys must hold one key per sample ({n}), got shape {keys.shape}")
    rngs = [sample_generator(seed, key) for key in keys]
    if isinstance(corruption, EventDrop):
        return _drop_eventset(eventset, corruption.p, rngs)
    samples = [
        corruption(eventset[i][0], eventset.sensor_size, rng) for i, rng in enumerate(rngs)
    ]
    return EventSet.from_samples(samples, eventset.labels, eventset.sensor_size)


def _drop_eventset(eventset: EventSet, p: float, rngs: list[np.random.Generator]) -> EventSet:
    lengths = eventset.lengths
    uniforms = [rng.random(int(length)) for rng, length in zip(rngs, lengths, strict=True)]
    keep = np.concatenate(uniforms) >= p if uniforms else np.zeros(0, dtype=bool)
    events = eventset.events[keep]
    sample = np.repeat(np.arange(len(lengths)), lengths)[keep]
    t = events["t"]
    if not np.all((t[1:] >= t[:-1]) | (sample[1:] != sample[:-1])):
        order = np.lexsort((t, sample))
        events, sample = events[order], sample[order]
    offsets = np.searchsorted(sample, np.arange(len(lengths) + 1))
    return EventSet(events, offsets, eventset.labels, eventset.sensor_size)
