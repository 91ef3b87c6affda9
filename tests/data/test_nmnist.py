"""The N-MNIST reader against hand-assembled files and the real recordings' manifests."""

import csv
import warnings

import numpy as np
import pytest

import sast.data.nmnist as nmnist
from sast.data.events import EVENT_DTYPE
from sast.data.nmnist import decode_nmnist, load_nmnist, nmnist_index, read_nmnist_file

from ..conftest import SHARED_DATA

NMNIST_ROOT = SHARED_DATA / "nmnist"
GESTURE_ROOT = SHARED_DATA / "dvsgesture"
MARKER = (0, 240, 0, 0)  # an overflow marker; its own x, p and t do not matter


def pack(*events: tuple[int, int, int, int]) -> bytes:
    """``(x, y, p, t)`` events as 40-bit big-endian words: x bits 39..32, y 31..24, p bit 23,
    t bits 22..0."""
    return b"".join(((x << 32) | (y << 24) | (p << 23) | t).to_bytes(5, "big")
                    for x, y, p, t in events)


def fields(events: np.ndarray) -> list[tuple[int, int, int, int]]:
    return [(int(e["x"]), int(e["y"]), int(e["p"]), int(e["t"])) for e in events]


def write_tree(root, files: dict[str, bytes]) -> None:
    for name, raw in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)


def read_manifest(path) -> list[dict[str, str]]:
    if not path.exists():
        pytest.skip(f"real recordings not found: {path} is missing")
    with path.open() as fh:
        return list(csv.DictReader(fh))


# --- hand-assembled files ---------------------------------------------------------------------


def test_worked_example_from_the_data_readme():
    events = decode_nmnist(bytes.fromhex("12 10 80 03 7d"))
    assert events.dtype == EVENT_DTYPE
    assert fields(events) == [(18, 16, 1, 893)]


def test_hand_written_file_decodes_exactly(tmp_path):
    chosen = [(0, 0, 0, 0), (33, 0, 1, 0x7F), (0, 33, 1, 0x80), (17, 5, 0, 0xFF00),
              (1, 2, 1, 0x010000), (33, 33, 0, 0x7F0000), (2, 31, 1, (1 << 23) - 1)]
    path = tmp_path / "sample.bin"
    path.write_bytes(pack(*chosen))
    events = read_nmnist_file(path)
    assert events.dtype == EVENT_DTYPE
    assert fields(events) == chosen


def test_numpy_array_input_and_wrong_dtype():
    raw = pack((3, 4, 1, 100), (5, 6, 0, 200))
    assert fields(decode_nmnist(np.frombuffer(raw, np.uint8))) == [(3, 4, 1, 100), (5, 6, 0, 200)]
    with pytest.raises(TypeError, match="uint8"):
        decode_nmnist(np.zeros(10, np.int32), "ints")


def test_overflow_marker_adds_8192_to_later_events_and_is_dropped():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        events = decode_nmnist(pack((1, 1, 1, 8000), (2, 2, 0, 8100), MARKER,
                                    (3, 3, 1, 50), (4, 4, 0, 100)))
    assert fields(events) == [(1, 1, 1, 8000), (2, 2, 0, 8100), (3, 3, 1, 8242), (4, 4, 0, 8292)]


def test_two_overflow_markers_add_16384():
    events = decode_nmnist(pack(MARKER, (1, 1, 1, 10), MARKER, (2, 2, 0, 20), MARKER))
    assert fields(events) == [(1, 1, 1, 10 + 8192), (2, 2, 0, 20 + 16384)]


