import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, vmap
from torch.nn import functional as F

from sast import diagnostics as D
from sast.layers import LIF, lif_layers, set_scan_implementation, spike_mode
from sast.models import build_model

# torch.func transforms warn about a deprecated TorchScript call inside PyTorch itself
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def tiny_model(dtype=torch.float64, hidden=(4,), seed=0, **kwargs):
    torch.manual_seed(seed)
    model = build_model("nmnist-mlp", input_shape=(2, 3, 3), n_classes=3, hidden=hidden, **kwargs)
    return model.to(dtype)


def tiny_batches(dtype=torch.float64, n_batches=2, batch=5, steps=4, seed=0, scale=1.5):
    gen = torch.Generator().manual_seed(seed)
    return [
        (scale * torch.rand(steps, batch, 2, 3, 3, generator=gen, dtype=dtype),
         torch.randint(0, 3, (batch,), generator=gen))
        for _ in range(n_batches)
    ]


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def sigmoid_derivative(x, k):
    return k * sigmoid(k * x) * (1.0 - sigmoid(k * x))


def full_loss(model, batches):
    n = sum(len(y) for _, y in batches)
    return sum(F.cross_entropy(model(x), y, reduction="sum") for x, y in batches) / n


def full_grad(model, batches):
    return torch.autograd.grad(full_loss(model, batches), list(model.parameters()))


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_unchanged(model, before):
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)


def unusual_state(model):
    """Put the model in a non-default state so that restoring it is visible."""
    layer = next(lif_layers(model))
    layer.spike_mode, layer.implementation, layer.record = "ste", "fused", True
    model.train()
    return [(m.spike_mode, m.implementation, m.record) for m in lif_layers(model)]


def assert_state(model, state):
    assert [(m.spike_mode, m.implementation, m.record) for m in lif_layers(model)] == state
    assert model.training


def test_hvp_matches_central_differences_of_the_gradient():
    model, batches = tiny_model(), tiny_batches()
    state = unusual_state(model)
    gen = torch.Generator().manual_seed(1)
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in model.parameters()]
    hv = D.hessian_vector_product(model, batches, v)
    assert_state(model, state)

    w0, h = snapshot(model), 1e-5
    grads = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, w, d in zip(model.parameters(), w0, v, strict=True):
                p.copy_(w + sign * h * d)
        with spike_mode(model, "surrogate"):
            grads.append(full_grad(model, batches))
    fd = [(a - b) / (2 * h) for a, b in zip(*grads, strict=True)]
    flat_hv, flat_fd = torch.cat([t.flatten() for t in hv]), torch.cat([t.flatten() for t in fd])
    assert flat_hv.norm() > 1e-3
    assert torch.allclose(flat_hv, flat_fd, rtol=1e-6, atol=1e-8 * flat_hv.norm())


def explicit_hessian(model, batches):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(vec):
        parts = torch.split(vec, [math.prod(s) for s in shapes])
        params = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        n = sum(len(y) for _, y in batches)
        return sum(
            F.cross_entropy(functional_call(model, params, (x,)), y, reduction="sum")
            for x, y in batches
        ) / n

    set_scan_implementation(model, "reference")
    try:
        return hessian(loss)(flat)
    finally:
        set_scan_implementation(model, "fused")


def test_top_eigenvalues_match_the_explicit_hessian():
    model, batches = tiny_model(), tiny_batches()
    exact = torch.linalg.eigvalsh(explicit_hessian(model, batches)).flip(0)
    top = D.top_hessian_eigenvalues(model, batches, k=3, iters=60, seed=3, tol=1e-12)
    assert top == pytest.approx(exact[:3].tolist(), rel=1e-7, abs=1e-9)
    assert all(m.implementation == "fused" for m in lif_layers(model))
    # deterministic given the seed; a few steps give lower estimates of λ₁ (Ritz values)
    short = D.top_hessian_eigenvalues(model, batches, k=1, iters=5, seed=3)
    assert short == D.top_hessian_eigenvalues(model, batches, k=1, iters=5, seed=3)
    assert short[0] <= exact[0].item() + 1e-9


@pytest.mark.parametrize(
    "beta, slope, expected", [(0.5, 4.0, 0.5), (0.9, 5.0, 0.9), (0.5, 12.0, 2.5), (0.0, 4.0, 1.0)]
)
def test_global_contraction_factor_by_hand(beta, slope, expected):
    layer = LIF(beta=beta, threshold=1.0, surrogate="sigmoid", slope=slope)
    assert D.global_contraction_factor(layer) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("slope", [4.0, 12.0])
