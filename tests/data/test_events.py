import os

import numpy as np
import pytest

from sast.data.events import (
    EVENT_DTYPE,
    EventSet,
    eventset_to_frames,
    make_events,
    to_frames,
)

SENSOR = (3, 2, 2)  # W, H, P


def random_events(rng, n, sensor_size=SENSOR, t_max=1000):
    width, height, n_pol = sensor_size
    return make_events(
        rng.integers(0, width, n),
        rng.integers(0, height, n),
        rng.integers(0, t_max, n),
        rng.integers(0, n_pol, n),
    )


def naive_frames(events, sensor_size, n_time_bins, mode="time", t_window=None):
    """One event at a time; bins from integer arithmetic (time) or np.array_split (count)."""
    width, height, n_pol = sensor_size
    frames = np.zeros((n_time_bins, n_pol, height, width), dtype=np.int64)
    if mode == "count":
        ordered = sorted(range(len(events)), key=lambda i: int(events["t"][i]))
        for b, chunk in enumerate(np.array_split(np.array(ordered, dtype=int), n_time_bins)):
            for i in chunk:
                e = events[i]
                np.add.at(frames, (b, e["p"], e["y"], e["x"]), 1)
        return frames
    ts = [int(t) for t in events["t"]]
    t0, t1 = t_window if t_window is not None else (min(ts), max(ts) + 1)
    for e, t in zip(events, ts, strict=True):
        if t0 <= t < t1:
            b = (t - t0) * n_time_bins // (t1 - t0)
            np.add.at(frames, (b, e["p"], e["y"], e["x"]), 1)
    return frames


# A tiny sample on a 3 x 2 sensor: (x, y, t, p).
TINY = make_events([0, 2, 1, 1, 0], [0, 1, 1, 1, 0], [0, 10, 20, 30, 39], [1, 0, 1, 1, 0])


def test_make_events_fields_and_dtype():
    ev = make_events([1, 2], [3, 4], [10, 20], [1, 0])
    assert ev.dtype == EVENT_DTYPE
    assert ev["x"].tolist() == [1, 2]
    assert ev["y"].tolist() == [3, 4]
    assert ev["t"].tolist() == [10, 20]
    assert ev["p"].tolist() == [1, 0]


def test_make_events_length_mismatch_names_field():
    with pytest.raises(ValueError, match="'t'"):
        make_events([1, 2], [3, 4], [10], [1, 0])


def test_make_events_rejects_negative_coordinates():
    with pytest.raises(ValueError, match="'x'"):
        make_events([-1], [0], [0], [0])


def make_set():
    samples = [TINY, TINY[:0], TINY[1:3]]
    return EventSet.from_samples(samples, [7, 8, 9], SENSOR)


def test_eventset_indexing_and_subset():
    es = make_set()
    assert len(es) == 3
    assert es.offsets.tolist() == [0, 5, 5, 7]
    events, label = es[2]
    assert label == 9
    assert np.array_equal(events, TINY[1:3])
    assert len(es[1][0]) == 0
    assert es[-1][1] == 9
    with pytest.raises(IndexError):
        es[3]

    sub = es.subset([2, 0])
    assert sub.labels.tolist() == [9, 7]
    assert sub.offsets.tolist() == [0, 2, 7]
    assert np.array_equal(sub[0][0], TINY[1:3])
    assert np.array_equal(sub[1][0], TINY)
    assert sub.sensor_size == SENSOR


def test_eventset_save_load_round_trip(tmp_path):
    es = make_set()
    path = tmp_path / "set.npz"
    es.save(path, extra={"split": np.array([1, 2])})
    assert os.listdir(tmp_path) == ["set.npz"]  # no temporary file left behind
    back, extra = EventSet.load_with_extra(path)
    assert np.array_equal(back.events, es.events)
    assert back.offsets.tolist() == es.offsets.tolist()
    assert back.labels.tolist() == [7, 8, 9]
    assert back.sensor_size == SENSOR
    assert extra["split"].tolist() == [1, 2]
    assert EventSet.load(path).labels.tolist() == [7, 8, 9]


