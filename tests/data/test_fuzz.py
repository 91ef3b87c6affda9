"""Property-based fuzzing (hypothesis) of every file reader of sast.

The property, for each reader: whatever the bytes (random ones, or a valid file mutated by bit
flips, truncation, spliced-in bytes, duplicated or removed chunks, header fields overwritten
with huge, negative or out-of-range values, text in other encodings), the reader either
returns a valid result or raises its documented exception type (``ValueError`` for malformed
content) with a message that names the file, and the line or byte offset where the format has
one. Never another exception type; never a hang (each case runs under a hard time limit,
``HARD_LIMIT_S``, besides hypothesis' ``deadline``); never an allocation beyond a small
multiple of the file's size (``tracemalloc`` peak, ``MEMORY_FACTOR``; not for YAML, which has
no counts), whatever a header's counts claim. The last section builds such huge counts by
hand, one per format.

Profiles, registered with ``hypothesis.settings.register_profile``; each fuzz test takes the
name of one as its ``profile`` parameter (``pytest_generate_tests`` below):

- ``sast-fuzz-fast``: ``FAST_EXAMPLES`` examples per reader, derandomized (the same cases on
  every run), no example database. Part of the normal suite: ``pytest tests/test_fuzz.py``.
- ``sast-fuzz-long``: ``LONG_EXAMPLES`` examples per reader, random cases on every run; a
  failure prints the ``@reproduce_failure`` blob that replays it. Its test variants exist only
  when ``-m`` names the ``fuzz`` marker, which they carry: ``pytest -m fuzz tests/test_fuzz.py``
  runs them and nothing else.

Seeds: real N-MNIST ``.bin`` files and the DVS Gesture labels CSV from the shared data folder
(the tests that need them skip when it is absent), AEDAT 3.1 files built with the writers of
``tests/test_dvsgesture.py``, and files that sast itself writes (``EventSet.save``, the frame
cache, ``torch.save`` checkpoints, shipped configs and grids).
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import signal
import struct
import tempfile
import tracemalloc
import warnings
import zipfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sast.data.cache as cache_mod
from sast.config import RunConfig, load_config_file
from sast.data.cache import FrameCache, file_crc32
from sast.data.dvsgesture import (
    GESTURE_CLASSES,
    LABEL_DTYPE,
    read_aedat31,
    read_gesture_labels,
    read_tonic_sample,
    read_trial_list,
)
from sast.data.events import EVENT_DTYPE, EventSet, make_events
from sast.data.nmnist import load_nmnist_files, nmnist_index, read_nmnist_file
from sast.runs.folder import CHECKPOINT_KEYS, RunFolder, load_checkpoint, read_json
from sast.study.sweep import MAX_GRID_COMBINATIONS, Sweep, load_sweep

from ..conftest import SHARED_DATA
from .test_dvsgesture import packet, polarity_packet, special_packet, write_aedat

REPO = Path(__file__).resolve().parents[2]
FAST, LONG = "sast-fuzz-fast", "sast-fuzz-long"
FAST_EXAMPLES, LONG_EXAMPLES = 40, 2000
HARD_LIMIT_S = 30.0
MEMORY_FACTOR, MEMORY_SLACK = 64, 32 << 20

_COMMON = dict(
    deadline=timedelta(seconds=5),  # generous: this runs beside other jobs on 2 cores
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
settings.register_profile(FAST, max_examples=FAST_EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile(LONG, max_examples=LONG_EXAMPLES, **_COMMON)


def pytest_generate_tests(metafunc):
    """Every test taking ``profile`` runs with the fast profile; under ``-m fuzz`` also with the
    long one, whose variant carries the ``fuzz`` marker (so ``-m fuzz`` runs only those)."""
    if "profile" in metafunc.fixturenames:
        params = [pytest.param(FAST, id="fast")]
        if "fuzz" in (metafunc.config.option.markexpr or ""):
            params.append(pytest.param(LONG, id="long", marks=pytest.mark.fuzz))
        metafunc.parametrize("profile", params)


@pytest.fixture(scope="module")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample files absent: {SHARED_DATA} does not exist (see "
                    "tests/conftest.py: set $SAST_TEST_DATA)")
    return SHARED_DATA


# ----------------------------------------------------------------------------- harness


class Hang(Exception):
    """A case ran past ``HARD_LIMIT_S`` (not a ValueError, so no reader mistakes it for one)."""


@contextmanager
def hard_time_limit(seconds: float = HARD_LIMIT_S):
    def expire(signum, frame):
        raise Hang(f"the reader ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_checked(read, name, size, *, errors=(ValueError,), where=None,
                 factor=MEMORY_FACTOR):
    """``read()`` under the time limit and with warnings silenced; its result, or None when it
    raised one of ``errors`` whose message names ``name`` (and matches the regex ``where``).
    Any other exception propagates, failing the case. The tracemalloc peak during the call
    must stay below ``factor`` x ``size`` + ``MEMORY_SLACK`` (``factor=None``: not measured;
    for YAML, which has no counts to trust, and which tracemalloc slows 25-fold on deeply
    nested input)."""
    started = factor is not None and not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    if factor is not None:
        tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        with hard_time_limit(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = read()
            except errors as err:
                message = str(err)
                assert os.fspath(name) in message, f"{type(err).__name__} without the file: {err}"
                if where is not None:
                    assert re.search(where, message), f"no line or offset ({where}): {err}"
                result = None
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if started:
            tracemalloc.stop()
    if factor is not None:
        limit = factor * size + MEMORY_SLACK
        assert peak <= limit, f"allocated {peak} bytes reading a {size}-byte input"
    return result


def fuzz(profile: str, **strategies):
    """Decorator: run the decorated function on the examples hypothesis draws from
    ``strategies`` under the settings profile named ``profile``, right away, and print how
    many cases ran (``pytest -rP`` shows it)."""

    def decorate(body):
        cases = 0

        @functools.wraps(body)  # hypothesis derandomizes by the body's source
        def counted(**kwargs):
            nonlocal cases
            cases += 1
            body(**kwargs)

        settings.get_profile(profile)(given(**strategies)(counted))()
        print(f"{body.__module__}.{body.__qualname__.split('.')[0]}: {cases} cases ({profile})")
        return body

    return decorate


@contextmanager
def case_dir(tmp_path: Path):
    """A fresh folder for one example, removed afterwards."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def assert_events(events, width, height, nonnegative_t=True):
    assert isinstance(events, np.ndarray) and events.dtype == EVENT_DTYPE and events.ndim == 1
    if len(events):
        assert int(events["x"].max()) < width and int(events["y"].max()) < height
        assert int(events["p"].max()) <= 1
        assert np.all(np.diff(events["t"]) >= 0), "events are not sorted by time"
        if nonnegative_t:
            assert int(events["t"].min()) >= 0


