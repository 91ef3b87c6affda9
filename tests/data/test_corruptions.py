import numpy as np
import pytest

from sast.data.corruptions import (
    CORRUPTIONS,
    SEVERITY_PARAMETER,
    BackgroundNoise,
    EventDrop,
    HotPixels,
    PolarityFlip,
    SpatialJitter,
    TimeJitter,
    add_background_noise,
    add_hot_pixels,
    corrupt_eventset,
    drop_events,
    flip_polarity,
    jitter_space,
    jitter_time,
    make_corruption,
    sample_generator,
)
from sast.data.events import EVENT_DTYPE, EventSet, make_events

SENSOR = (128, 128, 2)
SEVERITIES = {
    "drop": 0.3,
    "noise": 1.0,
    "time_jitter": 2000.0,
    "spatial_jitter": 1.5,
    "polarity_flip": 0.2,
    "hot_pixels": 5,
}


def random_events(n, seed=0, t_max=1_500_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, t_max, size=n))
    return make_events(rng.integers(0, 128, n), rng.integers(0, 128, n), t, rng.integers(0, 2, n))


def one_per_pixel(seed=0):
    """One event at every pixel of the 128 x 128 sensor, with distinct sorted timestamps."""
    rng = np.random.default_rng(seed)
    pixel = rng.permutation(128 * 128)
    t = 1000 + np.sort(rng.choice(1_500_000, size=len(pixel), replace=False))
    y, x = np.divmod(pixel, 128)
    return make_events(x, y, t, rng.integers(0, 2, len(pixel)))


def event_keys(events):
    """One integer per event that tells events apart."""
    t, y, x = (events[f].astype(np.int64) for f in "tyx")
    return ((t * 128 + y) * 128 + x) * 2 + events["p"]


def contains_all(big, small):
    """Whether every event of ``small`` is in ``big``, counting repeats."""
    values, counts = np.unique(event_keys(big), return_counts=True)
    wanted, need = np.unique(event_keys(small), return_counts=True)
    where = np.clip(np.searchsorted(values, wanted), 0, len(values) - 1)
    return bool(np.all((values[where] == wanted) & (counts[where] >= need)))


def random_eventset(seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 3000, size=40)
    lengths[[3, 17]] = 0
    samples = [random_events(int(n), seed=seed * 1000 + i) for i, n in enumerate(lengths)]
    return EventSet.from_samples(samples, rng.integers(0, 10, size=len(samples)), SENSOR)


@pytest.fixture(scope="module")
def events():
    return random_events(100_000)