def test_load_rejects_invalid_files(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="garbage.npz"):
        EventSet.load(garbage)

    partial = tmp_path / "partial.npz"
    np.savez(partial, events=TINY, labels=np.array([0]))
    with pytest.raises(ValueError, match="partial.npz.*offsets"):
        EventSet.load(partial)

    inconsistent = tmp_path / "inconsistent.npz"
    np.savez(
        inconsistent,
        events=TINY,
        offsets=np.array([0, 4]),
        labels=np.array([0]),
        sensor_size=np.array(SENSOR),
    )
    with pytest.raises(ValueError, match="inconsistent.npz"):
        EventSet.load(inconsistent)


@pytest.mark.parametrize(
    "offsets, message",
    [
        ([1, 5], "start at 0"),
        ([0, 4], "end at len"),
        ([0, 3, 2, 5], "non-decreasing"),
    ],
)
def test_eventset_rejects_bad_offsets(offsets, message):
    labels = np.zeros(len(offsets) - 1, dtype=int)
    with pytest.raises(ValueError, match=message):
        EventSet(TINY, offsets, labels, SENSOR)


def test_eventset_rejects_bad_labels_and_coordinates():
    with pytest.raises(ValueError, match="labels has 2 entries"):
        EventSet(TINY, [0, 5], [0, 1], SENSOR)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        EventSet(TINY, [0, 5], [0], (2, 2, 2))
    with pytest.raises(ValueError, match=r"p must lie in \[0, 0\]"):
        EventSet(TINY, [0, 5], [0], (3, 2, 1))


def test_to_frames_time_mode_by_hand():
    # t0 = 0, t1 = 40, T = 2: bin = floor(t / 20) -> t = 0, 10 in bin 0; 20, 30, 39 in bin 1.
    frames = to_frames(TINY, SENSOR, 2)
    expected = np.zeros((2, 2, 2, 3), dtype=np.uint16)
    expected[0, 1, 0, 0] = 1  # (x=0, y=0, t=0, ON)
    expected[0, 0, 1, 2] = 1  # (x=2, y=1, t=10, OFF)
    expected[1, 1, 1, 1] = 2  # (x=1, y=1, t=20 and 30, ON)
    expected[1, 0, 0, 0] = 1  # (x=0, y=0, t=39, OFF)
    assert frames.dtype == np.uint16
    assert np.array_equal(frames, expected)


def test_to_frames_time_window_drops_outside_events():
    # Window [10, 30): only t = 10 (bin 0) and t = 20 (bin 1) remain.
    frames = to_frames(TINY, SENSOR, 2, t_window=(10, 30))
    expected = np.zeros((2, 2, 2, 3), dtype=np.uint16)
    expected[0, 0, 1, 2] = 1
    expected[1, 1, 1, 1] = 1
    assert np.array_equal(frames, expected)


def test_to_frames_count_mode_by_hand():
    # Shuffled input; in time order the 5 events split as [3, 2] (np.array_split).
    shuffled = TINY[[3, 0, 4, 2, 1]]
    frames = to_frames(shuffled, SENSOR, 2, mode="count")
    expected = np.zeros((2, 2, 2, 3), dtype=np.uint16)
    expected[0, 1, 0, 0] = 1  # t=0
    expected[0, 0, 1, 2] = 1  # t=10
    expected[0, 1, 1, 1] = 1  # t=20
    expected[1, 1, 1, 1] = 1  # t=30
    expected[1, 0, 0, 0] = 1  # t=39
    assert np.array_equal(frames, expected)