# ----------------------------------------------------------------------------- strategies

INTERESTING_INTS = (0, 1, 2, 4, 5, 7, 8, 9, 28, 127, 128, 240, 255, 256, 0x7FFF, 0x8000, 0xFFFF,
                    0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 40, (1 << 63) - 1, 1 << 63,
                    (1 << 64) - 1)
MUTATIONS = ("flip", "truncate", "insert", "duplicate", "remove", "integer", "random")


def _position(draw, n, hot):
    """An offset in ``[0, n]``: anywhere, or half of the time one of the ``hot`` offsets (the
    header fields of the seed)."""
    if hot and draw(st.booleans()):
        return min(draw(st.sampled_from(hot)), n)
    return draw(st.integers(0, n))


def _mutate(draw, data, hot):
    op = draw(st.sampled_from(MUTATIONS))
    n = len(data)
    if op == "flip" and n:
        pos = min(_position(draw, n, hot), n - 1)
        data[pos] ^= 1 << draw(st.integers(0, 7))
    elif op == "truncate":
        del data[_position(draw, n, hot):]
    elif op == "insert":
        pos = _position(draw, n, hot)
        data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
    elif op == "duplicate":
        start = draw(st.integers(0, n))
        stop = draw(st.integers(start, min(n, start + 4096)))
        pos = _position(draw, n, hot)
        data[pos:pos] = data[start:stop]
    elif op == "remove":
        start = _position(draw, n, hot)
        del data[start:draw(st.integers(start, min(n, start + 4096)))]
    elif op == "integer":
        width = draw(st.sampled_from((1, 2, 4, 8)))
        order = draw(st.sampled_from(("little", "big")))
        value = draw(st.one_of(st.sampled_from(INTERESTING_INTS), st.integers(0, (1 << 64) - 1)))
        pos = _position(draw, n, hot)
        data[pos:pos + width] = (value % (1 << (8 * width))).to_bytes(width, order)
    elif op == "random":
        data = bytearray(draw(st.binary(max_size=512)))
    return data


@st.composite
def mutated(draw, seeds, hot=None, max_ops=4):
    """One of ``seeds`` (bytes) with 0 to ``max_ops`` mutations; ``hot[i]`` lists the offsets
    of the header fields of ``seeds[i]``."""
    index = draw(st.integers(0, len(seeds) - 1))
    data = bytearray(seeds[index])
    for _ in range(draw(st.integers(0, max_ops))):
        data = _mutate(draw, data, hot[index] if hot else ())
    return bytes(data)


ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252",
             "shift_jis")


@st.composite
def reencoded(draw, texts):
    """One of ``texts``, perhaps with random text spliced in, in some encoding."""
    text = draw(st.sampled_from(texts))
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.text(max_size=8)) + text[pos:]
    return text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")


def text_inputs(texts, extra=None):
    """Bytes of text files: mutated ``texts``, re-encoded ones, random bytes, and ``extra``."""
    seeds = [t.encode() for t in texts]
    options = [mutated(seeds), reencoded(texts), st.binary(max_size=256)]
    return st.one_of(*options, *([extra] if extra is not None else []))


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
                         st.floats(), st.text(max_size=10))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


# ----------------------------------------------------------------------------- N-MNIST


def _nmnist_seeds(root: Path) -> list[bytes]:
    files = sorted((root / "nmnist" / "Train").glob("*/*.bin"))[:3]
    seeds = [path.read_bytes() for path in files]
    # Short seeds too, so that mutations reach the end of the file as often as its start.
    return seeds + [seed[:5 * 60] for seed in seeds] + [b""]


NMNIST_HOT = [5 * i + field for i in range(40) for field in (0, 1, 2)]


def check_nmnist_events(events, n_bytes):
    assert_events(events, 34, 34)
    assert len(events) <= n_bytes // 5


