"""sast.train_model: a network and data of the user's own through fit's loop."""

import json

import pytest
import torch
from torch import nn

import sast
from sast.config import RunConfig
from sast.layers import LIF, PerFrame
from sast.runs.folder import read_json
from sast.runs.load import make_model
from sast.runs.splits import prepare_data
from sast.training.loop import fit

T, N_CLASSES = 6, 4


def quiet(*_):
    pass


def separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-first event counts [n, T, 2, 6, 6]: class c lights quadrant c of channel c % 2."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % N_CLASSES
    frames = (torch.rand(n, T, 2, 6, 6, generator=g) < 0.1).to(torch.uint8)
    for c in range(N_CLASSES):
        rows, cols = divmod(c, 2)
        block = torch.rand(int((labels == c).sum()), T, 3, 3, generator=g) < 0.6
        frames[labels == c, :, c % 2, 3 * rows:3 * rows + 3, 3 * cols:3 * cols + 3] |= block
    return frames, labels


def network(seed: int = 0) -> nn.Sequential:
    """Per-step spikes [T, B, 4] out: what sast.convert returns."""
    torch.manual_seed(seed)
    return nn.Sequential(PerFrame(nn.Flatten()), PerFrame(nn.Linear(72, 24)), LIF(),
                         PerFrame(nn.Linear(24, N_CLASSES)), LIF())


def loaders(batch_size: int = 16):
    train, val, test = separable(96, 0), separable(32, 1), separable(32, 2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*train),
                                         batch_size=batch_size)
    return loader, val, test


def test_train_model_on_a_builtin_network_equals_fit_on_its_config(tmp_path):
    """The same network, data, seed and method through train_model and through fit: the same
    accuracies, losses and validation curve."""
    cfg = RunConfig(max_train_samples=96, hidden=(16,), time_bins=6, batch_size=32, epochs=2,
                    method="sast", rho=0.1, eval_batch_size=64)
    by_fit = fit(cfg, tmp_path / "fit", progress=False, log=quiet)
    splits = prepare_data(cfg)
    model = make_model(cfg, splits.train.input_shape, splits.train.n_classes)
    by_model = sast.train_model(
        model, splits.train, val=splits.val, test=splits.test, method="sast", rho=0.1, epochs=2,
        batch_size=32, eval_batch_size=64, out=tmp_path / "model", progress=False, log=quiet)
    for key in ("surrogate", "hard", "transfer_gap_pp", "validation"):
        assert by_model[key] == by_fit[key], key
    assert by_model["timing"]["grad_evals_total"] == by_fit["timing"]["grad_evals_total"]
    rows = [json.loads(line) for line in (tmp_path / "model" / "metrics.jsonl").open()]
    assert [r["train_loss"] for r in rows] == [
        json.loads(line)["train_loss"] for line in (tmp_path / "fit" / "metrics.jsonl").open()]
    assert by_model["dataset"] == "given"
    assert by_model["model"]["lif_layers"] == 1  # the hidden layer; the readout is leaky
    assert by_model["splits"]["train"]["source"] == "the data given as train"


@pytest.mark.parametrize(("method", "passes"), [("surrogate", 1), ("sast", 2), ("ste", 1)])
def test_a_converted_style_network_learns_from_a_dataloader(method, passes):
    loader, val, test = loaders()
    net = network()
    final = sast.train_model(net, loader, val=val, test=test, batch_first=True, method=method,
                             rho=0.05, epochs=4, lr=3e-3, batch_size=16, progress=False,
                             log=quiet)
    assert final["split"] == "test" and final["hard"]["n"] == 32
    assert final["hard"]["accuracy"] > 0.6  # chance is 0.25
    assert final["timing"]["grad_evals_per_step"] == passes
    assert final["model"]["readout"] == "count" and final["config"]["method"] == method
    # trained in place: evaluate_model on the same network gives the same numbers
    again = sast.evaluate_model(net, test, batch_first=True)
    for mode in ("surrogate", "hard"):
        assert again[mode]["accuracy"] == final[mode]["accuracy"]
        assert again[mode]["loss"] == pytest.approx(final[mode]["loss"], rel=1e-6)


