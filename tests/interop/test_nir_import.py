"""sast.from_nir: NIR graphs — sast's own, Norse's, hand-built snnTorch-style ones — as sast
networks, against the runtimes of the libraries that read them."""

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

import sast
from sast.interop.nir import to_nir
from sast.interop.nir_import import LeakyIntegrator
from sast.layers import LIF

needs_nir = pytest.mark.skipif(importlib.util.find_spec("nir") is None,
                               reason="the nir package is not installed (pip install 'sast[nir]')")


def _hard(model, x):
    with sast.spike_mode(model, "hard"), torch.no_grad():
        return model(x)


def _spiking_build_model(readout, seed=0):
    torch.manual_seed(seed)
    model = sast.build_model("nmnist-conv", channels=(4, 8), hidden=(16,), reset="zero",
                             readout=readout)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


@needs_nir
@pytest.mark.parametrize(("readout", "expected"), [("count", "count"), ("leaky", "mean")])
def test_sast_s_own_graphs_come_back_as_the_same_network(readout, expected):
    model = _spiking_build_model(readout)
    back = sast.from_nir(to_nir(model, dt=2e-4))
    assert back.readout == expected and back.input_shape == (2, 34, 34)
    x = (torch.rand(10, 4, 2, 34, 34, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    ours = _hard(model, x)
    theirs = _hard(sast.SpikingClassifier(back), x)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    lifs = [m for m in back.modules() if isinstance(m, LIF)]
    assert all(m.reset == "zero" for m in lifs)
    assert float(lifs[0].beta) == pytest.approx(0.9, abs=1e-12)
    assert isinstance(back[-1], LeakyIntegrator) == (readout == "leaky")


def _norse_pair():
    norse = pytest.importorskip("norse.torch", reason="Norse: pip install --no-deps norse")
    torch.manual_seed(0)
    net = norse.SequentialState(nn.Linear(8, 32), norse.LIFBoxCell(), nn.Linear(32, 4),
                                norse.LIFBoxCell())
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(6.0)
                m.bias.uniform_(1.0, 2.5)
    return norse, norse.to_nir(net, torch.zeros(1, 8))


@needs_nir
def test_a_norse_exported_graph_spikes_as_norse_s_importer_runs_it():
    """Norse writes τ = dt·τ_mem (its dt = 1 ms) and reads the graph back with the dt it is
    given; both importers simulate it with dt = 1 µs here (dt/τ = 0.1)."""
    norse, graph = _norse_pair()
    dt = 1e-6
    theirs_net = norse.from_nir(graph, dt=dt)
    hidden = []
    hook = theirs_net._modules["1"].register_forward_hook(lambda m, i, o: hidden.append(o[0]))
    x = (torch.rand(20, 5, 8, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    state, out = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state = theirs_net(x[t], state)
            out.append(y)
    hook.remove()
    theirs, theirs_hidden = torch.stack(out), torch.stack(hidden)
    ours_net = sast.from_nir(graph, dt=dt)
    with sast.spike_mode(ours_net, "hard"), torch.no_grad():
        ours_hidden = ours_net[1](ours_net[0](x))
        ours = ours_net(x)
    for mine, norse_spikes in ((ours_hidden, theirs_hidden), (ours, theirs)):
        assert 0.01 < float(norse_spikes.mean()) < 0.99
        assert float((mine != norse_spikes).float().mean()) <= 1e-4


@needs_nir
def test_an_snntorch_style_graph_spikes_as_snntorch_s_importer_runs_it():
    """The graph snnTorch's exporter writes for Leaky(reset_mechanism="zero") — τ = dt/(1 − β),
    R = τ/dt, v_leak = v_reset = 0, per-neuron arrays — built with nir's own classes (snnTorch
    1.0's export_to_nir fails nir 1.0.8's type inference), read by snnTorch's import_from_nir."""
    nir = pytest.importorskip("nir")
    pytest.importorskip("snntorch", reason="snnTorch is in the test extra")
    from snntorch.import_nir import import_from_nir

    from .test_nir import run_stepwise

    rng = np.random.default_rng(0)
    dt, betas, sizes = 1e-4, (0.9, 0.8), (8, 24, 5)
    nodes = {"input": nir.Input(input_type=np.array([sizes[0]]))}
    for i, beta in enumerate(betas):
        w = rng.normal(0, 1.2, (sizes[i + 1], sizes[i])).astype(np.float32)
        nodes[f"fc{i}"] = nir.Affine(weight=w, bias=rng.uniform(0.2, 0.6, sizes[i + 1])
                                     .astype(np.float32))
        n = sizes[i + 1]
        tau = np.full(n, dt / (1 - beta))
        nodes[f"lif{i}"] = nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(n),
                                   v_threshold=np.ones(n), v_reset=np.zeros(n))
    nodes["output"] = nir.Output(output_type=np.array([sizes[-1]]))
    names = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:], strict=True)))
    x = (torch.rand(15, 6, sizes[0], generator=torch.Generator().manual_seed(3)) < 0.4).float()
    out, spikes, _ = run_stepwise(import_from_nir(graph), x)
    ours_net = sast.from_nir(graph, dt=dt)
    with sast.spike_mode(ours_net, "hard"), torch.no_grad():
        ours = [ours_net[1](ours_net[0](x))]
        ours.append(ours_net(x))
    for mine, theirs in zip(ours, spikes, strict=True):
        assert 0.01 < float(theirs.mean()) < 0.99
        assert float((mine.double().numpy() != theirs).mean()) <= 1e-4