def test_fuzz_nmnist_bin(profile, shared_data, tmp_path):
    seeds = _nmnist_seeds(shared_data)
    valid = tmp_path / "valid.bin"
    valid.write_bytes(seeds[0])

    @fuzz(profile, data=st.one_of(mutated(seeds, [NMNIST_HOT] * len(seeds)),
                                  st.binary(max_size=200)))
    def check(data):
        with case_dir(tmp_path) as folder:
            path = folder / "00001.bin"
            path.write_bytes(data)
            events = read_checked(lambda: read_nmnist_file(path), path, len(data))
            if events is not None:
                check_nmnist_events(events, len(data))
            both = read_checked(
                lambda: load_nmnist_files([valid, path], np.array([1, 2]), progress=False),
                path, len(data) + len(seeds[0]))
            if both is not None:
                assert both.labels.tolist() == [1, 2]
                for i in range(2):
                    check_nmnist_events(both[i][0], (len(seeds[0]), len(data))[i])



NAMES = ("0", "1", "5", "9", "10", "٣", "³", "a", ".hidden", "Train", "Test", "00001.bin",
         "x.bin", ".x.bin", "a.BIN", "1.bin.tmp", "é.bin")
names = st.one_of(st.sampled_from(NAMES), st.text(
    st.characters(exclude_characters="/\0", exclude_categories=("Cs",)), min_size=1,
    max_size=8).filter(lambda s: s not in (".", "..")))
tree = st.recursive(st.sampled_from(("file", "empty")),
                    lambda inner: st.dictionaries(names, inner, max_size=5), max_leaves=20)


def build_tree(folder: Path, spec) -> None:
    """``spec``: "file" (a .bin-sized file), "empty", or a mapping of names to specs."""
    if spec == "file":
        folder.write_bytes(b"\x01\x02\x80\x00\x05")
    elif spec == "empty":
        folder.write_bytes(b"")
    else:
        folder.mkdir()
        for name, inner in spec.items():
            try:
                build_tree(folder / name, inner)
            except OSError:  # a name this file system refuses (too long in bytes)
                pass


def test_fuzz_nmnist_index(profile, tmp_path):
    @fuzz(profile,
          spec=st.fixed_dictionaries({}, optional={"Train": tree, "Test": tree, "x": tree}),
          split=st.sampled_from(("train", "test")))
    def check(spec, split):
        with case_dir(tmp_path) as folder:
            root = folder / "root"
            build_tree(root, spec)
            found = read_checked(lambda: nmnist_index(root, split), root, 1 << 16,
                                 errors=(FileNotFoundError, ValueError))
            if found is not None:
                paths, labels = found
                assert len(paths) == len(labels) > 0 and labels.dtype == np.int64
                for path, label in zip(paths, labels.tolist(), strict=True):
                    assert path.is_file() and path.name.endswith(".bin")
                    assert path.parent.name == str(label) and 0 <= label <= 9
                    assert path.parent.parent == root / ("Train" if split == "train" else "Test")
                keys = [(int(label), path.name) for path, label in zip(paths, labels, strict=True)]
                assert keys == sorted(keys)



# ----------------------------------------------------------------------------- DVS Gesture

HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"


def _aedat_seeds() -> tuple[list[bytes], list[list[int]]]:
    """AEDAT 3.1 files (header, polarity packets with invalid events and a timestamp
    overflow, special and frame packets) and the offsets of their packet header fields."""
    rng = np.random.default_rng(0)

    def events(n):
        return [(int(rng.integers(128)), int(rng.integers(128)), int(rng.integers(2)),
                 int(rng.integers(1 << 31)), int(rng.integers(4) > 0)) for _ in range(n)]

    layouts = [
        [polarity_packet(events(6))],
        [polarity_packet(events(4)), special_packet(2), polarity_packet(events(3), overflow=1)],
        [packet(2, bytes(range(40)), 20), polarity_packet(events(5))],
        [],
    ]
    seeds, hot = [], []
    with tempfile.TemporaryDirectory() as folder:
        for i, packets in enumerate(layouts):
            path = write_aedat(Path(folder) / f"{i}.aedat", packets)
            data = path.read_bytes()
            assert data.startswith(HEADER)
            offsets, pos = [], len(HEADER)
            for p in packets:
                offsets += [pos + k for k in range(0, 28, 2)]
                pos += len(p)
            seeds.append(data)
            hot.append(offsets or [len(HEADER)])
    return seeds, hot


AEDAT_SEEDS, AEDAT_HOT = _aedat_seeds()


def test_fuzz_aedat31(profile, tmp_path):
    @fuzz(profile, data=st.one_of(mutated(AEDAT_SEEDS, AEDAT_HOT), st.binary(max_size=200),
                                  st.binary(max_size=200).map(lambda body: HEADER + body)))
    def check(data):
        with case_dir(tmp_path) as folder:
            path = folder / "user01_lab.aedat"
            path.write_bytes(data)
            events = read_checked(lambda: read_aedat31(path), path, len(data))
            if events is not None:
                assert_events(events, 128, 128)
                assert len(events) <= len(data) // 8



LABELS_HEADER = "class,startTime_usec,endTime_usec"
FIELD_TOKENS = st.one_of(
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.sampled_from(["", " 1", "1.5", "1e3", "0x10", "nan", "１", "1_0", "²", "-0", "+3"]),
    st.text(max_size=6),
)
label_rows = st.one_of(
    st.tuples(st.integers(0, 12), st.integers(-5, 1 << 64), st.integers(-5, 1 << 64)).map(
        lambda row: ",".join(map(str, row))),
    st.lists(FIELD_TOKENS, min_size=1, max_size=4).map(",".join),
)
label_files = st.lists(label_rows, max_size=6).map(
    lambda rows: (LABELS_HEADER + "\n" + "\n".join(rows)).encode())


