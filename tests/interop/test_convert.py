"""sast.convert against the source libraries: in hard mode the converted network gives the
spikes the source gives, on random inputs where every layer fires."""

import pytest
import torch
from torch import nn

from sast.interop.convert import ConvertedNet, convert
from sast.layers import LIF, spike_mode

T, B = 12, 6


def _inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, *shape, generator=g) < 0.3).float()


def _spiking(net):
    """Scale the weights up so that every layer fires."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(3.0)
    return net


def _sast_layers(converted, x):
    spikes = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: spikes.append(o))
             for m in converted.modules() if isinstance(m, LIF)]
    with spike_mode(converted, "hard"), torch.no_grad():
        out = converted(x)
    for h in hooks:
        h.remove()
    return out, spikes


def _check(source_out, source_layers, converted, x):
    out, layers = _sast_layers(converted, x)
    assert out.shape == source_out.shape
    assert len(layers) == len(source_layers)
    for i, (mine, theirs) in enumerate(zip(layers, source_layers, strict=True)):
        rate = float(theirs.mean())
        assert 0.01 < rate < 0.99, f"layer {i} does not fire usefully (rate {rate:.3f})"
        differ = float((mine != theirs).float().mean())
        assert differ <= 1e-4, f"layer {i}: {differ:.2e} of spike decisions differ"
    return out


def _per_step(neurons, run):
    """Run ``run(t)`` for every step, collecting each neuron layer's output per step."""
    outputs = {id(n): [] for n in neurons}
    hooks = [n.register_forward_hook(
        lambda m, _i, o: outputs[id(m)].append(o[0] if isinstance(o, tuple) else o))
        for n in neurons]
    with torch.no_grad():
        out = torch.stack([run(t) for t in range(T)])
    for h in hooks:
        h.remove()
    return out, [torch.stack(outputs[id(n)]) for n in neurons]


snn = pytest.importorskip("snntorch", reason="snnTorch is a test dependency")


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_snntorch_mlp_and_conv_give_the_same_spikes(reset):
    from snntorch import utils

    for shape, layers in (
        ((40,), lambda: [nn.Linear(40, 30), snn.Leaky(beta=0.8, threshold=0.7, init_hidden=True,
                                                       reset_mechanism=reset),
                         nn.Linear(30, 10), snn.Leaky(beta=0.6, init_hidden=True, output=True,
                                                      reset_mechanism=reset)]),
        ((2, 12, 12), lambda: [nn.Conv2d(2, 4, 3), nn.MaxPool2d(2),
                               snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism=reset),
                               nn.Flatten(), nn.Linear(4 * 5 * 5, 10),
                               snn.Leaky(beta=0.7, threshold=0.5, init_hidden=True,
                                         output=True, reset_mechanism=reset)]),
    ):
        net = _spiking(nn.Sequential(*layers()))
        x = _inputs(shape)
        converted = convert(net)
        assert isinstance(converted, ConvertedNet) and converted.source == "snntorch"
        utils.reset(net)
        neurons = [m for m in net if isinstance(m, snn.Leaky)]
        out, per_layer = _per_step(neurons, lambda t, net=net, x=x: net(x[t])[0])
        _check(out, per_layer, converted, x)


def test_snntorch_per_neuron_beta_and_errors():
    from snntorch import utils

    beta = torch.linspace(0.5, 0.95, 20)
    net = _spiking(nn.Sequential(nn.Linear(40, 20), snn.Leaky(beta=beta, init_hidden=True),
                                 nn.Linear(20, 10), snn.Leaky(beta=0.8, init_hidden=True,
                                                              output=True)))
    x = _inputs((40,))
    utils.reset(net)
    neurons = [m for m in net if isinstance(m, snn.Leaky)]
    out, per_layer = _per_step(neurons, lambda t: net(x[t])[0])
    _check(out, per_layer, convert(net), x)

    with pytest.raises(ValueError, match=r"layer 1 \(torch.LSTM\)"):
        convert(nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4)))
    with pytest.raises(ValueError, match=r"layer 1 \(snntorch.RLeaky\).*recurrent"):
        convert(nn.Sequential(nn.Linear(4, 4), snn.RLeaky(beta=0.9, linear_features=4,
                                                          init_hidden=True)))
    learnable = snn.Leaky(beta=torch.full((4,), 0.9), learn_beta=True, init_hidden=True)
    with pytest.raises(ValueError, match="learnable per-neuron beta"):
        convert(nn.Sequential(nn.Linear(4, 4), learnable))
    with pytest.raises(ValueError, match="reset_delay=False"):
        convert(nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.9, init_hidden=True,
                                                         reset_delay=False)))


