"""Theory-alignment diagnostics of a trained network: sharpness, Hessian spectrum, loss slices,
contraction, state bounds, Lipschitz bounds and per-sample gradient norms.

Every function takes a model (a :class:`sast.models.SpikingNet`) and data as a list of batches
``[(x, y)]`` with ``x`` time-first ``[T, B, ...]`` and ``y`` class indices ``[B]``. The loss is the
mean cross-entropy over all samples of all batches, in surrogate mode unless a ``spike_mode``
argument says otherwise. Inputs are moved to the device and dtype of the model's parameters.

Each function leaves the model as it found it: parameters (bit for bit), spike modes, scan
implementations, ``record`` flags and train/eval mode. Second-order work runs through the
plain-autograd reference scan, since the fused scan is first-order only.

The formulas (contraction factor, state bound, input-Lipschitz bound) are derived in
``docs/theory.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sast.layers import (
    LIF,
    LeakyReadout,
    PerFrame,
    SpikeCountReadout,
    leaky_readout_weights,
    lif_layers,
    set_scan_implementation,
)
from sast.layers import spike_mode as use_spike_mode

Batches = Sequence[tuple[Tensor, Tensor]]


# --------------------------------------------------------------------------------------------
# Plumbing: parameters, batches, restoring the model


def _params(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _prepare(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    p = next(model.parameters())
    if x.dim() < 3:
        raise ValueError(f"inputs must be time-first [T, B, ...], got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[1]:
        raise ValueError(
            f"labels must be [B] with B = x.shape[1] = {x.shape[1]}, got {tuple(y.shape)}"
        )
    return x.to(p.device, p.dtype), y.to(p.device)


def _n_samples(batches: Batches) -> int:
    n = sum(int(y.shape[0]) for _, y in batches)
    if n == 0:
        raise ValueError("diagnostics need at least one sample")
    return n


@contextmanager
def _preserved(model: nn.Module, params: bool = False) -> Iterator[None]:
    """Run in eval mode; afterwards restore train/eval mode, every LIF layer's spike mode, scan
    implementation, ``record`` flag and membrane, and (with ``params``) the parameter values."""
    was_training = model.training
    layers = [(m, m.spike_mode, m.implementation, m.record, m.membrane) for m in lif_layers(model)]
    saved = [p.detach().clone() for p in _params(model)] if params else None
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
        for m, mode, impl, record, membrane in layers:
            m.spike_mode, m.implementation, m.record, m.membrane = mode, impl, record, membrane
        if saved is not None:
            with torch.no_grad():
                for p, w in zip(_params(model), saved, strict=True):
                    p.copy_(w)


def _set_params(params: list[Tensor], base: list[Tensor], steps: list[Tensor],
                scale: float = 1.0) -> None:
    """p ← base + scale·step for every parameter."""
    with torch.no_grad():
        for p, b, s in zip(params, base, steps, strict=True):
            p.copy_(b + scale * s)


def _norm(tensors: list[Tensor]) -> Tensor:
    return torch.sqrt(sum((t * t).sum() for t in tensors))


def _dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------------------------
# Loss, gradient, Hessian-vector product


def _evaluate(model: nn.Module, batches: Batches) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over all batches, in the model's current spike mode."""
    n, loss, correct = _n_samples(batches), 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            x, y = _prepare(model, x, y)
            logits = model(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum())
    return loss / n, correct / n


def loss_on(model: nn.Module, batches: Batches, spike_mode: str = "surrogate") -> float:
    """L(w) = (1/N)·Σ_i CE(f_w(x_i), y_i) over every sample of every batch."""
    with _preserved(model), use_spike_mode(model, spike_mode):
        return _evaluate(model, batches)[0]


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
            d *= w.norm(dim=dims, keepdim=True) / (d.norm(dim=dims, keepdim=True) + 1e-10)
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


# --------------------------------------------------------------------------------------------
# Contraction and state bounds


def global_contraction_factor(layer: LIF) -> float:
    """γ = max(|β|, |β − ϑ·L_σ|), L_σ = sup σ_k′: the largest |∂u[t]/∂u[t−1]| over all states.

    The layer is a contraction in its state (for fixed input) iff γ < 1, i.e. iff
    ϑ·L_σ < 1 + β (for 0 ≤ β < 1).
    """
    lip = layer.surrogate.sup_derivative
    return max(abs(layer.beta), abs(layer.beta - layer.threshold * lip))