def test_fuzz_gesture_labels(profile, shared_data, tmp_path):
    real = (shared_data / "dvsgesture" / "metadata" / "user01_natural_labels.csv").read_text()

    @fuzz(profile, data=text_inputs([real, real.replace("\n", "\r\n")], label_files))
    def check(data):
        with case_dir(tmp_path) as folder:
            path = folder / "user01_natural_labels.csv"
            path.write_bytes(data)
            rows = read_checked(lambda: read_gesture_labels(path), path, len(data),
                                where=r"line \d+|byte \d+")
            if rows is not None:
                assert rows.dtype == LABEL_DTYPE and rows.ndim == 1
                assert np.all((rows["label0"] >= 0) & (rows["label0"] < len(GESTURE_CLASSES)))
                assert np.all((rows["start_us"] >= 0) & (rows["start_us"] < rows["end_us"]))



TRIAL_NAMES = st.one_of(
    st.sampled_from(["user01_fluorescent.aedat", "user24_led.aedat", "../user01_lab.aedat",
                     "/etc/passwd.aedat", "a/b.aedat", "x.csv", ".aedat", "user01 lab.aedat",
                     "a\\b.aedat", "user01_lab.aedat\0"]),
    st.text(max_size=10).map(lambda s: s + ".aedat"),
    st.text(max_size=10),
)
trial_files = st.lists(TRIAL_NAMES, max_size=6).map(lambda names: "\n".join(names).encode())


def test_fuzz_trial_list(profile, tmp_path):
    seed = "user01_fluorescent.aedat\r\nuser01_lab.aedat\n\nuser02_led.aedat\n"

    @fuzz(profile, data=text_inputs([seed], trial_files))
    def check(data):
        with case_dir(tmp_path) as folder:
            path = folder / "trials_to_train.txt"
            path.write_bytes(data)
            names = read_checked(lambda: read_trial_list(path), path, len(data),
                                 where=r"line \d+|byte \d+")
            if names is not None:
                for name in names:
                    assert isinstance(name, str) and name.endswith(".aedat")
                    assert name == name.strip() and Path(name).name == name
                    assert "\0" not in name and "\\" not in name



def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def raw_npy(header: str, body: bytes = b"", version: int = 1) -> bytes:
    """A ``.npy`` file with the header dictionary text ``header``, as written by hand."""
    text = header.encode("latin-1")
    fmt = "<H" if version == 1 else "<I"
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack(fmt, len(text)) + text + body


def _tonic_seeds() -> list[bytes]:
    rng = np.random.default_rng(1)
    rows = np.column_stack([rng.integers(0, 128, 20), rng.integers(0, 128, 20),
                            rng.integers(0, 2, 20), np.sort(rng.integers(0, 2000, 20))])
    return [npy_bytes(rows.astype(dtype)) for dtype in
            (np.int16, np.int64, np.uint32, np.float32, np.float64)] + [
        npy_bytes(rows.astype(np.float64) + [0, 0, 0, 0.5])]


TONIC_SEEDS = _tonic_seeds()
NPY_HOT = [[k for k in range(8, 128)] for _ in TONIC_SEEDS]  # magic, version, header text
npy_dtypes = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                       hnp.floating_dtypes(), hnp.complex_number_dtypes(), hnp.boolean_dtypes(),
                       st.sampled_from([np.dtype("U3"), np.dtype("S2"), np.dtype("M8[s]"),
                                        np.dtype([("x", "<i8"), ("y", "<f4")])]))
npy_arrays = st.one_of(
    hnp.arrays(npy_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)),
    hnp.arrays(st.sampled_from([np.int64, np.float64, np.float16, np.uint64]),
               st.tuples(st.integers(0, 6), st.just(4))),
)
npy_headers = st.builds(
    lambda descr, shape, fortran: f"{{'descr': {descr}, 'fortran_order': {fortran}, "
                                  f"'shape': {shape!r}, }}",
    st.sampled_from(["'<i8'", "'<f8'", "'|u1'", "'|O'", "'<c16'", "()", "[('a', '<i4')]",
                     "'|V0'", "'<U0'", "[]", "('<i8', (2,))", "5", "[('a',)]", "'<M8[s]'"]),
    st.one_of(st.tuples(st.integers(-2, 1 << 62), st.sampled_from([4, 1 << 40, -1])),
              st.tuples(), st.tuples(st.integers(0, 1 << 62))),
    st.booleans(),
)
npy_files = st.one_of(
    mutated(TONIC_SEEDS, NPY_HOT),
    npy_arrays.map(npy_bytes),
    st.builds(raw_npy, npy_headers, st.binary(max_size=64), st.sampled_from([1, 2])),
    st.builds(lambda a: npy_bytes(np.array([a, None], dtype=object)), st.integers()),
    st.binary(max_size=200),
)


