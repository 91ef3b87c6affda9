import pytest
import torch
from torch import nn

from sast.layers import (
    LIF,
    LeakyReadout,
    PerFrame,
    SpikeCountReadout,
    leaky_readout_weights,
    set_scan_implementation,
    set_slope,
    set_spike_mode,
    spike_mode,
)
from sast.models import ARCHITECTURES, build_model


def test_leaky_readout_equals_explicit_integrator():
    torch.manual_seed(0)
    readout = LeakyReadout(6, 3, beta=0.8).double()
    x = torch.randn(7, 4, 6, dtype=torch.float64)
    v = torch.zeros(4, 3, dtype=torch.float64)
    total = torch.zeros(4, 3, dtype=torch.float64)
    for t in range(7):
        v = 0.8 * v + readout.linear(x[t])
        total += v
    assert torch.allclose(readout(x), total / 7, atol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.95])
def test_readout_weights_closed_form(beta):
    n = 9
    w = leaky_readout_weights(n, beta, torch.float64)
    expected = [sum(beta ** (tau - t) for tau in range(t, n)) / n for t in range(n)]
    assert w.tolist() == pytest.approx(expected, abs=1e-12)


def test_per_frame_step_by_step_equals_all_at_once():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    x = torch.randn(5, 3, 2, 8, 8)
    a = PerFrame(conv, step_by_step=False)(x)
    b = PerFrame(conv, step_by_step=True, channels_last=True)(x)
    assert a.shape == (5, 3, 4, 8, 8)
    assert torch.allclose(a, b, atol=1e-6)


def test_spike_mode_switch_and_context_manager():
    model = build_model("nmnist-mlp", hidden=(8, 8))
    layers = [m for m in model.modules() if isinstance(m, LIF)]
    assert [m.spike_mode for m in layers] == ["surrogate", "surrogate"]
    layers[1].spike_mode = "ste"
    with spike_mode(model, "hard"):
        assert all(m.spike_mode == "hard" for m in layers)
    assert [m.spike_mode for m in layers] == ["surrogate", "ste"]
    with pytest.raises(RuntimeError), spike_mode(model, "hard"):
        raise RuntimeError("boom")
    assert [m.spike_mode for m in layers] == ["surrogate", "ste"]
    set_spike_mode(model, "hard")
    assert all(m.spike_mode == "hard" for m in layers)
    with pytest.raises(ValueError, match="unknown spike mode"):
        set_spike_mode(model, "soft")


def test_hard_mode_changes_the_output_and_surrogate_is_deterministic():
    torch.manual_seed(0)
    model = build_model("nmnist-mlp", hidden=(32,))
    x = (torch.rand(6, 4, 2, 34, 34) < 0.2).float()
    soft = model(x)
    assert torch.equal(soft, model(x))  # no state leaks between calls
    with spike_mode(model, "hard"):
        hard = model(x)
    assert not torch.allclose(soft, hard)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("schedule", ["step", "all"])
