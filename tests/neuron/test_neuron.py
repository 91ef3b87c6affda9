import math

import pytest
import torch

from sast.neuron import lif_scan, lif_scan_reference
from sast.surrogate import (
    SURROGATES,
    AtanSurrogate,
    ErfSurrogate,
    SigmoidSurrogate,
    get_surrogate,
)

SCANS = [lif_scan, lif_scan_reference]
CURRENT = [0.6, 0.6, 0.6, 0.0, 1.2]


def hand_trajectory(current, beta, threshold, spike_fn, reset="subtract"):
    """The LIF recurrence in plain Python floats, written out independently: reset by
    subtraction, u = β·u' + I − ϑ·s', or to zero, u = β·(1 − s')·u' + I."""
    u_prev, s_prev, us, ss = 0.0, 0.0, [], []
    for i in current:
        if reset == "zero":
            u = beta * (1.0 - s_prev) * u_prev + i
        else:
            u = beta * u_prev + i - threshold * s_prev
        s = spike_fn(u - threshold)
        us.append(u)
        ss.append(s)
        u_prev, s_prev = u, s
    return us, ss


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("mode", ["hard", "ste"])
def test_hard_and_ste_forward_match_hand_computed_trajectory(scan, mode):
    # β = 0.5, ϑ = 1: u = 0.6, 0.9, 1.05 (spike), 0.525 − 1 = −0.475, −0.2375 + 1.2 = 0.9625
    x = torch.tensor(CURRENT, dtype=torch.float64).reshape(5, 1, 1)
    s, u = scan(x, 0.5, 1.0, "sigmoid", mode)
    assert u.flatten().tolist() == pytest.approx([0.6, 0.9, 1.05, -0.475, 0.9625], abs=1e-12)
    assert s.flatten().tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogate_forward_matches_hand_computed_trajectory(scan, name):
    formulas = {
        "sigmoid": lambda z: 1.0 / (1.0 + math.exp(-2.0 * z)),
        "atan": lambda z: 0.5 + math.atan(2.0 * z) / math.pi,
        "erf": lambda z: 0.5 * (1.0 + math.erf(2.0 * z / math.sqrt(2.0))),
    }
    us, ss = hand_trajectory(CURRENT, 0.7, 0.8, formulas[name])
    x = torch.tensor(CURRENT, dtype=torch.float64).reshape(5, 1, 1)
    s, u = scan(x, 0.7, 0.8, get_surrogate(name, 2.0), "surrogate")
    assert u.flatten().tolist() == pytest.approx(us, abs=1e-12)
    assert s.flatten().tolist() == pytest.approx(ss, abs=1e-12)


@pytest.mark.parametrize("scan", SCANS)
def test_heaviside_at_threshold_is_zero(scan):
    s, u = scan(torch.tensor([[1.0], [0.0]]), 0.5, 1.0, "sigmoid", "hard")
    assert u[0].item() == 1.0 and s[0].item() == 0.0
    assert u[1].item() == 0.5  # no reset was applied


