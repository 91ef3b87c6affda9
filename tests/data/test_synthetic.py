import numpy as np
import pytest
from sklearn.datasets import load_digits

from sast.data import synthetic
from sast.data.events import EVENT_DTYPE, EventSet
from sast.data.synthetic import (
    SYNTHETIC_NMNIST_VERSION,
    cache_path,
    render_digits,
    sample_rng,
    simulate_saccade_events,
    stratified_split,
    synthetic_nmnist,
)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.images / 16.0, data.target


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def nmnist(cache_dir):
    return synthetic_nmnist("train", cache_dir=cache_dir), synthetic_nmnist(
        "test", cache_dir=cache_dir
    )


def naive_dvs(levels, threshold):
    """Per pixel, per step: emit floor(|L - L_ref| / C) events of that sign, move L_ref."""
    n_steps, n_pixels = levels.shape
    counts = np.zeros((n_steps - 1, n_pixels), dtype=int)
    for j in range(n_pixels):
        reference = levels[0, j]
        for k in range(1, n_steps):
            delta = levels[k, j] - reference
            n = int(abs(delta) // threshold)
            if n:
                counts[k - 1, j] = n if delta > 0 else -n
                reference += np.sign(delta) * n * threshold
    return counts


def test_dvs_counts_match_naive_pixel_loop():
    rng = np.random.default_rng(0)
    threshold = 0.25
    levels = np.cumsum(rng.normal(0.0, 0.2, (200, 30)), axis=0)
    # Quarter-multiples are exact in binary, so both versions see the same crossings.
    levels = np.round(levels * 64) / 64
    step, pixel, n = synthetic._dvs_counts((levels - levels[0]) / threshold)
    got = np.zeros((199, 30), dtype=int)
    got[step, pixel] = n
    assert np.array_equal(got, naive_dvs(levels, threshold))
    assert np.abs(got).sum() > 100


@pytest.mark.parametrize("index", [0, 1, 7, 100, 1796])
def test_simulated_digit_statistics(digits, index):
    images, _ = digits
    events = simulate_saccade_events(images[index], np.random.default_rng(index))
    assert events.dtype == EVENT_DTYPE
    assert 1000 <= len(events) <= 8000
    assert 0.45 <= events["p"].mean() <= 0.55
    assert set(np.unique(events["p"])) == {0, 1}
    duration_ms = (events["t"][-1] - events["t"][0]) / 1000
    assert 280 <= duration_ms <= 310
    assert events["t"].min() >= 0 and events["t"].max() < 300_000
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["x"].max() <= 33 and events["y"].max() <= 33


def test_closed_path_gives_equal_on_and_off_per_pixel(digits):
    # The scene ends where it starts, so without noise every pixel's ON and OFF counts match.
    events = simulate_saccade_events(digits[0][3], np.random.default_rng(0), noise_rate_hz=0.0)
    net = np.zeros((34, 34), dtype=int)
    np.add.at(net, (events["y"], events["x"]), 2 * events["p"].astype(int) - 1)
    assert len(events) > 1000
    assert not net.any()


def test_events_follow_the_digit(digits):
    # Without noise, events only come from pixels the moving digit reaches.
    image = np.zeros((8, 8))
    image[3:5, 3:5] = 1.0
    events = simulate_saccade_events(image, np.random.default_rng(0), noise_rate_hz=0.0)
    assert len(events) > 0
    assert 8 <= events["x"].min() and events["x"].max() <= 25
    assert 8 <= events["y"].min() and events["y"].max() <= 25


def test_blank_image_gives_only_noise():
    blank = np.zeros((8, 8))
    assert len(simulate_saccade_events(blank, np.random.default_rng(0), noise_rate_hz=0.0)) == 0
    noisy = [
        len(simulate_saccade_events(blank, np.random.default_rng(s), noise_rate_hz=1.0))
        for s in range(20)
    ]
    expected = 1.0 * 34 * 34 * 0.3  # rate x pixels x duration
    assert abs(np.mean(noisy) - expected) < 0.1 * expected


def test_simulation_is_deterministic(digits):
    image = digits[0][5]
    a = simulate_saccade_events(image, np.random.default_rng(42))
    b = simulate_saccade_events(image, np.random.default_rng(42))
    c = simulate_saccade_events(image, np.random.default_rng(43))
    assert np.array_equal(a, b)
    assert not (len(a) == len(c) and np.array_equal(a, c))


def test_simulation_rejects_bad_images():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        simulate_saccade_events(np.full((8, 8), 16.0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="2-D"):
        simulate_saccade_events(np.zeros(8), np.random.default_rng(0))


def test_batched_rendering_equals_one_at_a_time(digits):
    images = digits[0][:40]  # spans a batch boundary
    batched = render_digits(images, seed=3)
    for i in (0, 31, 32, 39):
        single = simulate_saccade_events(images[i], sample_rng(3, i))
        assert np.array_equal(batched[i], single)


def test_stratified_split_is_seeded_and_stratified(digits):
    labels = digits[1]
    train, test = stratified_split(labels, 0.2, seed=0)
    again_train, again_test = stratified_split(labels, 0.2, seed=0)
    other_train, _ = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert not np.array_equal(train, other_train)
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == len(labels)
    class_sizes = np.bincount(labels)
    assert np.bincount(labels[test]).tolist() == [round(0.2 * n) for n in class_sizes]


def test_synthetic_nmnist_splits(nmnist, digits):
    train, test = nmnist
    labels = digits[1]
    assert isinstance(train, EventSet)
    assert train.sensor_size == test.sensor_size == (34, 34, 2)
    expected_test = sum(round(0.2 * n) for n in np.bincount(labels))
    assert len(test) == expected_test and len(train) == len(labels) - expected_test
    assert np.array_equal(np.bincount(train.labels) + np.bincount(test.labels), np.bincount(labels))
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(train.labels, labels[train_idx])
    assert np.array_equal(test.labels, labels[test_idx])


def test_synthetic_nmnist_samples_are_the_simulator_output(nmnist, digits):
    train, _ = nmnist
    images, labels = digits
    train_idx, _ = stratified_split(labels, 0.2, seed=0)
    for j in (0, len(train) - 1):
        i = train_idx[j]
        expected = simulate_saccade_events(images[i], sample_rng(0, i))
        assert np.array_equal(train[j][0], expected)


def test_synthetic_nmnist_statistics(nmnist):
    train, test = nmnist
    lengths = np.concatenate([train.lengths, test.lengths])
    events = np.concatenate([train.events, test.events])
    assert 3000 <= np.median(lengths) <= 5000
    assert lengths.min() >= 1000
    assert 0.45 <= events["p"].mean() <= 0.55
    assert events["x"].max() <= 33 and events["y"].max() <= 33
    for part in (train, test):
        first = part.events["t"][part.offsets[:-1]]
        last = part.events["t"][part.offsets[1:] - 1]
        duration_ms = (last - first) / 1000
        assert duration_ms.min() >= 280 and duration_ms.max() <= 310


def test_synthetic_nmnist_cache_is_reused(nmnist, cache_dir, monkeypatch):
    path = cache_path(0, cache_dir)
    assert path.name == f"synthetic-nmnist-v{SYNTHETIC_NMNIST_VERSION}-seed0.npz"
    assert sorted(p.name for p in cache_dir.iterdir()) == [path.name]
    assert len(EventSet.load(path)) == 1797

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again instead of loading the cache")

    monkeypatch.setattr(synthetic, "render_digits", no_rendering)
    test = synthetic_nmnist("test", cache_dir=cache_dir)
    assert np.array_equal(test.events, nmnist[1].events)
    other = synthetic_nmnist("test", cache_dir=cache_dir, test_fraction=0.5)
    assert len(other) == sum(round(0.5 * n) for n in np.bincount(load_digits().target))


def test_corrupt_cache_is_rebuilt(tmp_path, digits, monkeypatch):
    images, labels = digits
    small = np.r_[0:20]  # a small stand-in dataset keeps this test fast
    monkeypatch.setattr(synthetic, "_digits", lambda: (images[small], labels[small]))
    path = cache_path(0, tmp_path)
    path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="rebuilding"):
        train = synthetic_nmnist("train", cache_dir=tmp_path)
    rebuilt = EventSet.load(path)
    assert len(rebuilt) == 20
    assert len(train) + len(synthetic_nmnist("test", cache_dir=tmp_path)) == 20


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("SAST_CACHE_DIR", str(tmp_path))
    assert cache_path(5) == tmp_path / f"synthetic-nmnist-v{SYNTHETIC_NMNIST_VERSION}-seed5.npz"
    monkeypatch.delenv("SAST_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_path(0).parent == tmp_path / "home" / ".cache" / "sast"


def test_unknown_split_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="'train' or 'test'"):
        synthetic_nmnist("validation", cache_dir=tmp_path)