def local_contraction_factors(layer: LIF, membrane: Tensor) -> Tensor:
    """|∂u[t+1]/∂u[t]| = |β − ϑ·σ_k′(u[t] − ϑ)| at the states u[0 … T−2] of ``membrane[T, ...]``
    (the states that are carried forward to a next step)."""
    u = membrane[:-1]
    return (layer.beta - layer.threshold * layer.surrogate.derivative(u - layer.threshold)).abs()


def _children(module: nn.Module) -> list[nn.Module]:
    """The submodules of a container; a leaf that the bounds do not know is an error."""
    children = list(module.children())
    if not children:
        raise ValueError(f"the bounds do not cover a {type(module).__name__} layer")
    return children


def _current_bound(op: nn.Module, r: float | Tensor) -> float | Tensor:
    """A bound on |output| of a per-frame module given |input| ≤ r elementwise.

    Linear: |I_i| ≤ r·‖W_i,:‖₁ + |b_i| per output unit. Conv2d: |I_c,h,w| ≤ r·‖K_c‖₁ + |b_c| per
    output channel (zero padding only drops terms). Flatten and average pooling keep r.
    """
    if isinstance(op, nn.Sequential):
        for m in op:
            r = _current_bound(m, r)
        return r
    if isinstance(op, (nn.Flatten, nn.Identity, nn.AvgPool2d, nn.MaxPool2d)):
        return r
    r_in = float(r.max()) if isinstance(r, Tensor) else float(r)
    if isinstance(op, nn.Linear):
        w = op.weight.detach().double()
        bound = r_in * w.abs().sum(1)
        return bound if op.bias is None else bound + op.bias.detach().double().abs()
    if isinstance(op, nn.Conv2d):
        w = op.weight.detach().double()
        bound = r_in * w.abs().sum((1, 2, 3))
        if op.bias is not None:
            bound = bound + op.bias.detach().double().abs()
        return bound.view(-1, 1, 1)
    raise ValueError(f"no current bound for a per-frame {type(op).__name__}")


def state_bounds(model: nn.Module, input_bound: float) -> list[Tensor]:
    """Per LIF layer (in order) and per neuron: B = (R_I + ϑ)/(1 − β) ≥ sup_t |u[t]|.

    R_I bounds the neuron's input current (see :func:`_current_bound`) given |input| ≤ R, with
    R = ``input_bound`` for the first layer and R = 1 for every later one (its inputs are spikes
    in [0, 1]). A Linear layer's bound has one entry per unit, a convolution's shape [C, 1, 1].
    """
    bounds: list[Tensor] = []
    r: float | Tensor = float(input_bound)

    def walk(module: nn.Module) -> None:
        nonlocal r
        if isinstance(module, PerFrame):
            r = _current_bound(module.module, r)
        elif isinstance(module, LIF):
            r_i = torch.as_tensor(r, dtype=torch.float64)
            bounds.append((r_i + module.threshold) / (1.0 - module.beta))
            r = 1.0
        elif not isinstance(module, LeakyReadout):
            for child in _children(module):
                walk(child)

    walk(model)
    return bounds


class _LayerStats:
    """Running statistics of one LIF layer over the batches."""

    def __init__(self, layer: LIF, bound: Tensor) -> None:
        self.layer, self.bound = layer, bound
        self.factor_max, self.factor_sum, self.factor_n, self.factor_ge_1 = 0.0, 0.0, 0, 0
        self.abs_max: Tensor | None = None
        self.rate_sum, self.above, self.n_states = 0.0, 0, 0

    def update(self, u: Tensor) -> None:
        layer = self.layer
        f = local_contraction_factors(layer, u)
        if f.numel():
            self.factor_max = max(self.factor_max, float(f.max()))
            self.factor_sum += float(f.double().sum())
            self.factor_n += f.numel()
            self.factor_ge_1 += int((f >= 1.0).sum())
        batch_max = u.abs().amax(dim=(0, 1)).double().cpu()
        self.abs_max = batch_max if self.abs_max is None else torch.maximum(self.abs_max,
                                                                           batch_max)
        self.rate_sum += float(layer.surrogate(u - layer.threshold).double().sum())
        self.above += int((u > layer.threshold).sum())
        self.n_states += u.numel()

    def summary(self, index: int) -> dict[str, object]:
        layer, sg = self.layer, self.layer.surrogate
        ratio = self.abs_max / self.bound
        return {
            "index": index, "beta": layer.beta, "threshold": layer.threshold,
            "surrogate": sg.name, "slope": sg.slope, "sup_derivative": sg.sup_derivative,
            "global_factor": global_contraction_factor(layer),
            "contracting": layer.threshold * sg.sup_derivative < 1.0 + layer.beta,
            "run_max_factor": self.factor_max,
            "run_mean_factor": self.factor_sum / max(self.factor_n, 1),
            "fraction_factor_ge_1": self.factor_ge_1 / max(self.factor_n, 1),
            "max_abs_membrane": float(self.abs_max.max()),
            "state_bound": float(self.bound.max()),
            "max_bound_ratio": float(ratio.max()),
            "within_bound": bool((ratio <= 1.0).all()),
            "firing_rate": self.rate_sum / self.n_states,
            "fraction_above_threshold": self.above / self.n_states,
        }


