"""From tonic's side: its NMNIST dataset and ToFrame transform, batched by PadTensors, into
sast.train_model — on the real N-MNIST files, the frames equal sast's own tonic-mode binning.

tonic's NMNIST checks for the whole 60 000-file download before it reads; the recordings here
are a 1000-file subset in the same layout, so that check is bypassed (``_check_exists``)."""

import numpy as np
import pytest
import torch

import sast
from sast.data import load_frames
from sast.data.batches import frames_from_batches

from ..conftest import SHARED_DATA

NMNIST_ROOT = SHARED_DATA / "nmnist"
T = 8


@pytest.fixture
def tonic_nmnist(tmp_path, monkeypatch):
    tonic = pytest.importorskip("tonic", reason="tonic is in the test extra")
    if not (NMNIST_ROOT / "Train").is_dir():
        pytest.skip(f"real N-MNIST recordings absent: {NMNIST_ROOT / 'Train'} does not exist")
    from tonic.datasets import NMNIST

    (tmp_path / "NMNIST").symlink_to(NMNIST_ROOT.resolve(), target_is_directory=True)
    monkeypatch.setattr(NMNIST, "_check_exists", lambda self: True)
    to_frame = tonic.transforms.ToFrame(sensor_size=NMNIST.sensor_size, n_time_bins=T)
    return tonic, NMNIST(str(tmp_path), train=True, transform=to_frame)


def test_tonic_frames_through_pad_tensors_equal_sast_s_binning(tonic_nmnist):
    tonic, dataset = tonic_nmnist
    rows = np.arange(0, len(dataset), 25)  # 40 recordings across the digits
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, rows.tolist()), batch_size=8,
        collate_fn=tonic.collation.PadTensors(batch_first=True))
    theirs = frames_from_batches(loader, batch_first=True, n_classes=10)
    ours = load_frames("nmnist", "train", T, "tonic", data_root=NMNIST_ROOT).subset(rows)
    their_frames, their_labels = theirs.batch(slice(None))
    our_frames, our_labels = ours.batch(slice(None))
    assert torch.equal(their_labels, our_labels)
    assert their_frames.shape == our_frames.shape == (len(rows), T, 2, 34, 34)
    assert torch.equal(their_frames.long(), our_frames.long())
    assert their_frames.sum() > 0


def test_a_tonic_loader_trains_a_converted_network(tonic_nmnist):
    snn = pytest.importorskip("snntorch", reason="snnTorch is in the test extra")
    tonic, dataset = tonic_nmnist
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, list(range(0, len(dataset), 20))), batch_size=10,
        collate_fn=tonic.collation.PadTensors(batch_first=True))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 34 * 34, 32),
                              snn.Leaky(beta=0.9, init_hidden=True), torch.nn.Linear(32, 10),
                              snn.Leaky(beta=0.9, init_hidden=True, output=True))
    final = sast.train_model(sast.convert(net), loader, batch_first=True, epochs=1,
                             batch_size=10, rho=0.05, progress=False, log=lambda *_: None)
    assert final["split"] == "train" and final["hard"]["n"] == 50
    labels = [dataset.targets[i] for i in range(0, len(dataset), 20)]
    assert final["splits"]["train"]["class_counts"] == np.bincount(labels, minlength=10).tolist()
