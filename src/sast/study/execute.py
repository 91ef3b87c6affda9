"""One run of a sweep: its status from its folder (:func:`run_status`), trained and evaluated
without ever raising (:func:`execute_run`), and the local process pool that runs it.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sast.config import RunConfig
from sast.runs.folder import RunFolder, atomic_write_bytes, atomic_write_json, read_json
from sast.study.sweep import EVALUATE_OPTIONS, LATER_EVALUATE_OPTIONS

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

    from sast.training.loop import fit

    if threads:
        torch.set_num_threads(threads)
    cfg = RunConfig.from_dict(cfg_dict)
    start = time.time()
    try:
        fit(cfg, folder, resume=True, progress=False, log=lambda *_: None)
        if evaluate:
            from sast.evaluation.accuracy import DROP_LEVELS
            from sast.protocol.evaluate import evaluate_run

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
                from sast.protocol.deploy import deploy_run

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
