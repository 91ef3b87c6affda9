"""The reset-to-zero variant end to end: config, command line, run folders, older configs and
sweeps written before the field existed, training in both spike modes."""

import json

import pytest
import torch

import sast
from sast.cli import main
from sast.config import RunConfig
from sast.layers import LIF, lif_layers
from sast.runs.folder import read_json
from sast.study.report.runs import Run, group_runs
from sast.study.sweep import config_hash
from sast.training.loop import fit

torch.set_num_threads(1)

SMALL = ["--max-train-samples", "96", "--hidden", "16", "--time-bins", "6",
         "--batch-size", "32", "--no-progress", "--epochs", "1"]


def test_reset_is_a_validated_config_field_defaulting_to_subtract():
    assert RunConfig().reset == "subtract"
    assert RunConfig(reset="zero").reset == "zero"
    with pytest.raises(ValueError, match=r"reset must be one of \('subtract', 'zero'\)"):
        RunConfig(reset="soft")
    with pytest.raises(ValueError, match="reset must be a string"):
        RunConfig.from_dict({"reset": 0})
    older = RunConfig().to_dict()
    del older["reset"]  # a config saved before the field existed
    assert RunConfig.from_dict(older).reset == "subtract"


def test_earlier_sweeps_keep_their_folder_names():
    # the hashes every config had before `reset` existed (computed with that version)
    assert config_hash(RunConfig()) == "e147eb0c26"
    assert config_hash(RunConfig(method="surrogate", hidden=(32,), seed=3)) == "e2068e4cc6"
    assert config_hash(RunConfig(reset="zero")) != config_hash(RunConfig())


def test_report_groups_runs_written_before_and_after_the_field(tmp_path):
    new = RunConfig(seed=1).to_dict()
    old = RunConfig(seed=2).to_dict()
    del old["reset"]
    zero = RunConfig(seed=3, reset="zero").to_dict()
    runs = [Run(tmp_path / str(i), {"config": c}) for i, c in enumerate((new, old, zero))]
    groups = group_runs(runs)
    assert sorted(len(g.runs) for g in groups) == [1, 2]
    assert any("reset" in g.label and "zero" in g.label for g in groups)


def test_cli_trains_and_evaluates_a_zero_reset_network(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--method", "sast", "--rho", "0.1", "--reset", "zero", "--seed", "2",
                 "--out", str(run), *SMALL]) == 0
    assert "transfer gap" in capsys.readouterr().out
    assert read_json(run / "config.json")["reset"] == "zero"
    final = read_json(run / "final.json")
    assert final["config"]["reset"] == "zero"
    for mode in ("surrogate", "hard"):
        assert 0.0 <= final[mode]["accuracy"] <= 1.0
    cfg, model = sast.load_run(run)
    assert cfg.reset == "zero"
    assert [layer.reset for layer in lif_layers(model)] == ["zero"]
    # the trained model is the zero-reset network: its hard spikes follow the zero recurrence
    frames = torch.rand(6, 3, 2, 34, 34)
    layer = next(lif_layers(model))
    with sast.spike_mode(model, "hard"):
        layer.record = True
        model(frames)
        u = layer.membrane
    current = model[1](model[0](frames))
    s = (u > layer.threshold).to(u.dtype)
    expected = torch.stack([current[0], *[0.9 * (1 - s[t - 1]) * u[t - 1] + current[t]
                                         for t in range(1, 6)]])
    torch.testing.assert_close(u, expected)

    with pytest.raises(SystemExit):
        main(["train", "--reset", "soft", "--out", str(tmp_path / "bad")])
    assert "invalid choice: 'soft'" in capsys.readouterr().err


