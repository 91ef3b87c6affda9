"""Datasets through the registry, the frame cache and the training CLI."""

import numpy as np
import pytest

from sast.cli import main
from sast.data import DATASETS, load_frames, split_available
from sast.runs.folder import read_json

from ..conftest import SHARED_DATA
from .test_dvsgesture import TRIALS, write_release

NMNIST = SHARED_DATA / "nmnist"


def test_every_dataset_is_described(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name, spec in DATASETS.items():
        assert name in out and spec.needs in out


def test_real_dataset_needs_a_root(tmp_path):
    with pytest.raises(ValueError, match="--data-root"):
        load_frames("nmnist", "train", 4, cache_dir=tmp_path)


def test_dvsgesture_release_to_frames(tmp_path):
    write_release(tmp_path / "DvsGesture")
    frames = load_frames("dvsgesture", "train", 4, data_root=tmp_path, cache_dir=tmp_path / "c",
                         window_ms=12.0)
    n_train = len(TRIALS["user01_natural"]) + len(TRIALS["user02_led"])
    assert len(frames) == n_train and frames.input_shape == (2, 32, 32)
    x, y = frames.batch(slice(None))
    assert y.tolist() == [c - 1 for c, _, _ in TRIALS["user01_natural"] + TRIALS["user02_led"]]
    # 3 events per ms (plus one at each gesture start) over min(gesture, 12 ms)
    expected = [3 * (min(e - s, 12_000) // 1000) + 1
                for _, s, e in TRIALS["user01_natural"] + TRIALS["user02_led"]]
    assert x.sum(dim=(1, 2, 3, 4)).tolist() == expected
    full = load_frames("dvsgesture", "train", 4, data_root=tmp_path, cache_dir=tmp_path / "c",
                       downsample=1, window_ms=12.0)
    assert full.input_shape == (2, 128, 128)
    assert split_available("dvsgesture", "test", tmp_path)
    assert not split_available("dvsgesture", "test", tmp_path / "nowhere")


def test_train_on_a_dvsgesture_release(tmp_path):
    write_release(tmp_path / "DvsGesture")
    run = tmp_path / "run"
    assert main(["train", "--dataset", "dvsgesture", "--data-root", str(tmp_path),
                 "--window-ms", "12", "--time-bins", "4", "--channels", "4", "--epochs", "1",
                 "--val-fraction", "0", "--out", str(run), "--no-progress",
                 "--cache-dir", str(tmp_path / "c")]) == 0
    final = read_json(run / "final.json")
    assert final["split"] == "test" and final["sizes"]["test"] == len(TRIALS["user24_lab"])
    assert final["arch"] == "dvsgesture-conv"


def test_train_on_real_nmnist_files(tmp_path):
    if not (NMNIST / "Train").is_dir():
        pytest.skip(f"real N-MNIST files not found at {NMNIST}")
    run = tmp_path / "run"
    assert main(["train", "--dataset", "nmnist", "--data-root", str(NMNIST), "--epochs", "1",
                 "--hidden", "32", "--time-bins", "8", "--out", str(run), "--no-progress",
                 "--cache-dir", str(tmp_path / "c")]) == 0
    final = read_json(run / "final.json")
    # no Test/ on disk: 20 % of the 1000 recordings carved out as test, 10 % of the rest val
    assert final["sizes"] == {"train": 720, "val": 80, "test": 200}
    assert final["split"] == "test" and "carved out" in final["note"]
    assert final["splits"]["test"]["source"] == "carved out of the training split"
    # stratified: 20 % of the digit counts 97 116 99 93 105 92 94 117 87 100 is
    # 19.4 23.2 19.8 18.6 21 18.4 18.8 23.4 17.4 20; floors, then +1 for the four largest
    # remainders (ties: the lower digit)
    assert final["splits"]["test"]["class_counts"] == [20, 23, 20, 19, 21, 18, 19, 23, 17, 20]
    assert read_json(run / "splits.json") == final["splits"]
    for mode in ("surrogate", "hard"):
        assert 0.0 <= final[mode]["accuracy"] <= 1.0


def test_corrupted_frames_are_exact_and_seeded(tmp_path, monkeypatch):
    from sast.data import registry
    from sast.data.corruptions import EventDrop, corrupt_eventset
    from sast.data.events import eventset_to_frames
    from sast.data.synthetic import synthetic_nmnist

    def frames_of(frameset):
        return frameset.batch(slice(None))[0].numpy()

    clean = frames_of(load_frames("synthetic-nmnist", "test", 5, cache_dir=tmp_path))
    same = frames_of(load_frames("synthetic-nmnist", "test", 5, cache_dir=tmp_path,
                                 corruption=EventDrop(0.0)))
    assert np.array_equal(clean, same)

    monkeypatch.setattr(registry, "CHUNK_SAMPLES", 50)  # sample keys must not depend on it
    half = frames_of(load_frames("synthetic-nmnist", "test", 5, cache_dir=tmp_path,
                                 corruption=EventDrop(0.5), corruption_seed=3))
    events = corrupt_eventset(synthetic_nmnist("test"), EventDrop(0.5), 3)
    assert np.array_equal(half, eventset_to_frames(events, 5, dtype=np.uint8))
    assert 0.45 < half.sum() / clean.sum() < 0.55
    other = frames_of(load_frames("synthetic-nmnist", "test", 5, cache_dir=tmp_path,
                                  corruption=EventDrop(0.5), corruption_seed=4))
    assert not np.array_equal(half, other)


@pytest.mark.parametrize("name", ["synthetic-nmnist", "synthetic-gesture"])
def test_cache_dir_is_honoured_by_the_synthetic_datasets(name, tmp_path, monkeypatch):
    default = tmp_path / "default"
    monkeypatch.setenv("SAST_CACHE_DIR", str(default))
    frames = load_frames(name, "test", 4, cache_dir=tmp_path / "mine")
    assert len(frames) > 0
    assert not default.exists()  # neither the rendered events nor the frames went there
    assert list((tmp_path / "mine").glob(f"{name}-*.npz"))  # the rendered events
    assert list((tmp_path / "mine" / "frames").iterdir())  # the binned frames
