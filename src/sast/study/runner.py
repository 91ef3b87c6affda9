"""Executing a sweep (:func:`run_sweep`): finished runs skipped, the rest on the local pool or
Ray, a failed run recorded without stopping the others, the progress line with a cost-weighted
estimate of the time left, and ``results.jsonl`` / ``results.csv`` rewritten as runs finish.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sast.config import RunConfig
from sast.infra.lock import folder_lock
from sast.runs.folder import RunFolder, atomic_write_bytes, atomic_write_json, read_json
from sast.study.execute import Task, local_pool, run_status
from sast.study.sweep import Sweep, run_name

BACKENDS = ("local", "ray")
RESULT_COLUMNS = (
    "run", "status", "dataset", "arch", "method", "rho", "seed", "epochs", "split",
    "surrogate_accuracy", "hard_accuracy", "transfer_gap_pp", "surrogate_nll", "hard_nll",
    "val_surrogate_accuracy", "val_hard_accuracy", "epoch_time_s", "step_time_s",
    "grad_evals_total", "peak_memory_mb", "error",
)
"""The columns of every results table; the config fields a grid varies are added after
``seed``, and the whole config goes last as one JSON column (``config``)."""


def result_row(folder: Path, status: str = "finished",
               fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """One row of the results table from a run folder: the result columns, the config
    ``fields`` named (those the grid varies) and the whole config as JSON (``config``)."""
    run = RunFolder(folder)
    row: dict[str, Any] = {"run": folder.name, "status": status}
    config = read_json(run.config) if run.config.exists() else {}
    if run.final.exists():
        f = read_json(run.final)
        config = f.get("config", config)
        validation = f.get("validation") or {}
        row.update({
            "dataset": f["dataset"], "arch": f["arch"], "method": f["method"], "rho": f["rho"],
            "seed": f["seed"], "epochs": f["epochs"], "split": f["split"],
            "surrogate_accuracy": f["surrogate"]["accuracy"],
            "hard_accuracy": f["hard"]["accuracy"], "transfer_gap_pp": f["transfer_gap_pp"],
            "surrogate_nll": f["surrogate"]["loss"], "hard_nll": f["hard"]["loss"],
            "val_surrogate_accuracy": validation.get("surrogate", {}).get("accuracy"),
            "val_hard_accuracy": validation.get("hard", {}).get("accuracy"),
            "epoch_time_s": f["timing"]["epoch_time_s_median"],
            "step_time_s": f["timing"]["step_time_s_median"],
            "grad_evals_total": f["timing"].get("grad_evals_total"),
            "peak_memory_mb": f["timing"].get("peak_memory_mb"),
        })
    else:
        row.update({k: config.get(k) for k in ("dataset", "method", "rho", "seed", "epochs")})
    for name in fields:
        value = config.get(name)
        row[name] = json.dumps(value) if isinstance(value, list) else value
    if status == "failed" and run.status.exists():
        row["error"] = read_json(run.status).get("message", "")
    row["config"] = json.dumps(config, sort_keys=True)
    return row


def result_columns(configs: list[RunConfig]) -> list[str]:
    """The results table's columns for a sweep of ``configs``: :data:`RESULT_COLUMNS` with the
    fields the grid varies inserted after ``seed``, and ``config`` last."""
    varying = [f for f in differing_fields(configs) if f not in RESULT_COLUMNS]
    at = RESULT_COLUMNS.index("seed") + 1
    return [*RESULT_COLUMNS[:at], *varying, *RESULT_COLUMNS[at:], "config"]


def write_results(sweep: Sweep) -> list[dict[str, Any]]:
    """Rewrite ``results.jsonl`` and ``results.csv`` (atomically) from the run folders: one
    row per finished or failed run, in grid order."""
    columns = result_columns(sweep.configs)
    varying = tuple(c for c in columns if c not in RESULT_COLUMNS and c != "config")
    rows = []
    for cfg in sweep.configs:
        folder = sweep.folder(cfg)
        status = run_status(folder, cfg, sweep.evaluate)
        if status in ("finished", "failed"):
            rows.append(result_row(folder, status, varying))
    atomic_write_bytes(sweep.out / "results.jsonl",
                       "".join(json.dumps(r) + "\n" for r in rows).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(sweep.out / "results.csv", buf.getvalue().encode())
    return rows


# ---------------------------------------------------------------- backends


def cost_units(cfg: RunConfig) -> float:
    """How much work a run is relative to another of the same kind: epochs × forward–backward
    passes per step (2 for SAM)."""
    return float(cfg.epochs * (2 if cfg.uses_sam else 1))


def cost_kind(cfg: RunConfig) -> tuple[Any, ...]:
    """Runs of one kind cost the same per unit of :func:`cost_units`: same data, architecture,
    input size, data size and batch size."""
    return (cfg.dataset, cfg.resolved_arch(), cfg.time_bins, cfg.max_train_samples,
            cfg.batch_size, cfg.hidden, cfg.channels)


@dataclass
class Progress:
    """Counts of a sweep's runs and an estimate of the time left, weighted by cost: each
    finished run gives seconds per cost unit for its kind (:func:`cost_kind`), and a run left
    to do is estimated from its own kind's median rate, else the median of all kinds."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    skipped: int = 0
    rates: dict[tuple[Any, ...], list[float]] = field(default_factory=dict)
    left: list[RunConfig] = field(default_factory=list)
    """Runs not finished yet (queued or running)."""
    started: float = field(default_factory=time.time)

    def finished(self, cfg: RunConfig, seconds: float, ok: bool) -> None:
        if ok:
            self.done += 1
            self.rates.setdefault(cost_kind(cfg), []).append(seconds / cost_units(cfg))
        else:
            self.failed += 1
        self.left = [c for c in self.left if run_name(c) != run_name(cfg)]

    def seconds_left(self, workers: int) -> float | None:
        if not self.rates or not self.left:
            return None
        everything = [r for rates in self.rates.values() for r in rates]
        fallback = float(np.median(everything))
        total = sum(cost_units(c) * float(np.median(self.rates.get(cost_kind(c), [fallback])))
                    for c in self.left)
        return total / max(1, min(workers, len(self.left)))

    def line(self, workers: int) -> str:
        eta = self.seconds_left(workers)
        tail = f", about {_duration(eta)} left" if eta is not None else ""
        return (f"{self.done + self.skipped}/{self.total} done ({self.skipped} already), "
                f"{self.running} running, {self.failed} failed{tail}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_sweep(
    sweep: Sweep, backend: str = "local", workers: int = 1, address: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Execute every run that is not finished; returns the final results table. The sweep
    folder is locked meanwhile (:mod:`sast.infra.lock`): a second process on it is refused."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with folder_lock(sweep.out, "sweep folder"):
        return _run_sweep(sweep, backend, workers, address, log)


def _run_sweep(sweep: Sweep, backend: str, workers: int, address: str | None,
               log: Callable[[str], None]) -> list[dict[str, Any]]:
    atomic_write_json(sweep.out / "sweep.json", {
        "evaluate": sweep.evaluate, "resources": sweep.resources,
        "runs": [{"name": run_name(c), "config": c.to_dict()} for c in sweep.configs],
    })
    todo: list[Task] = []
    progress = Progress(total=len(sweep.configs))
    for cfg in sweep.configs:
        if run_status(sweep.folder(cfg), cfg, sweep.evaluate) == "finished":
            progress.skipped += 1
        else:
            todo.append((cfg, sweep.folder(cfg)))
            progress.left.append(cfg)
    write_results(sweep)
    if not todo:
        log(f"{sweep.out}: {progress.line(workers)}")
        return write_results(sweep)
    if backend == "local":
        submitters = local_pool(workers, sweep.evaluate)
    else:
        from sast.study.ray import ray_pool

        submitters = ray_pool(address, sweep.resources, sweep.evaluate)
    submit = next(submitters)
    try:
        pending: dict[Future, Task] = {}
        queue = list(todo)

        def refill() -> None:
            while queue and len(pending) < workers:
                task = queue.pop(0)
                pending[submit(task)] = task
            progress.running = len(pending)

        refill()
        log(f"{sweep.out}: {progress.line(workers)}")
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                cfg, folder = pending.pop(future)
                outcome = future.result()
                ok = outcome["status"] == "finished"
                progress.finished(cfg, outcome.get("seconds", 0.0), ok)
                if not ok:
                    log(f"  {folder.name} failed: {outcome.get('error')}")
                refill()
                write_results(sweep)
                log(f"{sweep.out}: {progress.line(workers)}")
    finally:
        submitters.close()
    return write_results(sweep)


def describe(sweep: Sweep) -> list[tuple[str, str, RunConfig]]:
    """(run name, status, config) of every run, for ``--dry-run``."""
    return [(run_name(c), run_status(sweep.folder(c), c, sweep.evaluate), c)
            for c in sweep.configs]


def differing_fields(configs: list[RunConfig]) -> list[str]:
    """Config fields whose value differs between the given configs."""
    dicts = [c.to_dict() for c in configs]
    return [f.name for f in dataclasses.fields(RunConfig)
            if len({json.dumps(d[f.name]) for d in dicts}) > 1]
