"""Contraction and stability bounds: global and local contraction factors, state bounds, operator
norms of the per-frame maps, the input-Lipschitz bound, and the contraction diagnostics of a
run. The formulas are derived in ``docs/theory.md``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sast.diagnostics._common import Batches, _prepare, _preserved
from sast.layers import (
    LIF,
    LeakyReadout,
    PerFrame,
    SpikeCountReadout,
    leaky_readout_weights,
    lif_layers,
)
from sast.layers import spike_mode as use_spike_mode

# --------------------------------------------------------------------------------------------
# Contraction and state bounds


def global_contraction_factor(layer: LIF) -> float:
    """The largest |∂u[t]/∂u[t−1]| over all states.

    Reset by subtraction: γ = max(|β|, |β − ϑ·L_σ|), L_σ = sup σ_k′; the layer is a contraction
    in its state (for fixed input) iff γ < 1, i.e. iff ϑ·L_σ < 1 + β (for 0 ≤ β < 1).

    Reset to zero: ∂u[t]/∂u[t−1] = β·(1 − σ_k(u − ϑ)) − β·u·σ_k′(u − ϑ) depends on u itself;
    γ is its largest magnitude over a grid of u − ϑ (step 0.002/k within ±40/k, coarser out
    to ±4000/k, where every family's terms have settled), for each (β, ϑ) pair of the layer.
    """
    beta, threshold = layer.beta.double(), layer.threshold.double()
    if layer.reset == "zero":
        sg = layer.surrogate
        x = torch.cat([torch.linspace(-4000.0, -40.0, 2001, dtype=torch.float64),
                       torch.linspace(-40.0, 40.0, 40001, dtype=torch.float64),
                       torch.linspace(40.0, 4000.0, 2001, dtype=torch.float64)]) / sg.slope
        b, th = torch.broadcast_tensors(beta, threshold)
        pairs = torch.stack([b.flatten(), th.flatten()], 1).unique(dim=0).tolist()
        return max(float(_zero_reset_factor(b_, th_, sg, x + th_).abs().max())
                   for b_, th_ in pairs)
    lip = layer.surrogate.sup_derivative
    return float(torch.maximum(beta.abs(), (beta - threshold * lip).abs()).max())


def _zero_reset_factor(beta, threshold, sg, u: Tensor) -> Tensor:  # noqa: ANN001
    """∂u[t+1]/∂u[t] = β·(1 − σ(u − ϑ)) − β·u·σ′(u − ϑ) for reset to zero."""
    return beta * (1.0 - sg(u - threshold)) - beta * u * sg.derivative(u - threshold)


def local_contraction_factors(layer: LIF, membrane: Tensor) -> Tensor:
    """|∂u[t+1]/∂u[t]| at the states u[0 … T−2] of ``membrane[T, ...]`` (the states that are
    carried forward to a next step): |β − ϑ·σ_k′(u[t] − ϑ)| with reset by subtraction,
    |β·(1 − σ_k(u[t] − ϑ)) − β·u[t]·σ_k′(u[t] − ϑ)| with reset to zero."""
    u = membrane[:-1]
    if layer.reset == "zero":
        return _zero_reset_factor(layer.beta, layer.threshold, layer.surrogate, u).abs()
    return (layer.beta - layer.threshold * layer.surrogate.derivative(u - layer.threshold)).abs()


def _number(value: torch.Tensor) -> float | list[float]:
    """A LIF buffer as JSON: one number, or one per neuron."""
    return float(value) if value.dim() == 0 else value.flatten().tolist()


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
            "index": index, "beta": _number(layer.beta), "threshold": _number(layer.threshold),
            "surrogate": sg.name, "slope": sg.slope, "sup_derivative": sg.sup_derivative,
            "global_factor": global_contraction_factor(layer),
            "reset": layer.reset,
            "contracting": (global_contraction_factor(layer) < 1.0 if layer.reset == "zero"
                            else bool((layer.threshold * sg.sup_derivative
                                       < 1.0 + layer.beta).all())),
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
# Lipschitz bound


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