@needs_nir
def test_broken_cyclic_branching_and_unsupported_graphs_are_refused(tmp_path):
    import nir

    broken = tmp_path / "broken.nir"
    broken.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(ValueError, match=r"broken.nir: not a NIR file"):
        sast.from_nir(broken)
    with pytest.raises(FileNotFoundError, match="missing.nir: no such NIR file"):
        sast.from_nir(tmp_path / "missing.nir")

    def lif(n=3):
        return nir.LIF(tau=np.full(n, 1e-3), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n), v_reset=np.zeros(n))

    def graph(nodes, edges):  # NIRGraph adds nodes to the dict it is given: pass a copy
        return nir.NIRGraph(nodes=dict(nodes), edges=edges)

    base = {"input": nir.Input(input_type=np.array([3])),
            "fc": nir.Affine(weight=np.eye(3, dtype=np.float32), bias=np.zeros(3, np.float32)),
            "lif": lif(), "output": nir.Output(output_type=np.array([3]))}
    chain = [("input", "fc"), ("fc", "lif"), ("lif", "output")]
    with pytest.raises(ValueError, match="cyclic .the edge 'lif' → 'fc' closes a loop"):
        sast.from_nir(graph(base, [("input", "fc"), ("fc", "lif"), ("lif", "fc")]), dt=1e-4)
    with pytest.raises(ValueError, match="node 'fc' has 2 successors"):
        sast.from_nir(graph({**base, "lif2": lif()},
                            chain + [("fc", "lif2"), ("lif2", "output")]), dt=1e-4)
    cuba = nir.CubaLIF(tau_syn=np.full(3, 1e-3), tau_mem=np.full(3, 1e-3), r=np.ones(3),
                       v_leak=np.zeros(3), v_threshold=np.ones(3), v_reset=np.zeros(3))
    with pytest.raises(ValueError, match="node 'lif' is a CubaLIF, which from_nir does not "
                                         "read. Supported: Input, Output, Affine"):
        sast.from_nir(graph({**base, "lif": cuba}, chain), dt=1e-4)
    with pytest.raises(ValueError, match="metadata holds no dt: pass dt="):
        sast.from_nir(graph(base, chain))
    leaky = {**base, "lif": nir.LIF(tau=np.full(3, 1e-3), r=np.ones(3), v_leak=np.full(3, 0.2),
                                    v_threshold=np.ones(3), v_reset=np.zeros(3))}
    with pytest.raises(ValueError, match="node 'lif' .LIF.: v_leak must equal v_reset"):
        sast.from_nir(graph(leaky, chain), dt=1e-4)
    with pytest.raises(ValueError, match="shorter than dt"):
        sast.from_nir(graph(base, chain), dt=1e-2)
