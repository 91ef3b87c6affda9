"""The training loop: one step function per method, epochs, checkpoints and the metrics log.

Methods (``RunConfig.method``):

- ``surrogate``: surrogate-forward SNN, base optimiser (:func:`plain_step`);
- ``sast``: surrogate-forward SNN, SAM (:func:`sam_step`);
- ``ste``: hard spikes forward, σ_k′ backward, base optimiser;
- ``ste-sam``: the STE network with SAM.

With ``qat_weight_bits`` set, every forward pass — training, validation and the final
evaluation — sees fake-quantised synaptic weights and the gradient passes straight through to
the float weights (:mod:`sast.qat`); the step functions take that as ``weights``, a context
around each forward–backward pass.

Every epoch is seeded from (seed, epoch) alone, and a checkpoint is written atomically after it,
so a run resumed from its checkpoint continues bit for bit as if it had never stopped.

Under ``torchrun`` one run trains on several processes (:mod:`sast.distributed`): each rank
takes its block of every global batch, and every backward pass is followed by an all-reduce
of the gradients, so every rank takes the same step; rank 0 alone writes the run folder.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
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

from sast import distributed
from sast.config import RunConfig
from sast.data import FrameSet, time_first
from sast.evaluate import evaluate_spike_modes
from sast.layers import (
    frozen_batchnorm_statistics,
    set_scan_implementation,
    set_slope,
    set_spike_mode,
)
from sast.lock import folder_lock
from sast.memory import PeakMemory
from sast.models import SpikingNet, build_model, fold_batchnorm
from sast.optim import SAM, LookSAM, build_base_optimizer
from sast.qat import fake_quantised_weights, quantise_weights_
from sast.results import run_header, timing_summary
from sast.runfolder import (
    RunFolder,
    atomic_torch_save,
    atomic_write_json,
    environment,
    load_checkpoint,
    read_json,
)
from sast.runtime import tune_process
from sast.splits import Splits, prepare_data
from sast.splits import describe as describe_splits

RESUMABLE_CHANGES = ("epochs", "device", "lr", "conv_schedule")
"""Config fields that may differ when a run is resumed."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


WeightContext = Callable[[nn.Module], AbstractContextManager]
"""What a forward–backward pass runs inside: :func:`weight_context` of the config."""


def weight_context(cfg: RunConfig) -> WeightContext:
    """The weights every forward pass of ``cfg``'s training and evaluation sees: the float
    weights themselves, or (``qat_weight_bits``) their fake-quantised values with the
    straight-through gradient (:func:`sast.qat.fake_quantised_weights`)."""
    if cfg.qat_weight_bits is None:
        return nullcontext
    bits, granularity = cfg.qat_weight_bits, cfg.qat_granularity
    return lambda model: fake_quantised_weights(model, bits, granularity)


@dataclass
class StepResult:
    loss: float
    correct: int
    n: int
    grad_evals: int


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA device is available")
    return torch.device(name)


def make_model(
    cfg: RunConfig, input_shape: tuple[int, int, int], n_classes: int
) -> SpikingNet:
    """The configured architecture, initialised from ``cfg.seed`` (without touching the global
    RNG state of the caller)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(
            cfg.resolved_arch(), input_shape, n_classes,
            hidden=cfg.hidden, channels=cfg.channels, beta=cfg.beta, threshold=cfg.threshold,
            surrogate=cfg.surrogate, slope=cfg.slope, spike_mode=cfg.train_spike_mode,
            readout=cfg.readout, readout_beta=cfg.readout_beta,
            conv_schedule=cfg.conv_schedule, scan_implementation=cfg.scan_implementation,
            norm=cfg.norm, time_bins=cfg.time_bins, reset=cfg.reset,
        )
    return model


INIT_STREAM = 5
"""The data-dependent initialisation's batch is drawn with the seed (``seed``, this stream)."""


def initialise_firing_rates(
    cfg: RunConfig, model: nn.Module, train: FrameSet, device: torch.device,
) -> dict[str, Any]:
    """``init: firing-rate``: rescale each LIF layer's input so that ``init_rate`` of its
    state-steps are above threshold on one class-balanced batch of the training part
    (:mod:`sast.init`). Returns what ``init.json`` records."""
    from sast.data.subsets import balanced_subset
    from sast.init import calibrate_firing_rates

    rows = balanced_subset(train.labels.numpy(), cfg.batch_size, [cfg.seed, INIT_STREAM])
    frames, _ = train.batch(torch.as_tensor(rows))
    was_training = model.training
    model.train()
    layers = calibrate_firing_rates(model, time_first(frames, device), cfg.init_rate)
    model.train(was_training)
    return {"target_rate": cfg.init_rate, "batch": len(rows), "layers": layers}


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    base = build_base_optimizer(
        cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay
    )
    if not cfg.uses_sam:
        return base
    if cfg.sam_reuse == "looksam":
        return LookSAM(base, rho=cfg.rho, adaptive=cfg.adaptive, eta=cfg.eta,
                       alpha=cfg.looksam_alpha)
    return SAM(base, rho=cfg.rho, adaptive=cfg.adaptive, eta=cfg.eta)


