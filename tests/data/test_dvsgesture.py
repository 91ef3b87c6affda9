import struct

import numpy as np
import pytest

from sast.data.dvsgesture import (
    DVSGESTURE_READER_VERSION,
    GESTURE_CLASSES,
    LABEL_DTYPE,
    downsample_events,
    downsampled_size,
    load_dvsgesture,
    load_dvsgesture_tonic,
    read_aedat31,
    read_gesture_labels,
    read_tonic_sample,
    read_trial_list,
)
from sast.data.events import EVENT_DTYPE, make_events

from ..conftest import SHARED_DATA

REAL_LABELS = SHARED_DATA / "dvsgesture" / "metadata" / "user01_natural_labels.csv"
HEADER_LINES = (b"#!AER-DAT3.1", b"#Format: RAW", b"#Source 1: DVS128", b"#!END-HEADER")


# ----------------------------------------------------------------------------- AEDAT writer
# Builds every field with Python integers and struct, independently of the reader.


def packet(kind, payload, size, overflow=0, n_valid=0):
    capacity = len(payload) // size if size else 0
    header = struct.pack("<hhiiiiii", kind, 1, size, 4, overflow, capacity, capacity, n_valid)
    return header + payload


def polarity_packet(events, overflow=0):
    """``events``: (x, y, p, timestamp, valid) tuples."""
    payload = b"".join(
        struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, ts)
        for x, y, p, ts, valid in events
    )
    return packet(1, payload, 8, overflow, sum(e[4] for e in events))


def special_packet(n):
    """Type-0 events whose words would decode to valid polarity events (x=5, y=7, ON)."""
    payload = b"".join(struct.pack("<Ii", (5 << 17) | (7 << 2) | 3, 10 * i) for i in range(n))
    return packet(0, payload, 8, n_valid=n)


def write_aedat(path, packets, header=HEADER_LINES):
    path.write_bytes(b"".join(line + b"\r\n" for line in header) + b"".join(packets))
    return path


def expected_events(packets_events):
    """(x, y, t, p) of the valid events of ``[(events, overflow), ...]``, stable-sorted by t."""
    rows = [
        (x, y, (overflow << 31) | ts, p)
        for events, overflow in packets_events
        for x, y, p, ts, valid in events
        if valid
    ]
    return sorted(rows, key=lambda row: row[2])


def as_rows(events):
    return [(int(e["x"]), int(e["y"]), int(e["t"]), int(e["p"])) for e in events]


# ----------------------------------------------------------------------------- read_aedat31


def test_read_aedat31_decodes_exactly_the_written_events(tmp_path):
    first = [(0, 0, 1, 5, 1), (127, 127, 0, 9, 1), (64, 3, 1, 9, 0), (1, 126, 1, 12, 1)]
    second = [(100, 20, 0, 2_000_000_000, 1), (17, 99, 1, 2_147_483_647, 1)]
    wrapped = [(3, 4, 1, 7, 1), (120, 1, 0, 8, 1)]
    packets = [
        packet(35, b"\x00" * 8, 8),  # type 35: the body starts with '#' (0x23)
        polarity_packet(first),
        special_packet(4),
        packet(2, bytes(range(40)), 20),  # a frame-type packet with 20-byte events
        polarity_packet(second),
        polarity_packet(wrapped, overflow=1),
    ]
    path = write_aedat(tmp_path / "rec.aedat", packets)
    events = read_aedat31(path)
    assert events.dtype == EVENT_DTYPE
    assert as_rows(events) == expected_events([(first, 0), (second, 0), (wrapped, 1)])
    assert events["t"].max() == 2**31 + 8
    assert len(events) == 7  # the invalid event and the special/frame packets are gone


def test_read_aedat31_sorts_by_time_stably(tmp_path):
    late = [(1, 1, 1, 500, 1), (2, 2, 0, 500, 1)]
    early = [(3, 3, 1, 100, 1), (4, 4, 0, 500, 1)]
    path = write_aedat(tmp_path / "rec.aedat", [polarity_packet(late), polarity_packet(early)])
    assert as_rows(read_aedat31(path)) == [(3, 3, 100, 1), (1, 1, 500, 1), (2, 2, 500, 0),
                                           (4, 4, 500, 0)]


def test_read_aedat31_empty_body_and_lf_header(tmp_path):
    path = tmp_path / "empty.aedat"
    path.write_bytes(b"#!AER-DAT3.1\n#!END-HEADER\n")
    events = read_aedat31(path)
    assert events.dtype == EVENT_DTYPE and len(events) == 0


