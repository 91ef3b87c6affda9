"""``mode="tonic"`` binning reproduces tonic's ``ToFrame(n_time_bins=T)`` frames exactly.

tonic is a test dependency (the ``test`` extra), so it is imported, not skipped.
"""


import numpy as np
import pytest
from tonic.transforms import ToFrame

from sast.data.events import EVENT_DTYPE, EventSet, eventset_to_frames, make_events, to_frames
from sast.data.nmnist import NMNIST_SENSOR_SIZE, load_nmnist_files, nmnist_index

from ..conftest import SHARED_DATA

NMNIST_ROOT = SHARED_DATA / "nmnist"


def tonic_frames(events: np.ndarray, sensor_size, n_time_bins: int) -> np.ndarray:
    """tonic's frames as int64 (tonic may write to ``events``, so it gets a copy)."""
    frames = ToFrame(sensor_size=sensor_size, n_time_bins=n_time_bins)(events.copy())
    assert frames.dtype == np.int16
    return frames.astype(np.int64)


def sorted_events(rng, n, sensor_size, t_start, span, tail=False):
    """``n`` time-sorted events in ``[t_start, t_start + span]``, the ends always present."""
    w, h, p = sensor_size
    t = rng.integers(t_start, t_start + span + 1, n)
    if n >= 2:
        t[0], t[1] = t_start, t_start + span
    if tail and n >= 4:  # events right at and around the tonic tail boundary t_first + T w
        t[2:4] = t_start + np.maximum(span - rng.integers(0, 2, 2), 0)
    t.sort()
    return make_events(rng.integers(0, w, n), rng.integers(0, h, n), t, rng.integers(0, p, n))


# (n events, span in µs, T): spans below T (w = 0), exactly divisible by T (tail = last
# event only), one above a multiple (tail of 2 µs), single events, many ties.
CASES = [
    (1, 0, 1), (1, 0, 5),
    (2, 0, 3), (2, 1, 1), (2, 1, 2), (2, 2, 2), (2, 5, 3),
    (10, 2, 3), (10, 3, 3), (10, 4, 3), (30, 19, 20), (30, 20, 20), (30, 21, 20),
    (50, 99, 10), (50, 100, 10), (50, 101, 10), (50, 109, 10),
    (200, 1000, 7), (200, 1001, 7), (200, 999, 7), (500, 12_345, 16),
    (1000, 300_000, 20), (1000, 300_019, 20), (5000, 60, 20), (5000, 1_000_000, 1),
]


@pytest.mark.parametrize("n, span, n_time_bins", CASES)
@pytest.mark.parametrize("t_start", [0, 7, 1_700_000_000_123])
def test_tonic_mode_matches_tonic_to_frame(n, span, n_time_bins, t_start):
    rng = np.random.default_rng([n, span, n_time_bins, t_start % 1000])
    sensor = (5, 4, 2)
    events = sorted_events(rng, n, sensor, t_start, span, tail=True)
    frames = to_frames(events, sensor, n_time_bins, mode="tonic")
    expected = tonic_frames(events, sensor, n_time_bins)
    assert frames.shape == expected.shape == (n_time_bins, 2, 4, 5)
    assert np.array_equal(frames.astype(np.int64), expected)
    width = span // n_time_bins
    kept = 0 if width == 0 else np.sum(events["t"] < t_start + n_time_bins * width)
    assert frames.sum() == kept


@pytest.mark.parametrize("seed", range(40))
def test_tonic_mode_matches_tonic_on_random_streams(seed):
    rng = np.random.default_rng(seed)
    sensor = (int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 3)))
    n = int(rng.integers(1, 3000))
    span = int(rng.choice([rng.integers(0, 50), rng.integers(0, 100_000)]))
    n_time_bins = int(rng.integers(1, 40))
    if rng.random() < 0.3:  # make the span an exact multiple of T
        span = n_time_bins * int(rng.integers(0, 500))
    events = sorted_events(rng, n, sensor, int(rng.integers(0, 10**7)), span, tail=True)
    frames = to_frames(events, sensor, n_time_bins, mode="tonic")
    assert np.array_equal(frames.astype(np.int64), tonic_frames(events, sensor, n_time_bins))


def test_tonic_mode_single_event_and_short_span_give_empty_frames():
    sensor = (3, 2, 2)
    single = make_events([1], [0], [42], [1])
    short = make_events([0, 1, 2], [0, 1, 0], [10, 11, 13], [0, 1, 1])  # span 3 < T = 4
    for events in (single, short):
        frames = to_frames(events, sensor, 4, mode="tonic")
        assert not frames.any()
        assert not tonic_frames(events, sensor, 4).any()


def test_tonic_mode_drops_the_tail_as_tonic_does():
    # t = 0..10, T = 3: w = 10 // 3 = 3, windows [0, 3), [3, 6), [6, 9); t = 9, 10 dropped.
    n = 11
    events = make_events(np.arange(n) % 3, np.zeros(n), np.arange(n), np.ones(n))
    sensor = (3, 1, 2)
    frames = to_frames(events, sensor, 3, mode="tonic")
    assert frames.reshape(3, -1).sum(axis=1).tolist() == [3, 3, 3]
    assert np.array_equal(frames.astype(np.int64), tonic_frames(events, sensor, 3))


def test_default_time_mode_differs_from_tonic_where_the_tail_matters():
    # Same events: sast's "time" mode cuts [0, 11) into 3 equal slices and keeps every
    # event, bin = floor(t * 3 / 11): counts 4, 4, 3; tonic drops t = 9, 10: counts 3, 3, 3.
    n = 11
    events = make_events(np.zeros(n), np.zeros(n), np.arange(n), np.ones(n))
    sensor = (1, 1, 2)
    time_frames = to_frames(events, sensor, 3, mode="time")
    expected = tonic_frames(events, sensor, 3)
    assert time_frames[:, 1, 0, 0].tolist() == [4, 4, 3]
    assert expected[:, 1, 0, 0].tolist() == [3, 3, 3]
    assert not np.array_equal(time_frames.astype(np.int64), expected)
    assert np.array_equal(to_frames(events, sensor, 3, mode="tonic").astype(np.int64), expected)


