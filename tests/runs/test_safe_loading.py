"""Run folders are shared: loading one must never run code from it."""

import os

import pytest
import torch

from sast.cli import main
from sast.config import RunConfig
from sast.runs.folder import load_checkpoint
from sast.runs.load import load_run
from sast.training.loop import fit


class Payload:
    """Unpickling this object would create ``marker`` (a stand-in for any shell command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared") / "run"
    fit(RunConfig(method="surrogate", epochs=1, max_train_samples=32, hidden=(8,), time_bins=4),
        folder, progress=False, log=lambda *_: None)
    return folder


def test_a_checkpoint_carrying_a_pickle_payload_is_refused_without_running_it(run, tmp_path,
                                                                             capsys):
    marker = tmp_path / "pwned"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["extra"] = Payload(marker)
    torch.save(state, run / "checkpoint.pt")

    with pytest.raises(ValueError, match="not a checkpoint sast can load safely"):
        load_run(run)
    assert main(["evaluate", str(run), "--no-progress"]) == 2
    assert "checkpoint.pt: not a checkpoint sast can load safely" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 2
    assert not marker.exists()  # the payload never ran
    with pytest.raises(ValueError, match="unsupported GLOBAL posix.mkdir"):
        load_checkpoint(run / "checkpoint.pt")


def test_a_checkpoint_with_missing_keys_names_the_file_and_the_keys(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "epoch": 1}, path)
    with pytest.raises(ValueError, match=r"checkpoint\.pt: checkpoint lacks optimizer, config"):
        load_checkpoint(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"checkpoint\.pt: not a checkpoint"):
        load_checkpoint(path)