def test_time_first_and_batch_first_data_train_the_same_network():
    (x, y), val, _ = separable(64, 0), separable(16, 1), None
    results = []
    for batch_first in (True, False):
        frames = x if batch_first else x.transpose(0, 1)
        v = val[0] if batch_first else val[0].transpose(0, 1)
        results.append(sast.train_model(network(), (frames, y), val=(v, val[1]),
                                        batch_first=batch_first, epochs=2, batch_size=16,
                                        progress=False, log=quiet))
    assert results[0]["hard"] == results[1]["hard"]
    assert results[0]["split"] == "val" and "validation" not in results[0]


def test_resuming_a_given_run_equals_training_straight(tmp_path):
    loader, val, test = loaders()
    kwargs = dict(val=val, test=test, batch_first=True, rho=0.05, lr=3e-3, batch_size=16,
                  progress=False, log=quiet)
    straight = sast.train_model(network(), loader, epochs=3, out=tmp_path / "a", **kwargs)
    sast.train_model(network(), loader, epochs=2, out=tmp_path / "b", **kwargs)
    resumed = sast.train_model(network(), loader, epochs=3, out=tmp_path / "b", resume=True,
                               **kwargs)
    assert resumed["hard"] == straight["hard"] and resumed["surrogate"] == straight["surrogate"]
    assert read_json(tmp_path / "b" / "status.json")["status"] == "finished"
    with pytest.raises(FileExistsError, match="already holds a run"):
        sast.train_model(network(), loader, epochs=3, out=tmp_path / "b", **kwargs)


def test_the_membrane_readout_and_a_custom_loss_are_what_training_minimises():
    loader, val, _ = loaders()
    calls = []

    def loss(logits, labels):
        calls.append(tuple(logits.shape))
        return nn.functional.cross_entropy(logits, labels)

    final = sast.train_model(network(), loader, val=val, batch_first=True, method="sast",
                             rho=0.05, readout="membrane", loss=loss, epochs=2, lr=3e-3,
                             batch_size=16, progress=False, log=quiet)
    assert calls == [(16, N_CLASSES)] * (2 * 2 * 6)  # 2 epochs × 6 steps × 2 SAM passes
    assert final["model"]["readout"] == "membrane" and final["model"]["loss"] == "loss"


def test_firing_rate_initialisation_reaches_its_target_on_a_given_network(tmp_path):
    loader, val, _ = loaders()
    sast.train_model(network(), loader, val=val, batch_first=True, init="firing-rate",
                     init_rate=0.2, epochs=1, batch_size=16, out=tmp_path / "run",
                     progress=False, log=quiet)
    layers = read_json(tmp_path / "run" / "init.json")["layers"]
    assert len(layers) == 2
    assert all(abs(layer["rate_after"] - 0.2) < 0.02 for layer in layers)


def test_the_network_s_own_slope_is_kept_and_mixed_slopes_need_one():
    net = network()
    final = sast.train_model(net, separable(32, 0), batch_first=True, epochs=1, batch_size=16,
                             progress=False, log=quiet)
    assert final["config"]["slope"] == 5.0
    net[2].slope = 2.0
    with pytest.raises(ValueError, match=r"slopes \[2.0, 5.0\]; pass slope="):
        sast.train_model(net, separable(32, 0), batch_first=True, epochs=1, progress=False)
    final = sast.train_model(net, separable(32, 0), batch_first=True, epochs=1, slope=3.0,
                             batch_size=16, progress=False, log=quiet)
    assert {float(m.slope) for m in net if isinstance(m, LIF)} == {3.0}


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"hidden": (32,)}, ValueError, "hidden set sast's own datasets"),
    ({"learning_rate": 0.1}, TypeError, "unexpected options learning_rate"),
    ({"resume": True}, ValueError, "no out was given"),
    ({"method": "adamw"}, ValueError, "method must be one of"),
    ({"readout": "max"}, ValueError, "readout must be one of"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        sast.train_model(network(), separable(32, 0), batch_first=True, epochs=1,
                         progress=False, log=quiet, **kwargs)


def test_a_network_without_lif_layers_is_refused():
    with pytest.raises(ValueError, match="holds none .convert it first"):
        sast.train_model(nn.Sequential(PerFrame(nn.Flatten()), PerFrame(nn.Linear(72, 4))),
                         separable(32, 0), batch_first=True, progress=False)
