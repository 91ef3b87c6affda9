""":func:`fit`: one run from its config to a finished run folder — the folder's config,
splits and environment, the model and its optimiser (restored from the checkpoint on resume),
the epochs with validation after each and an atomic checkpoint, the status file, and the
final evaluation in ``final.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sast.classifier import SpikingClassifier
from sast.config import RunConfig
from sast.data import FrameSet, time_first
from sast.evaluation.accuracy import evaluate_spike_modes
from sast.infra import distributed
from sast.infra.lock import folder_lock
from sast.infra.memory import PeakMemory
from sast.infra.runtime import tune_process
from sast.optim import SAM, LookSAM, build_base_optimizer
from sast.runs.folder import (
    RunFolder,
    atomic_torch_save,
    atomic_write_json,
    environment,
    load_checkpoint,
    read_json,
)
from sast.runs.load import make_model, resolve_device, weight_context
from sast.runs.results import run_header, timing_summary
from sast.runs.splits import Splits, prepare_data
from sast.runs.splits import describe as describe_splits
from sast.training.epoch import configure_epoch, train_epoch
from sast.training.steps import TrainingDiverged

RESUMABLE_CHANGES = ("epochs", "device", "lr", "conv_schedule")
"""Config fields that may differ when a run is resumed."""


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
    net = model.net if isinstance(model, SpikingClassifier) else model
    layers = calibrate_firing_rates(net, time_first(frames, device), cfg.init_rate)
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


def _check_resumable(saved: RunConfig, cfg: RunConfig, folder: RunFolder) -> None:
    a, b = saved.to_dict(), cfg.to_dict()
    changed = [k for k in a if a[k] != b[k] and k not in RESUMABLE_CHANGES]
    if changed:
        detail = ", ".join(f"{k}: {a[k]!r} → {b[k]!r}" for k in changed)
        raise ValueError(
            f"cannot resume {folder.root}: its config differs in {detail}; only "
            f"{RESUMABLE_CHANGES} may change on resume"
        )


@dataclass(frozen=True)
class GivenNetwork:
    """A network and its data, given in place of ``cfg``'s architecture and dataset
    (:func:`sast.train_model`)."""

    model: nn.Module
    """Time-first input to logits ``[B, C]`` (:class:`sast.classifier.SpikingClassifier`)."""
    splits: Splits | None
    """None: the splits of ``cfg``'s dataset (``sast train --nir``)."""
    final_split: str
    """Which part ``final.json`` reports: ``"test"``, ``"val"`` or ``"train"``."""
    description: dict[str, Any]
    """What ``final.json`` records as ``"model"``."""


