"""evaluate_model, and the evaluation functions on a converted-style network."""

import pytest
import torch
from torch import nn

import sast
from sast.classifier import SpikingClassifier
from sast.data import FrameSet
from sast.evaluation.accuracy import robustness_curve
from sast.evaluation.attribution import layer_attribution
from sast.evaluation.thresholds import calibrate_thresholds
from sast.layers import LIF, PerFrame, spike_mode


def _net():
    torch.manual_seed(3)
    return nn.Sequential(PerFrame(nn.Flatten()), PerFrame(nn.Linear(18, 16)), LIF(),
                         PerFrame(nn.Linear(16, 3)), LIF(threshold=0.5))


def _data(n=40):
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 3, (n, 6, 2, 3, 3), generator=g).to(torch.uint8),
            torch.arange(n) % 3)


def test_evaluate_model_against_a_direct_forward_pass():
    net, (x, y) = _net(), _data()
    result = sast.evaluate_model(net, (x, y), batch_first=True, batch_size=7)
    xt = x.transpose(0, 1).float()
    for mode in ("surrogate", "hard"):
        with spike_mode(net, mode), torch.no_grad():
            h1 = net[2](net[1](net[0](xt)))
            out = net[4](net[3](h1))
        logits = out.sum(0)
        assert result[mode]["accuracy"] == float((logits.argmax(1) == y).double().mean())
        assert result[mode]["loss"] == pytest.approx(
            float(nn.functional.cross_entropy(logits.double(), y)), rel=1e-6)
        assert result["firing_rates"][mode] == pytest.approx(
            [float(h1.double().mean()), float(out.double().mean())], rel=1e-6)
    assert 0 < result["firing_rates"]["hard"][0] < 1
    assert result["transfer_gap_pp"] == pytest.approx(
        100 * (result["surrogate"]["accuracy"] - result["hard"]["accuracy"]))


def test_the_evaluation_functions_take_a_spiking_classifier():
    clf = SpikingClassifier(_net())
    x, y = _data()
    data = FrameSet(x, y, 3)
    hard = sast.evaluate_model(clf, data)["hard"]["accuracy"]
    thresholds = calibrate_thresholds(clf, data, candidates=(0.8, 1.0, 1.25))
    assert len(thresholds["scales"]) == 2
    assert thresholds["val_hard_accuracy_after"] >= hard
    attribution = layer_attribution(clf, data)
    assert attribution["prefix"][-1]["accuracy"] == pytest.approx(hard)
    curve = robustness_curve(clf, lambda corruption, seed: data, levels=(0.0,), seeds=(0,))
    assert curve["hard"]["mean"] == [hard]