def test_read_aedat31_without_end_header(tmp_path):
    path = write_aedat(tmp_path / "noend.aedat", [polarity_packet([(1, 1, 1, 1, 1)])],
                       header=HEADER_LINES[:3])
    with pytest.raises(ValueError, match=r"noend\.aedat.*'#!END-HEADER'.*not an AEDAT 3\.1"):
        read_aedat31(path)


def test_read_aedat31_truncated_packet_names_offset(tmp_path):
    ok = polarity_packet([(1, 1, 1, 1, 1)])
    body = polarity_packet([(2, 2, 0, 2, 1), (3, 3, 0, 3, 1)])
    path = write_aedat(tmp_path / "cut.aedat", [ok, body[:-3]])
    offset = sum(len(line) + 2 for line in HEADER_LINES) + len(ok)
    with pytest.raises(ValueError, match=rf"cut\.aedat: truncated packet at byte {offset}\b"):
        read_aedat31(path)
    write_aedat(path, [ok, body[:20]])  # the packet header itself is cut
    with pytest.raises(ValueError, match=rf"cut\.aedat: truncated packet at byte {offset}\b"):
        read_aedat31(path)


def test_read_aedat31_rejects_wrong_polarity_event_size(tmp_path):
    path = write_aedat(tmp_path / "size.aedat", [packet(1, b"\x01" * 24, 12, n_valid=2)])
    with pytest.raises(ValueError, match=r"size\.aedat: polarity packet at byte \d+ has "
                                         r"eventSize 12"):
        read_aedat31(path)


def test_read_aedat31_rejects_addresses_outside_sensor(tmp_path):
    path = write_aedat(tmp_path / "big.aedat", [polarity_packet([(128, 0, 1, 1, 1)])])
    with pytest.raises(ValueError, match=r"big\.aedat: x = 128 lies outside the 128x128"):
        read_aedat31(path)
    assert read_aedat31(path, sensor_size=(240, 180))["x"].tolist() == [128]


# ----------------------------------------------------------------------------- labels, splits


def test_real_labels_csv():
    if not REAL_LABELS.is_file():
        pytest.skip(f"{REAL_LABELS} is not available")
    labels = read_gesture_labels(REAL_LABELS)
    assert labels.dtype == LABEL_DTYPE
    assert labels["label0"].tolist() == [0, 1, 2, 4, 3, 5, 6, 7, 7, 8, 9, 10]
    assert labels[0].tolist() == (0, 53036986, 59508469)
    assert labels[-1].tolist() == (10, 171367247, 177991967)
    durations = labels["end_us"] - labels["start_us"]
    assert durations.min() > 5_000_000 and durations.max() < 12_000_000
    assert np.all(labels["start_us"][1:] >= labels["end_us"][:-1])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("3,100", "expected 3 columns"),
        ("3,100,200,4", "expected 3 columns"),
        ("3,1e5,200000", "expected three integers"),
        ("0,100,200", "class 0 outside 1..11"),
        ("12,100,200", "class 12 outside 1..11"),
        ("3,200,200", "need 0 <= startTime_usec < endTime_usec"),
    ],
)
def test_bad_label_rows_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "userXX_lab_labels.csv"
    path.write_text(f"class,startTime_usec,endTime_usec\n1,10,20\n\n{row}\n")
    with pytest.raises(ValueError, match=rf"userXX_lab_labels\.csv, line 4: {message}"):
        read_gesture_labels(path)


def test_labels_csv_needs_its_header(tmp_path):
    path = tmp_path / "nohead_labels.csv"
    path.write_text("1,10,20\n")
    with pytest.raises(ValueError, match=r"nohead_labels\.csv, line 1: expected the header"):
        read_gesture_labels(path)


def test_read_trial_list(tmp_path):
    path = tmp_path / "trials_to_train.txt"
    path.write_bytes(b"user01_fluorescent.aedat\r\n\r\nuser01_lab.aedat\r\n\n")
    assert read_trial_list(path) == ["user01_fluorescent.aedat", "user01_lab.aedat"]
    path.write_text("user01_lab.csv\n")
    with pytest.raises(ValueError, match="not an .aedat file name"):
        read_trial_list(path)


# ----------------------------------------------------------------------------- fake release

# Gestures per trial: (class, start_us, end_us). Times are whole milliseconds so that
# tonic's millisecond copy holds the same events; user02_led repeats class 3.
TRIALS = {
    "user01_natural": [(1, 10_000, 30_000), (2, 40_000, 45_000), (5, 50_000, 70_000),
                       (4, 75_000, 95_000)],
    "user02_led": [(3, 5_000, 25_000), (11, 30_000, 50_000), (3, 60_000, 80_000)],
    "user24_lab": [(10, 20_000, 40_000), (7, 50_000, 65_000)],
}
SPLITS = {"train": ["user01_natural", "user02_led"], "test": ["user24_lab"]}
WINDOW_US = 12_000