def _npz_bytes(arrays: dict, compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def test_fuzz_tonic_npy(profile, tmp_path):
    @fuzz(profile, data=st.one_of(npy_files, st.builds(lambda a, c: _npz_bytes({"a": a}, c),
                                                       npy_arrays, st.booleans())))
    def check(data):
        with case_dir(tmp_path) as folder:
            path = folder / "3.npy"
            path.write_bytes(data)
            events = read_checked(lambda: read_tonic_sample(path), path, len(data))
            if events is not None:
                assert_events(events, 128, 128, nonnegative_t=False)



# ----------------------------------------------------------------------------- frame cache

CACHE_KEY = "0123456789abcdef0123"


def _cache_templates() -> list[dict[str, bytes]]:
    """The files of two valid entries: nibble-packed (``u4``) and one byte per count."""
    templates = []
    with tempfile.TemporaryDirectory() as root:
        for i, high in enumerate((10, 200)):
            rng = np.random.default_rng(i)
            frames = rng.integers(0, high, size=(3, 2, 2, 3, 5), dtype=np.uint8)
            labels = np.arange(3, dtype=np.int64)
            cache = FrameCache(Path(root) / str(i))
            cache.store(CACHE_KEY, {"toy": i}, frames.shape, iter([(frames, labels)]))
            entry = cache.entry(CACHE_KEY)
            templates.append({p.name: p.read_bytes() for p in entry.iterdir()})
    return templates


CACHE_TEMPLATES = _cache_templates()
CACHE_FILES = ("meta.json", "frames.npy", "labels.npy")
file_damage = st.sampled_from(("keep", "mutate", "delete", "folder", "replace"))
meta_edits = st.dictionaries(
    st.sampled_from(["shape", "encoding", "frames_crc32", "labels_crc32", "params", "other"]),
    st.one_of(json_values, st.sampled_from([[3, 2, 2, 3, 5], [3, 2, 2, 3, 3], "u4", "u8", 0])),
    max_size=3,
)


@st.composite
def cache_entries(draw):
    files = dict(draw(st.sampled_from(CACHE_TEMPLATES)))
    damage = {name: draw(file_damage) for name in CACHE_FILES}
    for name, kind in damage.items():
        if kind == "mutate":
            files[name] = draw(mutated([files[name]], [list(range(0, 128))]))
        elif kind == "replace":
            files[name] = draw(npy_files)
        elif kind in ("delete", "folder"):
            files[name] = kind
    if isinstance(files["meta.json"], bytes) and draw(st.booleans()):
        try:
            meta = json.loads(files["meta.json"])
        except ValueError:
            meta = None
        if isinstance(meta, dict):
            meta.update(draw(meta_edits))
            files["meta.json"] = json.dumps(meta).encode()
        elif draw(st.booleans()):
            files["meta.json"] = json.dumps(draw(json_values)).encode()
    recompute_crc = draw(st.booleans())  # damage that a consistent checksum does not reveal
    return files, recompute_crc


def write_entry(folder: Path, files: dict, recompute_crc: bool) -> int:
    folder.mkdir(parents=True)
    for name, content in files.items():
        if content == "folder":
            (folder / name).mkdir()
        elif isinstance(content, bytes) and name != "meta.json":
            (folder / name).write_bytes(content)
    meta = files["meta.json"]
    if recompute_crc and isinstance(meta, bytes):
        try:
            parsed = json.loads(meta)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            for name, field in (("frames.npy", "frames_crc32"), ("labels.npy", "labels_crc32")):
                if (folder / name).is_file():
                    parsed[field] = file_crc32(folder / name)
            meta = json.dumps(parsed).encode()
    if isinstance(meta, bytes):
        (folder / "meta.json").write_bytes(meta)
    return sum(len(c) for c in files.values() if isinstance(c, bytes))


def test_fuzz_frame_cache_entry(profile, tmp_path):
    @fuzz(profile, entry=cache_entries())
    def check(entry):
        files, recompute_crc = entry
        with case_dir(tmp_path) as root:
            cache = FrameCache(root)
            folder = cache.entry(CACHE_KEY)
            size = write_entry(folder, files, recompute_crc)
            try:
                found = read_checked(lambda: cache.load(CACHE_KEY), folder, size)
            finally:
                cache_mod._verified.discard(str(folder))
            if found is not None:
                meta = json.loads((folder / "meta.json").read_text())
                shape = meta["shape"]
                assert found.frames.dtype == np.uint8 and found.frames.ndim == 5
                assert found.labels.dtype == np.int64 and found.labels.shape == (shape[0],)
                if found.packed_width is None:
                    assert list(found.frames.shape) == shape
                else:
                    assert found.packed_width == shape[-1]
                    assert list(found.frames.shape) == shape[:-1] + [(shape[-1] + 1) // 2]
                del found



# ----------------------------------------------------------------------------- EventSet .npz


def _eventset_seeds() -> list[bytes]:
    seeds = []
    with tempfile.TemporaryDirectory() as folder:
        events = make_events([0, 3, 1, 2], [1, 0, 2, 2], [5, 9, 1, 30], [1, 0, 1, 0])
        for i, extra in enumerate((None, {"split": np.array([1, 2])})):
            path = Path(folder) / f"{i}.npz"
            EventSet(events, [0, 1, 4], [7, 3], (4, 3, 2)).save(path, extra=extra)
            seeds.append(path.read_bytes())
    return seeds


EVENTSET_SEEDS = _eventset_seeds()
ZIP_HOT = [[pos + k for pos in range(len(seed)) if seed.startswith((b"PK\x01\x02",
                                                                     b"PK\x03\x04"), pos)
            for k in range(0, 46, 2)] for seed in EVENTSET_SEEDS]
eventset_arrays = st.fixed_dictionaries(
    {},
    optional={
        "events": st.one_of(
            hnp.arrays(EVENT_DTYPE, hnp.array_shapes(min_dims=0, max_dims=2, max_side=4)),
            npy_arrays),
        "offsets": st.one_of(st.lists(st.integers(-3, 6), max_size=4).map(np.array), npy_arrays),
        "labels": st.one_of(st.lists(st.integers(-3, 6), max_size=4).map(np.array), npy_arrays),
        "sensor_size": st.one_of(st.lists(st.integers(-1, 1 << 40), max_size=4).map(np.array),
                                 npy_arrays),
        "extra__x": npy_arrays,
    },
)


@st.composite
def npz_with_raw_member(draw):
    """A valid EventSet archive where one member is replaced by hand-written ``.npy`` bytes."""
    buffer = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(io.BytesIO(EVENTSET_SEEDS[0])) as src, \
            zipfile.ZipFile(buffer, "w", method) as dst:
        victim = draw(st.sampled_from(src.namelist()))
        for name in src.namelist():
            body = draw(npy_files) if name == victim else src.read(name)
            dst.writestr(name, body)
    return buffer.getvalue()


def test_fuzz_eventset_npz(profile, tmp_path):
    @fuzz(profile, data=st.one_of(
        mutated(EVENTSET_SEEDS, ZIP_HOT),
        st.builds(_npz_bytes, eventset_arrays, st.booleans()),
        npz_with_raw_member(),
        st.binary(max_size=200),
    ))
    def check(data):
        with case_dir(tmp_path) as folder:
            path = folder / "set.npz"
            path.write_bytes(data)
            # Deflated members may hold up to 1032x their size: a legitimate compression ratio.
            loaded = read_checked(lambda: EventSet.load_with_extra(path), path, len(data),
                                  factor=2 * 1032)
            if loaded is not None:
                eventset, extra = loaded
                assert eventset.events.dtype == EVENT_DTYPE and eventset.events.ndim == 1
                assert eventset.offsets[0] == 0 and eventset.offsets[-1] == len(eventset.events)
                assert np.all(np.diff(eventset.offsets) >= 0)
                assert len(eventset.labels) == len(eventset)
                assert len(eventset.sensor_size) == 3 and min(eventset.sensor_size) >= 1
                assert all(isinstance(a, np.ndarray) for a in extra.values())



# ----------------------------------------------------------------------------- run folders

CONFIG_FIELDS = list(RunConfig().to_dict())
VALUE_POOL = [0, 1, 3, -1, 0.5, 1.0, 1e-3, float("inf"), float("nan"), True, False, None, "",
              "sast", "surrogate", "adam", "cpu", "nmnist-mlp", "synthetic-nmnist", [16],
              [16, 32], [], [0], [1.5], [float("inf")], 1 << 63, 10 ** 30]
config_values = st.one_of(st.sampled_from(VALUE_POOL), json_values)
config_dicts = st.builds(
    lambda base, changes, extra: {**base, **changes, **extra},
    st.sampled_from([{}, RunConfig().to_dict(),
                     RunConfig(method="surrogate", hidden=(8,), epochs=2).to_dict()]),
    st.dictionaries(st.sampled_from(CONFIG_FIELDS), config_values, max_size=4),
    st.dictionaries(st.text(max_size=8), config_values, max_size=1),
)
DEEP_JSON = ["[" * 100_000, "{\"a\":" * 50_000, "1" * 5000, "[" * 500 + "]" * 500,
             "\ufeff{}", "{\"seed\": 1" + "0" * 4400 + "}"]


def check_config(cfg):
    assert isinstance(cfg, RunConfig)
    RunConfig.from_dict(cfg.to_dict())  # round-trips: every field holds a valid value
    json.dumps(cfg.to_dict())


def test_fuzz_config_json(profile, tmp_path):
    valid = json.dumps(RunConfig().to_dict(), indent=2)

    @fuzz(profile, data=text_inputs([valid], st.one_of(
        config_dicts.map(lambda d: json.dumps(d).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.sampled_from(DEEP_JSON).map(str.encode))))
    def check(data):
        with case_dir(tmp_path) as folder:
            path = folder / "config.json"
            path.write_bytes(data)
            cfg = read_checked(
                lambda: RunConfig.from_dict(read_json(path), source=str(path)), path, len(data))
            if cfg is not None:
                check_config(cfg)



def test_fuzz_metrics_jsonl(profile, tmp_path):
    rows = [{"epoch": e, "train_loss": 1.0 / (e + 1), "grad_evals": 2} for e in range(3)]
    valid = "".join(json.dumps(r) + "\n" for r in rows)
    lines = st.lists(st.one_of(json_values.map(json.dumps), st.sampled_from(DEEP_JSON),
                               st.text(max_size=10)), max_size=5)

    @fuzz(profile, data=text_inputs([valid], lines.map(lambda ls: "\n".join(ls).encode())))
    def check(data):
        with case_dir(tmp_path) as folder:
            run = RunFolder(folder)
            run.metrics.write_bytes(data)
            got = read_checked(run.read_metrics, run.metrics, len(data),
                               where=r"line \d+|byte \d+")
            if got is not None:
                assert isinstance(got, list) and all(isinstance(r, dict) for r in got)



def _checkpoint_seeds() -> list[bytes]:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {"epoch": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "config": RunConfig(hidden=(8,)).to_dict(), "input_shape": [2, 4, 4],
             "n_classes": 2}
    seeds = []
    for zip_format in (True, False):
        buffer = io.BytesIO()
        torch.save(state, buffer, _use_new_zipfile_serialization=zip_format)
        seeds.append(buffer.getvalue())
    return seeds


CHECKPOINT_SEEDS = _checkpoint_seeds()
CHECKPOINT_HOT = [[pos + k for pos in range(len(seed))
                   if seed.startswith((b"PK\x01\x02", b"PK\x03\x04"), pos)
                   for k in range(0, 46, 2)] or list(range(0, 400)) for seed in CHECKPOINT_SEEDS]


def test_fuzz_checkpoint(profile, tmp_path):
    @fuzz(profile, data=st.one_of(mutated(CHECKPOINT_SEEDS, CHECKPOINT_HOT),
                                  st.binary(max_size=200)))
    def check(data):
        with case_dir(tmp_path) as folder:
            path = folder / "checkpoint.pt"
            path.write_bytes(data)
            state = read_checked(lambda: load_checkpoint(path), path, len(data))
            if state is not None:
                assert isinstance(state, dict) and all(k in state for k in CHECKPOINT_KEYS)



# ----------------------------------------------------------------------------- configs, grids


def alias_bomb(field: str, levels: int = 25) -> str:
    """``field`` holding 5**levels strings through YAML aliases, in a few hundred bytes."""
    items = ["&a0 [x, x, x, x, x]"] + [
        f"&a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, levels)]
    return f"{field}: [{', '.join(items)}]\n"


def product_bomb(n_fields: int = 8) -> str:
    """A grid of 10**n_fields combinations in a few lines."""
    fields = ["rho", "lr", "beta", "threshold", "slope", "eta", "momentum", "weight_decay"]
    lines = ["grid:", "  method: sast", "  rho: &r [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, "
             "0.9, 0.95]"]
    lines += [f"  {name}: *r" for name in fields[1:n_fields]]
    return "\n".join(lines) + "\n"


YAML_SPECIALS = [
    alias_bomb("dataset"), alias_bomb("seed"), alias_bomb("hidden"), alias_bomb("adaptive"),
    "dataset: !!python/object/apply:os.system [ls]\n", "---\nseed: 1\n---\nseed: 2\n",
    "rho: .inf\nlr: .nan\n", "hidden: [1e400]\n", "hidden: [.inf]\n", "seed: 0x10\n",
    "seed: 1_000\n", "seed: 2001-12-14\n", "data_root: !!binary aGVsbG8=\n",
    "? [a, b]\n: 1\n", "[" * 5000, "a: " + "[" * 3000, "- 1\n- 2\n", "just text", "~\n",
    "1: 2\n", "null: 1\n", "epochs: 1e400\n", "window_ms: -0.0\n", "\t\x00\x85",
]


def _single_run_configs() -> list[str]:
    texts = []
    for path in sorted((REPO / "configs").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "grid" not in data:
            texts.append(path.read_text())
    return texts


def yaml_or_json(value, as_json: bool) -> bytes:
    text = json.dumps(value) if as_json else yaml.safe_dump(value, allow_unicode=True)
    return text.encode()


def test_fuzz_config_files(profile, tmp_path):
    seeds = _single_run_configs()

    @fuzz(profile,
          data=text_inputs(seeds, st.one_of(st.builds(yaml_or_json, config_dicts, st.booleans()),
                                            st.sampled_from(YAML_SPECIALS).map(str.encode))),
          suffix=st.sampled_from([".yaml", ".yml", ".json"]))
    def check(data, suffix):
        with case_dir(tmp_path) as folder:
            path = folder / f"run{suffix}"
            path.write_bytes(data)
            cfg = read_checked(
                lambda: RunConfig.from_dict(load_config_file(path), source=str(path)), path,
                len(data), factor=None if suffix != ".json" else MEMORY_FACTOR)
            if cfg is not None:
                check_config(cfg)



def _grid_seeds() -> list[str]:
    texts = []
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name != "atlas.yaml":  # 1335 runs: too slow to expand hundreds of times
            texts.append(path.read_text())
    return texts


grid_values = st.one_of(config_values, st.lists(config_values, min_size=0, max_size=3))
grid_mappings = st.dictionaries(st.sampled_from(CONFIG_FIELDS), grid_values, max_size=4).map(
    lambda g: {"method": "surrogate", "epochs": 1, **g})
grid_files = st.builds(
    lambda grid, as_list, top, as_json: yaml_or_json(
        {"grid": [grid] if as_list else grid, **top}, as_json),
    grid_mappings, st.booleans(),
    st.dictionaries(st.sampled_from(["out", "evaluate", "resources", "grid", "other"]),
                    st.one_of(json_values, st.sampled_from([
                        {"robustness": True}, {"levels": [0.1, 0.5]}, {"num_cpus": 2},
                        {"corruption_seeds": 2.5}, {"sharpness_rho": -1}, "sweeps/x"])),
                    max_size=2),
    st.booleans(),
)


def test_fuzz_sweep_grid(profile, tmp_path):
    seeds = _grid_seeds()
    specials = [product_bomb(), product_bomb(3), alias_bomb("grid"),
                "grid:\n  " + alias_bomb("dataset"), *YAML_SPECIALS]

    @fuzz(profile,
          data=text_inputs(seeds, st.one_of(grid_files, st.sampled_from(specials).map(str.encode))),
          suffix=st.sampled_from([".yaml", ".json"]))
    def check(data, suffix):
        with case_dir(tmp_path) as folder:
            path = folder / f"grid{suffix}"
            path.write_bytes(data)
            sweep = read_checked(lambda: load_sweep(path), path, len(data),
                                 factor=None if suffix != ".json" else MEMORY_FACTOR)
            if sweep is not None:
                assert isinstance(sweep, Sweep) and sweep.configs
                assert isinstance(sweep.out, Path)
                assert isinstance(sweep.evaluate, dict) and isinstance(sweep.resources, dict)
                json.dumps(sweep.evaluate)
                for cfg in sweep.configs:
                    check_config(cfg)



# ----------------------------------------------------------------------------- huge counts
# One hand-built file per format whose header claims far more data than the file holds: the
# reader must refuse it without allocating what the header claims.


def refuses_small(read, path, match):
    """``read()`` raises a ValueError naming ``path`` and matching ``match``, within the
    memory bound of the file's size."""
    assert read_checked(read, path, os.path.getsize(path), where=match, factor=1) is None


def test_huge_npy_shape_is_refused_before_allocation(tmp_path):
    path = tmp_path / "0.npy"
    path.write_bytes(raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': "
                             "(100000000000, 4), }", b"\0" * 64))
    refuses_small(lambda: read_tonic_sample(path), path, r"0\.npy: the header announces shape")


def test_huge_aedat_capacity_is_refused_before_allocation(tmp_path):
    body = struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, 0x7FFFFFFF, 0x7FFFFFFF, 0) + b"\0" * 64
    path = tmp_path / "rec.aedat"
    path.write_bytes(HEADER + body)
    refuses_small(lambda: read_aedat31(path), path,
                  rf"rec\.aedat: truncated packet at byte {len(HEADER)}: eventCapacity")


def test_negative_timestamp_overflow_is_refused(tmp_path):
    """AEDAT's eventTSOverflow is the high part of a time: a negative one is damage."""
    path = write_aedat(tmp_path / "neg.aedat",
                       [polarity_packet([(1, 2, 1, 5, 1)], overflow=-1)])
    refuses_small(lambda: read_aedat31(path), path,
                  rf"neg\.aedat: polarity packet at byte {len(HEADER)} has a negative "
                  "eventTSOverflow -1")


def test_huge_npz_member_is_refused_before_allocation(tmp_path):
    member = raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (10000000000,), }",
                     b"\0" * 16)
    path = tmp_path / "set.npz"
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        with zipfile.ZipFile(path, "w", method) as archive:
            for name in ("events", "offsets", "labels", "sensor_size"):
                archive.writestr(f"{name}.npy", member)
        refuses_small(lambda: EventSet.load(path), path, r"set\.npz.*announces shape")
    # The zip directory itself claiming a 4 GB member: refused by the archive's size.
    data = bytearray(EVENTSET_SEEDS[0])
    central = data.find(b"PK\x01\x02")
    data[central + 20:central + 28] = struct.pack("<II", 0xFFFFFFF0, 0xFFFFFFF0)
    path.write_bytes(bytes(data))
    refuses_small(lambda: EventSet.load(path), path, r"set\.npz.*announces 4294967280 bytes")


def test_huge_cache_labels_are_refused_before_allocation(tmp_path):
    files = dict(CACHE_TEMPLATES[0])
    files["labels.npy"] = raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': "
                                  "(3000000000,), }", b"\0" * 24)
    cache = FrameCache(tmp_path)
    folder = cache.entry(CACHE_KEY)
    write_entry(folder, files, recompute_crc=True)
    refuses_small(lambda: cache.load(CACHE_KEY), folder / "labels.npy",
                  r"labels\.npy: the header announces shape \(3000000000,\)")


