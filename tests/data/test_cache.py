import numpy as np
import pytest
import torch

import sast.data.cache as cache_mod
from sast.data import load_frames
from sast.data.cache import FrameCache, cache_key
from sast.data.frames import FrameSet, pack_nibbles, unpack_nibbles

PARAMS = {"dataset": "toy", "split": "train", "time_bins": 4}


def toy_chunks(n=10, chunk=4, seed=0, high=40):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, high, size=(n, 4, 2, 3, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 3

    def chunks():
        for s in range(0, n, chunk):
            yield frames[s:s + chunk], labels[s:s + chunk]

    return frames, labels, chunks


def test_key_depends_on_every_parameter():
    base = cache_key(PARAMS)
    assert base == cache_key(dict(reversed(PARAMS.items())))
    for k, v in [("dataset", "other"), ("split", "test"), ("time_bins", 5), ("extra", 1)]:
        assert cache_key({**PARAMS, k: v}) != base


def test_build_then_read_back_memory_mapped(tmp_path):
    frames, labels, chunks = toy_chunks()
    cache = FrameCache(tmp_path)
    entry, cached = cache.get_or_build(PARAMS, lambda: (frames.shape, chunks()))
    assert not cached and entry.packed_width is None
    assert np.array_equal(entry.frames, frames) and np.array_equal(entry.labels, labels)
    entry, cached = cache.get_or_build(PARAMS, lambda: 1 / 0)
    assert cached and isinstance(entry.frames, np.memmap)
    assert np.array_equal(entry.frames, frames)
    entries = list((tmp_path / "frames").iterdir())
    assert [e.name for e in entries] == [cache_key(PARAMS)]


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta", "labels"])
def test_damaged_entry_is_detected_and_rebuilt(tmp_path, damage):
    frames, labels, chunks = toy_chunks()
    cache = FrameCache(tmp_path)
    cache.get_or_build(PARAMS, lambda: (frames.shape, chunks()))
    entry = cache.entry(cache_key(PARAMS))
    data = bytearray((entry / "frames.npy").read_bytes())
    if damage == "flip":
        data[-7] ^= 0xFF
        (entry / "frames.npy").write_bytes(bytes(data))
    elif damage == "truncate":
        (entry / "frames.npy").write_bytes(bytes(data[:-50]))
    elif damage == "meta":
        (entry / "meta.json").write_text("{not json")
    else:
        (entry / "labels.npy").unlink()
    cache_mod._verified.clear()  # as in a new process
    with pytest.warns(UserWarning, match="rebuilding damaged frame cache entry"):
        entry, cached = cache.get_or_build(PARAMS, lambda: (frames.shape, chunks()))
    assert not cached and np.array_equal(entry.frames, frames)
    assert np.array_equal(entry.labels, labels)


def test_failed_build_leaves_nothing_behind(tmp_path):
    frames, _, chunks = toy_chunks()

    def failing():
        yield next(chunks())
        raise RuntimeError("decoder crashed")

    cache = FrameCache(tmp_path)
    with pytest.raises(RuntimeError, match="decoder crashed"):
        cache.get_or_build(PARAMS, lambda: (frames.shape, failing()))
    assert list((tmp_path / "frames").iterdir()) == []


def test_load_frames_uses_the_cache_and_never_a_stale_entry(tmp_path, monkeypatch):
    a = load_frames("synthetic-nmnist", "test", 5, cache_dir=tmp_path)
    import sast.data.registry as registry

    monkeypatch.setattr(registry, "eventset_to_frames", lambda *a, **k: 1 / 0)
    b = load_frames("synthetic-nmnist", "test", 5, cache_dir=tmp_path)
    assert np.array_equal(a.batch(slice(None))[0], b.batch(slice(None))[0])
    with pytest.raises(ZeroDivisionError):  # a new T is a new entry, built afresh
        load_frames("synthetic-nmnist", "test", 6, cache_dir=tmp_path)
    with pytest.raises(ZeroDivisionError):
        load_frames("synthetic-nmnist", "test", 5, binning="count", cache_dir=tmp_path)


def test_dataset_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="has no option downsample"):
        load_frames("synthetic-nmnist", "train", 5, cache_dir=tmp_path, downsample=2)
    with pytest.raises(ValueError, match="takes no data root"):
        load_frames("synthetic-nmnist", "train", 5, data_root=tmp_path, cache_dir=tmp_path)


@pytest.mark.parametrize("width", [3, 4])
def test_small_counts_are_stored_two_per_byte(tmp_path, width):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 16, size=(7, 4, 2, 5, width), dtype=np.uint8)
    labels = np.arange(7)
    entry, _ = FrameCache(tmp_path).get_or_build(
        PARAMS, lambda: (frames.shape, iter([(frames, labels)])))
    assert entry.packed_width == width
    assert entry.frames.shape == (7, 4, 2, 5, (width + 1) // 2)
    frameset = FrameSet(torch.from_numpy(entry.frames), torch.from_numpy(entry.labels), 3,
                        packed_width=entry.packed_width)
    assert frameset.input_shape == (2, 5, width)
    assert np.array_equal(frameset.batch(slice(None))[0].numpy(), frames)
    sub = frameset.subset([5, 1])
    assert np.array_equal(sub.batch([1, 0])[0].numpy(), frames[[1, 5]])


def test_pack_nibbles_by_hand():
    packed = pack_nibbles(np.array([[1, 2, 15, 0, 7]], dtype=np.uint8))
    assert packed.tolist() == [[1 + 2 * 16, 15, 7]]
    assert unpack_nibbles(torch.from_numpy(packed), 5).tolist() == [[1, 2, 15, 0, 7]]


def test_fingerprint_sees_a_file_moved_between_label_folders(tmp_path):
    from sast.data.cache import files_fingerprint

    for name in ("0/a.bin", "0/b.bin", "1/c.bin"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"12345")
    before = files_fingerprint(sorted(tmp_path.glob("*/*.bin")))
    (tmp_path / "0/b.bin").rename(tmp_path / "1/b.bin")  # same bytes, same mtime
    after = files_fingerprint(sorted(tmp_path.glob("*/*.bin")))
    assert before["bytes"] == after["bytes"] and before["sha256"] != after["sha256"]


def test_an_entry_built_meanwhile_by_another_process_wins(tmp_path, monkeypatch):
    frames, labels, chunks = toy_chunks()
    cache = FrameCache(tmp_path)
    key = cache_key(PARAMS)
    real_rename = cache_mod.os.rename
    rival = FrameCache(tmp_path / "rival")
    rival.get_or_build(PARAMS, lambda: (frames.shape, chunks()))

    def rename_after_a_rival(src, dst):
        real_rename(rival.entry(key), dst)  # the rival's entry lands first
        return real_rename(src, dst)  # ours now finds the target taken

    monkeypatch.setattr(cache_mod.os, "rename", rename_after_a_rival)
    entry, cached = cache.get_or_build(PARAMS, lambda: (frames.shape, chunks()))
    assert not cached and np.array_equal(entry.frames, frames)
    assert [p.name for p in (tmp_path / "frames").iterdir()] == [key]
