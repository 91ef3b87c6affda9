"""One training epoch: the shuffling order fixed by (seed, epoch, stream), minibatches (a
rank's block of each under ``torchrun``), the spike mode and slope of the epoch, SAM's radius
with warm-up ρ(e) = ρ·min(1, (e − e₀)/warm-up), and the loop over steps
(:func:`train_epoch`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
)
from tqdm.auto import tqdm

from sast.config import RunConfig
from sast.data import FrameSet, time_first
from sast.infra import distributed
from sast.layers import (
    set_slope,
    set_spike_mode,
)
from sast.optim import LookSAM
from sast.runs.load import weight_context
from sast.training.steps import KIND_STEPS, TrainingDiverged, compiled_model, step_kind


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """The shuffling generator of one epoch, a function of (seed, epoch, stream) only."""
    seq = np.random.SeedSequence([seed, epoch, stream])
    return torch.Generator().manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))


def batch_loader(
    data: FrameSet, batch_size: int, generator: torch.Generator | None = None,
    drop_last: bool = False, shard: tuple[int, int] | None = None,
) -> DataLoader:
    """Minibatches of (frames, labels); shuffled with ``generator`` when one is given. Each
    batch is one indexing operation on the in-memory tensors. ``drop_last`` drops a last
    partial batch (a compiled model then sees one input shape only). ``shard`` = (rank, world
    size): only this rank's block of each batch (:class:`sast.infra.distributed.ShardedBatches`)."""
    order = (
        RandomSampler(range(len(data)), generator=generator)
        if generator is not None else SequentialSampler(range(len(data)))
    )
    batches = BatchSampler(order, batch_size, drop_last=drop_last and len(data) > batch_size)
    if shard is not None:
        batches = distributed.ShardedBatches(batches, *shard)
    return DataLoader(data, sampler=batches, batch_size=None)


def _cycle(loader_factory) -> Iterator:  # noqa: ANN001
    stream = 0
    while True:
        stream += 1
        yield from loader_factory(stream)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def configure_epoch(model: nn.Module, cfg: RunConfig, epoch: int) -> nn.Module:
    """Put ``model`` in the training state of (0-based) ``epoch``: its spike mode (surrogate,
    or STE in a fine-tune's epochs) and its surrogate slope (annealed with ``slope_final``)."""
    set_spike_mode(model, cfg.spike_mode_at(epoch))
    set_slope(model, cfg.slope_at(epoch))
    return model


def rho_at(cfg: RunConfig, epoch: float) -> float:
    """SAM's radius at (fractional) ``epoch``: ρ·min(1, (epoch − e₀) / rho_warmup_epochs), a
    linear warm-up from 0 at e₀ = ``sam_start_epoch`` (none when ``rho_warmup_epochs`` is 0)."""
    if cfg.rho_warmup_epochs <= 0:
        return cfg.rho
    return cfg.rho * min(1.0, max(0.0, epoch - cfg.sam_start_epoch) / cfg.rho_warmup_epochs)


def train_epoch(
    cfg: RunConfig, model: nn.Module, optimizer: torch.optim.Optimizer, data: FrameSet,
    epoch: int, device: torch.device, progress: bool = True,
) -> dict[str, Any]:
    """One pass over ``data`` in the order fixed by (seed, epoch); returns the epoch's
    training metrics."""
    weights = weight_context(cfg) if cfg.qat_weight_bits is not None else None
    configure_epoch(model, cfg, epoch)
    shard = distributed.batch_shard()  # None in one process
    loader = batch_loader(data, cfg.batch_size, epoch_generator(cfg.seed, epoch),
                          drop_last=cfg.compile, shard=shard)
    descent_batches = None
    if cfg.uses_sam and cfg.sam_policy == "independent":
        descent_batches = _cycle(
            lambda s: batch_loader(data, cfg.batch_size, epoch_generator(cfg.seed, epoch, s),
                                   drop_last=cfg.compile, shard=shard)
        )
    if cfg.compile:
        model = compiled_model(model)
    if isinstance(optimizer, LookSAM):
        optimizer.forget()  # each epoch starts afresh, so a resumed run takes the same steps
    model.train()
    total_loss, correct, seen, grad_evals, step_times = 0.0, 0, 0, 0, []
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress,
               unit="batch", dynamic_ncols=True)
    start = time.perf_counter()
    warmup = cfg.uses_sam and cfg.rho_warmup_epochs > 0
    for step, (frames, labels) in enumerate(bar):
        if warmup:
            for group in optimizer.param_groups:
                group["rho"] = rho_at(cfg, epoch + step / len(loader))
        t0 = time.perf_counter()
        x, y = time_first(frames, device), labels.to(device)
        kind = step_kind(cfg, epoch, step)
        descent = None
        if descent_batches is not None and kind == "exact":
            d_frames, d_labels = next(descent_batches)
            descent = (time_first(d_frames, device), d_labels.to(device))
        try:
            result = KIND_STEPS[kind](model, optimizer, x, y, descent, weights)
        except TrainingDiverged as err:
            raise TrainingDiverged(f"{err} at step {step + 1} of {len(loader)}") from None
        _sync(device)
        step_times.append(time.perf_counter() - t0)
        total_loss += result.loss * result.n
        correct += result.correct
        seen += result.n
        grad_evals += result.grad_evals
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
    bar.close()
    distributed.average_batchnorm_statistics(model)
    total_loss, correct, seen = distributed.sum_over_ranks(total_loss, correct, seen)
    return {
        "train_loss": total_loss / seen,
        "train_accuracy": correct / seen,
        "epoch_time_s": time.perf_counter() - start,
        "step_time_s_median": statistics.median(step_times),
        "steps": len(step_times),
        "grad_evals": grad_evals,
    }