def test_tonic_mode_single_polarity_sensor():
    rng = np.random.default_rng(3)
    sensor = (4, 3, 1)
    events = sorted_events(rng, 400, sensor, 100, 777)
    assert not events["p"].any()
    frames = to_frames(events, sensor, 6, mode="tonic")
    assert np.array_equal(frames.astype(np.int64), tonic_frames(events, sensor, 6))


def test_tonic_mode_unsorted_input_gives_the_frames_of_the_sorted_events():
    rng = np.random.default_rng(8)
    sensor = (5, 4, 2)
    events = sorted_events(rng, 700, sensor, 1000, 4321, tail=True)
    shuffled = events[rng.permutation(len(events))]
    frames = to_frames(shuffled, sensor, 9, mode="tonic")
    assert np.array_equal(frames.astype(np.int64), tonic_frames(events, sensor, 9))


def test_tonic_mode_empty_sample_warns_and_gives_zeros():
    sensor = (3, 2, 2)
    with pytest.warns(UserWarning, match="empty"):
        frames = to_frames(np.empty(0, dtype=EVENT_DTYPE), sensor, 4, mode="tonic")
    assert frames.shape == (4, 2, 2, 3) and not frames.any()


@pytest.mark.parametrize("t_window", [(0, 10), (0, 1)])
def test_tonic_mode_refuses_t_window(t_window):
    events = make_events([0, 1], [0, 0], [0, 10], [0, 1])
    with pytest.raises(ValueError, match="t_window applies only to mode='time'.*tonic"):
        to_frames(events, (2, 1, 2), 2, mode="tonic", t_window=t_window)
    es = EventSet.from_samples([events], [0], (2, 1, 2))
    with pytest.raises(ValueError, match="t_window applies only to mode='time'.*tonic"):
        eventset_to_frames(es, 2, mode="tonic", t_window=t_window)


def test_eventset_to_frames_tonic_equals_per_sample_to_frames_and_tonic():
    rng = np.random.default_rng(21)
    sensor = (6, 5, 2)
    n_time_bins = 5
    specs = [  # (n, t_start, span): w = 0, single event, empty, divisible, tail, long
        (40, 0, 3), (1, 50, 0), (0, 0, 0), (30, 1000, 500), (77, 10**9, 503),
        (300, 123, 99_999), (2, 5, 5), (5, 7, 4),
    ]
    samples = [sorted_events(rng, n, sensor, t0, span, tail=True) for n, t0, span in specs]
    es = EventSet.from_samples(samples, np.arange(len(samples)), sensor)
    with pytest.warns(UserWarning, match="1 empty"):
        frames = eventset_to_frames(es, n_time_bins, mode="tonic", dtype=np.uint16)
    assert frames.shape == (len(samples), n_time_bins, 2, 5, 6)
    for i, sample in enumerate(samples):
        if len(sample) == 0:
            assert not frames[i].any()
            continue
        assert np.array_equal(frames[i], to_frames(sample, sensor, n_time_bins, mode="tonic"))
        expected = tonic_frames(sample, sensor, n_time_bins)
        assert np.array_equal(frames[i].astype(np.int64), expected)


def test_eventset_to_frames_tonic_in_several_bincount_chunks(monkeypatch):
    import sast.data.events as events_module

    rng = np.random.default_rng(4)
    sensor = (4, 4, 2)
    samples = [sorted_events(rng, int(rng.integers(1, 200)), sensor, int(rng.integers(0, 10**6)),
                             int(rng.integers(0, 5000))) for _ in range(13)]
    es = EventSet.from_samples(samples, np.zeros(13), sensor)
    whole = eventset_to_frames(es, 7, mode="tonic", dtype=np.uint16)
    monkeypatch.setattr(events_module, "_BINCOUNT_BUDGET", 7 * 2 * 4 * 4 * 3)  # 3 per chunk
    assert np.array_equal(eventset_to_frames(es, 7, mode="tonic", dtype=np.uint16), whole)
    for i, sample in enumerate(samples):
        assert np.array_equal(whole[i].astype(np.int64), tonic_frames(sample, sensor, 7))


@pytest.mark.parametrize("first_saccade_only", [False, True])
def test_tonic_mode_matches_tonic_on_real_nmnist(first_saccade_only):
    if not (NMNIST_ROOT / "Train").is_dir():
        pytest.skip(f"real N-MNIST not present: no folder {(NMNIST_ROOT / 'Train').resolve()}")
    paths, labels = nmnist_index(NMNIST_ROOT, "train")
    pick = np.linspace(0, len(paths) - 1, min(len(paths), 300)).astype(int)
    paths, labels = [paths[i] for i in pick], labels[pick]
    es = load_nmnist_files(paths, labels, first_saccade_only, progress=False)
    for n_time_bins in (1, 20, 300):
        frames = eventset_to_frames(es, n_time_bins, mode="tonic", dtype=np.uint16)
        for i in range(len(es)):
            events, _ = es[i]
            assert len(events) > 0, paths[i]
            expected = tonic_frames(events, NMNIST_SENSOR_SIZE, n_time_bins)
            assert np.array_equal(frames[i].astype(np.int64), expected), paths[i]
        events, _ = es[0]
        single = to_frames(events, NMNIST_SENSOR_SIZE, n_time_bins, mode="tonic")
        assert np.array_equal(single, frames[0])
