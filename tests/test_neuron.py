import math

import pytest
import torch

from sast.neuron import (
    SURROGATES,
    AtanSurrogate,
    ErfSurrogate,
    SigmoidSurrogate,
    get_surrogate,
    lif_scan,
    lif_scan_reference,
)

SCANS = [lif_scan, lif_scan_reference]
CURRENT = [0.6, 0.6, 0.6, 0.0, 1.2]


def hand_trajectory(current, beta, threshold, spike_fn):
    """The LIF recurrence in plain Python floats, written out independently."""
    u_prev, s_prev, us, ss = 0.0, 0.0, [], []
    for i in current:
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
