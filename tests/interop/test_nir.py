"""NIR export: the graph's structure and parameters after a write/read round trip, an
independent NumPy interpreter of the file (NIR's equations, forward Euler) against sast's hard
mode, the refusal of subtractive reset, the missing extra, `sast export`; and the file run by a
third-party runtime (snnTorch's NIR importer) on real N-MNIST recordings.

Exactness. sast's hard mode and a NIR runtime do the same arithmetic up to the order of
operations: sast runs each Linear/Conv over all T·B frames at once and updates the membrane as
β·u + I in one fused multiply-add, while the file holds τ and R from which a runtime computes
1 − dt/τ and (dt/τ)·R, each within an ulp of β and 1. In float64 these differences are ~1e-16
relative, so every spike agrees exactly as long as no membrane lies within 1e-9 of its
threshold — each comparison checks that margin first — and membranes and logits agree to 1e-9.
In float32 (how the imported network runs by default) the same differences are ~1e-7 relative
and may flip a spike whose membrane is that close to threshold: there the tests ask for equal
predictions and nearly all spikes equal.
"""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

import sast
from sast.cli import main
from sast.interop.nir import DEFAULT_DT, SubtractiveResetError, export_nir, lif_parameters, to_nir
from sast.layers import lif_attributes, spike_mode
from sast.models import fold_batchnorm

from ..deploy.test_deploy import make_model, random_frames

torch.set_num_threads(1)

needs_nir = pytest.mark.skipif(importlib.util.find_spec("nir") is None,
                               reason="the nir package is not installed "
                                      "(pip install 'sast[nir]')")

NETWORKS = [
    # arch, input shape, build options
    ("nmnist-mlp", (2, 6, 6), dict(hidden=(12, 8))),
    ("nmnist-mlp", (2, 6, 6), dict(hidden=(9,), readout="count", readout_beta=0.5)),
    ("nmnist-conv", (2, 9, 9), dict(channels=(3, 4))),
    ("nmnist-conv", (2, 10, 7), dict(channels=(3,), hidden=(6,), readout="count")),
    ("nmnist-conv", (2, 8, 8), dict(channels=(3, 4), norm="batch", readout_beta=0.7)),
]


def zero_reset_model(case, per_neuron=False, gain=6.0):
    arch, shape, opts = NETWORKS[case]
    model = make_model(arch, shape, seed=case, gain=gain, per_neuron=per_neuron, reset="zero",
                       **opts)
    return fold_batchnorm(model).eval()


def read_back(graph, tmp_path):
    import nir

    path = tmp_path / "net.nir"
    nir.write(path, graph)
    return nir.read(path)


def chain(graph):
    """The node names from the Input to the Output along the edges (the graph is a chain)."""
    succ = dict(graph.edges)
    assert len(succ) == len(graph.edges), "a node with two outgoing edges"
    names = ["input"]
    while names[-1] in succ:
        names.append(succ[names[-1]])
    assert names[-1] == "output" and set(names) == set(graph.nodes)
    return names


# --- an independent interpreter of a NIR file: NIR's equations, forward Euler, NumPy float64 ---


def nir_run(graph, frames):
    """Run a chain-shaped NIR graph on ``frames`` [T, B, P, H, W] step by step; returns the
    Output stream [T, B, ...] and, per LIF node, (membrane before reset, spikes) [T, B, ...]."""
    dt = float(graph.metadata["dt"])
    names = chain(graph)
    state = {}
    out, trace = [], {n: ([], []) for n in names if type(graph.nodes[n]).__name__ == "LIF"}
    for x_t in np.asarray(frames, dtype=np.float64):
        x = x_t
        for name in names:
            node = graph.nodes[name]
            kind = type(node).__name__
            if kind in ("Input", "Output"):
                continue
            if kind == "Affine":
                x = x @ node.weight.astype(np.float64).T + node.bias
            elif kind == "Conv2d":
                assert tuple(node.stride) == (1, 1) and tuple(node.dilation) == (1, 1)
                assert node.groups == 1
                ph, pw = node.padding
                xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
                w = node.weight.astype(np.float64)
                win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))
                x = np.einsum("nchwij,ocij->nohw", win, w) + node.bias[:, None, None]
            elif kind == "AvgPool2d":
                (k, _), (s, _) = node.kernel_size, node.stride
                assert k == s and not np.any(node.padding)
                h, w = x.shape[2] // k, x.shape[3] // k
                x = x[:, :, : h * k, : w * k].reshape(*x.shape[:2], h, k, w, k).mean((3, 5))
            elif kind == "Flatten":
                assert node.start_dim == 0 and node.end_dim == -1  # all but the batch
                x = x.reshape(len(x), -1)
            elif kind in ("LIF", "LI"):
                v = state.get(name, np.zeros_like(x))
                v = v + (dt / node.tau) * ((node.v_leak - v) + node.r * x)
                if kind == "LIF":
                    z = (v > node.v_threshold).astype(np.float64)
                    trace[name][0].append(v)
                    trace[name][1].append(z)
                    v = np.where(z > 0, node.v_reset, v)
                    x = z
                else:
                    x = v
                state[name] = v
            else:
                raise AssertionError(f"unexpected node {kind}")
        out.append(x)
    return np.stack(out), {n: (np.stack(u), np.stack(s)) for n, (u, s) in trace.items()}


