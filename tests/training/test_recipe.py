"""The training recipe for deep and convolutional SNNs: firing-rate initialisation, batch norm
folded for deployment, ρ warm-up, slope annealing and an STE fine-tune."""

import json

import pytest
import torch
from torch import nn

from sast.config import RunConfig
from sast.init import calibrate_firing_rates
from sast.layers import LIF, lif_layers, spike_mode
from sast.models import build_model, fold_batchnorm
from sast.optim import SAM
from sast.runs.folder import read_json
from sast.runs.load import load_run
from sast.training.epoch import configure_epoch, rho_at
from sast.training.loop import fit
from sast.training.steps import sam_step


def frames(batch=8, seed=0, t=6):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(t, batch, 2, 34, 34, generator=g) < 0.1).float() * 2


def above_threshold_rates(model, x):
    """Per LIF layer, the fraction of state-steps with u > ϑ in surrogate mode, measured
    directly from the recorded membranes (independently of sast.init)."""
    layers = list(lif_layers(model))
    for layer in layers:
        layer.record = True
    with torch.no_grad(), spike_mode(model, "surrogate"):
        model(x)
    rates = [float((layer.membrane > layer.threshold).double().mean()) for layer in layers]
    for layer in layers:
        layer.record, layer.membrane = False, None
    return rates


@pytest.mark.parametrize("arch,norm", [("nmnist-conv", "none"), ("nmnist-conv", "batch"),
                                       ("nmnist-mlp", "none")])
def test_firing_rate_init_hits_the_target_in_every_layer(arch, norm):
    torch.manual_seed(0)
    hidden = (32, 16) if arch == "nmnist-mlp" else (16,)
    model = build_model(arch, hidden=hidden, channels=(4, 8), norm=norm, slope=2.0)
    x = frames()
    before = above_threshold_rates(model, x)
    report = calibrate_firing_rates(model, x, target=0.1)
    after = above_threshold_rates(model.train(), x)
    assert len(report) == len(after) == len(before)
    for r, measured in zip(report, after, strict=True):
        assert measured == pytest.approx(0.1, abs=0.01)
        assert r["rate_after"] == pytest.approx(measured, abs=1e-6)
    assert [r["rate_before"] for r in report][0] == pytest.approx(before[0])


def test_firing_rate_init_rescales_through_pooling_to_the_convolution_before_it():
    """snnTorch's tutorial layout, Conv2d → MaxPool2d → Leaky, converted: the convolution is
    rescaled (max pooling commutes with c > 0), and a LIF fed by no affine layer is refused."""
    from sast.layers import PerFrame

    torch.manual_seed(0)
    model = nn.Sequential(
        PerFrame(nn.Conv2d(2, 4, 5)), PerFrame(nn.MaxPool2d(2)), LIF(beta=0.5),
        PerFrame(nn.Conv2d(4, 8, 5)), PerFrame(nn.MaxPool2d(2)), LIF(beta=0.5),
        PerFrame(nn.Flatten()), PerFrame(nn.Linear(8 * 5 * 5, 10)), LIF(beta=0.5))
    x = frames()
    report = calibrate_firing_rates(model, x, target=0.15)
    assert len(report) == 3
    for r, measured in zip(report, above_threshold_rates(model, x), strict=True):
        assert measured == pytest.approx(0.15, abs=0.015)
        assert r["rate_after"] == pytest.approx(measured, abs=1e-6)
    with pytest.raises(ValueError, match="position 2 has no Linear.*through pooling"):
        calibrate_firing_rates(nn.Sequential(PerFrame(nn.Conv2d(2, 4, 5)), nn.ReLU(), LIF()), x)


def test_firing_rate_init_refuses_a_bad_target():
    with pytest.raises(ValueError, match="target firing rate"):
        calibrate_firing_rates(build_model("nmnist-mlp", hidden=(8,)), frames(), target=1.5)


@pytest.mark.parametrize("arch", ["nmnist-conv", "nmnist-mlp"])
def test_folded_batchnorm_equals_the_evaluation_model(arch):
    torch.manual_seed(1)
    model = build_model(arch, hidden=(16,), channels=(4, 8), norm="batch").double()
    model.train()
    with torch.no_grad():
        for seed in range(3):  # running statistics away from their initial values
            model(frames(seed=seed).double())
    for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = frames(seed=9).double()
    model.eval()
    for mode in ("surrogate", "hard"):
        with torch.no_grad(), spike_mode(model, mode), spike_mode(folded, mode):
            assert torch.allclose(model(x), folded(x), atol=1e-10)


