import numpy as np
import pytest
import torch

from sast.optim import SAM, build_base_optimizer

A = np.diag([1.0, 4.0, 0.5])
W0 = np.array([1.0, -2.0, 3.0])


def quadratic(w):
    """L(w) = ½·wᵀAw, ∇L = Aw."""
    return 0.5 * w @ torch.as_tensor(A) @ w


def test_sam_step_matches_textbook_formula():
    rho, lr = 0.3, 0.1
    w = torch.nn.Parameter(torch.tensor(W0))
    sam = SAM(torch.optim.SGD([w], lr=lr), rho=rho)

    def closure():  # torch.optim style: zero, forward, backward, return the loss
        sam.zero_grad()
        loss = quadratic(w)
        loss.backward()
        return loss

    loss = sam.step(closure)
    assert float(loss) == pytest.approx(float(0.5 * W0 @ A @ W0))  # the loss at w

    g = A @ W0
    e = rho * g / np.linalg.norm(g)
    expected = W0 - lr * (A @ (W0 + e))
    assert np.allclose(w.detach().numpy(), expected, atol=1e-12)


def test_asam_perturbation_matches_formula():
    rho, eta = 0.5, 0.01
    w = torch.nn.Parameter(torch.tensor(W0))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=rho, adaptive=True, eta=eta)
    quadratic(w).backward()
    sam.first_step()
    t = np.abs(W0) + eta
    g = A @ W0
    expected = W0 + rho * t * t * g / np.linalg.norm(t * g)
    assert np.allclose(w.detach().numpy(), expected, atol=1e-12)
    assert torch.equal(sam.state[w]["old_p"], torch.tensor(W0))


def test_rho_zero_is_the_base_step():
    w1 = torch.nn.Parameter(torch.tensor(W0))
    w2 = torch.nn.Parameter(torch.tensor(W0))
    sam = SAM(torch.optim.Adam([w1], lr=0.05), rho=0.0)
    adam = torch.optim.Adam([w2], lr=0.05)
    for _ in range(3):
        sam.zero_grad()
        quadratic(w1).backward()
        sam.first_step(zero_grad=True)
        quadratic(w1).backward()
        sam.second_step()
        adam.zero_grad()
        quadratic(w2).backward()
        adam.step()
    assert torch.allclose(w1, w2, atol=1e-15)


def test_param_groups_are_shared_with_scheduler():
    w = torch.nn.Parameter(torch.tensor(W0))
    base = torch.optim.SGD([w], lr=1.0)
    sam = SAM(base, rho=0.1)
    assert sam.param_groups is base.param_groups
    assert sam.param_groups[0]["rho"] == 0.1
    sched = torch.optim.lr_scheduler.StepLR(base, step_size=1, gamma=0.5)
    quadratic(w).backward()
    sam.first_step(zero_grad=True)
    quadratic(w).backward()
    sam.second_step()
    sched.step()
    assert sam.param_groups[0]["lr"] == 0.5


def _train(sam, w, steps, rng):
    for _ in range(steps):
        b = torch.as_tensor(rng.normal(size=3))
        sam.zero_grad()
        (quadratic(w) + b @ w).backward()
        sam.first_step(zero_grad=True)
        (quadratic(w) + b @ w).backward()
        sam.second_step(zero_grad=True)


def test_state_dict_round_trip_gives_the_same_next_step(tmp_path):
    w = torch.nn.Parameter(torch.tensor(W0))
    sam = SAM(build_base_optimizer("adam", [w], lr=0.05), rho=0.2, adaptive=True)
    _train(sam, w, 4, np.random.default_rng(0))
    torch.save({"w": w.detach().clone(), "opt": sam.state_dict()}, tmp_path / "ckpt.pt")
    _train(sam, w, 3, np.random.default_rng(1))

    ckpt = torch.load(tmp_path / "ckpt.pt")
    w2 = torch.nn.Parameter(ckpt["w"])
    sam2 = SAM(build_base_optimizer("adam", [w2], lr=0.9), rho=0.9)
    sam2.load_state_dict(ckpt["opt"])
    assert sam2.param_groups[0]["rho"] == 0.2 and sam2.param_groups[0]["adaptive"]
    assert sam2.param_groups is sam2.base_optimizer.param_groups
    _train(sam2, w2, 3, np.random.default_rng(1))
    assert torch.equal(w, w2)


def test_errors():
    w = torch.nn.Parameter(torch.tensor(W0))
    with pytest.raises(TypeError, match="optimiser instance"):
        SAM([w], rho=0.1)
    with pytest.raises(ValueError, match="rho"):
        SAM(torch.optim.SGD([w], lr=0.1), rho=-1.0)
    sam = SAM(torch.optim.SGD([w], lr=0.1))
    with pytest.raises(RuntimeError, match="no gradients"):
        sam.first_step()
    with pytest.raises(ValueError, match="closure"):
        sam.step()
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_base_optimizer("lbfgs", [w], lr=0.1)
