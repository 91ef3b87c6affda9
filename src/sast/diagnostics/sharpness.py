"""Loss-landscape diagnostics: worst-case sharpness in the ρ-ball, Hessian-vector products, the
top Hessian eigenvalues by Lanczos, and loss slices along a filter-normalised direction.

Second-order work runs through the plain-autograd reference scan, since the fused scan is
first-order only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sast.diagnostics._common import (
    Batches,
    _dot,
    _evaluate,
    _n_samples,
    _norm,
    _params,
    _prepare,
    _preserved,
    _set_params,
)
from sast.layers import set_scan_implementation
from sast.layers import spike_mode as use_spike_mode

# --------------------------------------------------------------------------------------------
# Gradient and Hessian-vector product


def _loss_and_grad(model: nn.Module, batches: Batches) -> tuple[float, list[Tensor]]:
    """L(w) and ∇L(w) = Σ_b (1/N)·∇ Σ_{i∈b} ℓ_i, without touching ``.grad``."""
    params, n = _params(model), _n_samples(batches)
    total, grads = 0.0, [torch.zeros_like(p) for p in params]
    for x, y in batches:
        x, y = _prepare(model, x, y)
        loss = F.cross_entropy(model(x), y, reduction="sum") / n
        for g, gb in zip(grads, torch.autograd.grad(loss, params), strict=True):
            g.add_(gb)
        total += loss.item()
    return total, grads


def hessian_vector_product(
    model: nn.Module, batches: Batches, vector: list[Tensor], spike_mode: str = "surrogate"
) -> list[Tensor]:
    """H·v with H = ∇²L(w), by double backward: H·v = ∇_w (∇_w L(w) · v).

    ``vector`` has one tensor per trainable parameter (in ``model.parameters()`` order). The LIF
    layers run the plain-autograd reference scan for the duration of the call.
    """
    params, n = _params(model), _n_samples(batches)
    if len(vector) != len(params):
        raise ValueError(f"vector has {len(vector)} tensors, the model {len(params)} parameters")
    out = [torch.zeros_like(p) for p in params]
    with _preserved(model), use_spike_mode(model, spike_mode):
        set_scan_implementation(model, "reference")
        for x, y in batches:
            x, y = _prepare(model, x, y)
            loss = F.cross_entropy(model(x), y, reduction="sum") / n
            grads = torch.autograd.grad(loss, params, create_graph=True)
            hv = torch.autograd.grad(_dot(list(grads), vector), params)
            for o, h in zip(out, hv, strict=True):
                o.add_(h)
    return out


# --------------------------------------------------------------------------------------------
# Sharpness


def worst_case_sharpness(
    model: nn.Module, batches: Batches, rho: float, steps: int = 5, adaptive: bool = False,
    eta: float = 0.01, spike_mode: str = "surrogate",
) -> dict[str, object]:
    """S_ρ = max_{‖ε‖ ≤ ρ} L(w + ε) − L(w), estimated by projected normalised gradient ascent.

    With T = diag(|w| + η) for ``adaptive`` (ASAM's ball ‖T⁻¹ε‖ ≤ ρ) and T = 1 otherwise, ε = T·δ
    and, from δ = 0, each of ``steps`` steps is

        δ ← Π_ρ(δ + ρ·T g / ‖T g‖),   g = ∇L(w + Tδ),   Π_ρ(v) = v·min(1, ρ/‖v‖),

    so the first step is SAM's point ε = ρ·T²g/‖Tg‖. The estimate is the largest loss seen at
    the ``steps`` perturbed points, a lower bound on the true maximum. Also returned: the
    first-order value ρ‖Tg‖ at w, the sharpness at SAM's point (first step) and the radius
    ‖δ‖ of the last point.
    """
    if rho < 0 or steps < 1:
        raise ValueError(f"need rho >= 0 and steps >= 1, got rho={rho}, steps={steps}")
    params = _params(model)
    w0 = [p.detach().clone() for p in params]
    scales = [p.abs() + eta if adaptive else torch.ones_like(p) for p in w0]
    with _preserved(model, params=True), use_spike_mode(model, spike_mode):
        loss0, g = _loss_and_grad(model, batches)
        grad_norm = _norm([t * gi for t, gi in zip(scales, g, strict=True)]).item()
        delta = [torch.zeros_like(p) for p in w0]
        trajectory: list[float] = []
        for step in range(steps):
            tg = [t * gi for t, gi in zip(scales, g, strict=True)]
            tg_norm = _norm(tg)
            if tg_norm == 0:
                break
            delta = [d + (rho / tg_norm) * v for d, v in zip(delta, tg, strict=True)]
            shrink = torch.clamp(rho / (_norm(delta) + 1e-30), max=1.0)
            delta = [d * shrink for d in delta]
            _set_params(params, w0, [t * d for t, d in zip(scales, delta, strict=True)])
            if step + 1 < steps:
                loss_eps, g = _loss_and_grad(model, batches)
            else:
                loss_eps = _evaluate(model, batches)[0]
            trajectory.append(loss_eps)
    perturbed = max(trajectory, default=loss0)
    return {
        "rho": float(rho), "adaptive": bool(adaptive), "steps": len(trajectory),
        "loss": loss0, "perturbed_loss": perturbed, "sharpness": perturbed - loss0,
        "sam_sharpness": (trajectory[0] if trajectory else loss0) - loss0,
        "first_order_sharpness": rho * grad_norm, "grad_norm": grad_norm,
        "radius": _norm(delta).item(), "trajectory": trajectory,
    }


# --------------------------------------------------------------------------------------------
# Hessian spectrum


def _lanczos_ritz_values(
    model: nn.Module, batches: Batches, k: int, iters: int, seed: int, tol: float,
) -> tuple[np.ndarray, int]:
    """Ritz values (descending) of H after at most ``iters`` Lanczos steps with full
    reorthogonalisation, and the number of steps taken.

    Lanczos builds an orthonormal basis Q_m of the Krylov space span{q, Hq, …, H^{m−1}q} and the
    tridiagonal Q_mᵀ H Q_m (diagonal α_j = q_jᵀHq_j, off-diagonal β_j = ‖r_j‖); its eigenvalues
    (Ritz values) approach the extreme eigenvalues of H from inside the spectrum. It stops early
    when the top ``k`` Ritz values move by less than tol·max(1, |θ₁|) in one step, or when the
    Krylov space is exhausted.
    """
    params = _params(model)
    gen = torch.Generator().manual_seed(seed)
    q = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for p in params]
    q = [t / _norm(q) for t in q]
    basis: list[list[Tensor]] = []
    alphas: list[float] = []
    betas: list[float] = []
    previous: np.ndarray | None = None
    ritz = np.zeros(0)
    for _ in range(max(1, iters)):
        r = hessian_vector_product(model, batches, q)
        alphas.append(_dot(r, q).item())
        basis.append(q)
        for _ in range(2):  # twice is enough for orthogonality in floating point
            for b in basis:
                c = _dot(r, b)
                r = [ri - c * bi for ri, bi in zip(r, b, strict=True)]
        ritz = _tridiagonal_eigenvalues(alphas, betas)
        beta = _norm(r).item()
        top = ritz[:k]
        if previous is not None and len(previous) >= len(top) == k:
            change = np.max(np.abs(top - previous[:k]))
            if change <= tol * max(1.0, abs(top[0])):
                break
        previous = ritz
        if beta <= 1e-10 * max(1.0, abs(ritz[0])):
            break
        betas.append(beta)
        q = [ri / beta for ri in r]
    return ritz, len(alphas)


def _tridiagonal_eigenvalues(alphas: list[float], betas: list[float]) -> np.ndarray:
    t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    return np.linalg.eigvalsh(t)[::-1]


def top_hessian_eigenvalues(
    model: nn.Module, batches: Batches, k: int = 3, iters: int = 20, seed: int = 0,
    tol: float = 1e-4,
) -> list[float]:
    """The ``k`` largest (most positive) eigenvalues λ₁ ≥ … ≥ λ_k of H = ∇²L(w), surrogate mode.

    Estimated by Lanczos on Hessian-vector products from a start vector drawn with ``seed``
    (deterministic); each estimate is a Ritz value, which lies below the eigenvalue it
    approximates. ``iters`` bounds the number of Hessian-vector products.
    """
    ritz, _ = _lanczos_ritz_values(model, batches, k, iters, seed, tol)
    return [float(v) for v in ritz[:k]]


# --------------------------------------------------------------------------------------------
# Loss slices along a filter-normalised direction


def filter_normalised_direction(model: nn.Module, seed: int) -> list[Tensor]:
    """A random direction d scaled per filter (Li et al., 2018): d_i ← d_i·‖w_i‖ / ‖d_i‖.

    A filter w_i is a slice along the first dimension of a weight tensor (a row of a Linear
    weight, an output channel of a convolution kernel). d starts as standard normal from a
    generator seeded with ``seed``. One-dimensional parameters (biases) get d = 0, as in Li et
    al.'s default, so the slice moves only the weights.
    """
    gen = torch.Generator().manual_seed(seed)
    direction = []
    for p in _params(model):
        d = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        if p.dim() <= 1:
            d.zero_()
        else:
            w = p.detach().to(torch.float64).cpu()
            dims = tuple(range(1, p.dim()))
            d *= (torch.linalg.vector_norm(w, dim=dims, keepdim=True)
                  / (torch.linalg.vector_norm(d, dim=dims, keepdim=True) + 1e-10))
        direction.append(d.to(p))
    return direction


def loss_slice(
    model: nn.Module, batches: Batches, alphas: Sequence[float] | np.ndarray | None = None,
    seed: int = 0, modes: Sequence[str] = ("surrogate", "hard"),
) -> dict[str, object]:
    """L(w + α·d) and accuracy for each α, with d = :func:`filter_normalised_direction`.

    Returns ``alphas`` and ``loss_<mode>``, ``accuracy_<mode>`` for each spike mode in ``modes``;
    ``loss`` and ``accuracy`` repeat the surrogate-mode curves (or the first mode's).
    Default α: 21 points on [−1, 1].
    """
    alphas = np.linspace(-1.0, 1.0, 21) if alphas is None else np.asarray(alphas, dtype=float)
    if not modes:
        raise ValueError("loss_slice needs at least one spike mode")
    params = _params(model)
    w0 = [p.detach().clone() for p in params]
    direction = filter_normalised_direction(model, seed)
    curves: dict[str, list[float]] = {f"{q}_{m}": [] for m in modes for q in ("loss", "accuracy")}
    with _preserved(model, params=True):
        for alpha in alphas:
            _set_params(params, w0, direction, float(alpha))
            for mode in modes:
                with use_spike_mode(model, mode):
                    loss, acc = _evaluate(model, batches)
                curves[f"loss_{mode}"].append(loss)
                curves[f"accuracy_{mode}"].append(acc)
    main = "surrogate" if "surrogate" in modes else modes[0]
    return {
        "alphas": [float(a) for a in alphas], "seed": int(seed),
        "loss": curves[f"loss_{main}"], "accuracy": curves[f"accuracy_{main}"], **curves,
    }