def sast_hard_run(model, frames):
    """sast's hard mode in float64: logits, and per LIF layer (membrane, spikes) [T, B, ...]."""
    model = model.double()
    x = torch.as_tensor(np.asarray(frames), dtype=torch.float64)
    with lif_attributes(model, "membrane", record=True, spike_mode="hard") as layers, \
            torch.no_grad():
        logits = model(x)
        states = [(layer.membrane.numpy().copy(),
                   (layer.membrane > layer.threshold).double().numpy())
                  for layer in layers]
    return logits.numpy(), states, [np.broadcast_to(layer.threshold.numpy(),
                                                    states[i][0].shape[2:])
                                    for i, layer in enumerate(layers)]


def assert_margin(states, thresholds, margin=1e-9):
    """The premise of exact spike agreement: no membrane within ``margin`` of threshold."""
    for (u, _), theta in zip(states, thresholds, strict=True):
        assert float(np.abs(u - theta).min()) > margin


# --- structure and parameters ------------------------------------------------------------


@needs_nir
@pytest.mark.parametrize("case", range(len(NETWORKS)))
@pytest.mark.parametrize("per_neuron", [False, True])
def test_round_trip_keeps_structure_and_parameters(case, per_neuron, tmp_path):
    import nir

    model = zero_reset_model(case, per_neuron)
    graph = read_back(to_nir(model, dt=2e-3, time_steps=7), tmp_path)
    names = chain(graph)
    kinds = [type(graph.nodes[n]).__name__ for n in names]
    readout = NETWORKS[case][2].get("readout", "leaky")
    is_conv = NETWORKS[case][0] == "nmnist-conv"
    n_hidden = len(NETWORKS[case][2].get("hidden", ())) + len(NETWORKS[case][2].get(
        "channels", ()))
    assert kinds[0] == "Input" and kinds[-1] == "Output"
    assert kinds[-2] == ("LI" if readout == "leaky" else "LIF")
    assert kinds.count("LIF") == n_hidden + (readout == "count")
    assert kinds.count("Affine") == len(NETWORKS[case][2].get("hidden", ())) + 1
    assert kinds.count("Conv2d") == len(NETWORKS[case][2].get("channels", ()))
    assert kinds.count("AvgPool2d") == (len(NETWORKS[case][2]["channels"]) if is_conv else 0)
    assert kinds.count("Flatten") == 1
    assert graph.edges == list(zip(names[:-1], names[1:], strict=True)) or \
        sorted(graph.edges) == sorted(zip(names[:-1], names[1:], strict=True))
    assert list(graph.nodes["input"].input_type["input"]) == list(NETWORKS[case][1])
    assert graph.metadata["dt"] == 2e-3 and graph.metadata["time_steps"] == 7
    assert graph.metadata["readout"] == readout and graph.metadata["reset"] == "zero"
    assert graph.metadata["producer"] == "sast"

    # synaptic parameters: the model's own, exactly (batch norm folded)
    synaptic = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    nodes = [graph.nodes[n] for n in names if kinds[names.index(n)] in ("Affine", "Conv2d")]
    assert len(nodes) == len(synaptic)
    for node, layer in zip(nodes, synaptic, strict=True):
        assert node.weight.dtype == np.float32
        np.testing.assert_array_equal(node.weight, layer.weight.detach().numpy())
        np.testing.assert_array_equal(node.bias, layer.bias.detach().numpy())
        if isinstance(node, nir.Conv2d):
            assert tuple(node.stride) == (1, 1) and tuple(node.padding) == (1, 1)
            assert tuple(node.dilation) == (1, 1) and node.groups == 1
    for n in names:
        node = graph.nodes[n]
        if isinstance(node, nir.AvgPool2d):
            assert list(node.kernel_size) == [2, 2] == list(node.stride)
            assert list(node.padding) == [0, 0]
        if isinstance(node, nir.Flatten):
            assert (node.start_dim, node.end_dim) == (0, -1)

    # neurons: β = 1 − dt/τ, (dt/τ)·R = 1, v_leak = v_reset = 0, v_threshold = ϑ
    lifs = [m for m in model.modules() if isinstance(m, sast.LIF)]
    neuron_nodes = [graph.nodes[n] for n in names if kinds[names.index(n)] in ("LIF", "LI")]
    betas = [layer.beta.numpy() for layer in lifs]
    if readout == "leaky":
        betas.append(np.asarray(model[-1].beta))
    assert len(neuron_nodes) == len(betas)
    for i, (node, beta) in enumerate(zip(neuron_nodes, betas, strict=True)):
        shape = tuple(node.tau.shape)
        b = np.broadcast_to(beta, shape)
        np.testing.assert_allclose(1.0 - 2e-3 / node.tau, b, rtol=1e-15, atol=1e-15)
        np.testing.assert_allclose(2e-3 / node.tau * node.r, 1.0, rtol=1e-15)
        assert not np.any(node.v_leak) and node.tau.dtype == np.float64
        if isinstance(node, nir.LIF):
            assert not np.any(node.v_reset)
            np.testing.assert_array_equal(node.v_threshold,
                                          np.broadcast_to(lifs[i].threshold.numpy(), shape))
            assert node.metadata["reset"] == "zero"
        if beta.ndim == 0:
            assert float(node.metadata["beta"]) == float(beta)