def test_architectures_give_logits(arch, schedule):
    torch.manual_seed(0)
    spec = ARCHITECTURES[arch]
    model = build_model(arch, conv_schedule=schedule)
    x = (torch.rand(4, 3, *spec.input_shape) < 0.1).to(torch.uint8)
    logits = model(x)
    assert logits.shape == (3, spec.n_classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_conv_schedules_and_scan_implementations_agree():
    torch.manual_seed(0)
    x = (torch.rand(5, 2, 2, 32, 32) < 0.1).float()
    outs, grads = [], []
    for schedule, impl in [("step", "fused"), ("all", "fused"), ("step", "reference")]:
        torch.manual_seed(1)
        model = build_model("dvsgesture-conv", conv_schedule=schedule)
        set_scan_implementation(model, impl)
        out = model(x)
        out.square().sum().backward()
        outs.append(out)
        grads.append(model[0].module[0].weight.grad)
    for o, g in zip(outs[1:], grads[1:], strict=False):
        assert torch.allclose(outs[0], o, atol=1e-5)
        assert torch.allclose(grads[0], g, atol=1e-4, rtol=1e-4)


def test_spike_count_readout_counts_spikes():
    torch.manual_seed(0)
    readout = SpikeCountReadout(5, 3, spike_mode="hard")
    counts = readout(torch.randn(10, 4, 5) * 3)
    assert torch.equal(counts, counts.round()) and counts.min() >= 0 and counts.max() <= 10
    model = build_model("nmnist-mlp", hidden=(8,), readout="count")
    assert model(torch.zeros(3, 2, 2, 34, 34)).shape == (2, 10)


def test_build_errors():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet")
    with pytest.raises(ValueError, match="unknown readout"):
        build_model("nmnist-mlp", readout="max")
    with pytest.raises(ValueError, match="beta"):
        LIF(beta=1.01)
    with pytest.raises(ValueError, match=r"time-first frames \[T, B, ...\]"):
        build_model("nmnist-mlp")(torch.zeros(2, 10))


def test_membrane_recording():
    lif = LIF()
    lif.record = True
    x = torch.randn(4, 2, 3)
    lif(x)
    assert lif.membrane is not None and lif.membrane.shape == x.shape


def test_batch_first_input_is_refused_where_the_model_can_tell():
    model = build_model("nmnist-mlp", hidden=(8,), time_bins=6)
    time_first = torch.rand(6, 4, 2, 34, 34)
    assert model(time_first).shape == (4, 10)
    with pytest.raises(ValueError, match=r"batch-first\? pass frames.transpose\(0, 1\)"):
        model(time_first.transpose(0, 1))
    with pytest.raises(ValueError, match=r"expects time-first frames \[T, B, 2, 34, 34\]"):
        model(torch.rand(6, 4, 34, 34, 2))
    # without time_bins the number of steps is free (the frame shape is still checked)
    assert build_model("nmnist-mlp", hidden=(8,))(torch.rand(3, 2, 2, 34, 34)).shape == (2, 10)


def test_lif_parameters_are_buffers_saved_with_the_model_and_may_be_per_neuron():
    layer = LIF(beta=0.8, threshold=1.2, surrogate="atan", slope=3.0)
    state = layer.state_dict()
    assert {k: float(v) for k, v in state.items()} == {"beta": 0.8, "threshold": 1.2,
                                                       "slope": 3.0, "input_scale": 1.0}
    other = LIF()
    other.load_state_dict(state)
    assert (float(other.beta), float(other.threshold)) == (0.8, 1.2)
    assert other.surrogate.name == "sigmoid" and other.surrogate.slope == 3.0  # family: config
    # a checkpoint written before they were buffers keeps the values the config built
    old = LIF(beta=0.5)
    old.load_state_dict({})
    assert float(old.beta) == 0.5
    old.threshold = 2.0  # numbers may be assigned
    assert isinstance(old.threshold, torch.Tensor) and float(old.threshold) == 2.0

    torch.manual_seed(0)
    beta = torch.tensor([0.5, 0.9, 0.0])
    threshold = torch.tensor([1.0, 0.5, 2.0])
    per_neuron = LIF(beta=beta, threshold=threshold, spike_mode="hard")
    current = torch.rand(7, 2, 3, dtype=torch.float64) * 2
    spikes = per_neuron(current)
    u, s, expected = torch.zeros(2, 3), torch.zeros(2, 3), []
    for t in range(7):  # the dynamics by hand, neuron by neuron
        u = beta * u + current[t] - threshold * s
        s = (u > threshold).double()
        expected.append(s)
    assert spikes.dtype == torch.float64 and torch.equal(spikes, torch.stack(expected))
    assert "per neuron (3,)" in repr(per_neuron)


@pytest.mark.parametrize("per_neuron", [False, True])
def test_compiled_lif_net_has_no_graph_break_and_follows_its_slope(per_neuron):
    torch.manual_seed(0)
    model = build_model("dvsgesture-conv", (2, 8, 8), 11, channels=(4, 8))
    if per_neuron:
        lif = next(m for m in model.modules() if isinstance(m, LIF))
        lif.threshold = torch.linspace(0.5, 1.5, 4, dtype=torch.float64).view(4, 1, 1)
    set_scan_implementation(model, "reference")
    x = 2.0 * torch.rand(5, 3, 2, 8, 8)
    torch._dynamo.reset()
    assert torch._dynamo.explain(model)(x).graph_break_count == 0
    compiled = torch.compile(model, backend="eager", dynamic=False)
    torch.testing.assert_close(compiled(x), model(x))
    set_slope(model, 0.5)   # β, ϑ and k are compile-time constants: a change must reach the graph
    torch.testing.assert_close(compiled(x), model(x))
    torch._dynamo.reset()


def test_lif_input_scale_scales_the_current_and_may_be_per_neuron():
    torch.manual_seed(0)
    x = torch.randn(7, 3, 4) * 3
    for mode in ("surrogate", "hard"):
        scaled = LIF(beta=0.7, input_scale=0.3, spike_mode=mode)(x)
        assert torch.allclose(scaled, LIF(beta=0.7, spike_mode=mode)(0.3 * x), atol=1e-6)
    alpha = torch.tensor([0.1, 0.5, 1.0, 2.0])
    per = LIF(beta=0.7, input_scale=alpha, spike_mode="hard")
    assert torch.equal(per(x), LIF(beta=0.7, spike_mode="hard")(x * alpha))
    assert "input_scale=per neuron (4,)" in repr(per)
    before = LIF(beta=0.7, reset_before_leak=True)
    assert "reset_before_leak=True" in repr(before) and "reset_before_leak" not in repr(LIF())
    with pytest.raises(ValueError, match="input_scale"):
        LIF(input_scale=float("nan"))