def recording_events(trial_index, gestures):
    """Three events each millisecond from 0 to 100 ms, and one more at each gesture start."""
    rng = np.random.default_rng(trial_index)
    stamps = sorted(list(range(0, 100_000, 1000)) * 3 + [start for _, start, _ in gestures])
    return [(int(rng.integers(128)), int(rng.integers(128)), int(rng.integers(2)), ts, 1)
            for ts in stamps]


def write_release(folder):
    folder.mkdir(parents=True)
    recordings = {}
    for i, (trial, gestures) in enumerate(TRIALS.items()):
        events = recording_events(i, gestures)
        # Two packets, a special packet between them, and an invalid event.
        half = len(events) // 2
        packets = [polarity_packet(events[:half]), special_packet(3),
                   polarity_packet(events[half:] + [(9, 9, 1, 99_999, 0)])]
        write_aedat(folder / f"{trial}.aedat", packets)
        rows = "".join(f"{c},{s},{e}\n" for c, s, e in gestures)
        (folder / f"{trial}_labels.csv").write_text("class,startTime_usec,endTime_usec\n" + rows)
        recordings[trial] = events
    for split, trials in SPLITS.items():
        (folder / f"trials_to_{split}.txt").write_text("".join(f"{t}.aedat\n" for t in trials))
    return recordings


