"""An offline stand-in for N-MNIST built from scikit-learn's handwritten digits.

N-MNIST (Orchard et al., 2015) records MNIST digits with an ATIS event camera
(34 x 34 pixels) that makes three saccades along a triangle, about 100 ms each.
Here the 1797 8 x 8 digits of ``sklearn.datasets.load_digits`` (shipped with
scikit-learn, nothing is downloaded) are shown to a simulated event camera that
moves the same way, giving samples with N-MNIST's format and similar statistics.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sast.data.cache import default_cache_dir
from sast.data.events import EventSet, make_events

SYNTHETIC_NMNIST_VERSION = 1
SENSOR_SIZE = (34, 34, 2)

_SPLIT_KEY = 0
_RENDER_KEY = 1
_CHUNK_SAMPLES = 32


def _cubic_bspline(u: np.ndarray) -> np.ndarray:
    """Cubic B-spline: ``2/3 - u^2 + |u|^3 / 2`` for ``|u| < 1``, ``(2 - |u|)^3 / 6`` up to 2."""
    a = np.abs(u)
    inner = 2.0 / 3.0 - a**2 + a**3 / 2.0
    outer = (2.0 - a) ** 3 / 6.0
    return np.where(a < 1.0, inner, np.where(a < 2.0, outer, 0.0))


def _triangle_path(n_steps: int, steps_per_saccade: int, amplitude_px: float) -> np.ndarray:
    """Displacement ``(dx, dy)`` at each of ``n_steps + 1`` samples along a closed triangle.

    Vertices ``(0, 0) -> (A/2, A) -> (A, 0) -> (0, 0)`` minus their centroid, visited at
    steps ``0, S, 2S, 3S`` and joined by straight lines at constant speed.
    """
    vertices = amplitude_px * np.array([[0.0, 0.0], [0.5, 1.0], [1.0, 0.0], [0.0, 0.0]])
    vertices -= vertices[:3].mean(axis=0)
    knots = steps_per_saccade * np.arange(4)
    steps = np.arange(n_steps + 1)
    return np.stack([np.interp(steps, knots, vertices[:, axis]) for axis in (0, 1)], axis=1)


def _sampling_matrices(
    shift: np.ndarray, n_cells: int, sensor_px: int, image_px: float
) -> np.ndarray:
    """``M[k, s, c] = phi((s - center - shift[k]) / h - (c - (n - 1) / 2))`` with pitch ``h``.

    Row ``s`` of sensor pixels sees image cell ``c`` through the cubic B-spline ``phi``
    scaled to the cell pitch ``h = image_px / n``, centred on the sensor and displaced by
    ``shift[k]`` pixels.
    """
    pitch = image_px / n_cells
    sensor = np.arange(sensor_px) - (sensor_px - 1) / 2.0
    cells = np.arange(n_cells) - (n_cells - 1) / 2.0
    u = (sensor[None, :, None] - shift[:, None, None]) / pitch - cells[None, None, :]
    return _cubic_bspline(u)


def _log_intensity(
    image: np.ndarray, rows: np.ndarray, cols: np.ndarray, log_eps: float
) -> np.ndarray:
    """``L_k = log(eps + I_k)`` with ``I_k = R_k G C_k^T``: the moving image at each step."""
    intensity = np.matmul(np.matmul(rows, image.astype(rows.dtype)), np.swapaxes(cols, 1, 2))
    return np.log(np.float32(log_eps) + intensity.astype(np.float32))


def _dvs_counts(change: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed event counts of each pixel at each step of an ideal DVS.

    ``change`` holds ``v_k = (L_k - L_0) / C`` per pixel, ``[K + 1, pixels]``. With the
    reference ``L_ref = L_0 + m C`` (``m_0 = 0``), the rule "emit ``floor(|v_k - m|)``
    events of sign ``v_k - m`` and move ``m`` by them" is
    ``m_k = clip(m_{k-1}, floor(v_k), ceil(v_k))``, ``n_k = m_k - m_{k-1}``.
    Returns the nonzero counts as ``(step k - 1, pixel, n_k)``.
    """
    reference = np.zeros(change.shape[1], dtype=change.dtype)
    low, high = np.empty_like(reference), np.empty_like(reference)
    steps, pixels, counts = [], [], []
    for k in range(1, len(change)):
        np.floor(change[k], out=low)
        np.ceil(change[k], out=high)
        np.maximum(reference, low, out=low)
        np.minimum(low, high, out=high)
        np.subtract(high, reference, out=low)
        fired = np.flatnonzero(low)
        steps.append(np.full(len(fired), k - 1))
        pixels.append(fired)
        counts.append(low[fired].astype(np.int64))
        reference, high = high, reference
    return np.concatenate(steps), np.concatenate(pixels), np.concatenate(counts)


