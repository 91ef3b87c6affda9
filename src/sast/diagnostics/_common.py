"""Plumbing shared by the diagnostics: trainable parameters, batches moved to the model, sums
and norms over parameter lists, restoring the model after a diagnostic, and the loss over all
batches."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sast.layers import lif_attributes
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
    saved = [p.detach().clone() for p in _params(model)] if params else None
    with lif_attributes(model, "spike_mode", "implementation", "record", "membrane"):
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)
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


# --------------------------------------------------------------------------------------------
# Loss


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
