"""sast train --nir: a NIR graph trained on a built-in dataset with the whole training protocol."""

import importlib.util

import pytest
import torch

import sast
from sast.cli import main
from sast.runs.folder import read_json

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nir") is None,
                                reason="the nir package is not installed (pip install "
                                       "'sast[nir]')")

ARGS = ["--max-train-samples", "96", "--time-bins", "6", "--epochs", "2", "--rho", "0.05",
        "--batch-size", "32", "--no-progress"]


def _graph(tmp_path):
    torch.manual_seed(0)
    model = sast.build_model("nmnist-mlp", hidden=(24,), reset="zero", readout="count")
    path = tmp_path / "mlp.nir"
    sast.export_nir(model, path)
    return path


def test_train_nir_trains_the_graph_s_network_and_resumes(tmp_path, capsys):
    path = _graph(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--nir", str(path), "--out", str(out), *ARGS]) == 0
    final = read_json(out / "final.json")
    assert final["model"]["source"] == "nir" and final["model"]["file"] == str(path)
    assert final["model"]["lif_layers"] == 2 and final["model"]["readout"] == "count"
    assert final["dataset"] == "synthetic-nmnist" and final["arch"] == "NIR graph mlp.nir"
    assert final["timing"]["grad_evals_per_step"] == 2  # SAST's two passes
    assert final["splits"]["train"]["n"] == 96
    # the graph's own network: its weights are where training started
    start = sast.from_nir(path)
    trained = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    assert set(trained) == {f"net.{k}" for k in start.state_dict()}
    assert main(["train", "--nir", str(path), "--out", str(out), "--resume", *ARGS[:-3],
                 "--epochs", "3", "--batch-size", "32", "--no-progress"]) == 0
    assert read_json(out / "final.json")["epochs"] == 3
    with pytest.raises(ValueError, match=r"trained a network of its own .*sast.from_nir"):
        sast.load_run(out)
    capsys.readouterr()


def test_train_nir_refuses_a_graph_that_does_not_fit_the_data(tmp_path, capsys):
    path = _graph(tmp_path)
    assert main(["train", "--nir", str(path), "--dataset", "synthetic-gesture",
                 "--out", str(tmp_path / "g"), *ARGS]) == 2
    assert "takes frames of shape (2, 34, 34)" in capsys.readouterr().err
    assert main(["train", "--nir-dt", "1e-3", "--out", str(tmp_path / "x")]) == 2
    assert "pass --nir PATH too" in capsys.readouterr().err
    broken = tmp_path / "broken.nir"
    broken.write_text("not nir")
    assert main(["train", "--nir", str(broken), "--out", str(tmp_path / "y")]) == 2
    assert "broken.nir: not a NIR file" in capsys.readouterr().err