def test_lif_parameters_discretise_beta():
    p = lif_parameters(np.array([0.0, 0.5, 0.9]), 1e-3)
    np.testing.assert_allclose(p["tau"], [1e-3, 2e-3, 1e-2])
    np.testing.assert_allclose(p["r"], [1.0, 2.0, 10.0])
    with pytest.raises(ValueError, match="beta"):
        lif_parameters(np.array([1.0]), 1e-3)
    with pytest.raises(ValueError, match="dt"):
        lif_parameters(np.array([0.5]), 0.0)


# --- the file, interpreted independently, computes what sast's hard mode computes ---------


@needs_nir
@pytest.mark.parametrize("case", range(len(NETWORKS)))
@pytest.mark.parametrize("per_neuron", [False, True])
def test_numpy_interpretation_of_the_file_reproduces_hard_mode(case, per_neuron, tmp_path):
    model = zero_reset_model(case, per_neuron)
    graph = read_back(to_nir(model), tmp_path)
    frames = random_frames((9, 4, *NETWORKS[case][1]), seed=case)
    logits, states, thresholds = sast_hard_run(model, frames)
    assert_margin(states, thresholds)
    out, trace = nir_run(graph, frames)
    lif_names = [n for n in chain(graph) if n in trace]
    assert len(lif_names) == len(states)
    for name, (u, s) in zip(lif_names, states, strict=True):
        np.testing.assert_array_equal(trace[name][1], s)          # every spike, exactly
        np.testing.assert_allclose(trace[name][0], u, rtol=0, atol=1e-9)
        assert 0 < s.mean() < 1                                    # not vacuous
    readout = graph.metadata["readout"]
    ours = out.mean(0) if readout == "leaky" else out.sum(0)
    np.testing.assert_allclose(ours, logits, rtol=0, atol=1e-9)