def make_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer):  # noqa: ANN201
    """Per-epoch schedule, attached to the optimiser whose ``step`` runs (SAM's base).

    ``cosine``: lr(e) = lr₀·(1 + cos(π·e/E))/2 for epoch e of E, in closed form, so a run
    resumed with more epochs follows the longer run's curve from where it stopped."""
    if cfg.lr_schedule == "cosine":
        base = getattr(optimizer, "base_optimizer", optimizer)
        epochs = cfg.epochs
        return torch.optim.lr_scheduler.LambdaLR(
            base, lambda e: 0.5 * (1.0 + math.cos(math.pi * min(e, epochs) / epochs)))
    return None


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
    size): only this rank's block of each batch (:class:`sast.distributed.ShardedBatches`)."""
    order = (
        RandomSampler(range(len(data)), generator=generator)
        if generator is not None else SequentialSampler(range(len(data)))
    )
    batches = BatchSampler(order, batch_size, drop_last=drop_last and len(data) > batch_size)
    if shard is not None:
        batches = distributed.ShardedBatches(batches, *shard)
    return DataLoader(data, sampler=batches, batch_size=None)


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
    given); ``TrainingDiverged`` when the loss or the gradient is NaN or infinite."""
    with (weights or nullcontext)(model):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
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


def _compiled(model: nn.Module) -> nn.Module:
    """``torch.compile`` of ``model`` with its LIF layers on the plain-autograd scan (the
    compiler fuses the per-step elementwise work with the convolutions), cached on the model."""
    compiled = getattr(model, "_sast_compiled", None)
    if compiled is None:
        set_scan_implementation(model, "reference")
        compiled = torch.compile(model, dynamic=False)
        object.__setattr__(model, "_sast_compiled", compiled)
    return compiled


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
        model = _compiled(model)
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


def _check_resumable(saved: RunConfig, cfg: RunConfig, folder: RunFolder) -> None:
    a, b = saved.to_dict(), cfg.to_dict()
    changed = [k for k in a if a[k] != b[k] and k not in RESUMABLE_CHANGES]
    if changed:
        detail = ", ".join(f"{k}: {a[k]!r} → {b[k]!r}" for k in changed)
        raise ValueError(
            f"cannot resume {folder.root}: its config differs in {detail}; only "
            f"{RESUMABLE_CHANGES} may change on resume"
        )


def fit(
    cfg: RunConfig, out: str | Path, resume: bool = False, progress: bool = True,
    log=print,  # noqa: ANN001
) -> dict[str, Any]:
    """Train ``cfg`` into run folder ``out`` and return the contents of its ``final.json``.

    With ``resume=True`` an existing run in ``out`` continues from its last checkpoint
    (``epochs`` may be raised to train further); a finished run is returned as it is. The run
    folder is locked while it trains (:mod:`sast.lock`): a second process is refused.

    Under ``torchrun`` (:mod:`sast.distributed`) every rank calls ``fit``; rank 0 locks and
    writes the folder and returns ``final.json``, the other ranks train beside it, write
    nothing and return ``{}``; every rank returns once the folder is complete.
    """
    tune_process()
    with distributed.process_group(resolve_device(cfg.device)) as ctx:
        if ctx is not None:
            ctx.check_batch_size(cfg.batch_size)
        if ctx is not None and not ctx.is_main:
            final = _fit(cfg, out, resume, False, lambda *_: None)
        else:
            with folder_lock(out, "run folder"):
                final = _fit(cfg, out, resume, progress, log)
        # Every rank returns once rank 0 has written the run folder. The barrier is also the
        # last collective before a rank may exit: gloo's worker thread releases an all-reduce's
        # tensors after the call returns, and one released during interpreter shutdown aborts
        # the process (SIGABRT); a barrier's work holds no Python tensors.
        distributed.barrier()
        return final


def _fit(
    cfg: RunConfig, out: str | Path, resume: bool, progress: bool,
    log,  # noqa: ANN001
) -> dict[str, Any]:
    folder = RunFolder(out)
    device = distributed.local_device(resolve_device(cfg.device))
    writes = distributed.is_main()  # rank 0 alone writes the run folder (one process: it does)
    checkpoint = None
    if folder.config.exists() and not folder.holds_run():
        log(f"{folder.root}: its earlier run stopped before finishing an epoch; starting afresh")
    if folder.holds_run():
        if not resume:
            raise FileExistsError(
                f"run folder {folder.root} already holds a run; pass --resume to continue it "
                "or choose another --out"
            )
        saved = RunConfig.from_dict(read_json(folder.config), source=str(folder.config))
        _check_resumable(saved, cfg, folder)
        if folder.checkpoint.exists():
            checkpoint = load_checkpoint(folder.checkpoint)
            if checkpoint["epoch"] > cfg.epochs:
                raise ValueError(
                    f"cannot resume {folder.root} with epochs={cfg.epochs}: it has already "
                    f"trained {checkpoint['epoch']} epochs"
                )
            if checkpoint["epoch"] >= cfg.epochs and folder.final.exists():
                final = read_json(folder.final)
                if final.get("epochs") == cfg.epochs:
                    log(f"{folder.root}: already finished ({cfg.epochs} epochs)")
                    return final
    distributed.barrier()  # every rank has read the folder before rank 0 writes to it
    if writes:
        folder.root.mkdir(parents=True, exist_ok=True)
        for stale in folder.root.glob(".*.tmp"):  # left by a killed write (we hold the lock)
            stale.unlink(missing_ok=True)
        atomic_write_json(folder.config, cfg.to_dict())
        atomic_write_json(folder.env, {**environment(device), **distributed.describe()})

    memory = PeakMemory(device)
    splits = prepare_data(cfg, progress)
    if writes:
        atomic_write_json(folder.splits, splits.manifest())
    log(f"{folder.root}: {describe_splits(splits.manifest())}")
    model = make_model(cfg, splits.train.input_shape, splits.train.n_classes).to(device)
    if checkpoint is None and cfg.init == "firing-rate":
        report = initialise_firing_rates(cfg, model, splits.train, device)
        if writes:
            atomic_write_json(folder.init, report)
        log(f"{folder.root}: initial firing rates " + ", ".join(
            f"{r['rate_before']:.3f} → {r['rate_after']:.3f}" for r in report["layers"]))
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    start_epoch = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group in optimizer.param_groups:  # the learning rate asked for now
            group["lr"] = cfg.lr
            if "initial_lr" in group:
                group["initial_lr"] = cfg.lr
        if scheduler is not None and checkpoint.get("scheduler") is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
            scheduler.base_lrs = [cfg.lr] * len(optimizer.param_groups)
            # the schedule of this run's length (it differs when epochs were raised)
            for group, base_lr, lr_at in zip(optimizer.param_groups, scheduler.base_lrs,
                                             scheduler.lr_lambdas, strict=True):
                group["lr"] = base_lr * lr_at(scheduler.last_epoch)
        start_epoch = checkpoint["epoch"]
        if writes:
            folder.write_metrics([r for r in folder.read_metrics() if r["epoch"] <= start_epoch])
        log(f"{folder.root}: resuming after epoch {start_epoch}")
    elif writes:
        folder.write_metrics([])
    distributed.broadcast_model(model)  # every rank starts from rank 0's weights
    if writes:
        folder.final.unlink(missing_ok=True)
        folder.write_status("running", epoch=start_epoch)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            row.update(train_epoch(cfg, model, optimizer, splits.train, epoch, device, progress))
            if scheduler is not None:
                scheduler.step()
            if len(splits.val) and writes:  # rank 0 validates; the others wait for it
                with weight_context(cfg)(model):
                    val = evaluate_spike_modes(model, splits.val, device, cfg.eval_batch_size)
                row.update({
                    "val_surrogate_accuracy": val["surrogate"]["accuracy"],
                    "val_hard_accuracy": val["hard"]["accuracy"],
                    "val_surrogate_loss": val["surrogate"]["loss"],
                    "val_hard_loss": val["hard"]["loss"],
                    "val_transfer_gap_pp": val["transfer_gap_pp"],
                })
            configure_epoch(model, cfg, epoch)
            row["peak_memory_mb"] = memory.peak_mb()
            row["peak_memory_scope"] = memory.scope
            if not writes:
                continue
            folder.append_metrics(row)
            atomic_torch_save(folder.checkpoint, {
                "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "config": cfg.to_dict(), "input_shape": list(splits.train.input_shape),
                "n_classes": splits.train.n_classes,
            })
            folder.write_status("running", epoch=epoch + 1)
            log(_epoch_line(row, cfg.epochs))
    except KeyboardInterrupt:
        if not writes:
            raise
        done = len(folder.read_metrics())
        folder.write_status("interrupted", f"interrupted after epoch {done}; continue with "
                            f"`sast train --out {folder.root} --resume`", epoch=done)
        raise
    except TrainingDiverged as err:
        message = (f"{err} in epoch {epoch + 1}; the last good checkpoint is after epoch "
                   f"{epoch}: continue from it with a lower learning rate, e.g. `sast train "
                   f"--out {folder.root} --resume --lr {cfg.lr / 10:g}`")
        if writes:
            folder.write_status("diverged", message, epoch=epoch)
        raise TrainingDiverged(f"{folder.root}: {message}") from None
    except BaseException as err:
        try:
            if writes:
                folder.write_status("failed", f"{type(err).__name__}: {err}")
        except OSError:  # the folder cannot be written at all: the error says why
            pass
        raise

    if not writes:  # the final evaluation is rank 0's
        return {}
    with weight_context(cfg)(model):
        final = final_evaluation(cfg, model, splits, device, folder)
    atomic_write_json(folder.final, final)
    folder.write_status("finished", epoch=cfg.epochs)
    return final


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    line = (f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  "
            f"train acc {row['train_accuracy']:.3f}")
    if "val_surrogate_accuracy" in row:
        line += (f"  val surrogate {row['val_surrogate_accuracy']:.3f}  "
                 f"hard {row['val_hard_accuracy']:.3f}")
    return line + f"  ({row['epoch_time_s']:.1f} s)"


def final_evaluation(
    cfg: RunConfig, model: nn.Module, splits: Splits, device: torch.device, folder: RunFolder,
) -> dict[str, Any]:
    """Test accuracy in both spike modes, the transfer gap, validation accuracy (what model
    selection reads), timing, the splits (sources, sizes, class counts) and the config, of
    ``model`` as it is (:func:`fit` calls it inside :func:`weight_context`, so a QAT run is
    scored with its fake-quantised weights)."""
    final: dict[str, Any] = {
        **run_header(cfg, "test"),
        **evaluate_spike_modes(model, splits.test, device, cfg.eval_batch_size),
    }
    if splits.plan.test_carved:
        final["note"] = (f"the dataset's test split is not on disk: the test split is "
                         f"{100 * cfg.test_fraction:g} % of the training split, carved out "
                         f"(split_seed {cfg.split_seed}) before validation, disjoint from it")
    if len(splits.val):
        final["validation"] = evaluate_spike_modes(model, splits.val, device, cfg.eval_batch_size)
    final["timing"] = timing_summary(folder.read_metrics())
    final["sizes"] = {"train": len(splits.train), "val": len(splits.val),
                      "test": len(splits.test)}
    final["splits"] = splits.manifest()
    final["config"] = cfg.to_dict()
    return final


def load_run(run_dir: str | Path, device: str = "cpu", fake_quantise: bool = True
             ) -> tuple[RunConfig, SpikingNet]:
    """The config and trained model of a run folder: the weights of its last checkpoint, the
    surrogate slope of its last epoch, batch norm (if any) folded into the weights. A run
    trained with ``qat_weight_bits`` comes with its weights fake-quantised, the network its
    training evaluated (``final.json``), unless ``fake_quantise=False`` asks for its float
    master weights."""
    folder = RunFolder(run_dir)
    if not folder.config.exists():
        raise FileNotFoundError(f"{folder.root} is not a run folder (no config.json)")
    if not folder.checkpoint.exists():
        raise FileNotFoundError(f"{folder.root} has no checkpoint.pt; has it trained an epoch?")
    cfg = RunConfig.from_dict(read_json(folder.config), source=str(folder.config))
    state = load_checkpoint(folder.checkpoint)
    model = make_model(cfg, tuple(state["input_shape"]), state["n_classes"])
    model.load_state_dict(state["model"])
    set_slope(model, cfg.slope_at(state["epoch"] - 1))
    if fake_quantise and cfg.qat_weight_bits is not None:
        quantise_weights_(model, cfg.qat_weight_bits, cfg.qat_granularity)
    return cfg, fold_batchnorm(model).to(resolve_device(device))
