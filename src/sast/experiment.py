"""Sweeps: a grid of run configs, one run folder per config, backends that execute them.

A grid file (YAML or JSON) holds config fields, any of which may be a list; the sweep is their
cartesian product::

    out: sweeps/rho-grid              # sweep folder (default: sweeps/<grid file name>)
    evaluate: {robustness: true}      # protocol after training (optional; see below)
                                      # (deploy: true also runs `sast deploy`)
    resources: {num_cpus: 1, num_gpus: 0}   # per run, for the Ray backend
    grid:
      dataset: synthetic-nmnist
      method: [surrogate, sast]
      rho: [0.1, 0.3]
      seed: [0, 1]

Fields a method does not use are normalised away (ρ of a ``surrogate`` run, for example), so
the grid above is 2 surrogate runs and 4 sast runs. Each run's folder is
``<out>/runs/<method>-<hash>``, the hash of its resolved config: re-running the sweep skips
finished runs, resumes interrupted ones from their last checkpoint and retries failed ones. A
failed run is recorded with its error and does not stop the others. As runs finish,
``<out>/results.jsonl`` and ``<out>/results.csv`` are rewritten atomically with one row per
finished run, so a half-finished grid is already useful.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import numbers
import os
import reprlib
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from sast.config import RunConfig, load_config_file, without_later_defaults
from sast.lock import folder_lock
from sast.runfolder import RunFolder, atomic_write_bytes, atomic_write_json, read_json

BACKENDS = ("local", "ray")
SAM_FIELDS = ("rho", "adaptive", "eta", "sam_policy", "rho_warmup_epochs", "sam_interval",
              "sam_reuse", "looksam_alpha", "sam_start_epoch")
EVALUATE_OPTIONS = {"robustness": False, "diagnostics": False, "attribution": False,
                    "corruption": "drop", "levels": None, "corruption_seeds": 3,
                    "sharpness_rho": 0.3, "diagnostic_samples": 256, "deploy": False,
                    "deploy_bits": None}
LATER_EVALUATE_OPTIONS = {"deploy": False, "deploy_bits": None}
"""Evaluate options added after sweeps already existed, with the value every earlier
``evaluated.json`` had: a run evaluated before they existed still counts as evaluated with them
at these values. ``deploy: true`` runs ``sast deploy`` on each run after the protocol
(``deploy.json``) at ``deploy_bits`` (a list of widths, 2..16; null: ``sast deploy``'s
defaults, 8 and 4 bits, a QAT run's own width first)."""
RESULT_COLUMNS = (
    "run", "status", "dataset", "arch", "method", "rho", "seed", "epochs", "split",
    "surrogate_accuracy", "hard_accuracy", "transfer_gap_pp", "surrogate_nll", "hard_nll",
    "val_surrogate_accuracy", "val_hard_accuracy", "epoch_time_s", "step_time_s",
    "grad_evals_total", "peak_memory_mb", "error",
)
"""The columns of every results table; the config fields a grid varies are added after
``seed``, and the whole config goes last as one JSON column (``config``)."""
MAX_GRID_COMBINATIONS = 20_000
"""The most field combinations a grid file may expand to (before deduplication; about 0.4 ms
each): the largest shipped grid, atlas.yaml, has 2136, and a few lines of YAML could otherwise
describe billions."""


@dataclass
class Sweep:
    """An expanded grid: where it lives, its runs, and what to do after training."""

    out: Path
    configs: list[RunConfig]
    evaluate: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)

    def folder(self, cfg: RunConfig) -> Path:
        return self.out / "runs" / run_name(cfg)


def canonical(cfg: RunConfig) -> RunConfig:
    """The config with the fields it ignores set to their defaults: SAM's of a method without
    SAM, ``qat_per_channel`` of a run without quantisation-aware training."""
    defaults = RunConfig()
    ignored = [] if cfg.uses_sam else list(SAM_FIELDS)
    if cfg.qat_weight_bits is None:
        ignored.append("qat_per_channel")
    if not any(getattr(cfg, k) != getattr(defaults, k) for k in ignored):
        return cfg
    return cfg.replace(**{k: getattr(defaults, k) for k in ignored})


HASH_PINNED = {"device": "auto", "eval_batch_size": 256, "conv_schedule": "step"}
"""Fields that change no result (beyond float rounding), pinned to one value in the hash (the
values folders were first named with), so choosing another renames no run folder."""


def config_hash(cfg: RunConfig) -> str:
    """sha256 of the canonical config's JSON (sorted keys), 10 hex digits. Fields that change
    no result (``HASH_PINNED``) are pinned, and fields added later are left out while they hold
    the value every earlier run had, so an earlier sweep's folders keep their names."""
    fields_ = {**without_later_defaults(canonical(cfg).to_dict()), **HASH_PINNED}
    return hashlib.sha256(json.dumps(fields_, sort_keys=True).encode()).hexdigest()[:10]