def test_run_level_contraction_on_a_hand_computed_trajectory(slope):
    # one LIF layer, identity weights, zero bias: the currents are the inputs themselves
    c = [1.0, 1.0 + math.log(3.0) / 4.0, 3.0]
    model = build_model("nmnist-mlp", input_shape=(1, 1, 3), n_classes=2, hidden=(3,),
                        beta=0.5, threshold=1.0, slope=slope).double()
    with torch.no_grad():
        model[1].module.weight.copy_(torch.eye(3))
        model[1].module.bias.zero_()
    x = torch.zeros(3, 1, 1, 1, 3, dtype=torch.float64)
    x[0, 0, 0, 0] = torch.tensor(c, dtype=torch.float64)

    states = []  # u[0], u[1], u[2] per neuron, by hand
    for ci in c:
        u0 = ci
        u1 = 0.5 * u0 - sigmoid(slope * (u0 - 1.0))
        u2 = 0.5 * u1 - sigmoid(slope * (u1 - 1.0))
        states.append((u0, u1, u2))
    factors = [abs(0.5 - sigmoid_derivative(u - 1.0, slope)) for s in states for u in s[:2]]
    rates = [sigmoid(slope * (u - 1.0)) for s in states for u in s]

    out = D.contraction_diagnostics(model, [(x, torch.zeros(1, dtype=torch.long))])
    layer = out["layers"][0]
    assert layer["global_factor"] == pytest.approx(max(0.5, abs(0.5 - slope / 4.0)))
    assert layer["run_max_factor"] == pytest.approx(max(factors), abs=1e-12)
    assert layer["run_mean_factor"] == pytest.approx(sum(factors) / 6, abs=1e-12)
    assert layer["fraction_factor_ge_1"] == pytest.approx(sum(f >= 1 for f in factors) / 6)
    assert layer["max_abs_membrane"] == pytest.approx(max(abs(u) for s in states for u in s))
    assert layer["state_bound"] == pytest.approx((3.0 * 1.0 + 1.0) / 0.5)
    assert layer["firing_rate"] == pytest.approx(sum(rates) / 9, abs=1e-12)
    if slope == 12.0:
        assert layer["fraction_factor_ge_1"] > 0 and not layer["contracting"]
    json.dumps(out)


