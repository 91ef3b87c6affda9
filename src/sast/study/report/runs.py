"""The runs a report reads, grouped: run folders found and loaded (``final.json`` and the
result files beside it), runs grouped by config across seeds and labelled, the study's
baseline group and the validation-selected ρ.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sast.config import LATER_FIELDS
from sast.runs.folder import RunFolder, read_json
from sast.study.sweep import SAM_FIELDS

IGNORED_FIELDS = ("seed", "device", "cache_dir", "compile", "conv_schedule")
"""Config fields that do not define a group: the seed, and fields that change no accuracy
(their timings may differ, as timings differ between code versions and machines)."""
TIMING_FIELDS = ("conv_schedule", "compile", "device")
"""Ignored fields that change how long a run takes: the overhead table says when its runs mix
them."""
MODES = ("surrogate", "hard")
LABELLED_FIELDS = ("ste_finetune_epochs", "slope_final", "qat_weight_bits", "qat_per_channel")
"""Fields a group label names in words when they are set, never as ``field=value``."""


@dataclass
class Run:
    path: Path
    final: dict[str, Any]
    evaluation: dict[str, Any] | None = None
    robustness: dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None
    attribution: dict[str, Any] | None = None
    deploy: dict[str, Any] | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The run's config; a field added after the run was written reads as the value every
        earlier run had (:data:`sast.config.LATER_FIELDS`), so old and new runs group alike."""
        return {**LATER_FIELDS, **self.final["config"]}


@dataclass
class Group:
    label: str
    config: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    def values(self, getter) -> np.ndarray:  # noqa: ANN001
        """``getter(run)`` for every run where it is available (KeyError/TypeError: skipped)."""
        out = []
        for run in self.runs:
            try:
                value = getter(run)
            except (KeyError, TypeError, IndexError):
                continue
            if value is not None:
                out.append(value)
        return np.asarray(out, dtype=float)


def run_folders(path: str | Path) -> list[Path]:
    """The finished run folders under ``path``: ``path`` itself when it holds a run's
    ``final.json``; for a sweep or study folder (``runs/``) or a folder of run folders, each of
    its runs that has finished. ``FileNotFoundError`` saying what was found otherwise."""
    root = Path(path)
    if (root / "final.json").exists():
        return [root]
    parent = root / "runs" if (root / "runs").is_dir() else root
    if parent.is_dir():
        found = sorted(d for d in parent.iterdir() if (d / "final.json").exists())
        if found:
            return found
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if (root / "config.json").exists():
        status = root / "status.json"
        detail = (f"its status.json says {read_json(status).get('status')!r}"
                  if status.exists() else "it never finished an epoch")
        raise FileNotFoundError(f"{root} is a run folder without final.json: {detail}")
    raise FileNotFoundError(f"{root} holds no finished run: neither final.json nor run folders "
                            "with one (a sweep or study folder has them under runs/)")


def load_runs(paths: list[str | Path]) -> list[Run]:
    """The runs of ``paths``: run folders, or sweep and study folders (their finished runs)."""
    runs = []
    for p in paths:
        for root in run_folders(p):
            folder = RunFolder(root)
            extra = {}
            for name in ("evaluation", "robustness", "diagnostics", "attribution", "deploy"):
                file = folder.root / f"{name}.json"
                extra[name] = read_json(file) if file.exists() else None
            runs.append(Run(folder.root, read_json(folder.final), **extra))
    return runs


def _group_key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in IGNORED_FIELDS},
                      sort_keys=True)