def contraction_diagnostics(model: nn.Module, batches: Batches) -> dict[str, object]:
    """Per LIF layer: the global factor γ from (β, ϑ, sup σ′), the local factor
    |β − ϑ·σ′(u − ϑ)| over the states visited in surrogate mode (max = the run-level contraction
    factor, mean, fraction ≥ 1), max |u| against the state bound (R_x = max |x| over the
    batches for the first layer), the mean surrogate spike (firing rate) and the fraction of
    states above threshold."""
    input_bound = max(float(x.abs().max()) for x, _ in batches)
    bounds = state_bounds(model, input_bound)
    layers = list(lif_layers(model))
    if len(bounds) != len(layers):
        raise ValueError("could not match every LIF layer to its input current")
    stats = [_LayerStats(m, b) for m, b in zip(layers, bounds, strict=True)]
    with _preserved(model), use_spike_mode(model, "surrogate"), torch.no_grad():
        for m in layers:
            m.record = True
        for x, y in batches:
            model(_prepare(model, x, y)[0])
            for s in stats:
                s.update(s.layer.membrane)
    return {
        "input_bound": input_bound,
        "layers": [s.summary(i) for i, s in enumerate(stats)],
    }


# --------------------------------------------------------------------------------------------
# Lipschitz bound and per-sample gradients


def _pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _operator_norm(op: nn.Module) -> float:
    """An upper bound on the ℓ2 operator norm of a per-frame linear map (biases do not count).

    Linear: ‖W‖₂. Conv2d: Σ_{p,q} ‖K[:, :, p, q]‖₂ (a sum of channel mixings of shifted, cropped,
    subsampled copies of the input). Average pooling over non-overlapping windows:
    1/√(window area); otherwise 1.
    """
    if isinstance(op, nn.Sequential):
        return math.prod(_operator_norm(m) for m in op)
    if isinstance(op, (nn.Flatten, nn.Identity)):
        return 1.0
    if isinstance(op, nn.AvgPool2d):
        k, s = _pair(op.kernel_size), _pair(op.stride or op.kernel_size)
        exact_windows = k == s and _pair(op.padding) == (0, 0) and not op.ceil_mode
        return 1.0 / math.sqrt(k[0] * k[1]) if exact_windows else 1.0
    if isinstance(op, nn.Linear):
        return float(torch.linalg.matrix_norm(op.weight.detach().double(), ord=2))
    if isinstance(op, nn.Conv2d) and op.groups == 1:
        k = op.weight.detach().double().permute(2, 3, 0, 1)
        return float(torch.linalg.matrix_norm(k, ord=2).sum())
    raise ValueError(f"no operator-norm bound for a per-frame {type(op).__name__}")


def _lif_lipschitz(layer: LIF, n_steps: int) -> float:
    """L_σ·G_T(γ), G_T(γ) = Σ_{k<T} γ^k: the bound on the current → spikes map of one layer."""
    gamma = global_contraction_factor(layer)
    horizon = float(n_steps) if gamma == 1.0 else (1.0 - gamma**n_steps) / (1.0 - gamma)
    return layer.surrogate.sup_derivative * horizon