def rng(seed=1):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_output_is_new_sorted_and_input_untouched(events, name):
    before = events.copy()
    out = make_corruption(name, SEVERITIES[name])(events, SENSOR, rng())
    assert np.array_equal(events, before)
    assert out.dtype == EVENT_DTYPE
    assert not np.shares_memory(out, events)
    assert np.all(np.diff(out["t"]) >= 0)
    assert out["x"].max() < 128 and out["y"].max() < 128 and out["p"].max() <= 1
    assert out["t"].min() >= 0


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_same_seed_same_events_other_seed_other_events(events, name):
    corruption = make_corruption(name, SEVERITIES[name])
    a = corruption(events, SENSOR, rng(5))
    b = corruption(events, SENSOR, rng(5))
    c = corruption(events, SENSOR, rng(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_severity_zero_is_identity(events, name):
    assert np.array_equal(make_corruption(name, 0)(events, SENSOR, rng()), events)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_empty_sample_stays_empty(name):
    empty = np.empty(0, dtype=EVENT_DTYPE)
    out = make_corruption(name, SEVERITIES[name])(empty, SENSOR, rng())
    assert out.dtype == EVENT_DTYPE and len(out) == 0


def test_make_corruption_sets_the_documented_parameter():
    for name, cls in CORRUPTIONS.items():
        corruption = make_corruption(name, SEVERITIES[name])
        assert type(corruption) is cls
        assert getattr(corruption, SEVERITY_PARAMETER[name]) == SEVERITIES[name]
    assert make_corruption("hot_pixels", 3.0) == HotPixels(3)


def test_drop_fraction(events):
    n, p = len(events), 0.3
    out = drop_events(events, SENSOR, rng(), p)
    assert abs(len(out) - (1 - p) * n) < 4 * np.sqrt(n * p * (1 - p))
    assert contains_all(events, out)
    assert np.array_equal(drop_events(events, SENSOR, rng(), 0.0), events)
    assert len(drop_events(events, SENSOR, rng(), 1.0)) == 0
    assert EventDrop(0.3)(events, SENSOR, rng(9)).tolist() == drop_events(
        events, SENSOR, rng(9), 0.3
    ).tolist()


def test_background_noise_count_and_range(events):
    rate = 2.0
    out = add_background_noise(events, SENSOR, rng(), rate)
    t0, t1 = int(events["t"].min()), int(events["t"].max())
    expected = rate * 128 * 128 * (t1 - t0) * 1e-6
    added = len(out) - len(events)
    assert abs(added - expected) < 4 * np.sqrt(expected)
    assert out["t"].min() == t0 and out["t"].max() == t1
    assert contains_all(out, events)
    on = (out["p"].sum() - events["p"].sum()) / added
    assert abs(on - 0.5) < 4 * 0.5 / np.sqrt(added)


def test_time_jitter_statistics():
    events = one_per_pixel()
    std_us = 3000.0
    out = jitter_time(events, SENSOR, rng(), std_us)
    assert np.all(np.diff(out["t"]) >= 0)
    before = np.sort(events, order=["y", "x"])
    after = np.sort(out, order=["y", "x"])
    assert np.array_equal(after[["x", "y", "p"]], before[["x", "y", "p"]])
    shift = (after["t"] - before["t"]).astype(float)
    n = len(shift)
    assert abs(shift.mean()) < 4 * std_us / np.sqrt(n)
    assert abs(shift.std() / std_us - 1) < 4 / np.sqrt(2 * n)


def test_time_jitter_clips_at_zero():
    at_zero = make_events(np.zeros(1000), np.zeros(1000), np.zeros(1000), np.ones(1000))
    out = jitter_time(at_zero, SENSOR, rng(), 100.0)
    assert out["t"].min() == 0
    assert 0.4 < np.mean(out["t"] == 0) < 0.6


def test_spatial_jitter_statistics_and_bounds():
    r = np.random.default_rng(3)
    n, std_px = 50_000, 2.0
    x, y = r.integers(20, 108, n), r.integers(20, 108, n)
    events = make_events(x, y, np.arange(n), r.integers(0, 2, n))  # t identifies each event
    out = jitter_space(events, SENSOR, rng(), std_px)
    assert len(out) == n  # 10 std from every edge: nothing falls off
    assert np.array_equal(out["t"], events["t"]) and np.array_equal(out["p"], events["p"])
    dx = out["x"].astype(float) - x
    dy = out["y"].astype(float) - y
    expected = np.sqrt(std_px**2 + 1 / 12)  # rounding adds a uniform error of variance 1/12
    for d in (dx, dy):
        assert np.all(d == np.round(d))
        assert abs(d.std() / expected - 1) < 4 / np.sqrt(2 * n)
    edge = make_events(np.zeros(n), np.full(n, 127), np.arange(n), np.zeros(n))
    kept = jitter_space(edge, SENSOR, rng(), std_px)
    assert 0.15 < len(kept) / n < 0.4  # about a quarter stays: x' >= 0 and y' <= 127


def test_polarity_flip_fraction(events):
    p = 0.2
    out = flip_polarity(events, SENSOR, rng(), p)
    n = len(events)
    flipped = np.mean(out["p"] != events["p"])
    assert abs(flipped - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert np.array_equal(out[["x", "y", "t"]], events[["x", "y", "t"]])
    assert np.all(flip_polarity(events, SENSOR, rng(), 1.0)["p"] == 1 - events["p"])


def test_hot_pixels_fire_regularly(events):
    n_pixels, rate_hz = 7, 200.0
    out = add_hot_pixels(events, SENSOR, rng(), n_pixels, rate_hz)
    before = np.bincount(events["y"] * 128 + events["x"], minlength=128 * 128)
    after = np.bincount(out["y"] * 128 + out["x"], minlength=128 * 128)
    hot = np.flatnonzero(after != before)
    assert len(hot) == n_pixels
    duration_s = (int(events["t"].max()) - int(events["t"].min())) * 1e-6
    extra = after[hot] - before[hot]
    assert np.all(np.abs(extra - rate_hz * duration_s) <= 1)
    assert len(out) == len(events) + extra.sum()
    assert contains_all(out, events)
    at_pixel = out[out["y"] * 128 + out["x"] == hot[0]]
    added = at_pixel[~np.isin(event_keys(at_pixel), event_keys(events))]
    assert np.all(np.abs(np.diff(added["t"]) - 1e6 / rate_hz) <= 1)
    assert out["t"].min() >= events["t"].min() and out["t"].max() <= events["t"].max()
    with pytest.raises(ValueError, match="at most"):
        add_hot_pixels(events, SENSOR, rng(), 128 * 128 + 1, 1.0)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: EventDrop(1.5), r"EventDrop\.p must lie in \[0, 1\], got 1\.5"),
        (lambda: EventDrop(-0.1), r"EventDrop\.p must lie in \[0, 1\]"),
        (lambda: EventDrop(float("nan")), r"EventDrop\.p"),
        (lambda: PolarityFlip(2), r"PolarityFlip\.p must lie in \[0, 1\], got 2"),
        (lambda: BackgroundNoise(-1.0), r"BackgroundNoise\.rate_hz must be finite and >= 0"),
        (lambda: BackgroundNoise(float("inf")), r"BackgroundNoise\.rate_hz"),
        (lambda: TimeJitter(-5), r"TimeJitter\.std_us"),
        (lambda: SpatialJitter(-0.5), r"SpatialJitter\.std_px"),
        (lambda: HotPixels(2.5), r"HotPixels\.n_pixels must be a whole number"),
        (lambda: HotPixels(-1), r"HotPixels\.n_pixels"),
        (lambda: HotPixels(3, rate_hz=-1.0), r"HotPixels\.rate_hz"),
        (lambda: make_corruption("blur", 1.0), r"unknown corruption 'blur'"),
        (lambda: make_corruption("hot_pixels", 2.5), r"HotPixels\.n_pixels"),
        (lambda: drop_events(random_events(10), SENSOR, rng(), 1.5), r"p must lie in"),
        (lambda: jitter_time(random_events(10), SENSOR, rng(), -1.0), r"std_us"),
    ],
)
def test_bad_parameters_are_rejected(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_events_off_the_sensor_are_rejected():
    with pytest.raises(ValueError, match="x must lie in"):
        drop_events(random_events(100), (64, 128, 2), rng(), 0.5)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_eventset_uses_one_generator_per_sample(name):
    eventset = random_eventset()
    corruption = make_corruption(name, SEVERITIES[name])
    out = corrupt_eventset(eventset, corruption, seed=11)
    assert np.array_equal(out.labels, eventset.labels) and out.sensor_size == SENSOR
    assert len(out[3][0]) == 0 and len(out[17][0]) == 0
    for i in (0, 5, 39):
        expected = corruption(eventset[i][0], SENSOR, sample_generator(11, i))
        assert np.array_equal(out[i][0], expected)
    again = corrupt_eventset(eventset, corruption, seed=11)
    other = corrupt_eventset(eventset, corruption, seed=12)
    assert np.array_equal(out.events, again.events) and np.array_equal(out.offsets, again.offsets)
    assert not np.array_equal(out.events, other.events)


def test_sample_generator_is_keyed_by_seed_and_index():
    a = sample_generator(3, 7).random(5)
    b = np.random.default_rng(np.random.SeedSequence(3, spawn_key=(7,))).random(5)
    assert np.array_equal(a, b)


def test_subset_with_original_keys_matches_subset_of_corrupted():
    eventset = random_eventset()
    idx = np.array([30, 2, 17, 9])
    corruption = BackgroundNoise(0.5)
    whole = corrupt_eventset(eventset, corruption, seed=4).subset(idx)
    keyed = corrupt_eventset(eventset.subset(idx), corruption, seed=4, sample_keys=idx)
    by_position = corrupt_eventset(eventset.subset(idx), corruption, seed=4)
    assert np.array_equal(keyed.events, whole.events)
    assert np.array_equal(keyed.offsets, whole.offsets)
    assert not np.array_equal(by_position.events, whole.events)
    with pytest.raises(ValueError, match="one key per sample"):
        corrupt_eventset(eventset, corruption, seed=4, sample_keys=idx)


@pytest.mark.parametrize("shuffled", [False, True])
def test_event_drop_fast_path_equals_per_sample_path(shuffled):
    eventset = random_eventset(seed=2)
    if shuffled:
        # Unsorted samples: both paths must sort each sample the same way.
        r = np.random.default_rng(0)
        events = eventset.events.copy()
        for i in range(len(eventset)):
            part = slice(eventset.offsets[i], eventset.offsets[i + 1])
            events[part] = r.permutation(events[part])
        eventset = EventSet(events, eventset.offsets, eventset.labels, SENSOR)
    drop = EventDrop(0.4)

    def per_sample(events, sensor_size, rng):
        return drop_events(events, sensor_size, rng, drop.p)

    fast = corrupt_eventset(eventset, drop, seed=8)
    slow = corrupt_eventset(eventset, per_sample, seed=8)
    assert np.array_equal(fast.offsets, slow.offsets)
    assert np.array_equal(fast.events, slow.events)
    for i in range(len(fast)):
        assert np.all(np.diff(fast[i][0]["t"]) >= 0)
    lengths = eventset.lengths.sum()
    assert abs(len(fast.events) - 0.6 * lengths) < 4 * np.sqrt(lengths * 0.24)