def test_batchnorm_is_folded_and_a_lone_one_refused():
    from snntorch import utils

    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4),
                        snn.Leaky(beta=0.9, init_hidden=True), nn.Flatten(),
                        nn.Linear(4 * 10 * 10, 10), snn.Leaky(beta=0.8, init_hidden=True,
                                                              output=True))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(1.0, 3.0)
        net[1].bias.uniform_(-0.1, 0.3)
    net = _spiking(net).eval()
    x = _inputs((2, 12, 12), seed=3)
    utils.reset(net)
    neurons = [m for m in net if isinstance(m, snn.Leaky)]
    out, per_layer = _per_step(neurons, lambda t: net(x[t])[0])
    _check(out, per_layer, convert(net), x)
    with pytest.raises(ValueError, match="batch norm is folded"):
        convert(nn.Sequential(nn.BatchNorm1d(4), snn.Leaky(beta=0.9, init_hidden=True)))


def _spikingjelly():
    return pytest.importorskip("spikingjelly.activation_based",
                               reason="SpikingJelly: pip install --no-deps spikingjelly")


SPIKINGJELLY_NODES = [
    ("LIFNode", {"tau": 2.0, "decay_input": True, "v_reset": None}),
    ("LIFNode", {"tau": 3.0, "decay_input": False, "v_reset": None}),
    ("LIFNode", {"tau": 2.0, "decay_input": True, "v_reset": 0.0}),
    ("LIFNode", {"tau": 4.0, "decay_input": False, "v_reset": -0.3}),
    ("IFNode", {"v_reset": None}),
    ("IFNode", {"v_reset": 0.0}),
]


@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize(("node", "options"), SPIKINGJELLY_NODES)
def test_spikingjelly_gives_the_same_spikes(step_mode, node, options):
    sj = _spikingjelly()
    from spikingjelly.activation_based import functional, layer, neuron

    def make():
        return getattr(neuron, node)(step_mode=step_mode, **options)

    gain = 2.0 if options.get("decay_input") else 1.0
    net = nn.Sequential(layer.Conv2d(2, 4, 3, step_mode=step_mode),
                        layer.MaxPool2d(2, step_mode=step_mode), make(),
                        layer.Flatten(step_mode=step_mode),
                        layer.Linear(4 * 5 * 5, 10, step_mode=step_mode), make())
    net = _spiking(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)
    x = _inputs((2, 12, 12), seed=1)
    functional.reset_net(net)
    neurons = [m for m in net if isinstance(m, sj.neuron.BaseNode)]
    if step_mode == "m":
        seen = {id(n): None for n in neurons}
        hooks = [n.register_forward_hook(lambda m, _i, o: seen.__setitem__(id(m), o))
                 for n in neurons]
        with torch.no_grad():
            out = net(x)
        for h in hooks:
            h.remove()
        per_layer = [seen[id(n)] for n in neurons]
    else:
        out, per_layer = _per_step(neurons, lambda t: net(x[t]))
    converted = convert(net)
    assert converted.source == "spikingjelly"
    _check(out, per_layer, converted, x)


def test_spikingjelly_refuses_a_parametric_node():
    sj = _spikingjelly()
    with pytest.raises(ValueError, match=r"layer 1 \(spikingjelly.ParametricLIFNode\)"):
        convert(nn.Sequential(nn.Linear(4, 4), sj.neuron.ParametricLIFNode()))


