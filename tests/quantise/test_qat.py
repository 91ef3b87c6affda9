"""Quantisation-aware training: fake-quantised weights forward, the straight-through gradient
backward, QAT runs end to end and their integer deployment, configs old and new."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import sast
from sast.cli import main
from sast.config import RunConfig
from sast.deploy import quantise_network, quantise_weight
from sast.evaluation.accuracy import evaluate_spike_modes
from sast.optim import SAM
from sast.protocol.deploy import deploy_run
from sast.quantise import fake_quantised, fake_quantised_weights, synaptic_layers
from sast.runs.folder import RunFolder, read_json
from sast.runs.load import weight_context
from sast.runs.splits import prepare_data
from sast.study.sweep import canonical, config_hash, run_name
from sast.training.steps import plain_step, sam_step


def conv_model(seed=0):
    torch.manual_seed(seed)
    return sast.build_model("nmnist-conv", (2, 12, 12), 10, channels=(4, 6), hidden=(10,))


# --- the forward: the deploy quantiser's weights ---------------------------------------------


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("granularity", ["per-channel", "per-tensor"])
def test_fake_quantised_weights_are_the_deploy_quantisers_dequantised_weights(bits, granularity):
    model = conv_model()
    before = [layer.weight.detach().clone() for layer in synaptic_layers(model)]
    assert len(before) == 4  # two convolutions, the hidden Linear layer, the readout
    net = quantise_network(model, bits, granularity)  # sast deploy's integer network
    frames = torch.randint(0, 3, (5, 3, 2, 12, 12))
    with fake_quantised_weights(model, bits, granularity):
        for layer, w, stage in zip(synaptic_layers(model), before, net.stages, strict=True):
            expected = quantise_weight(w, bits, granularity).dequantised()
            assert torch.equal(layer.weight, expected.float())
            assert torch.equal(layer.weight, stage.weight.dequantised().float())
            assert torch.equal(layer.weight, fake_quantised(w, bits, granularity))
            rows = layer.weight.flatten(1) if granularity == "per-channel" else [layer.weight]
            assert all(len(torch.unique(row)) <= 2 ** bits - 1 for row in rows)
        with torch.no_grad():
            inside = model(frames)
    # on exit every float weight is back, bit for bit
    for layer, w in zip(synaptic_layers(model), before, strict=True):
        assert torch.equal(layer.weight, w)
    # the forward inside the block is the network with the dequantised weights put in by hand
    by_hand = copy.deepcopy(model)
    with torch.no_grad():
        for layer, stage in zip(synaptic_layers(by_hand), net.stages, strict=True):
            layer.weight.copy_(stage.weight.dequantised())
        assert torch.equal(inside, by_hand(frames))


def test_weights_are_restored_after_an_exception():
    model = conv_model()
    before = [layer.weight.detach().clone() for layer in synaptic_layers(model)]
    with pytest.raises(RuntimeError, match="boom"), fake_quantised_weights(model, 3):
        raise RuntimeError("boom")
    assert all(torch.equal(layer.weight, w)
               for layer, w in zip(synaptic_layers(model), before, strict=True))


def test_bad_bits_and_granularity_are_refused():
    with pytest.raises(ValueError, match="weight bits"), \
            fake_quantised_weights(conv_model(), 1):
        pass
    with pytest.raises(ValueError, match="granularity"), \
            fake_quantised_weights(conv_model(), 4, "per-row"):
        pass


# --- the backward: the straight-through estimator ---------------------------------------------


def test_gradient_reaches_the_float_weights_unchanged():
    """L = ½‖Ŵx‖² with Ŵ the 4-bit per-channel weight of W = [[0.5, −1], [0.01, 0.02]]:
    q = [[4, −7], [4, 7]], s = (1/7, 0.02/7), Ŵ = [[4/7, −1], [0.08/7, 0.02]]; the STE gives
    ∂L/∂W = ∂L/∂Ŵ = (Ŵx)·xᵀ — at Ŵ, not at W."""
    lin = nn.Linear(2, 2, bias=False)
    w = torch.tensor([[0.5, -1.0], [0.01, 0.02]])
    with torch.no_grad():
        lin.weight.copy_(w)
    x = torch.tensor([1.0, 2.0])
    with fake_quantised_weights(lin, 4, "per-channel"):
        (0.5 * lin(x).pow(2).sum()).backward()
    w_hat = np.array([[4 / 7, -1.0], [0.08 / 7, 0.02]])
    y = w_hat @ np.array([1.0, 2.0])  # (4/7 − 2, 0.08/7 + 0.04)
    by_hand = np.outer(y, [1.0, 2.0])
    np.testing.assert_allclose(lin.weight.grad.numpy(), by_hand, rtol=1e-6)
    at_float_w = np.outer(w.numpy() @ np.array([1.0, 2.0]), [1.0, 2.0])
    assert not np.allclose(by_hand, at_float_w, rtol=1e-3)  # the point matters
    assert torch.equal(lin.weight.detach(), w)  # the float weight itself is untouched


def _softmax_ce_grad(w, x, y):
    """∂/∂W of mean cross-entropy(x Wᵀ, y), by hand: (softmax − onehot)ᵀ x / B."""
    logits = x @ w.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p.T @ x / len(y)


def _q(w, bits):
    return quantise_weight(torch.from_numpy(w), bits).dequantised().numpy()


def _linear_problem():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w))
    return model, w.astype(np.float64), torch.from_numpy(x), torch.from_numpy(y)


def test_a_qat_step_descends_the_float_weights_with_the_gradient_at_the_quantised_ones():
    cfg = RunConfig(qat_weight_bits=3, method="surrogate")
    model, w, x, y = _linear_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    plain_step(model, opt, x, y, weights=weight_context(cfg))
    g = _softmax_ce_grad(_q(w, 3), x.double().numpy(), y.numpy())
    np.testing.assert_allclose(model[0].weight.detach().double().numpy(), w - 0.5 * g,
                               atol=1e-6)


def test_a_qat_sam_step_perturbs_the_float_weights_and_quantises_both_points():
    cfg = RunConfig(qat_weight_bits=3, method="sast", rho=0.4)
    model, w, x, y = _linear_problem()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.5), rho=0.4)
    sam_step(model, sam, x, y, weights=weight_context(cfg))
    xs, ys = x.double().numpy(), y.numpy()
    g1 = _softmax_ce_grad(_q(w, 3), xs, ys)                  # at Q(w)
    eps = 0.4 * g1 / np.linalg.norm(g1)                       # added to the float w
    g2 = _softmax_ce_grad(_q(w + eps, 3), xs, ys)            # at Q(w + ε)
    np.testing.assert_allclose(model[0].weight.detach().double().numpy(), w - 0.5 * g2,
                               atol=1e-6)
    # Q(w + ε) ≠ Q(w) here, so the second point is not the first one again
    assert not np.allclose(_q(w + eps, 3), _q(w, 3))


def test_without_qat_the_weight_context_is_a_no_op():
    model = conv_model()
    before = [p.detach().clone() for p in model.parameters()]
    with weight_context(RunConfig())(model) as inside:
        assert inside is model
        assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


# --- a tiny QAT run, its evaluation and its deployment ----------------------------------------

QAT_BITS = 4


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("qat") / "run"
    cfg = RunConfig(method="sast", rho=0.1, qat_weight_bits=QAT_BITS, epochs=4, lr=3e-3,
                    max_train_samples=300, hidden=(32,), time_bins=8, batch_size=32, seed=1)
    sast.fit(cfg, run, progress=False, log=lambda *_: None)
    return run


def test_a_tiny_qat_run_trains(qat_run):
    rows = [r["train_loss"] for r in RunFolder(qat_run).read_metrics()]
    assert len(rows) == 4 and rows[-1] < rows[0] - 0.5  # the loss falls
    final = read_json(qat_run / "final.json")
    assert final["config"]["qat_weight_bits"] == QAT_BITS
    assert final["hard"]["accuracy"] > 0.5  # ten classes: chance is 0.1


def test_a_qat_run_is_evaluated_and_loaded_with_its_fake_quantised_weights(qat_run):
    final = read_json(qat_run / "final.json")
    cfg, model = sast.load_run(qat_run)
    for layer in synaptic_layers(model):  # at most 2^b − 1 levels per output channel
        assert all(len(torch.unique(row)) <= 2 ** QAT_BITS - 1 for row in layer.weight)
    test = prepare_data(cfg).test
    again = evaluate_spike_modes(model, test, "cpu", cfg.eval_batch_size)
    assert again["hard"]["accuracy"] == final["hard"]["accuracy"]
    assert again["surrogate"]["accuracy"] == final["surrogate"]["accuracy"]
    _, master = sast.load_run(qat_run, fake_quantise=False)
    pairs = list(zip(synaptic_layers(master), synaptic_layers(model), strict=True))
    assert not any(torch.equal(a.weight, b.weight) for a, b in pairs)
    with fake_quantised_weights(master, QAT_BITS):
        assert all(torch.equal(a.weight, b.weight) for a, b in pairs)


def test_deploying_a_qat_run_gives_its_own_accuracy_in_integers(qat_run):
    """The integer network at b bits carries exactly the integer weights training saw
    (asserted above); what still differs is the membrane arithmetic — the current rescaled by
    m/2^r (relative error ≤ 2^−15) onto a Q(I.F) grid, bias, threshold and leak rounded.
    With a fine membrane (Q16.16, 24-bit leak) that rounding is far below any margin and the
    integer accuracy is the trained network's to within one test sample; with the default
    Q8.8 word (steps of 1/256) a few near-threshold spikes may flip: 2 pp allowed."""
    final = read_json(qat_run / "final.json")
    n = final["sizes"]["test"]
    fine = deploy_run(qat_run, membrane="Q16.16", leak_fraction_bits=24, device="cpu")
    assert fine["options"]["weight_bits"] == [QAT_BITS, 8]  # its own width first
    assert fine["options"]["granularity"] == "per-channel"
    assert fine["qat"]["weight_bits"] == QAT_BITS
    assert fine["qat"]["hard"]["accuracy"] == final["hard"]["accuracy"]  # the same network
    int_b = fine["settings"][0]
    assert int_b["weight_bits"] == QAT_BITS
    assert abs(int_b["accuracy"] - final["hard"]["accuracy"]) * n <= 1 + 1e-9
    assert fine["qat"]["agreement_with_integer"] >= 1 - 1 / n - 1e-12
    default = deploy_run(qat_run, device="cpu")
    assert default["options"]["membrane_format"] == "Q8.8"
    assert abs(default["settings"][0]["accuracy"] - final["hard"]["accuracy"]) <= 0.02
    assert default["qat"]["agreement_with_integer"] >= 0.97
    # float_hard is the float master weights with hard spikes, as for any run
    assert default["float_hard"]["n"] == n


def test_cli_trains_and_deploys_a_qat_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--method", "surrogate", "--qat-weight-bits", "8",
                 "--qat-per-channel", "false", "--epochs", "1", "--max-train-samples", "100",
                 "--hidden", "16", "--time-bins", "6", "--out", str(run),
                 "--no-progress"]) == 0
    config = read_json(run / "config.json")
    assert config["qat_weight_bits"] == 8 and config["qat_per_channel"] is False
    capsys.readouterr()
    assert main(["deploy", str(run), "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "per-tensor weights" in out and "qat8, hard" in out
    result = read_json(run / "deploy.json")
    assert result["options"]["weight_bits"] == [8, 4]
    assert result["options"]["granularity"] == "per-tensor"
    assert result["qat"]["granularity"] == "per-tensor"
    assert result["qat"]["agreement_with_integer"] is not None
    # an explicit choice wins; agreement is only defined for the run's own setting
    assert main(["deploy", str(run), "--per-channel", "--weight-bits", "4", "--device", "cpu",
                 "--no-progress"]) == 0
    result = read_json(run / "deploy.json")
    assert result["options"]["granularity"] == "per-channel"
    assert result["qat"]["agreement_with_integer"] is None


# --- the config field: defaults, validation, older configs, hashes ---------------------------


def test_qat_fields_default_off_and_are_validated():
    cfg = RunConfig()
    assert cfg.qat_weight_bits is None and cfg.qat_per_channel is True
    assert RunConfig(qat_weight_bits=4, qat_per_channel=False).qat_granularity == "per-tensor"
    for bad, match in [({"qat_weight_bits": 1}, r"qat_weight_bits must be null or an integer "
                        r"in 2\.\.16"),
                       ({"qat_weight_bits": 17}, "qat_weight_bits"),
                       ({"qat_weight_bits": 8.0}, "qat_weight_bits must be an integer or null"),
                       ({"qat_weight_bits": True}, "qat_weight_bits must be an integer"),
                       ({"qat_per_channel": "yes"}, "qat_per_channel must be true or false"),
                       ({"qat_weight_bits": 8, "norm": "batch"}, "norm: none")]:
        with pytest.raises(ValueError, match=match):
            RunConfig.from_dict(bad)


def test_older_configs_load_and_keep_their_hashes_and_groups():
    older = RunConfig(method="surrogate", hidden=(32,), seed=3).to_dict()
    del older["qat_weight_bits"], older["qat_per_channel"]  # saved before QAT existed
    cfg = RunConfig.from_dict(older)
    assert cfg.qat_weight_bits is None and cfg.qat_per_channel is True
    # the hashes every config had before the fields existed (tests/test_reset.py has them)
    assert config_hash(RunConfig()) == "e147eb0c26"
    assert config_hash(cfg) == "e2068e4cc6"
    assert config_hash(RunConfig(qat_weight_bits=8)) != config_hash(RunConfig())
    assert config_hash(RunConfig(qat_weight_bits=8)) != config_hash(
        RunConfig(qat_weight_bits=8, qat_per_channel=False))
    # without QAT the scale field changes nothing: normalised away, one run
    plain = canonical(RunConfig(qat_per_channel=False))
    assert plain.qat_per_channel is True and run_name(plain) == run_name(RunConfig())
    # the report groups an old run with a new one of the same config
    from pathlib import Path

    from sast.study.report.runs import Run, group_runs

    def run(config):
        return Run(Path("r"), {"config": config, "seed": 0})

    new = RunConfig(method="surrogate", hidden=(32,), seed=4).to_dict()
    assert len(group_runs([run(older), run(new)])) == 1
    groups = group_runs([run(older), run({**new, "qat_weight_bits": 4})])
    assert sorted(g.label for g in groups) == ["surrogate", "surrogate, QAT 4-bit"]


def test_an_old_run_folder_loads_without_qat(tmp_path):
    run = tmp_path / "old"
    cfg = RunConfig(method="surrogate", epochs=1, max_train_samples=50, hidden=(8,),
                    time_bins=4)
    sast.fit(cfg, run, progress=False, log=lambda *_: None)
    config = read_json(run / "config.json")
    del config["qat_weight_bits"], config["qat_per_channel"]
    from sast.runs.folder import atomic_write_json

    atomic_write_json(run / "config.json", config)
    loaded, model = sast.load_run(run)
    assert loaded.qat_weight_bits is None
    state = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    assert torch.equal(model[1].module.weight, state["1.module.weight"])  # float, as trained
