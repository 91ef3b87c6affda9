"""An offline stand-in for DVS128 Gesture: moving shapes seen by a simulated event camera.

DVS128 Gesture (Amir et al., 2017) records 11 hand and arm gestures with a 128 x 128
DVS; several come in pairs that differ only in the direction of motion (arm clockwise
vs counter-clockwise), so a classifier has to use the order of events, not just where
they are. Here each sample is about 1.5 s of a bright shape moving over a dark
background, rendered through a simulated DVS at 128 x 128 pixels.

Classes (``SYNTHETIC_GESTURE_CLASSES``, in label order). Directions are as seen on the
sensor image with ``x`` to the right and ``y`` down (row 0 at the top):

0. ``rotate_cw``: a blob orbits a centre clockwise (the angle ``atan2(y - y_c, x - x_c)``
   grows) for 1-1.5 turns.
1. ``rotate_ccw``: the same, counter-clockwise.
2. ``sweep_right``: a blob crosses the sensor left to right along a shallow arc.
3. ``sweep_left``: right to left.
4. ``sweep_down``: a blob crosses top to bottom (``y`` grows) along a shallow arc.
5. ``sweep_up``: bottom to top.
6. ``ring_expand``: a thin, dimmer ring grows from 3-6 to 20-30 pixels in radius.
7. ``ring_contract``: a ring shrinks.
8. ``blink``: a blob at rest brightens and fades 3-5 times.
9. ``figure_eight``: a blob traces a lying figure eight (a 1:2 Lissajous curve).
10. ``other``: a blob at rest with a smooth random jitter of a few pixels.

Each odd class ``2j + 1`` below 8 is the exact time reversal of class ``2j``: the
partner's scene is the base scene played backwards, with parameters from the same
distribution. Every scene starts and ends blank (the shape fades in and out), so every
pixel emits as many ON as OFF events (noise aside), and the time-summed event images of the two
classes of a pair have the same distribution: only the order of the events tells them
apart. Per sample, the shape's position (centre offset up to 8-20 pixels), path
length or number of turns, size, phase, brightness and the times its motion starts and
stops are random.

Scene: intensity ``I_k(x, y) = a_k exp(-(d_k(x, y) - r_k)^2 / (2 s^2))`` at step ``k``,
with ``d_k`` the distance to the shape's centre ``c_k``, ring radius ``r_k`` (0 for a
blob), width ``s`` and brightness ``a_k``, sampled every ``dt_us``.

Camera (as ``simulate_saccade_events`` in :mod:`sast.data.synthetic`): log intensity
``L_k = log(eps + I_k)``; each pixel has its own contrast threshold
``C_xy = C (1 + sigma z)`` (``z ~ N(0, 1)``, clipped to ``[0.5 C, 1.5 C]``) and emits
``floor(|L_k - L_ref| / C_xy)`` events of polarity ``sign(L_k - L_ref)`` at each step,
moving ``L_ref`` by that many ``C_xy``; timestamps are uniform within the step.
Background noise adds Poisson events at ``noise_rate_hz`` per pixel, uniform in pixel,
time and polarity. ``GestureCamera`` holds the settings (``C = 0.3``, ``sigma = 0.05``,
``eps = 0.1``, 5 ms steps, 0.05 Hz noise); the default set of 11 x 60 samples has
3-26 thousand events per sample (median about 10 thousand), ON fraction 0.50.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sast.data.cache import default_cache_dir
from sast.data.events import EventSet
from sast.data.synthetic import _dvs_counts, _emit_events, rendered_split, stratified_split

SYNTHETIC_GESTURE_VERSION = 1
GESTURE_SENSOR_SIZE = (128, 128, 2)
SYNTHETIC_GESTURE_CLASSES = (
    "rotate_cw",
    "rotate_ccw",
    "sweep_right",
    "sweep_left",
    "sweep_down",
    "sweep_up",
    "ring_expand",
    "ring_contract",
    "blink",
    "figure_eight",
    "other",
)
DEFAULT_SAMPLES_PER_CLASS = 60

_GESTURE_KEY = 2
_CHUNK_SAMPLES = 8
_N_PAIRED = 8
_REACH = 4.0  # the shape is drawn out to this many widths; beyond, it changes no pixel


@dataclass(frozen=True)
class GestureCamera:
    """The simulated event camera and time grid of the synthetic gesture set."""

    duration_ms: float = 1500.0
    dt_us: int = 5000
    contrast_threshold: float = 0.3
    threshold_mismatch: float = 0.05
    log_eps: float = 0.1
    noise_rate_hz: float = 0.05

    def __post_init__(self) -> None:
        if int(self.dt_us) != self.dt_us or self.dt_us < 1:
            raise ValueError(f"GestureCamera.dt_us must be a positive integer, got {self.dt_us}")
        if self.n_steps < 1 or self.n_steps * self.dt_us != round(self.duration_ms * 1000):
            raise ValueError(
                f"GestureCamera.duration_ms ({self.duration_ms}) must be a positive multiple "
                f"of dt_us ({self.dt_us} us)"
            )

    @property
    def n_steps(self) -> int:
        return int(round(self.duration_ms * 1000 / self.dt_us))


@dataclass(frozen=True)
class GestureScene:
    """A shape's centre ``(cx, cy)``, ring radius and brightness at each time step.

    ``width`` is the Gaussian width ``s`` of the blob or ring, in pixels.
    """

    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    brightness: np.ndarray
    width: float

    def reversed(self) -> GestureScene:
        return GestureScene(
            self.cx[::-1], self.cy[::-1], self.radius[::-1], self.brightness[::-1], self.width
        )


Motion = Callable[[np.random.Generator, np.ndarray], tuple[np.ndarray, ...]]


def _centre(rng: np.random.Generator, spread: float = 12.0) -> np.ndarray:
    return (GESTURE_SENSOR_SIZE[0] - 1) / 2.0 + rng.uniform(-spread, spread, size=2)


def _orbit(rng: np.random.Generator, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """Clockwise circle: ``c = c_0 + R (cos theta, sin theta)``, ``theta = phi + 2 pi n s``."""
    xc, yc = _centre(rng)
    radius, turns, phase = rng.uniform(16, 26), rng.uniform(1, 1.5), rng.uniform(0, 2 * np.pi)
    theta = phase + 2 * np.pi * turns * s
    return xc + radius * np.cos(theta), yc + radius * np.sin(theta), 0.0 * s, np.ones_like(s)


def _sweep_right(rng: np.random.Generator, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """Left to right: ``x = x_0 + L (s - 1/2)``, ``y = y_0 - A sin(pi s)``."""
    xc, yc = _centre(rng)
    length, arc = rng.uniform(60, 90), rng.uniform(-8, 8)
    return xc + length * (s - 0.5), yc - arc * np.sin(np.pi * s), 0.0 * s, np.ones_like(s)


def _sweep_down(rng: np.random.Generator, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """Top to bottom: ``_sweep_right`` with ``x`` and ``y`` swapped."""
    x, y, radius, profile = _sweep_right(rng, s)
    return y, x, radius, profile


def _ring(rng: np.random.Generator, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """Expanding ring, ``r = r_0 + (r_1 - r_0) s``, at 0.6 of a blob's brightness."""
    xc, yc = _centre(rng, spread=8.0)
    r0, r1 = rng.uniform(3, 6), rng.uniform(20, 30)
    return np.full_like(s, xc), np.full_like(s, yc), r0 + (r1 - r0) * s, np.full_like(s, 0.6)