def test_sam_second_pass_leaves_batchnorm_statistics_alone():
    torch.manual_seed(2)
    model = build_model("nmnist-mlp", hidden=(16,), norm="batch")
    reference = build_model("nmnist-mlp", hidden=(16,), norm="batch")
    reference.load_state_dict(model.state_dict())
    x, y = frames(), torch.randint(0, 10, (8,))
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5)
    sam_step(model.train(), sam, x, y)
    with torch.no_grad():
        reference.train()(x)  # one update of the running statistics, at the same weights
    bn, ref = model[2].module, reference[2].module
    assert torch.allclose(bn.running_mean, ref.running_mean)
    assert torch.allclose(bn.running_var, ref.running_var)
    assert bn.momentum == ref.momentum


def test_rho_warmup_by_hand():
    cfg = RunConfig(rho=0.4, rho_warmup_epochs=2.0)
    assert [rho_at(cfg, e) for e in (0.0, 0.5, 1.0, 2.0, 3.5)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.4, 0.4])
    assert rho_at(RunConfig(rho=0.4), 0.0) == 0.4


def test_slope_annealing_and_ste_finetune_schedule():
    cfg = RunConfig(slope=1.0, slope_final=16.0, epochs=5, ste_finetune_epochs=2)
    assert [cfg.slope_at(e) for e in range(5)] == pytest.approx([1, 2, 4, 8, 16])
    assert [cfg.spike_mode_at(e) for e in range(5)] == ["surrogate"] * 3 + ["ste"] * 2
    model = build_model("nmnist-mlp", hidden=(8,))
    configure_epoch(model, cfg, 3)
    layer = next(m for m in model.modules() if isinstance(m, LIF))
    assert layer.surrogate.slope == pytest.approx(8.0) and layer.spike_mode == "ste"
    assert layer.surrogate.name == "sigmoid"
    with pytest.raises(ValueError, match="ste_finetune_epochs"):
        RunConfig(epochs=2, ste_finetune_epochs=3)


TIMING_FIELDS = ("epoch_time_s", "step_time_s_median", "peak_memory_mb")


def _metric_rows(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


def _checkpoint_model(run):
    return torch.load(run / "checkpoint.pt", weights_only=False)["model"]


def test_a_run_with_the_whole_recipe_trains_resumes_and_loads(tmp_path, monkeypatch):
    import sast.training.steps as steps

    cfg = RunConfig(method="sast", arch="nmnist-conv", channels=(4,), norm="batch",
                    init="firing-rate", rho_warmup_epochs=1.0, slope=2.0, slope_final=4.0,
                    epochs=2, max_train_samples=64, time_bins=4, batch_size=32)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    final = fit(cfg, straight, progress=False, log=lambda *_: None)

    # The same two-epoch run stopped after its first epoch (ρ warming up, slope at 2 of 4),
    # then resumed. (Training with epochs=1 and extending would not be the same run: a
    # one-epoch schedule anneals to the final slope at once, see RunConfig.slope_at.)
    real, calls = dict(steps.KIND_STEPS), {"n": 0}

    def stopping(kind):
        def step(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:  # the first step of the second epoch (2 steps per epoch)
                raise KeyboardInterrupt
            return real[kind](*args, **kwargs)
        return step

    for kind in real:
        monkeypatch.setitem(steps.KIND_STEPS, kind, stopping(kind))
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, resumed, progress=False, log=lambda *_: None)
    assert calls["n"] == 3
    assert read_json(resumed / "status.json")["status"] == "interrupted"
    assert not (resumed / "final.json").exists()
    assert [r["epoch"] for r in _metric_rows(resumed)] == [1]
    init_before_resume = read_json(resumed / "init.json")
    for kind in real:
        monkeypatch.setitem(steps.KIND_STEPS, kind, real[kind])
    again = fit(cfg, resumed, resume=True, progress=False, log=lambda *_: None)

    assert read_json(resumed / "status.json")["status"] == "finished"
    assert [r["epoch"] for r in _metric_rows(resumed)] == [1, 2]
    assert _metric_rows(resumed) == _metric_rows(straight)
    a, b = read_json(straight / "final.json"), read_json(resumed / "final.json")
    assert a["epochs"] == b["epochs"] == 2
    for mode in ("surrogate", "hard"):
        assert a[mode]["accuracy"] == b[mode]["accuracy"] == again[mode]["accuracy"]
        assert a[mode] == b[mode]
    assert final["hard"]["accuracy"] == b["hard"]["accuracy"]
    wa, wb = _checkpoint_model(straight), _checkpoint_model(resumed)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    # the initialisation ran once, before the first epoch, and not again on resuming
    init = read_json(resumed / "init.json")
    assert init["target_rate"] == 0.1 and len(init["layers"]) == 1
    assert init == init_before_resume == read_json(straight / "init.json")
    _, model = load_run(resumed)
    assert next(lif_layers(model)).surrogate.slope == pytest.approx(4.0)  # the final slope
    # evaluation reads the deployed network: batch norm folded into the convolution
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