def run_name(cfg: RunConfig) -> str:
    return f"{cfg.method}-{config_hash(cfg)}"


def expand_grid(grid: dict[str, Any], source: str = "grid") -> list[RunConfig]:
    """The cartesian product of the list-valued fields, canonicalised and deduplicated (in the
    order of the grid). ``hidden`` and ``channels`` are lists themselves: give a list of lists
    to sweep them. At most ``MAX_GRID_COMBINATIONS`` combinations."""
    axes = _grid_axes(grid, source)
    _check_combinations(math.prod(len(values) for _, values in axes), source)
    configs, seen = [], set()
    for combo in itertools.product(*(values for _, values in axes)):
        fields_ = {key: value for (key, _), value in zip(axes, combo, strict=True)}
        cfg = canonical(RunConfig.from_dict(fields_, source=source))
        name = run_name(cfg)
        if name not in seen:
            seen.add(name)
            configs.append(cfg)
    return configs


def _grid_axes(grid: dict[str, Any], source: str) -> list[tuple[str, list[Any]]]:
    """``(field, values)`` of each field of a grid: its list, or its one value."""
    axes: list[tuple[str, list[Any]]] = []
    for key, value in grid.items():
        is_shape = key in ("hidden", "channels")
        if isinstance(value, list) and (not is_shape or any(isinstance(v, list) for v in value)):
            if not value:
                raise ValueError(f"{source}: field {reprlib.repr(key)} has an empty list of "
                                 "values")
            axes.append((key, value))
        else:
            axes.append((key, [value]))
    return axes


def _check_combinations(n: int, source: str) -> None:
    if n > MAX_GRID_COMBINATIONS:
        raise ValueError(f"{source}: the grid expands to {n} field combinations, more than "
                         f"MAX_GRID_COMBINATIONS = {MAX_GRID_COMBINATIONS}")


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Read a grid file (see the module docstring). ``FileNotFoundError`` when it does not
    exist, ``ValueError`` naming it for anything malformed."""
    path = Path(path)
    return sweep_from_dict(load_config_file(path), str(path), out, Path("sweeps") / path.stem)


def sweep_from_dict(data: dict[str, Any], source: str, out: str | Path | None = None,
                    default_out: str | Path = "sweeps/sweep",
                    overrides: dict[str, Any] | None = None) -> Sweep:
    """A sweep from the contents of a grid file; ``overrides`` replace fields in every grid.
    ``grid`` may also be a list of grids, whose runs are concatenated (deduplicated)."""
    path = source
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields or 'grid:'")
    known = {"grid", "out", "evaluate", "resources"}
    grid = data.get("grid", {k: v for k, v in data.items() if k not in known})
    grids = grid if isinstance(grid, list) else [grid]
    if not grids or not all(isinstance(g, dict) and g for g in grids):
        raise ValueError(f"{path}: expected config fields, or a 'grid:' mapping of them")
    evaluate = data.get("evaluate") or {}
    if not isinstance(evaluate, dict):
        raise ValueError(f"{path}: evaluate must be a mapping of options")
    unknown = set(evaluate) - set(EVALUATE_OPTIONS)
    if unknown:
        raise ValueError(f"{path}: unknown evaluate option(s) "
                         f"{reprlib.repr(sorted(map(str, unknown)))}; expected "
                         f"{sorted(EVALUATE_OPTIONS)}")
    _check_evaluate(evaluate, path)
    resources = data.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - {"num_cpus", "num_gpus"} or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 0
            for v in resources.values()):
        raise ValueError(f"{path}: resources takes num_cpus and num_gpus, numbers >= 0")
    if not isinstance(data.get("out"), str | None):
        raise ValueError(f"{path}: out must be a folder name, got {reprlib.repr(data['out'])}")
    folder = Path(out or data.get("out") or default_out)
    _check_combinations(sum(math.prod(len(values) for _, values in
                                      _grid_axes({**g, **(overrides or {})}, path))
                            for g in grids), path)
    configs, names = [], set()
    for g in grids:
        for cfg in expand_grid({**g, **(overrides or {})}, path):
            if run_name(cfg) not in names:
                names.add(run_name(cfg))
                configs.append(cfg)
    return Sweep(folder, configs, evaluate, resources)


def _check_evaluate(evaluate: dict[str, Any], source: str) -> None:
    """Each evaluate option holds a value of its default's type (``levels``: null or a list of
    numbers; ``deploy_bits``: null or a list of integers in 2..16)."""
    for key, value in evaluate.items():
        default = EVALUATE_OPTIONS[key]
        if key == "deploy_bits":
            ok = value is None or (isinstance(value, list) and value != [] and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and 2 <= v <= 16
                for v in value))
            if not ok:
                raise ValueError(f"{source}: evaluate option 'deploy_bits' = "
                                 f"{reprlib.repr(value)} must be null or a list of weight "
                                 "widths, integers in 2..16")
            continue
        if default is None:
            ok = value is None or (isinstance(value, list) and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value))
        elif isinstance(default, bool | str):
            ok = isinstance(value, type(default))
        else:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 0
            ok = ok and (isinstance(value, numbers.Integral) or isinstance(default, float))
        if not ok:
            raise ValueError(f"{source}: evaluate option {key!r} = {reprlib.repr(value)} is not "
                             f"of the type of its default {default!r}")


# ---------------------------------------------------------------- one run


EVALUATED = "evaluated.json"
"""Written into a run folder after its evaluation protocol ran, with the options it ran with."""


def evaluate_options(evaluate: dict[str, Any]) -> dict[str, Any]:
    """The full evaluation options (defaults filled in) of a sweep's ``evaluate`` mapping."""
    return {**EVALUATE_OPTIONS, **evaluate} if evaluate else {}