def _emit_events(
    flat: np.ndarray,
    counts: np.ndarray,
    rng: np.random.Generator,
    sensor_px: int,
    n_steps: int,
    dt_us: int,
    noise_rate_hz: float,
) -> np.ndarray:
    """Events from signed counts at ``flat = (k * H + y) * W + x``, plus background noise.

    Each of the ``|n|`` events gets ``t = k dt + U{0, ..., dt - 1}``; noise events are
    Poisson with ``noise_rate_hz`` per pixel, uniform in pixel, time and polarity.
    """
    flat = np.repeat(flat, np.abs(counts))
    on = np.repeat(counts > 0, np.abs(counts))
    step, pixel = np.divmod(flat, sensor_px * sensor_px)
    t = step * dt_us + rng.integers(0, dt_us, size=len(flat))
    duration_us = n_steps * dt_us
    n_noise = rng.poisson(noise_rate_hz * sensor_px**2 * duration_us * 1e-6)
    pixel = np.concatenate([pixel, rng.integers(0, sensor_px**2, size=n_noise)])
    t = np.concatenate([t, rng.integers(0, duration_us, size=n_noise)])
    on = np.concatenate([on, rng.integers(0, 2, size=n_noise).astype(bool)])
    order = np.argsort(t, kind="stable")
    y, x = np.divmod(pixel[order], sensor_px)
    return make_events(x, y, t[order], on[order])


def _simulate_batch(
    images: Sequence[np.ndarray],
    rngs: Sequence[np.random.Generator],
    sensor_size: int,
    saccade_ms: float,
    dt_us: int,
    contrast_threshold: float,
    threshold_mismatch: float,
    amplitude_px: float,
    image_px: float,
    log_eps: float,
    noise_rate_hz: float,
) -> list[np.ndarray]:
    """``simulate_saccade_events`` for images of one shape, each with its own generator.

    Results do not depend on how images are batched: rendering and random draws are per
    image, and the batched DVS loop is elementwise.
    """
    sensor_px = int(sensor_size)
    steps_per_saccade = int(round(saccade_ms * 1000.0 / dt_us))
    if steps_per_saccade < 1:
        raise ValueError(f"saccade_ms={saccade_ms} is shorter than one step of {dt_us} us")
    n_steps = 3 * steps_per_saccade
    shift = _triangle_path(n_steps, steps_per_saccade, amplitude_px)
    height, width = np.shape(images[0])
    scale = image_px / max(height, width)
    cols = _sampling_matrices(shift[:, 0], width, sensor_px, scale * width).astype(np.float32)
    rows = _sampling_matrices(shift[:, 1], height, sensor_px, scale * height).astype(np.float32)
    n_pixels = sensor_px * sensor_px
    changes, columns = [], []
    for b, (image, rng) in enumerate(zip(images, rngs, strict=True)):
        mismatch = np.clip(1.0 + threshold_mismatch * rng.standard_normal(n_pixels), 0.5, 1.5)
        threshold = (contrast_threshold * mismatch).astype(np.float32)
        levels = _log_intensity(image, rows, cols, log_eps).reshape(n_steps + 1, n_pixels)
        levels /= threshold
        # A pixel whose level never strays a full threshold from its start never fires.
        active = np.flatnonzero(np.ptp(levels, axis=0) >= 1.0)
        changes.append(levels[:, active] - levels[0, active])
        columns.append(b * n_pixels + active)
    step, column, counts = _dvs_counts(np.concatenate(changes, axis=1))
    sample, pixel = np.divmod(np.concatenate(columns)[column], n_pixels)
    order = np.lexsort((step, sample))
    step, pixel, counts = step[order], pixel[order], counts[order]
    bounds = np.searchsorted(sample[order], np.arange(len(images) + 1))
    events = []
    for b, rng in enumerate(rngs):
        part = slice(bounds[b], bounds[b + 1])
        flat_b = step[part] * n_pixels + pixel[part]
        events.append(
            _emit_events(flat_b, counts[part], rng, sensor_px, n_steps, dt_us, noise_rate_hz)
        )
    return events