def expected_samples(recordings, split, window_us, factor):
    """(label0, [(x, y, t, p), ...]) per CSV row, cut one event at a time."""
    samples = []
    for trial in SPLITS[split]:
        for cls, start, end in TRIALS[trial]:
            stop = end if window_us is None else min(end, start + window_us)
            rows = [(x // factor, y // factor, ts - start, p)
                    for x, y, p, ts, valid in recordings[trial] if valid and start <= ts < stop]
            samples.append((cls - 1, rows))
    return samples


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    parent = tmp_path_factory.mktemp("release")
    recordings = write_release(parent / "DvsGesture")
    return parent, recordings


def assert_matches(eventset, expected):
    assert len(eventset) == len(expected)
    assert eventset.labels.tolist() == [label for label, _ in expected]
    for i, (_, rows) in enumerate(expected):
        assert as_rows(eventset[i][0]) == rows


@pytest.mark.parametrize(("split", "window_us", "factor"),
                         [("train", WINDOW_US, 4), ("test", WINDOW_US, 4), ("train", None, 1)])
def test_load_release(release, split, window_us, factor):
    parent, recordings = release
    eventset = load_dvsgesture(parent, split, window_us=window_us, downsample=factor,
                               progress=False)
    assert eventset.sensor_size == (128 // factor, 128 // factor, 2)
    assert_matches(eventset, expected_samples(recordings, split, window_us, factor))
    t = eventset.events["t"]
    assert t.min() == 0 and t.max() < (window_us or 20_000)
    assert eventset.events["x"].max() < 128 // factor and eventset.events["y"].max() < 128 // factor


def test_load_release_from_the_dvsgesture_folder(release):
    parent, _ = release
    a = load_dvsgesture(parent, "train", progress=False)
    b = load_dvsgesture(parent / "DvsGesture", "train", progress=False)
    assert len(a) == 7 and a.lengths.min() > 0
    assert np.array_equal(a.events, b.events) and np.array_equal(a.offsets, b.offsets)
    assert a.sensor_size == (32, 32, 2) and a.labels.tolist() == [0, 1, 4, 3, 2, 10, 2]


def write_tonic_copy(folder, recordings, dtype):
    """tonic's layout of the release: (N, 4) x, y, p, t [ms] from the gesture start;
    a class repeated in a recording keeps its first gesture."""
    for split, trials in SPLITS.items():
        for trial in trials:
            target = folder / f"ibmGesture{split.title()}" / trial
            target.mkdir(parents=True)
            for cls, start, end in TRIALS[trial]:
                path = target / f"{cls - 1}.npy"
                if path.exists():
                    continue
                rows = [(x, y, p, (ts - start) / 1000) for x, y, p, ts, valid
                        in recordings[trial] if valid and start <= ts < end]
                np.save(path, np.array(rows, dtype=dtype))


def canonical(eventset, skip=()):
    return sorted((int(label), events.tobytes())
                  for i, (events, label) in enumerate(eventset) if i not in skip)


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_tonic_copy_loads_like_the_release(release, tmp_path, dtype):
    parent, recordings = release
    write_tonic_copy(tmp_path / "DVSGesture", recordings, dtype)
    for split, repeated in (("train", {6}), ("test", set())):
        want = load_dvsgesture(parent, split, progress=False)
        got = load_dvsgesture(tmp_path, split, progress=False)
        assert got.sensor_size == want.sensor_size
        assert len(got) == len(want) - len(repeated)
        assert canonical(got) == canonical(want, skip=repeated)
        inner = load_dvsgesture(tmp_path / "DVSGesture", split, progress=False)
        assert np.array_equal(inner.events, got.events)
    direct = load_dvsgesture_tonic(tmp_path / "DVSGesture", "train", window_us=None,
                                   downsample=2, progress=False)
    assert direct.labels.tolist() == [0, 1, 3, 4, 2, 10]  # by trial name, then label
    assert direct.sensor_size == (64, 64, 2) and direct.events["x"].max() < 64


def test_read_tonic_sample_units_and_checks(tmp_path):
    path = tmp_path / "0.npy"
    np.save(path, np.array([[3, 4, 1, 2.5], [5, 6, 0, 0.001]]))
    assert as_rows(read_tonic_sample(path)) == [(5, 6, 1, 0), (3, 4, 2500, 1)]
    np.save(path, np.array([[3, 4, 2, 1]]))
    with pytest.raises(ValueError, match=r"0\.npy: column p must hold integers in 0\.\.1"):
        read_tonic_sample(path)
    np.save(path, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"0\.npy: expected an \(N, 4\) numeric array"):
        read_tonic_sample(path)


# ----------------------------------------------------------------------------- bad layouts


def test_wrong_root_names_folder_and_layouts(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dvsgesture(tmp_path, "test", progress=False)
    message = str(err.value)
    assert str(tmp_path) in message
    assert "trials_to_test.txt" in message and "ibmGestureTest" in message


def test_missing_files_are_named(tmp_path):
    folder = tmp_path / "DvsGesture"
    write_release(folder)
    (folder / "trials_to_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"trials_to_test\.txt not found"):
        load_dvsgesture(tmp_path, "test", progress=False)
    (folder / "user02_led_labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"user02_led_labels\.csv not found \(listed in"):
        load_dvsgesture(tmp_path, "train", progress=False)
    (folder / "user01_natural.aedat").unlink()
    with pytest.raises(FileNotFoundError, match=r"user01_natural\.aedat not found"):
        load_dvsgesture(tmp_path, "train", progress=False)


def test_bad_tonic_folder(tmp_path):
    (tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_lab").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no \.npy files in .*ibmGestureTrain"):
        load_dvsgesture(tmp_path, "train", progress=False)
    with pytest.raises(FileNotFoundError, match=r"no ibmGestureTest/ folder"):
        load_dvsgesture(tmp_path, "test", progress=False)
    np.save(tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_lab" / "11.npy",
            np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"11\.npy: file name must be the label 0\.\.10"):
        load_dvsgesture(tmp_path, "train", progress=False)


def test_bad_arguments(release):
    parent, _ = release
    for kwargs in ({"split": "val"}, {"split": "train", "window_us": 0},
                   {"split": "train", "downsample": 0}):
        with pytest.raises(ValueError):
            load_dvsgesture(parent, progress=False, **kwargs)


# ----------------------------------------------------------------------------- downsampling


def test_downsample_events_is_pure_and_floors():
    events = make_events([0, 3, 4, 127], [127, 5, 8, 0], [1, 2, 3, 4], [1, 0, 1, 0])
    before = events.copy()
    out = downsample_events(events, 4, (128, 128, 2))
    assert np.array_equal(events, before)
    assert out["x"].tolist() == [0, 0, 1, 31] and out["y"].tolist() == [31, 1, 2, 0]
    assert np.array_equal(out["t"], events["t"]) and np.array_equal(out["p"], events["p"])
    assert downsampled_size((128, 128, 2), 3) == (43, 43, 2)
    assert downsample_events(events, 3, (128, 128, 2))["x"].max() == 42
    with pytest.raises(ValueError, match="x = 127 lies outside"):
        downsample_events(events, 2, (64, 64, 2))
    with pytest.raises(ValueError, match="integer >= 1"):
        downsample_events(events, 0, (128, 128, 2))


def test_constants():
    assert len(GESTURE_CLASSES) == 11 and GESTURE_CLASSES[0] == "hand_clapping"
    assert GESTURE_CLASSES[-1] == "other_gestures"
    assert DVSGESTURE_READER_VERSION == 1
