"""One optimiser step per method, each returning a :class:`StepResult`: a plain base-optimiser
step on ∇L(w), a SAM step (ascend to w + ε, ε = ρ·g/‖g‖, descend with ∇L(w + ε)), and a LookSAM
reuse step; :func:`step_kind` says which step a run takes when. A NaN or infinite loss or
gradient raises :class:`TrainingDiverged`.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from sast.config import RunConfig
from sast.infra import distributed
from sast.layers import (
    frozen_batchnorm_statistics,
    set_scan_implementation,
)
from sast.optim import SAM, LookSAM
from sast.runs.load import WeightContext


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class StepResult:
    loss: float
    correct: int
    n: int
    grad_evals: int


def gradient_norm(model: nn.Module) -> float:
    """‖∇‖ over every parameter with a gradient (NaN or inf when any entry is)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


def _forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      what: str = "training loss", weights: WeightContext | None = None,
                      ) -> tuple[float, int]:
    """Loss and correct count of one forward–backward pass (inside ``weights(model)``, when
    given); ``TrainingDiverged`` when the loss or the gradient is NaN or infinite. The loss is
    the model's ``training_loss(logits, labels)`` where it has one
    (:class:`sast.classifier.SpikingClassifier`), else the cross entropy."""
    criterion = getattr(model, "training_loss", nn.functional.cross_entropy)
    with (weights or nullcontext)(model):
        logits = model(x)
        loss = criterion(logits, y)
        value = loss.item()
        if not math.isfinite(mean := distributed.mean_over_ranks(value, len(y))):
            raise TrainingDiverged(f"{what} became {mean}")
        loss.backward()
    distributed.average_gradients(model, len(y))  # every rank: the global batch's gradient
    norm = gradient_norm(model)
    if not math.isfinite(norm):
        raise TrainingDiverged(f"the gradient of the {what} became {norm} (its norm)")
    return value, int((logits.argmax(1) == y).sum().item())


def plain_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    descent: tuple[torch.Tensor, torch.Tensor] | None = None,
    weights: WeightContext | None = None,
) -> StepResult:
    """One step of the base optimiser on ∇L(w; batch): one forward–backward pass (with QAT,
    ∇L at the fake-quantised weights, applied to the float ones)."""
    optimizer.zero_grad(set_to_none=True)
    loss, correct = _forward_backward(model, x, y, weights=weights)
    getattr(optimizer, "base_optimizer", optimizer).step()
    return StepResult(loss, correct, len(y), 1)


def looksam_reuse_step(
    model: nn.Module, optimizer: LookSAM, x: torch.Tensor, y: torch.Tensor,
    descent: tuple[torch.Tensor, torch.Tensor] | None = None,
    weights: WeightContext | None = None,
) -> StepResult:
    """One LookSAM step between exact SAM steps: one forward–backward pass for g, then the
    base step along g + α·(‖g‖/‖g_v‖)·g_v (:meth:`sast.optim.LookSAM.reuse_step`)."""
    optimizer.zero_grad(set_to_none=True)
    loss, correct = _forward_backward(model, x, y, weights=weights)
    optimizer.reuse_step()
    return StepResult(loss, correct, len(y), 1)


def sam_step(
    model: nn.Module, optimizer: SAM, x: torch.Tensor, y: torch.Tensor,
    descent: tuple[torch.Tensor, torch.Tensor] | None = None,
    weights: WeightContext | None = None,
) -> StepResult:
    """One SAM step: gradient at w on (x, y), ascend to w + ε, descend with the gradient at
    w + ε on ``descent`` (an independent second minibatch) or, when None, on (x, y) again.
    Two forward–backward passes. With QAT (``weights``) ε is added to the float weights and
    each pass sees the fake-quantised weights of its point, Q(w) and Q(w + ε)."""
    optimizer.zero_grad(set_to_none=True)
    loss, correct = _forward_backward(model, x, y, weights=weights)
    optimizer.first_step(zero_grad=True)
    dx, dy = descent if descent is not None else (x, y)
    with frozen_batchnorm_statistics(model):
        _forward_backward(model, dx, dy, what="loss at the SAM perturbation w + ε",
                          weights=weights)
    optimizer.second_step(zero_grad=True)
    return StepResult(loss, correct, len(y), 2)


def step_kind(cfg: RunConfig, epoch: int, step: int) -> str:
    """What step ``step`` (0-based, within ``epoch``) of a run takes: ``"exact"`` (a SAM step,
    two passes), ``"reuse"`` (a LookSAM reuse step, one pass) or ``"plain"`` (a base-optimiser
    step, one pass). SAM methods take exact steps from ``sam_start_epoch`` on, every
    ``sam_interval``-th step of an epoch starting with its first; the steps in between are
    reuse steps with ``sam_reuse: looksam`` and plain ones otherwise.

    >>> cfg = RunConfig(method="sast", epochs=4, sam_interval=3, sam_start_epoch=1)
    >>> [step_kind(cfg, 0, i) for i in range(2)], [step_kind(cfg, 1, i) for i in range(4)]
    (['plain', 'plain'], ['exact', 'plain', 'plain', 'exact'])
    """
    if not cfg.uses_sam or epoch < cfg.sam_start_epoch:
        return "plain"
    if step % cfg.sam_interval == 0:
        return "exact"
    return "reuse" if cfg.sam_reuse == "looksam" else "plain"


KIND_STEPS = {"exact": sam_step, "reuse": looksam_reuse_step, "plain": plain_step}


def compiled_model(model: nn.Module) -> nn.Module:
    """``torch.compile`` of ``model`` with its LIF layers on the plain-autograd scan (the
    compiler fuses the per-step elementwise work with the convolutions), cached on the model."""
    compiled = getattr(model, "_sast_compiled", None)
    if compiled is None:
        set_scan_implementation(model, "reference")
        compiled = torch.compile(model, dynamic=False)
        object.__setattr__(model, "_sast_compiled", compiled)
    return compiled