def simulate_saccade_events(
    image: np.ndarray,
    rng: np.random.Generator,
    sensor_size: int = 34,
    saccade_ms: float = 100.0,
    dt_us: int = 1000,
    contrast_threshold: float = 0.23,
    threshold_mismatch: float = 0.03,
    amplitude_px: float = 4.0,
    image_px: float = 20.0,
    log_eps: float = 0.1,
    noise_rate_hz: float = 0.1,
) -> np.ndarray:
    """Events of a simulated DVS watching ``image`` during three saccades.

    Scene: the grey image ``G`` (values in [0, 1], any ``h x w``) is upscaled smoothly
    with a cubic B-spline ``phi`` to span ``image_px`` sensor pixels, centred on the
    ``sensor_size``-square sensor and translated by ``d(t)``:
    ``I(x, y, t) = sum_ij G_ij phi((y - y_c - d_y(t)) / h - i') phi((x - x_c - d_x(t)) / h - j')``
    with pitch ``h = image_px / max(h, w)`` and centred cell indices ``i', j'``. ``d(t)``
    runs at constant speed along the closed triangle ``(0, 0) -> (A/2, A) -> (A, 0) ->
    (0, 0)`` (minus its centroid), one leg per ``saccade_ms``, and is sampled every
    ``dt_us``.

    Sensor: each pixel has its own threshold ``C_xy = C (1 + sigma z)``, ``z ~ N(0, 1)``
    (clipped to ``[0.5 C, 1.5 C]``) and a reference ``L_ref = L_0`` where
    ``L_k = log(eps + I_k)``. At step ``k`` it emits ``floor(|L_k - L_ref| / C_xy)`` events
    of polarity ``sign(L_k - L_ref)`` (ON = 1 for an increase) and moves ``L_ref`` by that
    many ``C_xy``. Each event's timestamp is drawn uniformly among the integer microseconds
    of its step, ``t in [(k - 1) dt, k dt)``. Background noise adds Poisson(``noise_rate_hz``
    per pixel) events, uniform in pixel, time and polarity. Output is sorted by ``t``.

    The defaults (``image_px = 20`` as MNIST's digit box inside its 28 x 28 frame) make
    the 1797 scikit-learn digits look like N-MNIST in bulk: 3143-4937 events per sample
    (median 4059; N-MNIST 1069-7152, median about 4100), ON fraction 0.50, 290-300 ms.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {image.shape}")
    if image.min() < 0.0 or image.max() > 1.0:
        raise ValueError(f"image values must lie in [0, 1], got [{image.min()}, {image.max()}]")
    if int(dt_us) != dt_us or dt_us < 1:
        raise ValueError(f"dt_us must be a positive integer, got {dt_us!r}")
    return _simulate_batch(
        [image],
        [rng],
        sensor_size=sensor_size,
        saccade_ms=saccade_ms,
        dt_us=int(dt_us),
        contrast_threshold=contrast_threshold,
        threshold_mismatch=threshold_mismatch,
        amplitude_px=amplitude_px,
        image_px=image_px,
        log_eps=log_eps,
        noise_rate_hz=noise_rate_hz,
    )[0]


# The dataset is rendered with simulate_saccade_events' defaults.
_DEFAULTS = {
    name: param.default
    for name, param in inspect.signature(simulate_saccade_events).parameters.items()
    if param.default is not inspect.Parameter.empty
}


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8 x 8 scikit-learn digits as floats in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images / 16.0, digits.target.astype(np.int64)


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices, ``round(test_fraction * n_c)`` of each class ``c`` to test.

    Each class is shuffled by a generator seeded from ``seed`` alone, so the split does
    not depend on anything else (in particular not on how samples are rendered).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEY,)))
    test = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test.append(members[: int(round(test_fraction * len(members)))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that renders sample ``index`` of the dataset with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_RENDER_KEY, index)))


def render_digits(images: np.ndarray, seed: int) -> list[np.ndarray]:
    """``simulate_saccade_events(images[i], sample_rng(seed, i))`` for every ``i``.

    Images are rendered in batches for speed; the result equals rendering one at a time.
    """
    events: list[np.ndarray] = []
    for start in range(0, len(images), _CHUNK_SAMPLES):
        batch = [np.asarray(im, dtype=np.float64) for im in images[start : start + _CHUNK_SAMPLES]]
        rngs = [sample_rng(seed, start + i) for i in range(len(batch))]
        events.extend(_simulate_batch(batch, rngs, **_DEFAULTS))
    return events


def cache_path(seed: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``synthetic_nmnist`` keeps the dataset rendered with ``seed``."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"synthetic-nmnist-v{SYNTHETIC_NMNIST_VERSION}-seed{seed}.npz"


def _build(seed: int, test_fraction: float) -> tuple[EventSet, dict[str, np.ndarray]]:
    images, labels = _digits()
    eventset = EventSet.from_samples(render_digits(images, seed), labels, SENSOR_SIZE)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    extra = {
        "train_idx": train_idx,
        "test_idx": test_idx,
        "test_fraction": np.float64(test_fraction),
        "version": np.int64(SYNTHETIC_NMNIST_VERSION),
        "seed": np.int64(seed),
    }
    return eventset, extra


def _load_rendered(
    path: Path, expected: dict[str, int], sensor_size: tuple[int, int, int], what: str
) -> tuple[EventSet, dict[str, np.ndarray]]:
    """Read a cache file of a rendered dataset; ``ValueError`` if it is unreadable or was made
    with other settings (``expected`` values of its extra fields)."""
    eventset, extra = EventSet.load_with_extra(path)
    for key, value in expected.items():
        if key not in extra or int(extra[key]) != value:
            raise ValueError(f"{os.fspath(path)!r}: {key} is not {value}")
    missing = {"train_idx", "test_idx", "test_fraction"} - set(extra)
    if missing or eventset.sensor_size != sensor_size:
        raise ValueError(f"{os.fspath(path)!r}: not a {what} cache file")
    return eventset, extra


def rendered_split(
    split: str, path: Path, expected: dict[str, int], sensor_size: tuple[int, int, int],
    what: str, build: Callable[[], tuple[EventSet, dict[str, np.ndarray]]],
    test_fraction: float, seed: int,
) -> EventSet:
    """``split`` of a rendered dataset cached at ``path``: loaded, or built by ``build()`` and
    saved atomically (with a warning when an unreadable or stale file is replaced)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    try:
        eventset, extra = _load_rendered(path, expected, sensor_size, what)
    except ValueError as err:
        if path.exists():
            warnings.warn(f"rebuilding {what} cache: {err}", stacklevel=3)
        eventset, extra = build()
        eventset.save(path, extra)
    if float(extra["test_fraction"]) == test_fraction:
        train_idx, test_idx = extra["train_idx"], extra["test_idx"]
    else:
        train_idx, test_idx = stratified_split(eventset.labels, test_fraction, seed)
    return eventset.subset(train_idx if split == "train" else test_idx)


def synthetic_nmnist(
    split: str,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
) -> EventSet:
    """The ``"train"`` or ``"test"`` part of the synthetic N-MNIST set.

    All 1797 digits are rendered once by ``simulate_saccade_events`` (sample ``i`` with
    ``sample_rng(seed, i)``) and cached, with a stratified split, at
    ``cache_path(seed, cache_dir)``; later calls load that file. An unreadable cache is
    rebuilt with a warning. Sensor size ``(34, 34, 2)``, labels 0-9.
    """
    return rendered_split(
        split, cache_path(seed, cache_dir),
        {"version": SYNTHETIC_NMNIST_VERSION, "seed": seed}, SENSOR_SIZE, "synthetic N-MNIST",
        lambda: _build(seed, test_fraction), test_fraction, seed,
    )
