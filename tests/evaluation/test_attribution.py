"""Per-layer attribution of the transfer gap, against direct computations."""

import pytest
import torch

from sast.data import FrameSet
from sast.evaluation.accuracy import collect_outputs, evaluate_mode
from sast.evaluation.attribution import hard_layers, layer_attribution
from sast.layers import lif_layers
from sast.models import build_model
from sast.neuron import lif_scan_reference


def toy(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(n, 5, 2, 34, 34, generator=g) < 0.2).to(torch.uint8) * 2
    return FrameSet(frames, torch.randint(0, 10, (n,), generator=g), 10)


def model_with(depth):
    torch.manual_seed(3)
    model = build_model("nmnist-mlp", hidden=(24,) * depth, slope=2.0)
    for p in model.parameters():  # currents large enough that layers fire
        p.data.mul_(4.0)
    return model


def test_prefixes_and_single_layers_against_whole_network_modes():
    model, data = model_with(2), toy()
    result = layer_attribution(model, data, batch_size=10)
    surrogate = evaluate_mode(model, data, "surrogate")["accuracy"]
    hard = evaluate_mode(model, data, "hard")["accuracy"]
    assert result["surrogate_accuracy"] == surrogate
    assert result["prefix"][-1]["accuracy"] == result["hard_accuracy"] == hard
    with hard_layers(model, (1,)):
        assert [layer.spike_mode for layer in lif_layers(model)] == ["surrogate", "hard"]
    assert [layer.spike_mode for layer in lif_layers(model)] == ["surrogate", "surrogate"]
    # the first prefix is the first layer alone
    assert result["prefix"][0]["accuracy"] == result["layers"][0]["hard_alone_accuracy"]
    for entry in result["layers"]:
        assert entry["loss_alone_pp"] == pytest.approx(
            100 * (surrogate - entry["hard_alone_accuracy"]))


def test_activity_divergence_against_a_direct_computation():
    model, data = model_with(2), toy()
    result = layer_attribution(model, data, batch_size=7)
    for mode, key in (("surrogate", "rate_surrogate"), ("hard", "rate_hard")):
        rates = collect_outputs(model, data, mode).firing_rates
        assert [e[key] for e in result["layers"]] == pytest.approx(rates, rel=1e-6)

    frames, _ = data.batch(slice(None))
    x = frames.transpose(0, 1).float()
    currents, membranes = {}, {}
    for mode in ("surrogate", "hard"):
        h = x
        with torch.no_grad(), hard_layers(model, (0, 1) if mode == "hard" else ()):
            for module in model:
                if module in list(lif_layers(model)):
                    i = list(lif_layers(model)).index(module)
                    currents[mode, i] = h.double()
                    _, membranes[mode, i] = lif_scan_reference(
                        h.double(), module.beta, module.threshold, module.surrogate, mode)
                h = module(h)
    for i, entry in enumerate(result["layers"]):
        u_s, u_h = membranes["surrogate", i], membranes["hard", i]
        per_t = (u_h - u_s).abs().mean(dim=(1, 2))
        # abs: the fused scan's float32 membrane is exact to about 1e-7 (it is computed as
        # x/k + ϑ from the scaled distance to threshold x in surrogate mode)
        assert entry["drift_network"] == pytest.approx(per_t.tolist(), rel=1e-5, abs=1e-6)
        _, u_iso = lif_scan_reference(currents["surrogate", i], 0.9, 1.0,
                                      model[2].surrogate, "hard")
        iso = (u_iso - u_s).abs().mean(dim=(1, 2))
        assert entry["drift_isolated"] == pytest.approx(iso.tolist(), rel=1e-5, abs=1e-6)
        near = float(((u_s - 1.0).abs() < 0.1).double().mean())
        assert entry["near_threshold_fraction"] == pytest.approx(near)
    # the first layer sees the same input in both networks: both drifts agree
    first = result["layers"][0]
    assert first["drift_network"] == pytest.approx(first["drift_isolated"])
