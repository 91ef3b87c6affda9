"""What every result file of a run starts with, and the training cost read from its log."""

from __future__ import annotations

import statistics
from typing import Any

from sast.config import RunConfig


def run_header(cfg: RunConfig, split: str) -> dict[str, Any]:
    """Which run (dataset, architecture, method, ρ, seed, epochs) and which split a result is
    on."""
    return {"dataset": cfg.dataset, "arch": cfg.resolved_arch(), "method": cfg.method,
            "rho": cfg.rho if cfg.uses_sam else None, "seed": cfg.seed, "epochs": cfg.epochs,
            "split": split}


def timing_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Training cost from a run's metrics log: medians over epochs, totals, peak memory (the
    largest per-epoch peak, and how it was measured: :mod:`sast.infra.memory`)."""
    if not rows:
        raise ValueError("the run has no finished epoch in metrics.jsonl")
    return {
        "epochs": len(rows),
        "epoch_time_s_median": statistics.median(r["epoch_time_s"] for r in rows),
        "step_time_s_median": statistics.median(r["step_time_s_median"] for r in rows),
        "grad_evals_per_step": rows[-1]["grad_evals"] / rows[-1]["steps"],
        "grad_evals_total": sum(r["grad_evals"] for r in rows),
        "total_train_time_s": sum(r["epoch_time_s"] for r in rows),
        "peak_memory_mb": max(r["peak_memory_mb"] for r in rows),
        "peak_memory_scope": rows[-1].get("peak_memory_scope", "process"),
    }