@pytest.mark.parametrize("mode", ["time", "count"])
@pytest.mark.parametrize("n_time_bins", [1, 3, 7])
def test_to_frames_matches_naive_loop(mode, n_time_bins):
    rng = np.random.default_rng(n_time_bins)
    sensor = (5, 4, 2)
    events = random_events(rng, 200, sensor, t_max=23)  # short span: ties, off-by-ones show
    frames = to_frames(events, sensor, n_time_bins, mode=mode)
    assert frames.shape == (n_time_bins, 2, 4, 5)
    assert np.array_equal(frames, naive_frames(events, sensor, n_time_bins, mode))
    assert frames.sum() == len(events)


def test_to_frames_with_window_matches_naive_loop():
    rng = np.random.default_rng(5)
    sensor = (5, 4, 2)
    events = random_events(rng, 300, sensor, t_max=1000)
    window = (100, 733)
    frames = to_frames(events, sensor, 4, t_window=window)
    expected = naive_frames(events, sensor, 4, t_window=window)
    assert np.array_equal(frames, expected)
    assert frames.sum() == np.sum((events["t"] >= 100) & (events["t"] < 733))


def test_to_frames_count_mode_fewer_events_than_bins():
    frames = to_frames(TINY[:2], SENSOR, 4, mode="count")
    assert frames.reshape(4, -1).sum(axis=1).tolist() == [1, 1, 0, 0]


def test_to_frames_saturates_at_uint16_max():
    n = 70_000
    events = make_events(np.zeros(n), np.zeros(n), np.arange(n), np.ones(n))
    frames = to_frames(events, SENSOR, 1)
    assert frames[0, 1, 0, 0] == 65535


def test_to_frames_empty_sample_warns_and_gives_zeros():
    with pytest.warns(UserWarning, match="empty"):
        frames = to_frames(TINY[:0], SENSOR, 3)
    assert frames.shape == (3, 2, 2, 3)
    assert not frames.any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_time_bins": 0}, "n_time_bins"),
        ({"n_time_bins": 2, "mode": "events"}, "mode"),
        ({"n_time_bins": 2, "mode": "count", "t_window": (0, 10)}, "t_window"),
        ({"n_time_bins": 2, "t_window": (10, 10)}, "t1 > t0"),
    ],
)
def test_to_frames_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        to_frames(TINY, SENSOR, **kwargs)


def test_to_frames_rejects_events_outside_sensor():
    with pytest.raises(ValueError, match="y must lie"):
        to_frames(TINY, (3, 1, 2), 2)


@pytest.mark.parametrize("mode, t_window", [("time", None), ("time", (3, 900)), ("count", None)])
def test_eventset_to_frames_equals_stacked_to_frames(mode, t_window):
    rng = np.random.default_rng(11)
    sensor = (6, 5, 2)
    samples = [
        random_events(rng, n, sensor, t_max=t)
        for n, t in zip((40, 1, 0, 123, 7), (13, 5, 1, 1000, 9), strict=True)
    ]
    samples[3]["t"] += 500  # samples need not share a time origin
    es = EventSet.from_samples(samples, np.arange(5), sensor)
    with pytest.warns(UserWarning, match="1 empty"):
        frames = eventset_to_frames(es, 4, mode=mode, t_window=t_window, dtype=np.uint16)
    with pytest.warns(UserWarning):
        stacked = np.stack([to_frames(s, sensor, 4, mode, t_window) for s in samples])
    assert frames.shape == (5, 4, 2, 5, 6)
    assert frames.dtype == np.uint16
    assert np.array_equal(frames, stacked)


def test_eventset_to_frames_saturates_at_dtype_max():
    n = 300
    hot = make_events(np.zeros(n), np.zeros(n), np.arange(n), np.zeros(n))
    es = EventSet.from_samples([hot, TINY], [0, 1], SENSOR)
    frames = eventset_to_frames(es, 1)
    assert frames.dtype == np.uint8
    assert frames[0, 0, 0, 0, 0] == 255
    assert np.array_equal(frames[1], to_frames(TINY, SENSOR, 1))