def test_legacy_checkpoint_with_huge_storage_is_refused(tmp_path):
    """torch's legacy (pre-zip) format allocates a storage of the size its pickle names
    before reading it (here 2**31 - 1 elements: 8 GB); sast writes the zip format only and
    refuses the legacy one."""
    legacy = CHECKPOINT_SEEDS[1]
    count = legacy.index(b"K", legacy.index(b"cpu"))  # BININT1: the first storage's size
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(legacy[:count] + b"J" + struct.pack("<i", 2**31 - 1) + legacy[count + 2:])
    refuses_small(lambda: load_checkpoint(path), path,
                  r"checkpoint\.pt: not a checkpoint .*not a zip archive")


def test_grid_of_billions_of_runs_is_refused(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(product_bomb())
    refuses_small(lambda: load_sweep(path), path,
                  rf"grid\.yaml: the grid expands to 10+ field combinations, more than "
                  rf".*{MAX_GRID_COMBINATIONS}")


def test_alias_bomb_in_a_config_is_refused_quickly(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(alias_bomb("dataset"))
    refuses_small(lambda: RunConfig.from_dict(load_config_file(path), source=str(path)),
                  path, r"run\.yaml: dataset must be a string")


def test_the_harness_notices_allocations_and_hangs(tmp_path):
    """A reader that allocated what a header claims, or that looped, would fail a case."""
    with pytest.raises(AssertionError, match="allocated"):
        read_checked(lambda: np.ones(1 << 24, dtype=np.int64), tmp_path, 10)
    with pytest.raises(Hang), hard_time_limit(0.05):
        while True:
            pass