def lipschitz_bound(model: nn.Module, n_steps: int) -> float:
    """L_in ≥ sup_x ‖∂logits/∂x‖ (surrogate mode), with x one sample's input sequence [T, ...]
    in the ℓ2 norm over all time steps and features and the logits in ℓ2:

        L_in = ‖W_out‖₂·‖w‖₂ · Π_ℓ L_σ^ℓ·G_T(γ^ℓ)·‖P^ℓ‖₂,

    P^ℓ the per-frame map before LIF layer ℓ, w the leaky readout's time weights
    (a spike-count readout contributes √T·L_σ·G_T(γ)·‖W_out‖₂ instead). The per-sample loss
    gradient obeys ‖∂ℓ/∂x‖₂ ≤ √2·L_in. Conservative by construction (see docs/theory.md).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")

    def walk(module: nn.Module) -> float:
        if isinstance(module, PerFrame):
            return _operator_norm(module.module)
        if isinstance(module, LIF):
            return _lif_lipschitz(module, n_steps)
        if isinstance(module, LeakyReadout):
            w = leaky_readout_weights(n_steps, module.beta, torch.float64)
            return float(w.norm()) * _operator_norm(module.linear)
        factor = math.prod(walk(child) for child in _children(module))
        return factor * math.sqrt(n_steps) if isinstance(module, SpikeCountReadout) else factor

    return walk(model)


def _take(batches: Batches, max_samples: int | None) -> list[tuple[Tensor, Tensor]]:
    """The first ``max_samples`` samples of ``batches`` (all when None)."""
    out, left = [], math.inf if max_samples is None else max_samples
    for x, y in batches:
        if left <= 0:
            break
        n = int(min(left, y.shape[0]))
        out.append((x[:, :n], y[:n]))
        left -= n
    return out


def input_gradient_norms(
    model: nn.Module, batches: Batches, max_samples: int | None = None
) -> np.ndarray:
    """‖∂ℓ_i/∂x_i‖₂ per sample (surrogate mode), ℓ_i = CE(f(x_i), y_i), the norm over all time
    steps and features of x_i. Samples do not interact, so one backward of Σ_i ℓ_i gives all."""
    norms = []
    with _preserved(model), use_spike_mode(model, "surrogate"):
        for x, y in _take(batches, max_samples):
            x, y = _prepare(model, x, y)
            x = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x), y, reduction="sum")
            (gx,) = torch.autograd.grad(loss, x)
            norms.append(gx.transpose(0, 1).flatten(1).norm(dim=1).double().cpu())
    return torch.cat(norms).numpy()


def _per_sample_gradient_norms(
    model: nn.Module, batches: Batches, part: list[Tensor] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """‖∇_w ℓ_i‖₂ over all trainable parameters and over the parameters in ``part``, per
    sample, one backward per sample (surrogate mode)."""
    params, total, partial = _params(model), [], []
    in_part = [any(p is q for q in part or ()) for p in params]
    with _preserved(model), use_spike_mode(model, "surrogate"):
        for x, y in batches:
            x, y = _prepare(model, x, y)
            for i in range(y.shape[0]):
                loss = F.cross_entropy(model(x[:, i : i + 1]), y[i : i + 1])
                grads = list(torch.autograd.grad(loss, params))
                total.append(_norm(grads).item())
                partial.append(_norm([g for g, k in zip(grads, in_part, strict=True) if k])
                               .item() if part else math.nan)
    return np.asarray(total, dtype=np.float64), np.asarray(partial, dtype=np.float64)


def parameter_gradient_norms(
    model: nn.Module, batches: Batches, max_samples: int | None = 256
) -> np.ndarray:
    """‖∇_w ℓ_i‖₂ per sample (surrogate mode), over all trainable parameters, for the first
    ``max_samples`` samples (all when None)."""
    return _per_sample_gradient_norms(model, _take(batches, max_samples))[0]


def _first_linear(model: nn.Module) -> nn.Linear | None:
    """The Linear layer that reads the (flattened) input frames directly, or None."""
    for m in model.children():
        if isinstance(m, PerFrame) and isinstance(m.module, nn.Flatten):
            continue
        if isinstance(m, PerFrame) and isinstance(m.module, nn.Linear):
            return m.module
        return None
    return None


def _frame_gram_min(x: Tensor, bias: bool) -> float:
    """λ_min(X̃X̃ᵀ) for one sample x[T, ...]: the rows of X̃ are its flattened frames x[t]ᵀ,
    followed by a 1 when the layer has a bias."""
    rows = x.reshape(x.shape[0], -1).double()
    if bias:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return float(torch.linalg.eigvalsh(rows @ rows.T)[0])


def _mechanism_check(
    layer: nn.Linear, batches: Batches, input_norms: np.ndarray, layer_norms: np.ndarray
) -> dict[str, object]:
    """Per sample, ‖∇_x ℓ_i‖ ≤ ‖W¹‖₂·‖∇_{(W¹,b¹)} ℓ_i‖ / √λ_min(X̃_i X̃_iᵀ) (docs/theory.md,
    section 6): how often it holds (always, unless the code is wrong) and how tight it is."""
    w_norm = float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    lam = np.array([
        _frame_gram_min(x[:, i], layer.bias is not None)
        for x, _ in batches for i in range(x.shape[1])
    ])
    safe = np.where(lam > 1e-12, lam, np.nan)
    rhs = np.nan_to_num(w_norm * layer_norms / np.sqrt(safe), nan=np.inf)
    return {
        "first_layer_spectral_norm": w_norm,
        "gram_lambda_min": _summary(lam),
        "bound_ratio": _summary(input_norms / rhs),
        "fraction_holds": float(np.mean(input_norms <= rhs * (1.0 + 1e-6))),
    }


def _average_ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a), dtype=float)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks; NaN when
    either side is constant or has fewer than two values."""
    if len(a) != len(b):
        raise ValueError(f"need equally long samples, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return float("nan")
    ra, rb = _average_ranks(np.asarray(a)), _average_ranks(np.asarray(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denom if denom > 0 else float("nan")


def _summary(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)), "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)), "max": float(np.max(values)),
    }


def gradient_mechanism(
    model: nn.Module, batches: Batches, max_samples: int = 256
) -> dict[str, object]:
    """Per-sample parameter-gradient norms ‖∇_w ℓ_i‖ against input-gradient norms ‖∇_x ℓ_i‖ on
    the first ``max_samples`` samples: summaries of both, their Spearman rank correlation, the
    input-Lipschitz bound L_in of the logits and √2·L_in, the bound on ‖∇_x ℓ_i‖. For an MLP
    (a Linear layer reading the frames) ``mechanism`` checks the first-layer inequality of
    docs/theory.md, section 6; otherwise it is None."""
    taken = _take(batches, max_samples)
    first = _first_linear(model)
    part = None if first is None else [p for p in first.parameters() if p.requires_grad]
    p_norms, first_norms = _per_sample_gradient_norms(model, taken, part)
    x_norms = input_gradient_norms(model, taken)
    bound = lipschitz_bound(model, int(taken[0][0].shape[0]))
    mechanism = None if first is None else _mechanism_check(first, taken, x_norms, first_norms)
    return {
        "n_samples": len(p_norms),
        "param_grad_norm": _summary(p_norms),
        "input_grad_norm": _summary(x_norms),
        "spearman": spearman(p_norms, x_norms),
        "lipschitz_bound": bound,
        "input_grad_bound": math.sqrt(2.0) * bound,
        "max_input_grad_norm": float(np.max(x_norms)),
        "mechanism": mechanism,
    }


# --------------------------------------------------------------------------------------------
# Everything at once


def run_diagnostics(
    model: nn.Module, batches: Batches, rho: float, seed: int = 0, *,
    sharpness_steps: int = 5, adaptive: bool = False, hessian_k: int = 3,
    hessian_iters: int = 20, hessian_tol: float = 1e-3, hessian_max_samples: int | None = None,
    alphas: Sequence[float] | np.ndarray | None = None, max_samples: int = 256,
) -> dict[str, object]:
    """All diagnostics with small defaults, as one JSON-serialisable dict with the keys
    ``sharpness``, ``hessian``, ``loss_slice``, ``contraction``, ``gradients`` and ``seconds``
    (the time each part took).

    The Hessian is the costliest part (``hessian_iters`` double-backward passes over its
    samples): ``hessian_max_samples`` restricts it to the first samples of ``batches``."""
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds[name] = time.perf_counter() - start
        return result

    sharp = timed("sharpness", worst_case_sharpness, model, batches, rho, sharpness_steps,
                  adaptive)
    hessian_batches = _take(batches, hessian_max_samples)
    ritz, n_iter = timed("hessian", _lanczos_ritz_values, model, hessian_batches, hessian_k,
                         hessian_iters, seed, hessian_tol)
    return {
        "n_samples": _n_samples(batches),
        "sharpness": sharp,
        "hessian": {
            "top_eigenvalues": [float(v) for v in ritz[:hessian_k]],
            "min_ritz_value": float(ritz[-1]), "lanczos_steps": n_iter, "seed": seed,
            "n_samples": _n_samples(hessian_batches),
        },
        "loss_slice": timed("loss_slice", loss_slice, model, batches, alphas, seed),
        "contraction": timed("contraction", contraction_diagnostics, model, batches),
        "gradients": timed("gradients", gradient_mechanism, model, batches, max_samples),
        "seconds": seconds,
    }