@pytest.mark.parametrize("reset", ["value", "subtract"])
def test_norse_gives_the_same_spikes(reset):
    norse = pytest.importorskip("norse.torch", reason="Norse: pip install --no-deps norse")
    from norse.torch.functional.reset import reset_subtract, reset_value

    method = reset_value if reset == "value" else reset_subtract

    def cell(**p):
        return norse.LIFBoxCell(norse.LIFBoxParameters(reset_method=method, **p), dt=0.001)

    net = norse.SequentialState(
        nn.Conv2d(2, 4, 3), nn.MaxPool2d(2), cell(tau_mem_inv=torch.tensor(200.0)),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 10),
        cell(tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(0.6)))
    net = _spiking(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(8.0)
    x = _inputs((2, 12, 12), seed=2)
    neurons = [m for m in net if isinstance(m, norse.LIFBoxCell)]
    state = [None]

    def step(t):
        out, state[0] = net(x[t], state[0])
        return out

    out, per_layer = _per_step(neurons, step)
    converted = convert(net)
    assert converted.source == "norse"
    _check(out, per_layer, converted, x)


def test_the_converted_network_trains_in_surrogate_mode_and_leaves_the_source_alone():
    net = _spiking(nn.Sequential(nn.Linear(40, 20), snn.Leaky(beta=0.8, init_hidden=True),
                                 nn.Linear(20, 10), snn.Leaky(beta=0.8, init_hidden=True,
                                                              output=True)))
    before = [p.detach().clone() for p in net.parameters()]
    converted = convert(net, surrogate="atan", slope=3.0)
    assert all(layer.surrogate_name == "atan" and float(layer.slope) == 3.0
               for layer in converted.modules() if isinstance(layer, LIF))
    out = converted(_inputs((40,)))
    assert out.shape == (T, B, 10) and 0 < float(out.detach().mean()) < 1  # graded surrogate spikes
    out.sum(0).logsumexp(1).mean().backward()
    grads = [p.grad for p in converted.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        convert("net")
    with pytest.raises(ValueError, match="no spiking neuron"):
        convert(nn.Sequential(nn.Linear(3, 3)))


def test_every_peer_library_is_installed_where_ci_says_so():
    """``.ci/run`` sets SAST_REQUIRE_PEERS=1: there the parity tests above must run, not skip."""
    import importlib
    import os

    if os.environ.get("SAST_REQUIRE_PEERS") != "1":
        pytest.skip("SAST_REQUIRE_PEERS is not set (CI sets it)")
    for name in ("snntorch", "spikingjelly.activation_based", "norse.torch", "nir", "nirtorch",
                 "tonic"):
        importlib.import_module(name)


def test_spikingjelly_s_own_nmnist_network_gives_the_same_spikes_and_votes():
    """SpikingJelly's NMNISTNet (its model zoo's N-MNIST network: conv + batch norm + LIF,
    dropout, a voting layer), multi-step, against its conversion."""
    _spikingjelly()
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model.parametric_lif_net import NMNISTNet

    torch.manual_seed(0)
    net = NMNISTNet(channels=8, spiking_neuron=neuron.LIFNode)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.2, 0.8)
            elif isinstance(m, nn.Linear):
                m.bias.uniform_(0.5, 1.1)
    net = _spiking(net).eval()
    functional.set_step_mode(net, "m")
    neurons = [m for m in net.modules() if isinstance(m, neuron.LIFNode)]
    spikes = []
    hooks = [n.register_forward_hook(lambda _m, _i, o: spikes.append(o)) for n in neurons]
    x = _inputs((2, 34, 34), seed=5)
    with torch.no_grad():
        votes = net(x)
    for h in hooks:
        h.remove()
    functional.reset_net(net)
    converted = convert(net)
    out = _check(votes, spikes, converted, x)
    assert torch.equal(out, votes) and out.shape == (T, B, 10)


def test_a_module_with_its_own_forward_over_several_children_is_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x) + self.b(x)

    with pytest.raises(ValueError, match="Residual has its own forward over 2 children: pass "
                                         "the Sequential it runs"):
        convert(Residual())