@needs_nir
def test_subtractive_reset_is_refused_with_the_way_out():
    model = sast.build_model("nmnist-mlp", (2, 6, 6), hidden=(4,))
    with pytest.raises(SubtractiveResetError, match="resets by subtraction") as err:
        to_nir(model)
    assert "--reset zero" in str(err.value) and "v_reset" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_importing_sast_does_not_import_nir():
    code = ("import sys, sast, sast.cli, sast.deploy, sast.interop.nir; "
            "assert 'nir' not in sys.modules, 'nir was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_missing_nir_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "nir", None)  # import nir → ImportError
    model = sast.build_model("nmnist-mlp", (2, 6, 6), hidden=(4,), reset="zero")
    with pytest.raises(ImportError, match=r"pip install 'sast\[nir\]'"):
        to_nir(model)
    (tmp_path / "config.json").write_text("{}")  # a run folder, as far as export can tell
    assert main(["export", str(tmp_path), "--format", "nir", str(tmp_path / "x.nir")]) == 2
    assert "pip install 'sast[nir]'" in capsys.readouterr().err


# --- `sast export` ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    cfg = sast.RunConfig(method="surrogate", reset="zero", epochs=1, max_train_samples=200,
                         hidden=(24,), time_bins=8, batch_size=32, seed=1)
    sast.fit(cfg, run, progress=False)
    return run


@needs_nir
def test_cli_export_writes_the_run_as_a_nir_file(zero_run, tmp_path, capsys):
    import nir

    out = tmp_path / "net.nir"
    assert main(["export", str(zero_run), "--format", "nir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "LIF" in printed and "dt" in printed
    graph = nir.read(out)
    assert graph.metadata["time_steps"] == 8 and graph.metadata["dt"] == DEFAULT_DT
    cfg, model = sast.load_run(zero_run)
    from sast.runs.splits import prepare_data

    frames, labels = prepare_data(cfg).test.batch(slice(0, 16))
    frames = frames.transpose(0, 1).numpy()
    logits, states, thresholds = sast_hard_run(model, frames)
    out_stream, _ = nir_run(graph, frames)
    np.testing.assert_allclose(out_stream.mean(0), logits, rtol=0, atol=1e-9)
    assert (out_stream.mean(0).argmax(1) == logits.argmax(1)).all()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_export_refuses_a_subtractive_run_and_bad_arguments(tmp_path, capsys):
    run = tmp_path / "run"
    sast.fit(sast.RunConfig(method="surrogate", epochs=1, max_train_samples=60, hidden=(8,),
                            time_bins=4, batch_size=32), run, progress=False)
    out = tmp_path / "net.nir"
    if importlib.util.find_spec("nir") is not None:
        assert main(["export", str(run), "--format", "nir", str(out)]) == 2
        err = capsys.readouterr().err
        assert "reset: subtract" in err and "--reset zero" in err and not out.exists()
    with pytest.raises(SystemExit):
        main(["export", str(run), "--format", "onnx", str(out)])
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), str(out)]) == 2
    assert "not a run folder" in capsys.readouterr().err


@needs_nir
def test_export_nir_writes_atomically_to_a_path(tmp_path):
    import nir

    model = zero_reset_model(0)
    graph = export_nir(model, tmp_path / "a.nir", dt=1e-3, time_steps=5)
    again = nir.read(tmp_path / "a.nir")
    assert set(again.nodes) == set(graph.nodes) and again.metadata["dt"] == 1e-3
    assert [p.name for p in tmp_path.iterdir()] == ["a.nir"]


# --- a third-party runtime: snnTorch's NIR importer on real N-MNIST ------------------------
#
# snnTorch's importer maps Affine, Conv2d, AvgPool2d, Flatten and LIF (to snn.Leaky with
# β = 1 − dt/τ for its fixed dt = 1e-4 s, reset_mechanism="zero", reset_delay=False: the spike
# and the reset in the same step, as NIR's equations say). It has no LI, so for the leaky
# readout the test maps that one node itself, from NIR's equation by forward Euler. Samples go
# in one at a time, step by step: NIR shapes have no batch dimension, and the importer turns
# Flatten(start_dim=0) into torch.nn.Flatten(0, −1), which flattens a whole sample.

needs_snntorch = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("nir", "nirtorch", "snntorch")),
    reason="the test-only NIR runtime is not installed: pip install nir nirtorch snntorch "
           "(all in the test extra)")

RUNTIME_NETWORKS = [
    ("nmnist-mlp", dict(hidden=(32,), readout="count")),
    ("nmnist-mlp", dict(hidden=(32,), beta=0.8, readout_beta=0.7)),
    ("nmnist-conv", dict(channels=(4, 8))),
    ("nmnist-conv", dict(channels=(4,), hidden=(16,), readout="count", beta=0.85)),
]


