import numpy as np
import pytest

from sast.data import synthetic_gesture as sg
from sast.data.events import EVENT_DTYPE, EventSet
from sast.data.synthetic import stratified_split
from sast.data.synthetic_gesture import (
    GESTURE_SENSOR_SIZE,
    SYNTHETIC_GESTURE_CLASSES,
    SYNTHETIC_GESTURE_VERSION,
    GestureCamera,
    gesture_cache_path,
    gesture_labels,
    gesture_sample_rng,
    render_gesture,
    render_gestures,
    synthetic_gesture,
)

PER_CLASS = 30  # 330 samples: enough for the statistics, quick to render
CLASS = {name: label for label, name in enumerate(SYNTHETIC_GESTURE_CLASSES)}
PAIRS = [
    ("rotate_cw", "rotate_ccw"),
    ("sweep_right", "sweep_left"),
    ("sweep_down", "sweep_up"),
    ("ring_expand", "ring_contract"),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gesture-cache")


@pytest.fixture(scope="module")
def splits(cache_dir):
    train = synthetic_gesture("train", cache_dir=cache_dir, samples_per_class=PER_CLASS)
    test = synthetic_gesture("test", cache_dir=cache_dir, samples_per_class=PER_CLASS)
    return train, test


@pytest.fixture(scope="module")
def everything(splits, cache_dir):
    return EventSet.load(gesture_cache_path(0, cache_dir, PER_CLASS))


def samples_of(eventset, name):
    return [eventset[i][0] for i in np.flatnonzero(eventset.labels == CLASS[name])]


def test_constants():
    assert SYNTHETIC_GESTURE_VERSION == 1
    assert GESTURE_SENSOR_SIZE == (128, 128, 2)
    assert len(SYNTHETIC_GESTURE_CLASSES) == len(set(SYNTHETIC_GESTURE_CLASSES)) == 11
    assert gesture_labels(3).tolist() == list(range(11)) * 3


def test_rendering_is_deterministic():
    a = render_gesture(CLASS["rotate_cw"], gesture_sample_rng(0, 4))
    b = render_gesture(CLASS["rotate_cw"], gesture_sample_rng(0, 4))
    c = render_gesture(CLASS["rotate_cw"], gesture_sample_rng(1, 4))
    assert a.dtype == EVENT_DTYPE
    assert np.array_equal(a, b)
    assert not (len(a) == len(c) and np.array_equal(a, c))


def test_batched_rendering_equals_one_at_a_time():
    labels = [0, 6, 8, 10, 3]
    batched = render_gestures(labels, [gesture_sample_rng(2, i) for i in range(len(labels))])
    for i, label in enumerate(labels):
        assert np.array_equal(batched[i], render_gesture(label, gesture_sample_rng(2, i)))


def test_dataset_samples_are_the_renderer_output(everything):
    assert np.array_equal(everything.labels, gesture_labels(PER_CLASS))
    for i in (0, 17, len(everything) - 1):
        expected = render_gesture(int(everything.labels[i]), gesture_sample_rng(0, i))
        assert np.array_equal(everything[i][0], expected)


def test_splits_are_stratified(splits):
    train, test = splits
    assert train.sensor_size == test.sensor_size == GESTURE_SENSOR_SIZE
    assert np.bincount(test.labels).tolist() == [round(0.2 * PER_CLASS)] * 11
    assert np.bincount(train.labels).tolist() == [PER_CLASS - round(0.2 * PER_CLASS)] * 11
    labels = gesture_labels(PER_CLASS)
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    assert len(train_idx) + len(test_idx) == len(labels)
    assert np.array_equal(train.labels, labels[train_idx])
    assert np.array_equal(test.labels, labels[test_idx])


def test_statistics(everything):
    lengths = everything.lengths
    assert 2_000 <= lengths.min() and lengths.max() <= 35_000
    assert 6_000 <= np.median(lengths) <= 16_000
    for i in range(len(everything)):
        events = everything[i][0]
        assert 0.4 <= events["p"].mean() <= 0.6
        assert np.all(np.diff(events["t"]) >= 0)
    events = everything.events
    assert events["x"].max() <= 127 and events["y"].max() <= 127
    first = events["t"][everything.offsets[:-1]]
    last = events["t"][everything.offsets[1:] - 1]
    assert first.min() >= 0 and last.max() < 1_500_000
    assert (last - first).min() >= 1_450_000


def test_without_noise_every_pixel_has_as_many_on_as_off_events():
    # Every scene starts and ends blank, so each pixel's level returns to where it began.
    camera = GestureCamera(noise_rate_hz=0.0)
    for label in range(11):
        events = render_gesture(label, gesture_sample_rng(5, label), camera)
        net = np.zeros((128, 128), dtype=int)
        np.add.at(net, (events["y"], events["x"]), 2 * events["p"].astype(int) - 1)
        assert len(events) > 1000
        assert not net.any()


def pooled_images(samples):
    """Time-summed event counts per polarity, summed over 8 x 8 blocks: ``[n, 2, 16, 16]``."""
    images = np.zeros((len(samples), 2, 128, 128))
    for image, events in zip(images, samples, strict=True):
        np.add.at(image, (events["p"], events["y"], events["x"]), 1)
    return images.reshape(len(samples), 2, 16, 8, 16, 8).sum(axis=(3, 5))


def mean_difference_p_value(a, b, n_permutations=200, seed=0):
    """Permutation test of ``|mean(a) - mean(b)|^2``: share of relabellings at least as large."""
    both = np.concatenate([a, b]).reshape(len(a) + len(b), -1)
    rng = np.random.default_rng(seed)

    def statistic(order):
        first, second = both[order[: len(a)]], both[order[len(a) :]]
        return np.sum((first.mean(axis=0) - second.mean(axis=0)) ** 2)

    observed = statistic(np.arange(len(both)))
    null = [statistic(rng.permutation(len(both))) for _ in range(n_permutations)]
    return (1 + np.sum(np.array(null) >= observed)) / (1 + n_permutations)


@pytest.mark.parametrize("pair", PAIRS)
def test_time_summed_images_do_not_tell_a_pair_apart(everything, pair):
    a, b = (pooled_images(samples_of(everything, name)) for name in pair)
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    # Sampling noise alone gives about 0.2-0.3 with 30 samples a class; cw vs figure eight ~0.6.
    assert np.linalg.norm(mean_a - mean_b) < 0.4 * np.linalg.norm((mean_a + mean_b) / 2)
    assert mean_difference_p_value(a, b) > 0.01


def test_time_summed_images_tell_other_classes_apart(everything):
    images = {name: pooled_images(samples_of(everything, name)) for name in CLASS}
    for first, second in [("rotate_cw", "figure_eight"), ("sweep_right", "sweep_down"),
                          ("blink", "ring_expand")]:
        assert mean_difference_p_value(images[first], images[second]) < 0.01


def binned_centroids(events, n_bins=20, min_events=150):
    """Event centroid and mean distance from the sample's centroid in each time bin."""
    x, y, t = events["x"].astype(float), events["y"].astype(float), events["t"]
    bins = (t - t.min()) * n_bins // (t.max() - t.min() + 1)
    counts = np.bincount(bins, minlength=n_bins)
    keep = counts >= min_events
    distance = np.hypot(x - x.mean(), y - y.mean())
    per_bin = [np.bincount(bins, v, n_bins)[keep] / counts[keep] for v in (x, y, distance)]
    return np.flatnonzero(keep), (*per_bin, x.mean(), y.mean())


def direction(events, pair):
    """A number whose sign is the direction of motion of the pair's first class."""
    when, (cx, cy, spread, x0, y0) = binned_centroids(events)
    if pair[0] == "rotate_cw":
        angle = np.arctan2(cy - y0, cx - x0)
        return np.sum(np.angle(np.exp(1j * np.diff(angle))))  # total turn, + is clockwise
    track = {"sweep_right": cx, "sweep_down": cy, "ring_expand": spread}[pair[0]]
    return np.polyfit(when, track, 1)[0]


@pytest.mark.parametrize("pair", PAIRS)
def test_order_of_events_tells_a_pair_apart(everything, pair):
    forward = [direction(events, pair) for events in samples_of(everything, pair[0])]
    backward = [direction(events, pair) for events in samples_of(everything, pair[1])]
    assert min(forward) > 0 > max(backward)


def test_rotation_turns_one_to_one_and_a_half_times(everything):
    turns = [direction(e, PAIRS[0]) / (2 * np.pi) for e in samples_of(everything, "rotate_cw")]
    assert 0.6 < min(turns) and max(turns) < 1.6


def test_cache_file_is_reused(splits, cache_dir, monkeypatch):
    path = gesture_cache_path(0, cache_dir, PER_CLASS)
    assert path.name == f"synthetic-gesture-v1-seed0-n{PER_CLASS}.npz"
    assert sorted(p.name for p in cache_dir.iterdir()) == [path.name]
    assert gesture_cache_path(3, cache_dir).name == "synthetic-gesture-v1-seed3.npz"

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again instead of loading the cache")

    monkeypatch.setattr(sg, "render_gestures", no_rendering)
    test = synthetic_gesture("test", cache_dir=cache_dir, samples_per_class=PER_CLASS)
    assert np.array_equal(test.events, splits[1].events)
    other = synthetic_gesture(
        "test", cache_dir=cache_dir, samples_per_class=PER_CLASS, test_fraction=0.5
    )
    assert np.bincount(other.labels).tolist() == [PER_CLASS // 2] * 11


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SAST_CACHE_DIR", str(tmp_path))
    assert gesture_cache_path(0) == tmp_path / "synthetic-gesture-v1-seed0.npz"


def test_corrupt_cache_is_rebuilt(tmp_path):
    path = gesture_cache_path(0, tmp_path, 2)
    fresh = synthetic_gesture("train", cache_dir=tmp_path, samples_per_class=2)
    path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="rebuilding synthetic gesture cache"):
        rebuilt = synthetic_gesture("train", cache_dir=tmp_path, samples_per_class=2)
    assert np.array_equal(rebuilt.events, fresh.events)
    assert len(EventSet.load(path)) == 22
    # A readable file written for another seed is rebuilt too.
    path.replace(gesture_cache_path(1, tmp_path, 2))
    with pytest.warns(UserWarning, match="seed is not 1"):
        synthetic_gesture("test", seed=1, cache_dir=tmp_path, samples_per_class=2)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="split"):
        synthetic_gesture("val", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="samples_per_class"):
        synthetic_gesture("train", cache_dir=tmp_path, samples_per_class=0)
    with pytest.raises(ValueError, match="label"):
        render_gesture(11, np.random.default_rng(0))
    with pytest.raises(ValueError, match="multiple of dt_us"):
        GestureCamera(duration_ms=1500.0, dt_us=7000)
    assert list(tmp_path.iterdir()) == []