def group_runs(runs: list[Run]) -> list[Group]:
    """Group runs whose configs differ only in the seed; label each group."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = _group_key(run.config)
        groups.setdefault(key, Group("", run.config)).runs.append(run)
    configs = [g.config for g in groups.values()]
    varying = sorted(
        k for k in configs[0]
        if k not in (*IGNORED_FIELDS, "method", "rho")
        and len({json.dumps(c.get(k)) for c in configs}) > 1
    )
    method_order = {"surrogate": 0, "ste": 1, "sast": 2, "ste-sam": 3}
    def sortable(value: Any) -> tuple[int, Any]:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, value)
        return (1, json.dumps(value))

    ordered = sorted(groups.values(), key=lambda g: (
        method_order.get(g.config["method"], 9), g.config.get("rho") or 0.0,
        [sortable(g.config.get(k)) for k in varying]))
    shown = _label_fields(ordered, [k for k in varying if k not in LABELLED_FIELDS])
    for group in ordered:
        c = group.config
        label = c["method"]
        if c["method"] in ("sast", "ste-sam"):
            label += f" ρ={c['rho']:g}"
        if c.get("ste_finetune_epochs"):
            label += f" → STE fine-tune {c['ste_finetune_epochs']} ep"
        if c.get("slope_final") is not None:
            label += f", k {c['slope']:g}→{c['slope_final']:g}"
        if c.get("qat_weight_bits") is not None:
            label += f", QAT {c['qat_weight_bits']}-bit"
            label += "" if c.get("qat_per_channel", True) else " per tensor"
        extras = [f"{k}={c.get(k)}" for k in shown[id(group)]]
        group.label = label + (f" ({', '.join(extras)})" if extras else "")
    return ordered


def _uses_sam(config: dict[str, Any]) -> bool:
    return config["method"] in ("sast", "ste-sam")


def _label_fields(groups: list[Group], varying: list[str]) -> dict[int, list[str]]:
    """Per group, the varying fields its label names: those where it departs from the value
    most groups share (every group's, where no value is most common). SAM's own fields
    (ρ warm-up, ASAM, …) are compared among SAM groups only and never name a baseline."""
    shown: dict[int, list[str]] = {id(g): [] for g in groups}
    for name in varying:
        pool = [g for g in groups if name not in SAM_FIELDS or _uses_sam(g.config)]
        counts = Counter(json.dumps(g.config.get(name)) for g in pool)
        ranked = counts.most_common()
        if len(ranked) < 2:
            continue
        modal = ranked[0][0] if ranked[0][1] > ranked[1][1] else None
        for g in pool:
            if json.dumps(g.config.get(name)) != modal:
                shown[id(g)].append(name)
    return shown


BASELINE_FREE_FIELDS = (*IGNORED_FIELDS, "method", *SAM_FIELDS)


def _regime_key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in BASELINE_FREE_FIELDS},
                      sort_keys=True)


def baseline_group(groups: list[Group]) -> Group | None:
    """*The* baseline of a study: the surrogate-forward group trained exactly as the SAST groups
    are, bar SAM (same data, network, initialisation, epochs, surrogate schedule); without
    such a group, the shortest-trained plain surrogate group (no STE fine-tune, no slope
    annealing). None without surrogate groups."""
    plain = [g for g in groups if g.config["method"] == "surrogate"]
    if not plain:
        return None
    regimes = {_regime_key(g.config) for g in groups if g.config["method"] == "sast"}
    matched = [g for g in plain if _regime_key(g.config) in regimes]
    unmodified = [g for g in plain if not g.config.get("ste_finetune_epochs")
                  and g.config.get("slope_final") is None]
    return min(matched or unmodified or plain, key=lambda g: g.config["epochs"])


def mark_compute_matched(groups: list[Group]) -> None:
    """Label baseline groups that evaluate as many gradients as a SAM group of the same data:
    the compute-matched control."""
    sam = [g for g in groups if g.config["method"] in ("sast", "ste-sam")]
    for g in groups:
        if g.config["method"] not in ("surrogate", "ste"):
            continue
        evals = np.median(g.values(grad_evals_total))
        if any(np.median(s.values(grad_evals_total)) == evals
               and s.config["dataset"] == g.config["dataset"] for s in sam):
            g.label += " — compute-matched"


def grad_evals_total(run: Run) -> float:
    """Forward–backward passes of the whole training run."""
    timing = run.final["timing"]
    if "grad_evals_total" in timing:
        return float(timing["grad_evals_total"])
    return float(sum(r["grad_evals"] for r in RunFolder(run.path).read_metrics()))


# ---------------------------------------------------------------- figures


def first_with(groups: list[Group], result: str) -> list[tuple[Group, Run]]:
    """(group, its first run holding ``result``: "evaluation", "robustness" or "diagnostics")
    for every group where some run holds it."""
    out = []
    for g in groups:
        run = next((r for r in g.runs if getattr(r, result)), None)
        if run is not None:
            out.append((g, run))
    return out


# ---------------------------------------------------------------- the report


def val_hard_accuracy(run: Run) -> float:
    return run.final["validation"]["hard"]["accuracy"]


def select_best_rho(sam: list[Group]) -> Group | None:
    """The SAST group with the highest mean hard-spike **validation** accuracy (ties: the
    smaller ρ); None when no group has validation results. The test split plays no part."""
    scored = [(float(np.mean(g.values(val_hard_accuracy))), -float(g.config["rho"]), i)
              for i, g in enumerate(sam) if len(g.values(val_hard_accuracy))]
    if not scored:
        return None
    return sam[max(scored)[2]]