def test_state_bound_is_the_formula_and_holds_on_random_inputs():
    model = tiny_model(torch.float32, hidden=(6, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    batches = tiny_batches(torch.float32, steps=12, scale=4.0)
    out = D.contraction_diagnostics(model, batches)
    w1, b1 = model[1].module.weight.detach().double(), model[1].module.bias.detach().double()
    r_x = max(float(x.abs().max()) for x, _ in batches)
    expected = ((r_x * w1.abs().sum(1) + b1.abs() + 1.0) / (1 - 0.9)).max()
    assert out["layers"][0]["state_bound"] == pytest.approx(float(expected))
    w2, b2 = model[3].module.weight.detach().double(), model[3].module.bias.detach().double()
    expected2 = ((w2.abs().sum(1) + b2.abs() + 1.0) / (1 - 0.9)).max()
    assert out["layers"][1]["state_bound"] == pytest.approx(float(expected2))
    for layer in out["layers"]:
        assert layer["within_bound"]
        assert layer["max_abs_membrane"] <= layer["state_bound"]
        assert layer["max_bound_ratio"] > 0.01  # the states are not trivially small


def test_state_bound_holds_for_a_conv_net():
    torch.manual_seed(0)
    model = build_model("nmnist-conv", input_shape=(2, 8, 8), n_classes=3, channels=(3, 4))
    gen = torch.Generator().manual_seed(0)
    batches = [(3.0 * torch.rand(6, 4, 2, 8, 8, generator=gen), torch.zeros(4, dtype=torch.long))]
    out = D.contraction_diagnostics(model, batches)
    assert len(out["layers"]) == 2
    assert all(layer["within_bound"] for layer in out["layers"])


def lipschitz_models():
    mlp = tiny_model(hidden=(6, 5), slope=6.0)
    count = tiny_model(hidden=(5,), readout="count")
    torch.manual_seed(0)
    conv = build_model("nmnist-conv", input_shape=(2, 4, 4), n_classes=3, channels=(2,),
                       hidden=(3,), channels_last=False).double()
    for m in (mlp, count, conv):
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(2.0)
    return {"mlp": mlp, "count": count, "conv": conv}


@pytest.mark.parametrize("name", ["mlp", "count", "conv"])
def test_logit_jacobian_and_input_gradients_below_the_lipschitz_bound(name):
    model = lipschitz_models()[name]
    shape = (2, 4, 4) if name == "conv" else (2, 3, 3)
    gen = torch.Generator().manual_seed(2)
    x = 2.0 * torch.rand(6, 8, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=gen)
    bound = D.lipschitz_bound(model, n_steps=6)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda xi: model(xi)[0], x[:, i : i + 1])
        assert torch.linalg.matrix_norm(jac.reshape(3, -1), ord=2) <= bound
    norms = D.input_gradient_norms(model, [(x, y)])
    assert np.all(norms <= math.sqrt(2.0) * bound)
    for i in range(3):  # against a plain per-sample computation
        xi = x[:, i : i + 1].clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(F.cross_entropy(model(xi), y[i : i + 1]), xi)
        assert norms[i] == pytest.approx(gx.norm().item(), rel=1e-10)


def test_lipschitz_bound_is_attained_by_a_one_neuron_one_step_network():
    # T = 1, one input, one LIF neuron held at threshold (σ′ = sup σ′), one nonzero logit:
    # every inequality of the bound is an equality here.
    model = build_model("nmnist-mlp", input_shape=(1, 1, 1), n_classes=2, hidden=(1,)).double()
    a, c, x0 = 1.7, -2.3, 0.4
    with torch.no_grad():
        model[1].module.weight.fill_(a)
        model[1].module.bias.fill_(1.0 - a * x0)
        model[3].linear.weight.copy_(torch.tensor([[c], [0.0]], dtype=torch.float64))
    x = torch.full((1, 1, 1, 1, 1), x0, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda xi: model(xi)[0], x)
    assert torch.linalg.matrix_norm(jac.reshape(2, -1), ord=2).item() == pytest.approx(
        D.lipschitz_bound(model, n_steps=1), rel=1e-12
    )
    assert D.lipschitz_bound(model, n_steps=1) == pytest.approx(abs(a * c) * 1.25, rel=1e-12)


def test_worst_case_sharpness_beats_the_sam_point_and_restores_the_model():
    model, batches = tiny_model(), tiny_batches()
    state, before = unusual_state(model), snapshot(model)
    rho = 0.2
    out = D.worst_case_sharpness(model, batches, rho, steps=5)
    assert_unchanged(model, before)
    assert_state(model, state)

    set_scan_implementation(model, "fused")
    for m in lif_layers(model):
        m.spike_mode = "surrogate"
    loss0 = full_loss(model, batches).item()
    g = full_grad(model, batches)
    g_norm = torch.sqrt(sum((t * t).sum() for t in g))
    with torch.no_grad():
        for p, gi in zip(model.parameters(), g, strict=True):
            p.add_(rho * gi / g_norm)
    sam_value = full_loss(model, batches).item() - loss0

    assert out["loss"] == pytest.approx(loss0, rel=1e-12)
    assert out["sam_sharpness"] == pytest.approx(sam_value, rel=1e-9)
    assert out["first_order_sharpness"] == pytest.approx(rho * g_norm.item(), rel=1e-9)
    assert out["sharpness"] >= sam_value - 1e-12
    assert out["sharpness"] > 0 and out["steps"] == 5
    assert out["radius"] == pytest.approx(rho, rel=1e-9)
    assert out["trajectory"][0] == pytest.approx(loss0 + sam_value, rel=1e-9)
    json.dumps(out)


def test_adaptive_sharpness_first_step_is_asam():
    model, batches = tiny_model(), tiny_batches()
    before = snapshot(model)
    rho, eta = 0.5, 0.01
    out = D.worst_case_sharpness(model, batches, rho, steps=1, adaptive=True, eta=eta)
    assert_unchanged(model, before)
    loss0 = full_loss(model, batches).item()
    g = full_grad(model, batches)
    t = [p.detach().abs() + eta for p in model.parameters()]
    tg_norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g, strict=True)))
    with torch.no_grad():
        for p, ti, gi in zip(model.parameters(), t, g, strict=True):
            p.add_(rho * ti * ti * gi / tg_norm)
    assert out["sharpness"] == pytest.approx(full_loss(model, batches).item() - loss0, rel=1e-9)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_filter_normalised_direction(arch):
    model = (tiny_model(hidden=(6,)) if arch == "mlp"
             else build_model("nmnist-conv", channels=(3, 4)))  # 4-D conv kernels too
    d = D.filter_normalised_direction(model, seed=4)
    for p, di in zip(model.parameters(), d, strict=True):
        if p.dim() == 1:
            assert torch.count_nonzero(di) == 0
        else:
            assert torch.allclose(di.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
    again = D.filter_normalised_direction(model, seed=4)
    other = D.filter_normalised_direction(model, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(d, again, strict=True))
    assert not torch.equal(d[0], other[0])


def test_loss_slice_at_zero_is_the_loss_and_restores_the_model():
    model, batches = tiny_model(torch.float32), tiny_batches(torch.float32)
    state, before = unusual_state(model), snapshot(model)
    out = D.loss_slice(model, batches, alphas=[-0.5, 0.0, 0.5], seed=1)
    assert_unchanged(model, before)
    assert_state(model, state)
    assert out["alphas"] == [-0.5, 0.0, 0.5]
    assert out["loss"][1] == D.loss_on(model, batches)
    assert out["loss_hard"][1] == D.loss_on(model, batches, spike_mode="hard")
    assert out["loss"] == out["loss_surrogate"]
    assert all(0.0 <= a <= 1.0 for a in out["accuracy_hard"])
    assert out["loss"][0] != out["loss"][2]


def test_per_sample_parameter_gradient_norms_match_vmap():
    model, batches = tiny_model(), tiny_batches()
    state = unusual_state(model)
    norms = D.parameter_gradient_norms(model, batches, max_samples=7)
    assert_state(model, state)
    assert norms.shape == (7,)

    set_scan_implementation(model, "reference")
    for m in lif_layers(model):
        m.spike_mode = "surrogate"
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi.unsqueeze(1),)), yi.unsqueeze(0))

    x = torch.cat([b[0] for b in batches], dim=1)[:, :7]
    y = torch.cat([b[1] for b in batches])[:7]
    grads = vmap(grad(loss), in_dims=(None, 1, 0))(params, x, y)
    expected = torch.sqrt(sum((g.flatten(1) ** 2).sum(1) for g in grads.values()))
    assert np.allclose(norms, expected.numpy(), rtol=1e-10)