def _blink(rng: np.random.Generator, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """Blob at rest with brightness ``sin^2(pi n s)``, ``n`` in {3, 4, 5}."""
    xc, yc = _centre(rng, spread=20.0)
    n_blinks = rng.integers(3, 6)
    return np.full_like(s, xc), np.full_like(s, yc), 0.0 * s, np.sin(np.pi * n_blinks * s) ** 2


def _figure_eight(rng: np.random.Generator, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """``c = c_0 + (A sin theta, B sin 2 theta)``, ``theta = phi + 2 pi n s``."""
    xc, yc = _centre(rng)
    a, b = rng.uniform(18, 26), rng.uniform(8, 13)
    turns, phase = rng.uniform(0.8, 1.2), rng.uniform(0, 2 * np.pi)
    theta = phase + 2 * np.pi * turns * s
    return xc + a * np.sin(theta), yc + b * np.sin(2 * theta), 0.0 * s, np.ones_like(s)


def _jitter(rng: np.random.Generator, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """Blob at rest plus three random sinusoids per axis, 2-5 pixels, 1-4 cycles each."""
    centre = _centre(rng, spread=20.0)
    amplitude = rng.uniform(2, 5, size=(2, 3, 1))
    cycles = rng.uniform(1, 4, size=(2, 3, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(2, 3, 1))
    offset = np.sum(amplitude * np.sin(2 * np.pi * cycles * s + phase), axis=1)
    return centre[0] + offset[0], centre[1] + offset[1], 0.0 * s, np.ones_like(s)


# Base motion of each class; a class 2j + 1 < 8 plays class 2j's motion backwards.
_MOTIONS: tuple[Motion, ...] = (_orbit, _sweep_right, _sweep_down, _ring, _blink, _figure_eight,
                                _jitter)
_WIDTHS = {_ring: (1.5, 2.5), _blink: (4.0, 7.0)}  # shape width s in pixels; blobs: 3-5


def gesture_scene(label: int, rng: np.random.Generator, n_steps: int) -> GestureScene:
    """The scene of one sample of class ``label`` at ``n_steps + 1`` equally spaced times.

    Motion runs over the window ``[u_0, u_1]`` of normalised time ``u`` in ``[0, 1]``
    (``u_0, 1 - u_1 ~ U[0, 0.1]``) with progress ``s = (u - u_0) / (u_1 - u_0)``; the
    brightness ``a ~ U[0.25, 0.45]`` is faded in and out over the first and last fraction
    ``f ~ U[0.08, 0.15]`` of it: ``sin^2(pi/2 min(1, s / f, (1 - s) / f))``, zero outside.
    The shape's own brightness profile (blinks, the dimmer ring) multiplies this.
    """
    if not 0 <= label < len(SYNTHETIC_GESTURE_CLASSES):
        top = len(SYNTHETIC_GESTURE_CLASSES) - 1
        raise ValueError(f"label must lie in [0, {top}], got {label}")
    backwards = label < _N_PAIRED and label % 2 == 1
    motion = _MOTIONS[label // 2 if label < _N_PAIRED else label - _N_PAIRED // 2]
    u = np.linspace(0.0, 1.0, n_steps + 1)
    start, stop = rng.uniform(0.0, 0.1), 1.0 - rng.uniform(0.0, 0.1)
    s = np.clip((u - start) / (stop - start), 0.0, 1.0)
    cx, cy, radius, profile = motion(rng, s)
    width = rng.uniform(*_WIDTHS.get(motion, (3.0, 5.0)))
    fade = rng.uniform(0.08, 0.15)
    envelope = np.sin(np.pi / 2 * np.clip(np.minimum(s, 1.0 - s) / fade, 0.0, 1.0)) ** 2
    brightness = rng.uniform(0.25, 0.45) * envelope * profile
    scene = GestureScene(cx, cy, radius, brightness, float(width))
    return scene.reversed() if backwards else scene


def _region(scene: GestureScene) -> tuple[np.ndarray, np.ndarray]:
    """Sensor columns and rows the shape can reach: its bounding box while visible."""
    visible = scene.brightness > 0
    reach = float(scene.radius[visible].max(initial=0.0)) + _REACH * scene.width
    spans = []
    for centre, size in ((scene.cx, GESTURE_SENSOR_SIZE[0]), (scene.cy, GESTURE_SENSOR_SIZE[1])):
        low = max(int(np.floor(centre[visible].min(initial=0.0) - reach)), 0)
        high = min(int(np.ceil(centre[visible].max(initial=-1.0) + reach)), size - 1)
        spans.append(np.arange(low, high + 1))
    return spans[0], spans[1]


def _log_levels(
    scene: GestureScene, cols: np.ndarray, rows: np.ndarray, log_eps: float
) -> np.ndarray:
    """``L_k = log(eps + I_k)`` on the pixels ``rows x cols``, ``[K + 1, len(rows) len(cols)]``."""
    dx = (cols[None, :] - scene.cx[:, None]).astype(np.float32)
    dy = (rows[None, :] - scene.cy[:, None]).astype(np.float32)
    scale = np.float32(-0.5 / scene.width**2)
    if not scene.radius.any():
        # A blob's Gaussian factorises into a row and a column profile.
        shape = np.exp(scale * dy**2)[:, :, None] * np.exp(scale * dx**2)[:, None, :]
    else:
        distance = np.sqrt(dy[:, :, None] ** 2 + dx[:, None, :] ** 2)
        distance -= scene.radius[:, None, None].astype(np.float32)
        shape = np.exp(scale * distance**2)
    intensity = scene.brightness[:, None, None].astype(np.float32) * shape
    return np.log(np.float32(log_eps) + intensity).reshape(len(scene.cx), -1)


def render_gestures(
    labels: Sequence[int],
    rngs: Sequence[np.random.Generator],
    camera: GestureCamera = GestureCamera(),
) -> list[np.ndarray]:
    """Events of one sample per label, sample ``i`` drawn with ``rngs[i]`` (see module docs).

    The DVS is run on all samples at once; results equal rendering them one at a time,
    since every random draw is per sample and the DVS update is elementwise.
    """
    width, height, _ = GESTURE_SENSOR_SIZE
    changes, columns = [], []
    for b, (label, rng) in enumerate(zip(labels, rngs, strict=True)):
        scene = gesture_scene(int(label), rng, camera.n_steps)
        cols, rows = _region(scene)
        levels = _log_levels(scene, cols, rows, camera.log_eps)
        mismatch = 1.0 + camera.threshold_mismatch * rng.standard_normal(levels.shape[1])
        levels /= (camera.contrast_threshold * np.clip(mismatch, 0.5, 1.5)).astype(np.float32)
        # A pixel whose level never strays a full threshold from its start never fires.
        active = np.flatnonzero(np.ptp(levels, axis=0) >= 1.0)
        changes.append(levels[:, active] - levels[0, active])
        pixel = rows[active // len(cols)] * width + cols[active % len(cols)]
        columns.append(b * width * height + pixel)
    step, column, counts = _dvs_counts(np.concatenate(changes, axis=1))
    sample, pixel = np.divmod(np.concatenate(columns)[column], width * height)
    order = np.lexsort((pixel, step, sample))
    step, pixel, counts = step[order], pixel[order], counts[order]
    bounds = np.searchsorted(sample[order], np.arange(len(rngs) + 1))
    events = []
    for b, rng in enumerate(rngs):
        part = slice(bounds[b], bounds[b + 1])
        flat = step[part] * (width * height) + pixel[part]
        events.append(
            _emit_events(
                flat, counts[part], rng, width, camera.n_steps, camera.dt_us,
                camera.noise_rate_hz,
            )
        )
    return events


def render_gesture(
    label: int, rng: np.random.Generator, camera: GestureCamera = GestureCamera()
) -> np.ndarray:
    """Events of one sample of class ``label`` drawn with ``rng`` (see the module docs)."""
    return render_gestures([label], [rng], camera)[0]


def gesture_sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that renders sample ``index`` of the synthetic gesture set with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_GESTURE_KEY, index)))


def gesture_labels(samples_per_class: int) -> np.ndarray:
    """Labels of the set: sample ``i`` has class ``i mod 11``."""
    n_classes = len(SYNTHETIC_GESTURE_CLASSES)
    return np.arange(samples_per_class * n_classes, dtype=np.int64) % n_classes


def gesture_cache_path(
    seed: int,
    cache_dir: str | os.PathLike | None = None,
    samples_per_class: int = DEFAULT_SAMPLES_PER_CLASS,
) -> Path:
    """Where ``synthetic_gesture`` keeps the set rendered with ``seed``.

    ``synthetic-gesture-v1-seed{seed}.npz``, with ``-n{samples_per_class}`` before the
    suffix when that is not the default.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    size = "" if samples_per_class == DEFAULT_SAMPLES_PER_CLASS else f"-n{samples_per_class}"
    return folder / f"synthetic-gesture-v{SYNTHETIC_GESTURE_VERSION}-seed{seed}{size}.npz"


def _build(
    seed: int, test_fraction: float, samples_per_class: int
) -> tuple[EventSet, dict[str, np.ndarray]]:
    labels = gesture_labels(samples_per_class)
    samples: list[np.ndarray] = []
    for start in range(0, len(labels), _CHUNK_SAMPLES):
        chunk = labels[start : start + _CHUNK_SAMPLES]
        rngs = [gesture_sample_rng(seed, start + i) for i in range(len(chunk))]
        samples.extend(render_gestures(chunk, rngs))
    eventset = EventSet.from_samples(samples, labels, GESTURE_SENSOR_SIZE)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    extra = {
        "train_idx": train_idx,
        "test_idx": test_idx,
        "test_fraction": np.float64(test_fraction),
        "version": np.int64(SYNTHETIC_GESTURE_VERSION),
        "seed": np.int64(seed),
        "samples_per_class": np.int64(samples_per_class),
    }
    return eventset, extra


def synthetic_gesture(
    split: str,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    samples_per_class: int = DEFAULT_SAMPLES_PER_CLASS,
) -> EventSet:
    """The ``"train"`` or ``"test"`` part of the synthetic gesture set.

    ``11 * samples_per_class`` samples (sample ``i`` of class ``i mod 11``, rendered with
    ``gesture_sample_rng(seed, i)``) are rendered once and cached, with a stratified
    split, at ``gesture_cache_path(seed, cache_dir, samples_per_class)``; later calls load
    that file. An unreadable cache is rebuilt with a warning. Sensor size
    ``(128, 128, 2)``, labels 0-10 (``SYNTHETIC_GESTURE_CLASSES``).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if int(samples_per_class) != samples_per_class or samples_per_class < 1:
        raise ValueError(f"samples_per_class must be a positive integer, got {samples_per_class}")
    samples_per_class = int(samples_per_class)
    expected = {"version": SYNTHETIC_GESTURE_VERSION, "seed": seed,
                "samples_per_class": samples_per_class}
    return rendered_split(
        split, gesture_cache_path(seed, cache_dir, samples_per_class), expected,
        GESTURE_SENSOR_SIZE, "synthetic gesture",
        lambda: _build(seed, test_fraction, samples_per_class), test_fraction, seed,
    )