def test_a_run_folder_without_the_field_loads_as_subtract(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--method", "surrogate", "--out", str(run), *SMALL]) == 0
    config = read_json(run / "config.json")
    del config["reset"]  # as a run folder written before the field existed
    (run / "config.json").write_text(json.dumps(config))
    cfg, model = sast.load_run(run)
    assert cfg.reset == "subtract"
    assert all(layer.reset == "subtract" for layer in lif_layers(model))
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert read_json(run / "final.json")["epochs"] == 2


def test_help_names_the_reset_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--reset {subtract,zero}" in out


def test_zero_reset_contraction_factors_are_the_state_jacobian():
    from sast.diagnostics.bounds import global_contraction_factor, local_contraction_factors

    layer = LIF(0.8, 1.0, "sigmoid", 5.0, reset="zero")
    u = torch.linspace(-2, 3, 101, dtype=torch.float64).reshape(101, 1).requires_grad_()
    # one step of the surrogate recurrence from state u with no input
    s = layer.surrogate(u - 1.0)
    (jac,) = torch.autograd.grad((0.8 * (1 - s) * u).sum(), u)
    membrane = torch.cat([u.detach(), torch.zeros(1, 1, dtype=torch.float64)])
    factors = local_contraction_factors(layer, membrane)
    torch.testing.assert_close(factors, jac.abs())
    gamma = global_contraction_factor(layer)
    assert float(factors.max()) <= gamma + 1e-9 and gamma < float(factors.max()) + 1e-3


def hand_membrane(current, beta, threshold, reset):
    """The LIF recurrence with hard spikes, one step at a time in float64, written out from the
    definitions: s[t] = H(u[t] − ϑ) and u[t] = β·u[t−1] + I[t] − ϑ·s[t−1] (subtract) or
    u[t] = β·(1 − s[t−1])·u[t−1] + I[t] (zero), from u[−1] = s[−1] = 0."""
    current = current.double()
    u_prev = torch.zeros_like(current[0])
    s_prev = torch.zeros_like(current[0])
    us, ss = [], []
    for t in range(current.shape[0]):
        if reset == "subtract":
            u = beta * u_prev + current[t] - threshold * s_prev
        else:
            u = beta * (1 - s_prev) * u_prev + current[t]
        s = (u > threshold).double()
        us.append(u)
        ss.append(s)
        u_prev, s_prev = u, s
    return torch.stack(us), torch.stack(ss)


@pytest.mark.parametrize("reset,method", [("subtract", "surrogate"), ("zero", "surrogate"),
                                          ("zero", "ste")])
def test_a_trained_run_carries_its_reset_and_follows_its_recurrence(tmp_path, reset, method):
    cfg = RunConfig(method=method, reset=reset, beta=0.8, threshold=0.7, seed=4,
                    max_train_samples=96, hidden=(16,), time_bins=6, batch_size=32, epochs=1)
    fit(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    assert read_json(tmp_path / "run" / "final.json")["config"]["reset"] == reset
    loaded_cfg, model = sast.load_run(tmp_path / "run")
    assert loaded_cfg.reset == reset
    layers = list(lif_layers(model))
    assert len(layers) == 1
    layer = layers[0]
    assert isinstance(layer, LIF)
    assert layer.reset == reset and f"reset={reset!r}" in repr(layer)
    assert float(layer.beta) == pytest.approx(0.8) and float(layer.threshold) == pytest.approx(0.7)

    g = torch.Generator().manual_seed(11)
    frames = (torch.rand(6, 4, 2, 34, 34, generator=g) < 0.3).float() * 3
    outputs = []
    hook = layer.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    try:
        with torch.no_grad(), sast.spike_mode(model, "hard"):
            layer.record = True
            model(frames)
            u = layer.membrane.double()
            current = model[1](model[0](frames))
    finally:
        hook.remove()
        layer.record, layer.membrane = False, None
    spikes = outputs[0].double()

    expected_u, expected_s = hand_membrane(current, 0.8, 0.7, reset)
    # enough spikes, and neurons that go on after a spike, for the reset to matter
    assert 0.05 < float(expected_s[:-1].mean()) < 0.95
    torch.testing.assert_close(u, expected_u, rtol=1e-5, atol=1e-5)
    assert torch.equal(spikes, expected_s)
    # the other reset's recurrence gives a different trajectory on the same input
    other = "zero" if reset == "subtract" else "subtract"
    other_u, _ = hand_membrane(current, 0.8, 0.7, other)
    assert float((other_u - u).abs().max()) > 0.1