def test_mechanism_inequality_by_hand():
    model, batches = tiny_model(hidden=(6,)), tiny_batches(steps=5)
    out = D.gradient_mechanism(model, batches, max_samples=6)["mechanism"]
    first = model[1].module
    w_norm = torch.linalg.matrix_norm(first.weight.detach(), ord=2)
    ratios = []
    for x, y in batches:
        for i in range(len(y)):
            xi = x[:, i : i + 1].clone().requires_grad_(True)
            loss = F.cross_entropy(model(xi), y[i : i + 1])
            gx, gw, gb = torch.autograd.grad(loss, [xi, first.weight, first.bias])
            rows = torch.cat([xi.detach().reshape(5, -1), torch.ones(5, 1, dtype=xi.dtype)], 1)
            lam = np.linalg.eigvalsh((rows @ rows.T).numpy())[0]
            rhs = w_norm * torch.sqrt(gw.square().sum() + gb.square().sum()) / math.sqrt(lam)
            ratios.append((gx.norm() / rhs).item())
    ratios = ratios[:6]
    assert max(ratios) <= 1.0
    assert out["bound_ratio"]["max"] == pytest.approx(max(ratios), rel=1e-9)
    assert out["fraction_holds"] == 1.0
    conv = build_model("nmnist-conv", input_shape=(2, 4, 4), n_classes=3, channels=(2,))
    conv_batches = [(torch.rand(3, 2, 2, 4, 4), torch.zeros(2, dtype=torch.long))]
    assert D.gradient_mechanism(conv, conv_batches)["mechanism"] is None


def test_spearman_with_ties():
    a = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 4.0])
    b = np.array([2.0, 1.0, 4.0, 4.0, 9.0, 3.0])
    ranks_a, ranks_b = [1, 2.5, 2.5, 4, 6, 5], [2, 1, 4.5, 4.5, 6, 3]
    assert D.spearman(a, b) == pytest.approx(np.corrcoef(ranks_a, ranks_b)[0, 1], rel=1e-12)
    assert D.spearman(a, -a) == pytest.approx(-1.0)
    assert math.isnan(D.spearman(a, np.ones(6)))


def test_run_diagnostics_is_json_and_leaves_the_model_alone():
    model, batches = tiny_model(torch.float32), tiny_batches(torch.float32)
    state, before = unusual_state(model), snapshot(model)
    out = D.run_diagnostics(model, batches, rho=0.1, hessian_iters=6, hessian_max_samples=7,
                            alphas=[-0.1, 0.0, 0.1], max_samples=4)
    assert_unchanged(model, before)
    assert_state(model, state)
    assert set(out) >= {"sharpness", "hessian", "loss_slice", "contraction", "gradients"}
    assert len(out["hessian"]["top_eigenvalues"]) == 3 and out["hessian"]["n_samples"] == 7
    assert out["gradients"]["n_samples"] == 4
    g = out["gradients"]
    assert g["max_input_grad_norm"] <= g["input_grad_bound"]
    json.loads(json.dumps(out))


def test_unknown_layers_are_refused():
    model = nn.Sequential(nn.ReLU())
    with pytest.raises(ValueError, match="ReLU"):
        D.lipschitz_bound(model, 4)
