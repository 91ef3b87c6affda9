"""SpikingClassifier: per-step network output read out as logits."""

import pytest
import torch
from torch import nn

from sast.classifier import SpikingClassifier, as_classifier
from sast.layers import LIF, PerFrame, spike_mode
from sast.neuron import lif_scan_reference
from sast.surrogate import get_surrogate


def _net():
    torch.manual_seed(0)
    return nn.Sequential(PerFrame(nn.Linear(8, 12)), LIF(beta=0.8),
                         PerFrame(nn.Linear(12, 3)), LIF(beta=0.7, threshold=0.5))


def _x():
    return torch.randn(7, 5, 8, generator=torch.Generator().manual_seed(1)) * 2


@pytest.mark.parametrize("mode", ["surrogate", "hard"])
def test_the_count_readout_is_the_spike_count_over_steps(mode):
    net, x = _net(), _x()
    with spike_mode(net, mode):
        counts = net(x).sum(0)
        logits = SpikingClassifier(net)(x)
    assert torch.equal(logits, counts)
    if mode == "hard":
        assert torch.equal(logits, logits.round()) and logits.max() <= 7


@pytest.mark.parametrize("mode", ["surrogate", "hard"])
def test_the_membrane_readout_is_the_last_layer_s_mean_membrane(mode):
    net, x = _net(), _x()
    clf = SpikingClassifier(net, "membrane")
    with spike_mode(net, mode):
        current = net[2](net[1](net[0](x)))
        logits = clf(x)
    _, u = lif_scan_reference(current, 0.7, 0.5, get_surrogate("sigmoid", 5.0), mode)
    torch.testing.assert_close(logits, u.mean(0), rtol=1e-5, atol=1e-6)
    assert not net[3].record and net[3].membrane is None  # left as it was


def test_the_membrane_readout_trains_through_the_membrane():
    net, x = _net(), _x()
    SpikingClassifier(net, "membrane")(x).sum().backward()
    assert net[0].module.weight.grad.abs().sum() > 0


def test_a_callable_readout_a_logit_network_and_the_loss():
    net, x = _net(), _x()
    first_step = SpikingClassifier(net, lambda out: out[0])
    assert torch.equal(first_step(x), net(x)[0])
    logit_net = nn.Sequential(PerFrame(nn.Linear(8, 3)), LIF(), nn.Flatten(0, 0))

    class Mean(nn.Module):
        def forward(self, x):
            return x.mean(0)

    two_d = SpikingClassifier(nn.Sequential(logit_net, Mean()))
    assert two_d(x).shape == (5, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    logits = torch.randn(5, 3)
    assert torch.equal(SpikingClassifier(net).training_loss(logits, y),
                       nn.functional.cross_entropy(logits, y))
    assert SpikingClassifier(net, loss=lambda z, _: z.sum()).training_loss(logits, y) == \
        logits.sum()


def test_bad_readouts_are_refused():
    with pytest.raises(ValueError, match="readout must be one of"):
        SpikingClassifier(_net(), "max")
    with pytest.raises(ValueError, match="holds no LIF layer"):
        SpikingClassifier(nn.Linear(3, 3), "membrane")
    with pytest.raises(ValueError, match=r"sums the network's output \[T, B, C\]"):
        SpikingClassifier(nn.Flatten(0, -1))(_x())
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        as_classifier(lambda x: x)
    clf = SpikingClassifier(_net(), "membrane")
    assert as_classifier(clf) is clf
    with pytest.raises(ValueError, match="already a SpikingClassifier"):
        as_classifier(clf, "count", loss=lambda z, y: z.sum())