@pytest.mark.parametrize(
    "surrogate", [SigmoidSurrogate(3.0), AtanSurrogate(2.0), ErfSurrogate(4.0)]
)
def test_surrogate_family_properties(surrogate):
    x = torch.linspace(-20, 20, 200001, dtype=torch.float64, requires_grad=True)
    value = surrogate(x)
    (grad,) = torch.autograd.grad(value.sum(), x)
    d = surrogate.derivative(x.detach())
    assert torch.allclose(d, grad, atol=1e-12)
    assert torch.all(d >= 0)
    assert d.max().item() == pytest.approx(surrogate.sup_derivative, rel=1e-6)
    assert d.max().item() <= surrogate.sup_derivative * (1 + 1e-12)
    assert value[0].item() < 0.02 and value[-1].item() > 0.98
    assert surrogate(torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(0.5)


def test_surrogate_errors():
    with pytest.raises(ValueError, match="unknown surrogate"):
        get_surrogate("relu")
    with pytest.raises(ValueError, match="slope"):
        SigmoidSurrogate(0.0)


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogate_gradient_matches_finite_differences(name):
    torch.manual_seed(0)
    x = (1.5 * torch.randn(6, 2, 3, dtype=torch.float64)).requires_grad_()
    w_s, w_u = torch.randn(6, 2, 3, dtype=torch.float64), torch.randn(6, 2, 3, dtype=torch.float64)

    def loss(inp):
        s, u = lif_scan(inp, 0.8, 1.0, get_surrogate(name, 3.0), "surrogate")
        return (s * w_s).sum() + (u * w_u).sum()

    assert torch.autograd.gradcheck(loss, (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["surrogate", "ste", "hard"])
@pytest.mark.parametrize("name", sorted(SURROGATES))
@pytest.mark.parametrize("outputs", ["both", "spikes", "membrane"])
def test_fused_gradient_equals_reference_in_float64(mode, name, outputs):
    torch.manual_seed(1)
    x = (1.5 * torch.randn(12, 4, 7, dtype=torch.float64)).requires_grad_()
    w_s, w_u = torch.randn_like(x), torch.randn_like(x)
    grads = []
    for scan in SCANS:
        s, u = scan(x, 0.85, 1.1, get_surrogate(name, 4.0), mode)
        terms = {"both": (s * w_s).sum() + (u * w_u).sum(), "spikes": (s * w_s).sum(),
                 "membrane": (u * w_u).sum()}
        # the x term keeps the graph alive where hard spikes carry no gradient at all
        grads.append(torch.autograd.grad(terms[outputs] + 0.0 * x.sum(), x)[0])
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-12)


def test_ste_gradient_differs_from_surrogate_and_hard_blocks_spike_path():
    torch.manual_seed(2)
    x = (1.5 * torch.randn(8, 3, 5, dtype=torch.float64)).requires_grad_()
    g = {m: torch.autograd.grad(lif_scan(x, 0.9, 1.0, "sigmoid", m)[0].sum(), x)[0]
         for m in ("surrogate", "ste", "hard")}
    assert not torch.allclose(g["surrogate"], g["ste"])
    assert torch.count_nonzero(g["hard"]) == 0


def test_second_derivatives_through_reference_scan():
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    s, _ = lif_scan_reference(x, 0.9, 1.0, "sigmoid", "surrogate")
    (g,) = torch.autograd.grad(s.pow(2).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    assert torch.isfinite(h).all() and h.abs().sum() > 0


def test_input_checks():
    with pytest.raises(ValueError, match=r"time-first \[T, B, ...\]"):
        lif_scan(torch.zeros(5))
    with pytest.raises(ValueError, match="unknown spike mode"):
        lif_scan(torch.zeros(5, 2), mode="soft")
    with pytest.raises(TypeError, match="lif_scan_reference"):
        lif_scan(torch.zeros(5, 2), beta=torch.tensor(0.9))
    with pytest.raises(TypeError, match="floating-point"):
        lif_scan(torch.zeros(5, 2, dtype=torch.long))


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("mode", ["surrogate", "ste", "hard"])
def test_no_time_steps_give_empty_outputs(scan, mode):
    x = torch.zeros(0, 3, requires_grad=True)
    s, u = scan(x, mode=mode)
    assert s.shape == u.shape == (0, 3)
    (s.sum() + u.sum()).backward()
    assert x.grad.shape == (0, 3)


def test_the_fused_scan_says_it_has_no_second_derivative():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(lif_scan(x)[0].square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.sum().backward()


def test_reference_accepts_learnable_parameters():
    x = torch.randn(6, 2, 4)
    beta = torch.full((4,), 0.9, requires_grad=True)
    threshold = torch.full((4,), 1.0, requires_grad=True)
    s, _ = lif_scan_reference(x, beta, threshold, "sigmoid", "surrogate")
    s.sum().backward()
    assert beta.grad is not None and threshold.grad is not None
    s_fused, _ = lif_scan(x, 0.9, 1.0, "sigmoid", "surrogate")
    assert torch.allclose(s, s_fused, atol=1e-6)


def test_the_slope_is_reachable_from_lif_scan():
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    for scan in (lif_scan, lif_scan_reference):
        s10, _ = scan(x, surrogate="sigmoid", slope=10.0)
        explicit, _ = scan(x, surrogate=SigmoidSurrogate(slope=10.0))
        default, _ = scan(x)
        assert torch.equal(s10, explicit) and not torch.equal(s10, default)
        with pytest.raises(ValueError, match="either in the Surrogate instance or as slope="):
            scan(x, surrogate=SigmoidSurrogate(slope=2.0), slope=3.0)


# --- reset to zero: u[t] = β·(1 − s[t−1])·u[t−1] + I[t] ------------------------------------


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("mode", ["hard", "ste"])
def test_zero_reset_hard_forward_matches_hand_computed_trajectory(scan, mode):
    # β = 0.5, ϑ = 1: u = 0.6, 0.9, 1.05 (spike), 0 (reset to zero, no input), 1.2 (spike)
    x = torch.tensor(CURRENT, dtype=torch.float64).reshape(5, 1, 1)
    s, u = scan(x, 0.5, 1.0, "sigmoid", mode, reset="zero")
    assert u.flatten().tolist() == pytest.approx([0.6, 0.9, 1.05, 0.0, 1.2], abs=1e-12)
    assert s.flatten().tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("scan", SCANS)
def test_zero_reset_hard_forward_matches_a_python_loop_on_random_currents(scan):
    torch.manual_seed(3)
    x = 0.8 * torch.randn(30, 4, 6, dtype=torch.float64) + 0.4
    s, u = scan(x, 0.85, 1.1, "sigmoid", "hard", reset="zero")
    for b in range(4):
        for n in range(6):
            us, ss = hand_trajectory(x[:, b, n].tolist(), 0.85, 1.1,
                                     lambda z: 1.0 if z > 0 else 0.0, reset="zero")
            assert u[:, b, n].tolist() == pytest.approx(us, abs=1e-12)
            assert s[:, b, n].tolist() == ss
    fired = s[:-1] > 0
    assert fired.any() and (~fired).any()
    # after a spike the membrane restarts from the input alone, exactly
    assert torch.equal(u[1:][fired], x[1:][fired])


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_zero_reset_surrogate_forward_matches_hand_computed_trajectory(scan, name):
    formulas = {
        "sigmoid": lambda z: 1.0 / (1.0 + math.exp(-2.0 * z)),
        "atan": lambda z: 0.5 + math.atan(2.0 * z) / math.pi,
        "erf": lambda z: 0.5 * (1.0 + math.erf(2.0 * z / math.sqrt(2.0))),
    }
    us, ss = hand_trajectory(CURRENT, 0.7, 0.8, formulas[name], reset="zero")
    x = torch.tensor(CURRENT, dtype=torch.float64).reshape(5, 1, 1)
    s, u = scan(x, 0.7, 0.8, get_surrogate(name, 2.0), "surrogate", reset="zero")
    assert u.flatten().tolist() == pytest.approx(us, abs=1e-12)
    assert s.flatten().tolist() == pytest.approx(ss, abs=1e-12)


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_zero_reset_gradient_matches_finite_differences(scan, name):
    torch.manual_seed(0)
    x = (1.5 * torch.randn(6, 2, 3, dtype=torch.float64)).requires_grad_()
    w_s, w_u = torch.randn(6, 2, 3, dtype=torch.float64), torch.randn(6, 2, 3, dtype=torch.float64)

    def loss(inp):
        s, u = scan(inp, 0.8, 1.0, get_surrogate(name, 3.0), "surrogate", reset="zero")
        return (s * w_s).sum() + (u * w_u).sum()

    assert torch.autograd.gradcheck(loss, (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["surrogate", "ste", "hard"])
@pytest.mark.parametrize("name", sorted(SURROGATES))
@pytest.mark.parametrize("outputs", ["both", "spikes", "membrane"])
def test_zero_reset_fused_gradient_equals_reference_in_float64(mode, name, outputs):
    torch.manual_seed(1)
    x = (1.5 * torch.randn(12, 4, 7, dtype=torch.float64)).requires_grad_()
    w_s, w_u = torch.randn_like(x), torch.randn_like(x)
    grads, values = [], []
    for scan in SCANS:
        s, u = scan(x, 0.85, 1.1, get_surrogate(name, 4.0), mode, reset="zero")
        terms = {"both": (s * w_s).sum() + (u * w_u).sum(), "spikes": (s * w_s).sum(),
                 "membrane": (u * w_u).sum()}
        grads.append(torch.autograd.grad(terms[outputs] + 0.0 * x.sum(), x)[0])
        values.append((s.detach(), u.detach()))
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-12)
    assert torch.allclose(values[0][1], values[1][1], rtol=0, atol=1e-12)
    assert torch.equal(values[0][0], values[1][0]) or mode == "surrogate"


def test_the_two_resets_differ_and_subtract_is_the_default():
    torch.manual_seed(4)
    x = torch.rand(10, 3, 5, dtype=torch.float64)
    for scan in SCANS:
        default = scan(x, 0.9, 0.5, "sigmoid", "hard")
        subtract = scan(x, 0.9, 0.5, "sigmoid", "hard", reset="subtract")
        zero = scan(x, 0.9, 0.5, "sigmoid", "hard", reset="zero")
        assert torch.equal(default[1], subtract[1]) and not torch.equal(zero[1], subtract[1])
        with pytest.raises(ValueError, match="unknown reset 'soft'"):
            scan(x, reset="soft")


def test_lif_layer_zero_reset_per_neuron_and_fused_agree():
    from sast.layers import LIF

    torch.manual_seed(5)
    x = torch.randn(8, 3, 4, dtype=torch.float64) + 0.5
    fused = LIF(0.8, 1.0, reset="zero", spike_mode="hard")
    per_neuron = LIF(torch.full((4,), 0.8, dtype=torch.float64),
                     torch.ones(4, dtype=torch.float64), reset="zero", spike_mode="hard")
    assert per_neuron.per_neuron and "reset='zero'" in repr(fused)
    assert torch.equal(fused(x), per_neuron(x))
    with pytest.raises(ValueError, match="unknown reset"):
        LIF(reset="none")


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("mode", ["surrogate", "ste", "hard"])
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_spikes_only_scan_equals_reference_in_float64(reset, mode, name):
    torch.manual_seed(5)
    # a non-contiguous current with channels-last frames, as a convolution gives it
    x = (1.5 * torch.randn(9, 3, 5, 6, 4, dtype=torch.float64)).permute(0, 1, 4, 2, 3)
    x = x.detach().requires_grad_()
    assert not x.is_contiguous()
    w_s = torch.randn_like(x)
    s_ref, _ = lif_scan_reference(x, 0.85, 1.1, get_surrogate(name, 4.0), mode, reset=reset)
    s, u = lif_scan(x, 0.85, 1.1, get_surrogate(name, 4.0), mode, reset=reset, membrane=False)
    assert u is None
    assert torch.allclose(s, s_ref, rtol=0, atol=1e-12)
    g_ref = torch.autograd.grad((s_ref * w_s).sum() + 0.0 * x.sum(), x)[0]
    g = torch.autograd.grad((s * w_s).sum() + 0.0 * x.sum(), x)[0]
    assert torch.allclose(g, g_ref, rtol=0, atol=1e-12)


def saved_elements(fn, x: torch.Tensor) -> int:
    """How many tensor elements autograd keeps for the backward pass of ``fn(x)``."""
    sizes = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(sizes)


@pytest.mark.parametrize("membrane", [True, False])
def test_the_sigmoid_scan_keeps_only_its_spikes_for_the_backward_pass(membrane):
    x = torch.randn(6, 2, 10, requires_grad=True)
    assert saved_elements(lambda c: lif_scan(c, membrane=membrane), x) == x.numel()
    # surrogates whose derivative is not a function of the spike, and the zero reset, read
    # the membrane too
    for kwargs in ({"surrogate": "atan"}, {"reset": "zero"}, {"mode": "ste"}):
        assert saved_elements(lambda c, kw=kwargs: lif_scan(c, membrane=membrane, **kw), x) == (
            2 * x.numel())
    assert saved_elements(lambda c: lif_scan(c, mode="hard", membrane=membrane), x) == (
        x.numel())


def _before_leak_trajectory(current, beta, threshold, spike_fn):
    """u = β·(u' − ϑ·s') + I, written out in plain floats."""
    u_prev, s_prev, us, ss = 0.0, 0.0, [], []
    for i in current:
        u = beta * (u_prev - threshold * s_prev) + i
        s = spike_fn(u - threshold)
        us.append(u)
        ss.append(s)
        u_prev, s_prev = u, s
    return us, ss


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("mode", ["surrogate", "hard", "ste"])
def test_reset_before_leak_matches_a_hand_computed_trajectory(scan, mode):
    current = [0.9, 0.7, 0.8, 0.0, 1.4, 0.3]
    sg = get_surrogate("sigmoid", 5.0)
    spike_fn = ((lambda x: 1.0 / (1.0 + math.exp(-5.0 * x))) if mode == "surrogate"
                else (lambda x: float(x > 0)))
    us, ss = _before_leak_trajectory(current, 0.6, 1.0, spike_fn)
    s, u = scan(torch.tensor(current, dtype=torch.float64)[:, None], 0.6, 1.0, sg, mode,
                reset="subtract", reset_before_leak=True)
    assert u.flatten().tolist() == pytest.approx(us, abs=1e-12)
    assert s.flatten().tolist() == pytest.approx(ss, abs=1e-12)
    if mode != "surrogate":
        assert sum(ss) >= 2  # the reset path was taken
    after, _ = hand_trajectory(current, 0.6, 1.0, spike_fn)
    assert us != pytest.approx(after)  # the option changes the dynamics


@pytest.mark.parametrize("scan", SCANS)
def test_integrate_and_fire_beta_one(scan):
    s, u = scan(torch.tensor([[0.4], [0.4], [0.4], [0.4]]), 1.0, 1.0, "sigmoid", "hard")
    assert [round(v, 6) for v in u.flatten().tolist()] == [0.4, 0.8, 1.2, 0.6]
    assert s.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("mode", ["surrogate", "ste", "hard"])
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_fused_gradient_equals_reference_with_the_reset_before_the_leak(mode, name):
    torch.manual_seed(2)
    x = (1.5 * torch.randn(12, 4, 7, dtype=torch.float64)).requires_grad_()
    w_s, w_u = torch.randn_like(x), torch.randn_like(x)
    grads = []
    for scan in SCANS:
        s, u = scan(x, 0.7, 1.1, get_surrogate(name, 4.0), mode, reset_before_leak=True)
        loss = (s * w_s).sum() + (u * w_u).sum() + 0.0 * x.sum()
        grads.append(torch.autograd.grad(loss, x)[0])
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-12)


def test_reset_before_leak_gradient_matches_finite_differences():
    x = (torch.randn(8, 3, dtype=torch.float64) * 1.5).requires_grad_()

    def loss(x):
        s, u = lif_scan_reference(x, 0.8, 1.0, "sigmoid", "surrogate", reset_before_leak=True)
        return (s * torch.arange(24.0, dtype=x.dtype).view(8, 3)).sum() + u.square().sum()

    assert torch.autograd.gradcheck(loss, (x,), eps=1e-6, atol=1e-7)