def _comparable(options: dict[str, Any]) -> dict[str, Any]:
    """Evaluation options without the :data:`LATER_EVALUATE_OPTIONS` at their earlier value."""
    return {k: v for k, v in options.items()
            if not (k in LATER_EVALUATE_OPTIONS and v == LATER_EVALUATE_OPTIONS[k])}


def run_status(folder: Path, cfg: RunConfig, evaluate: dict[str, Any]) -> str:
    """``finished`` (trained, and evaluated with the options asked for), ``failed`` (its last
    attempt failed), ``interrupted`` (something is there, not finished) or ``pending``."""
    run = RunFolder(folder)
    try:
        final = read_json(run.final) if run.final.exists() else None
        evaluated = read_json(folder / EVALUATED) if (folder / EVALUATED).exists() else None
        status = read_json(run.status).get("status") if run.status.exists() else None
    except ValueError:
        return "interrupted"
    trained = final is not None and final.get("epochs") == cfg.epochs
    if trained and (not evaluate or (isinstance(evaluated, dict) and _comparable(evaluated)
                                     == _comparable(evaluate_options(evaluate)))):
        return "finished"
    if status in ("failed", "diverged"):
        return "failed"
    return "interrupted" if final is not None or run.checkpoint.exists() else "pending"


def execute_run(cfg_dict: dict[str, Any], folder: str, evaluate: dict[str, Any],
                threads: int | None = None) -> dict[str, Any]:
    """Train (resuming whatever is there) and evaluate one run; never raises: the outcome says
    ``finished`` with the result row, or ``failed`` with the error."""
    import torch

    from sast.train import fit

    if threads:
        torch.set_num_threads(threads)
    cfg = RunConfig.from_dict(cfg_dict)
    start = time.time()
    try:
        fit(cfg, folder, resume=True, progress=False, log=lambda *_: None)
        if evaluate:
            from sast.evaluate import DROP_LEVELS
            from sast.protocol import evaluate_run

            opts = evaluate_options(evaluate)
            (Path(folder) / EVALUATED).unlink(missing_ok=True)
            evaluate_run(
                folder, cfg.device, robustness=opts["robustness"],
                diagnostics=opts["diagnostics"], corruption=opts["corruption"],
                levels=opts["levels"] or DROP_LEVELS,
                corruption_seeds=tuple(range(opts["corruption_seeds"])),
                sharpness_rho=opts["sharpness_rho"], attribution=opts["attribution"],
                diagnostic_samples=opts["diagnostic_samples"],
            )
            if opts["deploy"]:
                from sast.deploy.protocol import deploy_run

                deploy_run(folder, opts["deploy_bits"], device=cfg.device)
            atomic_write_json(Path(folder) / EVALUATED, opts)
        RunFolder(folder).write_status("finished", epoch=cfg.epochs)
        return {"status": "finished", "seconds": time.time() - start}
    except BaseException as err:  # noqa: BLE001 - a failed run must not stop the sweep
        message = f"{type(err).__name__}: {err}"
        run = RunFolder(folder)
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run.root / "error.txt", traceback.format_exc().encode())
        status = read_json(run.status) if run.status.exists() else {}
        if status.get("status") not in ("diverged", "failed"):
            run.write_status("failed", message)
        return {"status": "failed", "error": message, "seconds": time.time() - start}


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


Task = tuple[RunConfig, Path]
Submit = Callable[[Task], Future]


def local_pool(workers: int, evaluate: dict[str, Any]) -> Iterator[Submit]:
    """A process pool of ``workers`` (spawned, so no state is shared), each using
    ``cores // workers`` threads so that workers do not oversubscribe the cores."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        yield lambda task: pool.submit(execute_run, task[0].to_dict(), str(task[1]),
                                       evaluate, threads)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_sweep(
    sweep: Sweep, backend: str = "local", workers: int = 1, address: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Execute every run that is not finished; returns the final results table. The sweep
    folder is locked meanwhile (:mod:`sast.lock`): a second process on it is refused."""
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
        from sast.ray_backend import ray_pool

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