class NIRLeakyIntegrator(torch.nn.Module):
    """NIR's LI node, τ·dv/dt = (v_leak − v) + R·I, by forward Euler with the graph's dt:
    v ← v + (dt/τ)·((v_leak − v) + R·I). Written here from NIR's equation: snnTorch's
    importer has no LI."""

    def __init__(self, node, dt):
        super().__init__()
        self.register_buffer("rate", torch.as_tensor(dt / node.tau))
        self.register_buffer("r", torch.as_tensor(node.r))
        self.register_buffer("v_leak", torch.as_tensor(node.v_leak))

    def forward(self, x, state=None):
        v = torch.zeros_like(x) if state is None else state
        v = v + self.rate * ((self.v_leak - v) + self.r * x)
        return v, v


def snntorch_network(graph, dtype):
    """The graph as snnTorch modules — every node through snnTorch's own NIR node converter,
    the one ``import_from_nir`` uses, LI through :class:`NIRLeakyIntegrator` — wired by
    nirtorch in ``dtype`` (``import_from_nir`` itself always loads float32)."""
    import nir
    import nirtorch
    from snntorch.import_nir import _nir_to_snntorch_module

    dt = float(graph.metadata["dt"])
    node_map = {kind: (lambda n: _nir_to_snntorch_module(n, init_hidden=True))
                for kind in (nir.Affine, nir.Conv2d, nir.Flatten, nir.AvgPool2d, nir.LIF)}
    node_map[nir.LI] = lambda n: NIRLeakyIntegrator(n, dt)
    return nirtorch.nir_to_torch(graph, node_map, dtype=dtype)