def fit(
    cfg: RunConfig, out: str | Path, resume: bool = False, progress: bool = True,
    log=print,  # noqa: ANN001
    *, given: GivenNetwork | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into run folder ``out`` and return the contents of its ``final.json``.

    With ``resume=True`` an existing run in ``out`` continues from its last checkpoint
    (``epochs`` may be raised to train further); a finished run is returned as it is. The run
    folder is locked while it trains (:mod:`sast.infra.lock`): a second process is refused.

    Under ``torchrun`` (:mod:`sast.infra.distributed`) every rank calls ``fit``; rank 0 locks and
    writes the folder and returns ``final.json``, the other ranks train beside it, write
    nothing and return ``{}``; every rank returns once the folder is complete.

    ``given`` trains that network on that data instead (:func:`sast.train_model` builds it).
    """
    tune_process()
    with distributed.process_group(resolve_device(cfg.device)) as ctx:
        if ctx is not None:
            ctx.check_batch_size(cfg.batch_size)
        if ctx is not None and not ctx.is_main:
            final = _fit(cfg, out, resume, False, lambda *_: None, given)
        else:
            with folder_lock(out, "run folder"):
                final = _fit(cfg, out, resume, progress, log, given)
        # Every rank returns once rank 0 has written the run folder. The barrier is also the
        # last collective before a rank may exit: gloo's worker thread releases an all-reduce's
        # tensors after the call returns, and one released during interpreter shutdown aborts
        # the process (SIGABRT); a barrier's work holds no Python tensors.
        distributed.barrier()
        return final


@dataclass
class _Run:
    """What the epochs of one run share."""

    cfg: RunConfig
    folder: RunFolder
    device: torch.device
    writes: bool
    """Rank 0 (or the only process): it alone writes the run folder."""
    splits: Splits
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    memory: PeakMemory
    progress: bool
    log: Any
    network: dict[str, Any] | None = None
    """What a given network is (:class:`GivenNetwork`), recorded in each checkpoint."""


def _check_input_shape(given: GivenNetwork, frames: tuple[int, ...]) -> None:
    net = getattr(given.model, "net", given.model)
    expected = getattr(net, "input_shape", None)
    if expected is not None and tuple(expected) != tuple(frames):
        name = given.description.get("file", given.description["name"])
        raise ValueError(f"the network ({name}) takes frames of shape {tuple(expected)}; the "
                         f"data gives {tuple(frames)}")


def _fit(
    cfg: RunConfig, out: str | Path, resume: bool, progress: bool,
    log,  # noqa: ANN001
    given: GivenNetwork | None = None,
) -> dict[str, Any]:
    folder = RunFolder(out)
    device = distributed.local_device(resolve_device(cfg.device))
    writes = distributed.is_main()  # rank 0 alone writes the run folder (one process: it does)
    checkpoint, finished = _existing_run(cfg, folder, resume, log)
    if finished is not None:
        return finished
    distributed.barrier()  # every rank has read the folder before rank 0 writes to it
    if writes:
        folder.root.mkdir(parents=True, exist_ok=True)
        for stale in folder.root.glob(".*.tmp"):  # left by a killed write (we hold the lock)
            stale.unlink(missing_ok=True)
        atomic_write_json(folder.config, cfg.to_dict())
        atomic_write_json(folder.env, {**environment(device), **distributed.describe()})

    memory = PeakMemory(device)
    splits = given.splits if given is not None and given.splits is not None else \
        prepare_data(cfg, progress)
    if given is not None:
        _check_input_shape(given, splits.train.input_shape)
    if writes:
        atomic_write_json(folder.splits, splits.manifest())
    log(f"{folder.root}: {describe_splits(splits.manifest())}")
    model = (make_model(cfg, splits.train.input_shape, splits.train.n_classes)
             if given is None else given.model).to(device)
    if checkpoint is None and cfg.init == "firing-rate":
        report = initialise_firing_rates(cfg, model, splits.train, device)
        if writes:
            atomic_write_json(folder.init, report)
        log(f"{folder.root}: initial firing rates " + ", ".join(
            f"{r['rate_before']:.3f} → {r['rate_after']:.3f}" for r in report["layers"]))
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    run = _Run(cfg, folder, device, writes, splits, model, optimizer, scheduler, memory,
               progress, log, None if given is None else given.description)
    start_epoch = 0
    if checkpoint is not None:
        start_epoch = _restore(run, checkpoint)
    elif writes:
        folder.write_metrics([])
    distributed.broadcast_model(model)  # every rank starts from rank 0's weights
    if writes:
        folder.final.unlink(missing_ok=True)
        folder.write_status("running", epoch=start_epoch)
    _train_epochs(run, start_epoch)
    if not writes:  # the final evaluation is rank 0's
        return {}
    with weight_context(cfg)(model):
        final = final_evaluation(cfg, model, splits, device, folder,
                                 "test" if given is None else given.final_split)
    if given is not None:
        final["arch"] = given.description["name"]
        final["model"] = given.description
    atomic_write_json(folder.final, final)
    folder.write_status("finished", epoch=cfg.epochs)
    return final


def _existing_run(cfg: RunConfig, folder: RunFolder, resume: bool, log,  # noqa: ANN001
                  ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the checkpoint to resume from, or None; ``final.json`` when the run in ``folder`` has
    already finished ``cfg.epochs``, or None). ``FileExistsError`` for a run in ``folder``
    without ``resume``; ``ValueError`` when its config may not be resumed as ``cfg``."""
    if folder.config.exists() and not folder.holds_run():
        log(f"{folder.root}: its earlier run stopped before finishing an epoch; starting afresh")
    if not folder.holds_run():
        return None, None
    if not resume:
        raise FileExistsError(
            f"run folder {folder.root} already holds a run; pass --resume to continue it "
            "or choose another --out"
        )
    saved = RunConfig.from_dict(read_json(folder.config), source=str(folder.config))
    _check_resumable(saved, cfg, folder)
    if not folder.checkpoint.exists():
        return None, None
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
            return checkpoint, final
    return checkpoint, None


def _restore(run: _Run, checkpoint: dict[str, Any]) -> int:
    """Load the checkpoint's weights and optimiser state into ``run`` with the learning rate
    asked for now (and the schedule of this run's length); returns the epoch it ended."""
    cfg, optimizer, scheduler = run.cfg, run.optimizer, run.scheduler
    run.model.load_state_dict(checkpoint["model"])
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
    if run.writes:
        run.folder.write_metrics([r for r in run.folder.read_metrics()
                                  if r["epoch"] <= start_epoch])
    run.log(f"{run.folder.root}: resuming after epoch {start_epoch}")
    return start_epoch


def _train_epochs(run: _Run, start_epoch: int) -> None:
    """Epochs ``start_epoch`` … ``cfg.epochs − 1``; the status file says how they ended when
    they did not (interrupted, diverged with the command that continues, failed)."""
    cfg, folder = run.cfg, run.folder
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            _one_epoch(run, epoch)
    except KeyboardInterrupt:
        if not run.writes:
            raise
        done = len(folder.read_metrics())
        folder.write_status("interrupted", f"interrupted after epoch {done}; continue with "
                            f"`sast train --out {folder.root} --resume`", epoch=done)
        raise
    except TrainingDiverged as err:
        message = (f"{err} in epoch {epoch + 1}; the last good checkpoint is after epoch "
                   f"{epoch}: continue from it with a lower learning rate, e.g. `sast train "
                   f"--out {folder.root} --resume --lr {cfg.lr / 10:g}`")
        if run.writes:
            folder.write_status("diverged", message, epoch=epoch)
        raise TrainingDiverged(f"{folder.root}: {message}") from None
    except BaseException as err:
        try:
            if run.writes:
                folder.write_status("failed", f"{type(err).__name__}: {err}")
        except OSError:  # the folder cannot be written at all: the error says why
            pass
        raise


def _one_epoch(run: _Run, epoch: int) -> None:
    """Train (0-based) ``epoch``, validate, and (rank 0) log the metrics and checkpoint."""
    cfg, model, optimizer, splits = run.cfg, run.model, run.optimizer, run.splits
    row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
    row.update(train_epoch(cfg, model, optimizer, splits.train, epoch, run.device, run.progress))
    if run.scheduler is not None:
        run.scheduler.step()
    if len(splits.val) and run.writes:  # rank 0 validates; the others wait for it
        with weight_context(cfg)(model):
            val = evaluate_spike_modes(model, splits.val, run.device, cfg.eval_batch_size)
        row.update({
            "val_surrogate_accuracy": val["surrogate"]["accuracy"],
            "val_hard_accuracy": val["hard"]["accuracy"],
            "val_surrogate_loss": val["surrogate"]["loss"],
            "val_hard_loss": val["hard"]["loss"],
            "val_transfer_gap_pp": val["transfer_gap_pp"],
        })
    configure_epoch(model, cfg, epoch)
    row["peak_memory_mb"] = run.memory.peak_mb()
    row["peak_memory_scope"] = run.memory.scope
    if not run.writes:
        return
    run.folder.append_metrics(row)
    atomic_torch_save(run.folder.checkpoint, {
        "epoch": epoch + 1, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "config": cfg.to_dict(), "input_shape": list(splits.train.input_shape),
        "n_classes": splits.train.n_classes,
        **({} if run.network is None else {"network": run.network}),
    })
    run.folder.write_status("running", epoch=epoch + 1)
    run.log(_epoch_line(row, cfg.epochs))


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    line = (f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  "
            f"train acc {row['train_accuracy']:.3f}")
    if "val_surrogate_accuracy" in row:
        line += (f"  val surrogate {row['val_surrogate_accuracy']:.3f}  "
                 f"hard {row['val_hard_accuracy']:.3f}")
    return line + f"  ({row['epoch_time_s']:.1f} s)"


def final_evaluation(
    cfg: RunConfig, model: nn.Module, splits: Splits, device: torch.device, folder: RunFolder,
    split: str = "test",
) -> dict[str, Any]:
    """Test accuracy in both spike modes, the transfer gap, validation accuracy (what model
    selection reads), timing, the splits (sources, sizes, class counts) and the config, of
    ``model`` as it is (:func:`fit` calls it inside :func:`weight_context`, so a QAT run is
    scored with its fake-quantised weights). ``split`` names the part ``splits.test`` is."""
    final: dict[str, Any] = {
        **run_header(cfg, split),
        **evaluate_spike_modes(model, splits.test, device, cfg.eval_batch_size),
    }
    if splits.plan.test_carved:
        final["note"] = (f"the dataset's test split is not on disk: the test split is "
                         f"{100 * cfg.test_fraction:g} % of the training split, carved out "
                         f"(split_seed {cfg.split_seed}) before validation, disjoint from it")
    if len(splits.val) and split != "val":
        final["validation"] = evaluate_spike_modes(model, splits.val, device, cfg.eval_batch_size)
    final["timing"] = timing_summary(folder.read_metrics())
    final["sizes"] = {"train": len(splits.train), "val": len(splits.val),
                      "test": len(splits.test)}
    final["splits"] = splits.manifest()
    final["config"] = cfg.to_dict()
    return final