def test_overflow_markers_restart_in_every_file(tmp_path, monkeypatch):
    write_tree(tmp_path / "Train", {
        "0/a.bin": pack((1, 1, 1, 10), MARKER, MARKER, (2, 2, 1, 20)),
        "1/b.bin": pack((3, 3, 0, 30), (4, 4, 1, 40)),
        "2/c.bin": pack(MARKER, (5, 5, 0, 50)),
    })
    expected = [[(1, 1, 1, 10), (2, 2, 1, 20 + 16384)],
                [(3, 3, 0, 30), (4, 4, 1, 40)],
                [(5, 5, 0, 50 + 8192)]]
    for budget in (1, 1 << 20):
        monkeypatch.setattr(nmnist, "_CHUNK_BYTES", budget)
        data = load_nmnist(tmp_path, "train", progress=False)
        assert [fields(events) for events, _ in data] == expected
        assert data.labels.tolist() == [0, 1, 2]


def test_decreasing_timestamps_are_sorted_stably_with_a_warning():
    rng = np.random.default_rng(0)
    shuffled = [(i % 34, i // 34, int(rng.integers(2)), int(rng.integers(5))) for i in range(600)]
    with pytest.warns(UserWarning, match="timestamps decrease in 1 file.*clip.bin"):
        events = decode_nmnist(pack(*shuffled), "clip.bin")
    assert fields(events) == sorted(shuffled, key=lambda event: event[3])


def test_time_going_back_between_files_is_not_a_decrease(tmp_path):
    write_tree(tmp_path / "Train", {"0/a.bin": pack((1, 1, 1, 900)),
                                    "0/b.bin": pack((2, 2, 0, 5), (3, 3, 0, 6))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_nmnist(tmp_path, "train", progress=False)
    assert data.events["t"].tolist() == [900, 5, 6]


def test_first_saccade_only_keeps_t_below_100000(tmp_path):
    write_tree(tmp_path / "Train", {
        "3/a.bin": pack((1, 1, 1, 50_000), (2, 2, 0, 99_999), (3, 3, 1, 100_000),
                        (4, 4, 0, 150_000)),
        "4/b.bin": pack((5, 5, 1, 120_000)),
        "5/c.bin": pack((6, 6, 1, 7)),
    })
    data = load_nmnist(tmp_path, "train", first_saccade_only=True, progress=False)
    assert data.lengths.tolist() == [2, 0, 1]
    assert fields(data.events) == [(1, 1, 1, 50_000), (2, 2, 0, 99_999), (6, 6, 1, 7)]


# --- bad input --------------------------------------------------------------------------------


def test_truncated_file_is_named(tmp_path):
    path = tmp_path / "Train" / "7" / "00042.bin"
    write_tree(tmp_path, {"Train/7/00042.bin": pack((1, 1, 1, 1), (2, 2, 0, 2))[:-3],
                          "Train/7/00043.bin": pack((1, 1, 1, 1))})
    with pytest.raises(ValueError, match=r"00042\.bin is 7 bytes, not a multiple of 5"):
        read_nmnist_file(path)
    with pytest.raises(ValueError, match=r"00042\.bin is 7 bytes, not a multiple of 5: truncated"):
        load_nmnist(tmp_path, "train", progress=False)


@pytest.mark.parametrize(("event", "message"), [
    ((34, 0, 0, 1), r"max x = 34 .*\(34, 34, 2\) allows x in \[0, 33\]"),
    ((0, 200, 0, 1), r"max y = 200 .*\(34, 34, 2\) allows y in \[0, 33\]"),
])
def test_coordinates_outside_the_sensor_are_named(tmp_path, event, message):
    write_tree(tmp_path / "Train", {"1/good.bin": pack((33, 33, 0, 1)),
                                    "2/bad.bin": pack((0, 0, 0, 0), event)})
    with pytest.raises(ValueError, match="bad.bin: " + message):
        load_nmnist(tmp_path, "train", progress=False)
    with pytest.raises(ValueError, match="bad.bin: " + message):
        read_nmnist_file(tmp_path / "Train" / "2" / "bad.bin")


def test_larger_sensor_accepts_larger_coordinates():
    events = decode_nmnist(pack((127, 127, 1, 5)), sensor_size=(128, 128, 2))
    assert fields(events) == [(127, 127, 1, 5)]


def test_empty_file_gives_an_empty_sample(tmp_path):
    write_tree(tmp_path / "Train", {"0/empty.bin": b"", "1/one.bin": pack((1, 2, 1, 3))})
    assert decode_nmnist(b"").dtype == EVENT_DTYPE and len(decode_nmnist(b"")) == 0
    with pytest.warns(UserWarning, match="empty.bin is empty"):
        assert len(read_nmnist_file(tmp_path / "Train" / "0" / "empty.bin")) == 0
    with pytest.warns(UserWarning, match="1 empty N-MNIST files.*empty.bin"):
        data = load_nmnist(tmp_path, "train", progress=False)
    assert data.lengths.tolist() == [0, 1] and data.labels.tolist() == [0, 1]


def test_missing_split_folder(tmp_path):
    write_tree(tmp_path / "Test", {"0/a.bin": pack((1, 1, 1, 1))})
    layout = r"DIR/Train/<digit>/\*\.bin"
    with pytest.raises(FileNotFoundError, match="Train is not a folder.*" + layout):
        nmnist_index(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="pass its parent"):
        nmnist_index(tmp_path / "Test", "test")
    with pytest.raises(ValueError, match="split must be one of"):
        nmnist_index(tmp_path, "validation")


def test_split_without_digit_folders(tmp_path):
    write_tree(tmp_path / "Train", {"images/a.bin": pack((1, 1, 1, 1))})
    with pytest.raises(FileNotFoundError, match=r"Train has no digit folders 0\.\.9 .*images.*"
                                                r"DIR/Train/<digit>/\*\.bin"):
        nmnist_index(tmp_path, "train")


def test_digit_folders_without_bin_files(tmp_path):
    write_tree(tmp_path / "Train", {"3/a.txt": b"", "4/.hidden.bin": pack((1, 1, 1, 1))})
    with pytest.raises(FileNotFoundError, match=r"no \.bin files .*Train.*DIR/Train/<digit>"):
        nmnist_index(tmp_path, "train")


def test_index_order_labels_and_ignored_entries(tmp_path):
    names = ["Train/9/00003.bin", "Train/0/00010.bin", "Train/0/00002.bin", "Train/4/00001.bin"]
    write_tree(tmp_path, {name: pack((1, 1, 1, 1)) for name in names})
    write_tree(tmp_path, {"Train/extra/00005.bin": b"", "Train/0/notes.txt": b""})
    with pytest.warns(UserWarning, match=r"ignoring 1 entries .*\['extra'\]"):
        paths, labels = nmnist_index(tmp_path, "train")
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "Train/0/00002.bin", "Train/0/00010.bin", "Train/4/00001.bin", "Train/9/00003.bin"]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 4, 9]


# --- real recordings --------------------------------------------------------------------------


def reference_decode(path):
    """The README's own formula, one column at a time."""
    r = np.fromfile(path, np.uint8).reshape(-1, 5).astype(np.uint32)
    t = ((r[:, 2] & 0x7F) << 16) | (r[:, 3] << 8) | r[:, 4]
    return r[:, 0], r[:, 1], r[:, 2] >> 7, t


def assert_matches_manifest(events, row, sensor_max):
    assert len(events) == int(row["n_events"])
    assert int(events["t"][0]) == int(row["t_first_us"])
    assert int(events["t"][-1]) == int(row["t_last_us"])
    assert abs(events["p"].mean() - float(row["on_fraction"])) <= 5e-5 + 1e-12
    assert events["x"].max() <= sensor_max and events["y"].max() <= sensor_max


def test_real_nmnist_files_match_the_manifest():
    rows = read_manifest(NMNIST_ROOT / "manifest.csv")
    assert len(rows) == 1000
    for i, row in enumerate(rows):
        path = NMNIST_ROOT / row["path"]
        events = read_nmnist_file(path)
        assert_matches_manifest(events, row, 33)
        assert int(path.parent.name) == int(row["label"])
        if i % 50 == 0:
            x, y, p, t = reference_decode(path)
            np.testing.assert_array_equal(events["x"], x)
            np.testing.assert_array_equal(events["y"], y)
            np.testing.assert_array_equal(events["p"], p)
            np.testing.assert_array_equal(events["t"], t)


def test_tonic_sample_file():
    path = NMNIST_ROOT / "extra" / "tonic_sample_nmnist.bin"
    if not path.exists():
        pytest.skip(f"real recordings not found: {path} is missing")
    events = read_nmnist_file(path)
    assert len(events) == 4325
    assert (int(events["t"][0]), int(events["t"][-1])) == (654, 311175)


@pytest.fixture(scope="module")
def real_train():
    rows = read_manifest(NMNIST_ROOT / "manifest.csv")
    return rows, load_nmnist(NMNIST_ROOT, "train", progress=False)


def test_load_real_train_split(real_train):
    rows, data = real_train
    paths, labels = nmnist_index(NMNIST_ROOT, "train")
    by_path = {row["path"]: row for row in rows}
    assert len(data) == 1000 and len(paths) == 1000
    assert data.sensor_size == (34, 34, 2)
    assert np.bincount(data.labels, minlength=10).tolist() == [
        97, 116, 99, 93, 105, 92, 94, 117, 87, 100]
    for path, label, n in zip(paths, data.labels, data.lengths, strict=True):
        row = by_path[path.relative_to(NMNIST_ROOT).as_posix()]
        assert (label, n) == (int(row["label"]), int(row["n_events"]))
    assert data.events.dtype == EVENT_DTYPE
    for i in range(0, 1000, 97):
        np.testing.assert_array_equal(data[i][0], read_nmnist_file(paths[i]))


def test_real_train_split_in_small_chunks_is_identical(real_train, monkeypatch):
    _, data = real_train
    monkeypatch.setattr(nmnist, "_CHUNK_BYTES", 300_000)
    again = load_nmnist(NMNIST_ROOT, "train", progress=False)
    np.testing.assert_array_equal(again.offsets, data.offsets)
    np.testing.assert_array_equal(again.events, data.events)


def test_real_first_saccade_only(real_train):
    _, data = real_train
    first = load_nmnist(NMNIST_ROOT, "train", first_saccade_only=True, progress=False)
    assert len(first) == 1000 and first.events["t"].max() < 100_000
    early = [int(np.sum(events["t"] < 100_000)) for events, _ in data]
    assert first.lengths.tolist() == early
    assert 0.2 < len(first.events) / len(data.events) < 0.5
    np.testing.assert_array_equal(first.labels, data.labels)


def test_real_test_split_is_absent():
    if not (NMNIST_ROOT / "Train").is_dir():
        pytest.skip(f"real recordings not found: {NMNIST_ROOT / 'Train'} is missing")
    if (NMNIST_ROOT / "Test").exists():
        pytest.skip("this copy of N-MNIST has a Test split")
    with pytest.raises(FileNotFoundError, match=r"N-MNIST test split not found: .*Test"):
        load_nmnist(NMNIST_ROOT, "test", progress=False)


def test_dvs_gesture_clips_in_the_same_format():
    rows = read_manifest(GESTURE_ROOT / "manifest.csv")
    assert len(rows) == 10
    for row in rows:
        events = read_nmnist_file(GESTURE_ROOT / row["path"], sensor_size=(128, 128, 2))
        assert_matches_manifest(events, row, 127)
        ranges = [events["x"].min(), events["x"].max(), events["y"].min(), events["y"].max()]
        assert ranges == [int(row[k]) for k in ("x_min", "x_max", "y_min", "y_max")]
        with pytest.raises(ValueError, match=r"max x = 127 .*\(34, 34, 2\)"):
            read_nmnist_file(GESTURE_ROOT / row["path"])