def run_stepwise(net, frames):
    """``frames`` [T, B, P, H, W] through ``net`` one sample at a time, step by step, its
    neurons back at zero before each sample. Returns the Output stream [T, B, ...] and each
    snn.Leaky layer's spikes [T, B, ...] (float64)."""
    import snntorch as snn

    leaks = [m for m in net.modules() if isinstance(m, snn.Leaky)]
    dtype = next(net.parameters()).dtype
    spikes = {id(m): [] for m in leaks}
    hooks = [m.register_forward_hook(lambda mod, i, o: spikes[id(mod)].append(o.detach()))
             for m in leaks]
    # snnTorch emits spikes as float32 0/1 whatever its dtype; a 0/1 value is the same in any
    hooks += [m.register_forward_pre_hook(lambda mod, args: tuple(a.to(mod.weight.dtype)
                                                                  for a in args))
              for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    n_steps, batch = frames.shape[:2]
    outputs = []
    try:
        with torch.no_grad():
            for b in range(batch):
                for m in leaks:
                    m.mem = torch.zeros(0)  # re-initialised to zeros of the input's shape
                state, stream = None, []
                for t in range(n_steps):
                    y, state = net(frames[t, b].to(dtype), state)
                    stream.append(y.detach().double())
                outputs.append(torch.stack(stream))
    finally:
        for h in hooks:
            h.remove()
    per_layer = [torch.stack(spikes[id(m)]).reshape(batch, n_steps, *spikes[id(m)][0].shape)
                 .transpose(0, 1).double().numpy() for m in leaks]
    return torch.stack(outputs, 1).numpy(), per_layer, leaks


def runtime_case(case):
    from ..deploy.test_deploy import nmnist_samples

    frames, _ = nmnist_samples(n_per_digit=2, digits=range(10))  # uint8 [T = 10, 20, 2, 34, 34]
    arch, opts = RUNTIME_NETWORKS[case]
    return frames, make_model(arch, (2, 34, 34), seed=0, gain=4.0, reset="zero", **opts)


@needs_snntorch
@pytest.mark.parametrize("case", range(len(RUNTIME_NETWORKS)))
def test_snntorch_runs_the_exported_file_as_sast_does_in_float64(case, tmp_path):
    """Every spike of every layer equal, logits to 1e-9: the same arithmetic in float64 up to
    operation order (see the module docstring), checked against a 1e-9 threshold margin."""
    import nir

    frames, model = runtime_case(case)
    path = tmp_path / "net.nir"
    export_nir(model, path, time_steps=frames.shape[0])
    graph = nir.read(path)
    net = snntorch_network(graph, torch.float64)
    out, spikes, leaks = run_stepwise(net, frames)
    beta = RUNTIME_NETWORKS[case][1].get("beta", 0.9)
    for m in leaks:  # the importer read β, ϑ and the reset back as trained
        torch.testing.assert_close(m.beta, torch.full_like(m.beta, beta), rtol=1e-15, atol=0)
        assert float(m.threshold) == 1.0 and m.reset_mechanism == "zero"
    logits, states, thresholds = sast_hard_run(model, frames.numpy())
    assert_margin(states, thresholds)
    assert len(spikes) == len(states)
    for theirs, (_, ours) in zip(spikes, states, strict=True):
        np.testing.assert_array_equal(theirs, ours)
        assert 0 < ours.mean() < 1
    readout = graph.metadata["readout"]
    theirs = out.mean(0) if readout == "leaky" else out.sum(0)
    np.testing.assert_allclose(theirs, logits, rtol=0, atol=1e-9)


@needs_snntorch
@pytest.mark.parametrize("case", [i for i, (_, o) in enumerate(RUNTIME_NETWORKS)
                                  if o.get("readout") == "count"])
def test_snntorch_import_from_nir_as_is_predicts_as_sast(case, tmp_path):
    """snnTorch's public importer, untouched (spike-count readouts: it has no LI), loads
    float32, so β = 1 − dt/τ and the currents carry float32 rounding (~1e-7 relative) that
    could flip a spike within that distance of threshold: predictions must agree, and all but
    0.1 % of spikes."""
    import nir
    from snntorch.import_nir import import_from_nir

    frames, model = runtime_case(case)
    path = tmp_path / "net.nir"
    export_nir(model, path)
    net = import_from_nir(nir.read(path))
    out, spikes, _ = run_stepwise(net, frames)
    logits, states, _ = sast_hard_run(model, frames.numpy())
    for theirs, (_, ours) in zip(spikes, states, strict=True):
        assert float((theirs == ours).mean()) >= 0.999
    assert (out.sum(0).argmax(1) == logits.argmax(1)).all()


@needs_snntorch
def test_a_converted_trained_snntorch_network_exported_to_nir_predicts_in_snntorch_as_in_sast(
        tmp_path):
    """snnTorch network → sast.convert → sast.train_model (SAST) → NIR file → snnTorch's own
    import_from_nir: the same predictions, and all but 0.1 % of the spikes (float32 rounding
    near threshold)."""
    import nir
    import snntorch as snn
    from snntorch.import_nir import import_from_nir

    from ..deploy.test_deploy import nmnist_samples

    frames, labels = nmnist_samples(n_per_digit=3, digits=range(10))
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(2 * 34 * 34, 48),
        snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero"),
        torch.nn.Linear(48, 10),
        snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero", output=True))
    model = sast.convert(net)
    sast.train_model(model, (frames, torch.as_tensor(labels)), epochs=2, rho=0.05,
                     init="firing-rate", batch_size=10, progress=False, log=lambda *_: None)
    path = tmp_path / "net.nir"
    sast.export_nir(model, path, input_shape=(2, 34, 34), time_steps=frames.shape[0])
    theirs = import_from_nir(nir.read(path))
    out, spikes, _ = run_stepwise(theirs, frames.float())
    x = frames.float()
    with spike_mode(model, "hard"), torch.no_grad():
        hidden = model[2](model[1](model[0](x)))
        ours = model(x)
    assert len(spikes) == 2
    for mine, theirs_spikes in zip((hidden, ours), spikes, strict=True):
        assert float((mine.double().numpy() == theirs_spikes).mean()) >= 0.999
        assert 0 < float(mine.mean()) < 1
    assert (out.sum(0).argmax(1) == ours.sum(0).argmax(1).numpy()).all()


@needs_nir
def test_a_converted_network_without_an_input_shape_or_with_max_pooling_is_refused():
    snn = pytest.importorskip("snntorch", reason="snnTorch is in the test extra")
    net = sast.convert(torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 5), torch.nn.MaxPool2d(2),
        snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero")))
    with pytest.raises(ValueError, match=r"pass input_shape=\(P, H, W\)"):
        to_nir(net)
    with pytest.raises(ValueError, match="cannot deploy a MaxPool2d layer"):
        to_nir(net, input_shape=(2, 34, 34))
