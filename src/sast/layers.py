"""Spiking layers over time-first tensors ``[T, B, ...]``.

- :class:`LIF` runs the LIF scan of :mod:`sast.neuron`; its spike mode is switched for a whole
  model by :func:`set_spike_mode` or, temporarily, by the :func:`spike_mode` context manager.
- :class:`PerFrame` applies a stateless module (Linear, Conv2d, pooling) to every time step,
  either to all ``T·B`` frames at once or step by step.
- :class:`LeakyReadout` and :class:`SpikeCountReadout` turn the last hidden layer into logits.
- :class:`StepSharedDropout` drops the same neurons at every step of a sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from sast.neuron import lif_scan, lif_scan_reference
from sast.surrogate import Surrogate, check_reset, check_spike_mode, get_surrogate

SCAN_IMPLEMENTATIONS = ("fused", "reference")


def check_time_first(x: Tensor, min_dim: int, what: str) -> None:
    if x.dim() < min_dim:
        raise ValueError(
            f"{what} expects a time-first tensor [T, B, ...] with at least {min_dim} dimensions, "
            f"got shape {tuple(x.shape)}"
        )


class LIF(nn.Module):
    """Leaky integrate-and-fire neurons (see :func:`sast.lif_scan`), from zero state on every
    call: ``s[t] = spike(u[t] − ϑ)`` with, after a spike, reset by subtraction (``reset =
    "subtract"``, the default), ``u[t] = β·u[t−1] + α·I[t] − ϑ·s[t−1]``, or to zero (``reset =
    "zero"``), ``u[t] = β·(1 − s[t−1])·u[t−1] + α·I[t]``. With ``record = True`` the last
    membrane trajectory is kept in ``self.membrane``.

    α (``input_scale``, default 1) scales the input current: α = 1 − β is SpikingJelly's
    ``decay_input=True`` and Norse's dt·τ⁻¹. ``reset_before_leak=True`` subtracts the threshold
    before the leak, ``u[t] = β·(u[t−1] − ϑ·s[t−1]) + α·I[t]`` (SpikingJelly's soft reset,
    Norse's subtractive one); it changes nothing for the reset to zero. β = 1 is an
    integrate-and-fire neuron.

    β (``beta``), ϑ (``threshold``), α (``input_scale``) and the surrogate's slope k (``slope``)
    are buffers: saved and loaded with ``state_dict`` and moved by ``.to()``. Each is one number
    for the layer, or β, ϑ and α a tensor per neuron that broadcasts against one time step
    without its batch dimension (``[features]`` after a Linear layer, ``[C, 1, 1]`` after a
    convolution); a layer with per-neuron β or ϑ runs the plain-autograd scan. Assigning a
    number to them works too.
    """

    BUFFERS = ("beta", "threshold", "slope", "input_scale")

    def __init__(
        self,
        beta: float | Tensor = 0.9,
        threshold: float | Tensor = 1.0,
        surrogate: str = "sigmoid",
        slope: float = 5.0,
        spike_mode: str = "surrogate",
        implementation: str = "fused",
        reset: str = "subtract",
        input_scale: float | Tensor = 1.0,
        reset_before_leak: bool = False,
    ) -> None:
        super().__init__()
        beta_t = torch.as_tensor(beta, dtype=torch.float64).clone()
        threshold_t = torch.as_tensor(threshold, dtype=torch.float64).clone()
        scale_t = torch.as_tensor(input_scale, dtype=torch.float64).clone()
        if not (bool((beta_t >= 0).all()) and bool((beta_t <= 1).all())):
            raise ValueError(f"beta (membrane leak) must lie in [0, 1], got {beta}")
        if not bool((threshold_t > 0).all()):
            raise ValueError(f"threshold must be positive, got {threshold}")
        if not bool(torch.isfinite(scale_t).all()):
            raise ValueError(f"input_scale must be finite, got {input_scale}")
        sg = get_surrogate(surrogate, slope)
        self.register_buffer("beta", beta_t)
        self.register_buffer("threshold", threshold_t)
        self.register_buffer("input_scale", scale_t)
        self.register_buffer("slope", torch.tensor(float(sg.slope), dtype=torch.float64))
        self.surrogate_name = sg.name
        self.spike_mode = check_spike_mode(spike_mode)
        self.implementation = _check_implementation(implementation)
        self.reset = check_reset(reset)
        self.reset_before_leak = bool(reset_before_leak)
        self.record = False
        self.membrane: Tensor | None = None
        self._refresh_constants()

    def __setattr__(self, name: str, value: object) -> None:
        buffers = self.__dict__.get("_buffers", {})
        if name in LIF.BUFFERS and name in buffers and not isinstance(value, Tensor):
            old = self._buffers[name]
            value = torch.as_tensor(value, dtype=old.dtype, device=old.device)
        super().__setattr__(name, value)
        if name in LIF.BUFFERS and all(b in buffers for b in LIF.BUFFERS):
            self._refresh_constants()

    def _refresh_constants(self) -> None:
        """β, ϑ (where one value for all neurons; None where per neuron) and k as Python
        numbers, as exact as the config that set them, read by :meth:`forward`; to
        ``torch.compile`` they are constants (reading a buffer's value would break its graph at
        every layer). Kept current by every assignment to a buffer and by loading a state."""
        self._constants = (
            None if self.beta.dim() else float(self.beta),
            None if self.threshold.dim() else float(self.threshold),
            float(self.slope),
            None if self.input_scale.dim() else float(self.input_scale),
        )

    @property
    def surrogate(self) -> Surrogate:
        """σ_k: the surrogate family with this layer's slope."""
        return get_surrogate(self.surrogate_name, float(self.slope))

    @surrogate.setter
    def surrogate(self, value: str | Surrogate) -> None:
        sg = get_surrogate(value)
        self.surrogate_name = sg.name
        self.slope = sg.slope

    @property
    def per_neuron(self) -> bool:
        """Whether β or ϑ differs between neurons (a tensor with more than one value)."""
        return self.beta.dim() > 0 or self.threshold.dim() > 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        # checkpoints written before β, ϑ and k were buffers: keep the values built from the
        # run's config
        for name in LIF.BUFFERS:
            state_dict.setdefault(prefix + name, getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._refresh_constants()

    def forward(self, current: Tensor) -> Tensor:
        check_time_first(current, 2, "LIF")
        beta, threshold, slope, scale = self._constants
        if scale is None:
            current = current * self.input_scale.to(current.dtype)
        elif scale != 1.0:
            current = current * scale
        surrogate = get_surrogate(self.surrogate_name, slope)
        if beta is None or threshold is None:  # per neuron
            beta, threshold = self.beta.to(current.dtype), self.threshold.to(current.dtype)
            fused = False
        else:  # the plain-autograd scan when compiling, which the compiler fuses
            fused = self.implementation == "fused" and not torch.compiler.is_compiling()
        if fused:
            spikes, membrane = lif_scan(current, beta, threshold, surrogate, self.spike_mode,
                                        reset=self.reset, membrane=self.record,
                                        reset_before_leak=self.reset_before_leak)
        else:
            spikes, membrane = lif_scan_reference(current, beta, threshold, surrogate,
                                                  self.spike_mode, reset=self.reset,
                                                  reset_before_leak=self.reset_before_leak)
        self.membrane = membrane if self.record else None
        return spikes

    def extra_repr(self) -> str:
        def show(t: Tensor) -> str:
            return f"{float(t):g}" if t.dim() == 0 else f"per neuron {tuple(t.shape)}"

        extra = "" if self._constants[3] == 1.0 else f"input_scale={show(self.input_scale)}, "
        if self.reset_before_leak and self.reset == "subtract":
            extra += "reset_before_leak=True, "
        return (
            f"beta={show(self.beta)}, threshold={show(self.threshold)}, reset={self.reset!r}, "
            f"{extra}surrogate={self.surrogate_name}(k={float(self.slope):g}), "
            f"spike_mode={self.spike_mode!r}, implementation={self.implementation!r}"
        )


def _check_implementation(implementation: str) -> str:
    if implementation not in SCAN_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown scan implementation {implementation!r}; expected one of "
            f"{SCAN_IMPLEMENTATIONS}"
        )
    return implementation


class PerFrame(nn.Module):
    """Apply a stateless module to every frame of ``x[T, B, ...]``.

    ``step_by_step=False`` folds time into the batch and makes one call on ``[T·B, ...]`` (the
    faster schedule on CPU in every shape ``benchmarks/bench_step.py`` times);
    ``step_by_step=True`` calls the module on each ``x[t]`` and stacks the results.
    ``channels_last`` puts 4-D frames in the channels-last memory format first.
    """

    def __init__(
        self, module: nn.Module, step_by_step: bool = False, channels_last: bool = False
    ) -> None:
        super().__init__()
        self.module = module
        self.step_by_step = step_by_step
        self.channels_last = channels_last

    def _prepare(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: Tensor) -> Tensor:
        check_time_first(x, 3, "PerFrame")
        if self.step_by_step:
            return torch.stack([self.module(self._prepare(x_t)) for x_t in x.unbind(0)])
        y = self.module(self._prepare(x.flatten(0, 1)))
        return y.unflatten(0, x.shape[:2])


def leaky_readout_weights(n_steps: int, beta: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """w[t] = (1/T)·Σ_{τ=t}^{T−1} β^{τ−t} = (1 − β^{T−t}) / ((1 − β)·T), t = 0 … T−1.

    These are the weights with which the time-averaged membrane of a non-spiking leaky
    integrator v[t] = β·v[t−1] + I[t], v[−1] = 0, depends on its inputs:
    (1/T)·Σ_t v[t] = Σ_t w[t]·I[t].
    """
    remaining = torch.arange(n_steps, 0, -1, dtype=torch.float64)
    if beta == 0.0:
        w = torch.ones(n_steps, dtype=torch.float64)
    else:
        w = (1.0 - beta**remaining) / (1.0 - beta)
    return (w / n_steps).to(dtype)


class LeakyReadout(nn.Module):
    """Non-spiking leaky-integrator readout whose time-averaged membrane gives the logits.

    v[t] = β·v[t−1] + W·x[t] + b, logits = (1/T)·Σ_t v[t] = W·(Σ_t w[t]·x[t]) + b·Σ_t w[t],
    with w from :func:`leaky_readout_weights`; the time sum is taken before the matmul.
    """

    def __init__(self, in_features: int, n_classes: int, beta: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"readout beta must lie in [0, 1), got {beta}")
        self.linear = nn.Linear(in_features, n_classes)
        self.beta = float(beta)

    def forward(self, x: Tensor) -> Tensor:
        check_time_first(x, 3, "LeakyReadout")
        w = leaky_readout_weights(x.shape[0], self.beta, x.dtype).to(x.device)
        pooled = torch.tensordot(w, x, dims=([0], [0]))
        return nn.functional.linear(pooled, self.linear.weight) + w.sum() * self.linear.bias


class SpikeCountReadout(nn.Module):
    """Spiking readout: a Linear layer into LIF neurons whose spike counts Σ_t s[t] are the
    logits."""

    def __init__(self, in_features: int, n_classes: int, **lif_kwargs: object) -> None:
        super().__init__()
        self.linear = PerFrame(nn.Linear(in_features, n_classes))
        self.lif = LIF(**lif_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.lif(self.linear(x)).sum(0)


class StepSharedDropout(nn.Module):
    """Dropout with one mask per sample for all steps of ``[T, B, ...]`` (SpikingJelly's
    ``layer.Dropout``, in either step mode): in training x·m/(1 − p), m ~ Bernoulli(1 − p) of
    shape ``[1, B, ...]``; the identity in evaluation."""

    positively_homogeneous = True
    """f(c·x) = c·f(x) for c > 0 (:mod:`sast.init` may rescale the layer before it)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x[:1]).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def lif_layers(model: nn.Module) -> Iterator[LIF]:
    return (m for m in model.modules() if isinstance(m, LIF))


def set_spike_mode(model: nn.Module, mode: str) -> nn.Module:
    """Set the spike mode (``"surrogate"``, ``"hard"``, ``"ste"``) of every LIF layer in
    ``model``; returns the model."""
    check_spike_mode(mode)
    for layer in lif_layers(model):
        layer.spike_mode = mode
    return model


@contextmanager
def lif_attributes(model: nn.Module, *names: str, **values: object) -> Iterator[list[LIF]]:
    """Save the attributes ``names`` (and those set in ``values``) of every LIF layer of
    ``model``, set ``values`` on every layer, and restore every saved attribute on exit, even
    after an exception. Yields the LIF layers in network order, so per-layer values (threshold
    scales, say) can be set inside the block and are still undone::

        with lif_attributes(model, "membrane", record=True, spike_mode="hard") as layers:
            ...
    """
    layers = list(lif_layers(model))
    saved_names = dict.fromkeys((*names, *values))
    saved = [{name: getattr(layer, name) for name in saved_names} for layer in layers]
    try:
        for layer in layers:
            for name, value in values.items():
                setattr(layer, name, value)
        yield layers
    finally:
        for layer, attrs in zip(layers, saved, strict=True):
            for name, value in attrs.items():
                setattr(layer, name, value)


@contextmanager
def spike_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Temporarily run every LIF layer of ``model`` in ``mode``; restores each layer's previous
    mode on exit, even after an exception."""
    with lif_attributes(model, spike_mode=check_spike_mode(mode)):
        yield model


def set_slope(model: nn.Module, slope: float) -> nn.Module:
    """Give every LIF layer of ``model`` the surrogate of its own family with slope ``slope``."""
    for layer in lif_layers(model):
        layer.slope = float(slope)
    return model


@contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Batch norm layers still normalise with the batch's statistics but leave their running
    statistics as they are (momentum 0): SAM's second pass, at the perturbed weights, must not
    count twice."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    try:
        for m in norms:
            m.momentum = 0.0
        yield model
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


def set_scan_implementation(model: nn.Module, implementation: str) -> nn.Module:
    """Use the ``"fused"`` scan or the plain-autograd ``"reference"`` scan in every LIF layer."""
    _check_implementation(implementation)
    for layer in lif_layers(model):
        layer.implementation = implementation
    return model
