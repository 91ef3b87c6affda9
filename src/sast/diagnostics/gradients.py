"""Per-sample gradient diagnostics: input-gradient and parameter-gradient norms, the
first-layer mechanism check of ``docs/theory.md`` (section 6), Spearman's rank correlation,
and :func:`gradient_mechanism`, which puts them together."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sast.diagnostics._common import Batches, _norm, _params, _prepare, _preserved, _take
from sast.diagnostics.bounds import lipschitz_bound
from sast.layers import PerFrame
from sast.layers import spike_mode as use_spike_mode


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
    either side is constant or has fewer than two values.

    >>> spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 4.0, 9.0, 100.0]))
    1.0
    >>> round(spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([3.0, 2.0, 2.0, 1.0])), 12)
    -1.0
    >>> spearman(np.array([1.0, 2.0]), np.array([5.0, 5.0]))
    nan
    """
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
