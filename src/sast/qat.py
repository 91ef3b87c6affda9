"""Quantisation-aware training (QAT): synaptic weights fake-quantised in the forward pass, the
gradient passed straight through to the float weights.

A run with ``qat_weight_bits = b`` keeps float master weights W (what the optimiser steps and
the checkpoint holds), but every forward pass — training, validation, the final evaluation —
sees each synaptic weight (every ``Conv2d`` and ``Linear`` weight: the layers ``sast deploy``
quantises) as

    Ŵ = s·q,   q = clamp(round(W/s), −q_max, q_max),   s = max|W| / q_max,   q_max = 2^(b−1) − 1

with s per output channel (``qat_per_channel: true``) or per tensor. Ŵ is
:func:`sast.deploy.quantise.quantise_weight`'s dequantised weight — the same function, called
on the same float32 weights as ``sast deploy --weight-bits b`` — so the integers q of the
trained network are exactly those its integer network carries. Biases, thresholds and leaks stay
float here (``sast deploy`` places them on the membrane grid).

Backward: the straight-through estimator on the weights only,

    ∂L/∂W := ∂L/∂Ŵ  (evaluated at Ŵ),

i.e. the rounding and the scale's dependence on max|W| are treated as the identity. The
spikes are untouched: surrogate forward (or hard / STE, as the method says).

:func:`fake_quantised_weights` implements this by copying Ŵ into each weight for the duration
of a forward–backward pass and restoring W afterwards: the autograd graph then holds Ŵ, and
the gradient it leaves in ``W.grad`` is ∂L/∂Ŵ. With SAM the perturbation ε is added to the
float weights (w + ε), and each of its two passes sees the fake-quantised weights of the point
it is taken at, Q(w) and then Q(w + ε).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from sast.deploy.quantise import check_bits, check_granularity, quantise_weight


def synaptic_layers(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    """The layers whose weights are quantised: every ``Conv2d`` and ``Linear`` of ``model``, in
    order (the synaptic stages :func:`sast.deploy.read_topology` reads)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def fake_quantised(weight: Tensor, bits: int, granularity: str = "per-channel") -> Tensor:
    """Ŵ = s·q of ``weight`` (see the module docstring), in the weight's dtype and device,
    detached."""
    qw = quantise_weight(weight, bits, granularity)
    return qw.dequantised().to(dtype=weight.dtype, device=weight.device)


@torch.no_grad()
def quantise_weights_(model: nn.Module, bits: int, granularity: str = "per-channel") -> nn.Module:
    """Replace every synaptic weight of ``model`` by its fake-quantised value Ŵ, for good (a
    trained QAT network as it was evaluated); returns the model."""
    bits, granularity = check_bits(bits), check_granularity(granularity)
    for layer in synaptic_layers(model):
        layer.weight.copy_(fake_quantised(layer.weight, bits, granularity))
    return model


@contextmanager
def fake_quantised_weights(model: nn.Module, bits: int, granularity: str = "per-channel"
                           ) -> Iterator[nn.Module]:
    """Within the block, every synaptic weight W of ``model`` holds Ŵ; on exit (even after an
    exception) W is restored bit for bit. A forward *and* backward pass inside the block leave
    ``∂L/∂Ŵ`` in ``W.grad``: the straight-through estimator. Step the optimiser outside it.

    >>> lin = nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.30, -0.70]]))
    >>> with fake_quantised_weights(lin, bits=3):      # q_max = 3, s = 0.7/3
    ...     [round(v, 4) for v in lin.weight.tolist()[0]]
    [0.2333, -0.7]
    >>> [round(v, 4) for v in lin.weight.tolist()[0]]
    [0.3, -0.7]
    """
    bits, granularity = check_bits(bits), check_granularity(granularity)
    layers = synaptic_layers(model)
    saved: list[Tensor] = []
    try:
        with torch.no_grad():
            for layer in layers:
                saved.append(layer.weight.detach().clone())
                layer.weight.copy_(fake_quantised(layer.weight, bits, granularity))
        yield model
    finally:
        with torch.no_grad():
            for layer, weight in zip(layers, saved, strict=False):
                layer.weight.copy_(weight)
