"""A Markdown report with tables and PNG figures from finished run folders.

Runs whose configs differ only in ``seed`` form one group; tables show mean ± std over a
group's seeds. Each group is labelled by its method and ρ, plus each config field in which it
departs from what most groups share. What the report reads, per run: ``final.json`` (required),
``evaluation.json``, ``robustness.json``, ``diagnostics.json``, ``attribution.json``,
``deploy.json`` (:mod:`sast.study.report.deployment`) and ``metrics.jsonl`` (each section appears
when its
files exist).

Holds :mod:`~sast.study.report.runs` (loading, grouping, the baseline, the
selected ρ), :mod:`~sast.study.report.render` (Markdown tables, figure helpers),
:mod:`~sast.study.report.tables` (one Markdown table per result file),
:mod:`~sast.study.report.figures` (the PNG figures), :mod:`~sast.study.report.paper` (the
comparison with the published numbers, the rivals table, the generated conclusion),
:mod:`~sast.study.report.deployment` (the Deployment section) and
:mod:`~sast.study.report.atlas` (the gap atlas); this module assembles them
(:func:`write_report`). Part of :mod:`sast.study`, it may import what the study room may; it
reads run folders only, through
:mod:`sast.runs`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sast.runs.folder import atomic_write_bytes
from sast.study.report.figures import (
    figure_attribution,
    figure_loss_slices,
    figure_margins,
    figure_reliability,
    figure_rho,
    figure_robustness,
)
from sast.study.report.paper import conclusion, paper_section, rivals_section
from sast.study.report.runs import group_runs, load_runs, mark_compute_matched
from sast.study.report.tables import (
    attribution_table,
    calibration_table,
    clean_table,
    diagnostics_tables,
    firing_table,
    overhead_table,
    robustness_table,
    splits_section,
    threshold_table,
)


def write_report(run_dirs: list[str | Path], out: str | Path, study: Any = None) -> Path:
    """Write ``out/report.md`` and its figures in ``out/figures/``; returns the report path.
    With a ``study`` (:class:`sast.study.reproduce.Study`) the published numbers are set beside the
    results."""
    runs = load_runs(run_dirs)
    if not runs:
        raise ValueError("no run folders given")
    groups = group_runs(runs)
    mark_compute_matched(groups)
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    datasets = sorted({r.config["dataset"] for r in runs})
    lines = [f"# sast report: {', '.join(datasets)}", ""]
    if any(d.startswith("synthetic") for d in datasets):
        lines += ["**Built-in synthetic data** (an offline stand-in, not the real dataset): "
                  "numbers here are not comparable with published ones.", ""]
    lines += [f"{len(runs)} runs in {len(groups)} groups, written "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}. Every number traces to the "
              "`config.json` and seed of its run folder:", ""]
    for g in groups:
        lines.append(f"- **{g.label}**: " + ", ".join(
            f"`{r.path}` (seed {r.final['seed']})" for r in g.runs))
    lines.append("")
    lines += conclusion(groups)
    if study is not None:
        lines += paper_section(groups, study)
    splits = sorted({r.final["split"] for r in runs})
    carved = [r for r in runs if r.final.get("splits", {}).get("test", {}).get("source", "")
              .startswith("carved")]
    lines += [f"Accuracies are on the {' / '.join(splits)} split"
              + (" (carved out of the training split: the copy has no test split on disk)"
                 if carved else "")
              + ". Mean ± std over seeds (std with ddof = 0) where a group has several; "
              "docs/protocol.md defines every number.", ""]
    lines += splits_section(runs)
    lines += ["## Clean accuracy and transfer gap", "", clean_table(groups)]
    lines += rivals_section(groups)
    if any(r.evaluation for r in runs):
        lines += ["## Calibration", "", "15 equal-width confidence bins, L1 (ECE) and max "
                  "(MCE) as torchmetrics defines them; temperature T fitted on the validation "
                  "split.", "", calibration_table(groups)]
        if figure_reliability(groups, figures / "reliability.png"):
            lines += ["![reliability diagrams](figures/reliability.png)", ""]
        lines += ["## Threshold calibration (hard spikes)", "", "Per-layer threshold scales "
                  "fitted on the validation split for hard-spike deployment.", "",
                  threshold_table(groups)]
        lines += ["## Firing rates and membrane margins", "", firing_table(groups)]
        if figure_margins(groups, figures / "margins.png"):
            lines += ["![membrane margins](figures/margins.png)", ""]
    lines += ["## Training overhead", "", overhead_table(groups)]
    robust = robustness_table(groups)
    if robust:
        lines += ["## Robustness to event corruption", "", robust]
        if figure_robustness(groups, figures / "robustness.png"):
            lines += ["![accuracy vs corruption](figures/robustness.png)", ""]
    attribution = attribution_table(groups)
    if attribution:
        lines += ["## Attribution: which layer loses the accuracy", "",
                  "Each LIF layer swapped alone to hard spikes (the others surrogate), and "
                  "layers 1…ℓ together, on the test part; rates, the share of surrogate "
                  "state-steps with |u − ϑ| < 0.1 and each layer's own membrane drift at the "
                  "last step (docs/protocol.md, Attribution).", "", attribution]
        if figure_attribution(groups, figures / "attribution.png"):
            lines += ["![accuracy lost per layer](figures/attribution.png)", ""]
    diag = diagnostics_tables(groups)
    if diag:
        lines += ["## Diagnostics", "", diag]
        if figure_loss_slices(groups, figures / "loss_slice.png"):
            lines += ["![loss slices](figures/loss_slice.png)", ""]
    from sast.study.report.deployment import deployment_section

    lines += deployment_section(groups, figures)
    if figure_rho(groups, figures / "rho.png"):
        lines += ["## Accuracy and gap against ρ", "", "![accuracy vs rho](figures/rho.png)", ""]
    path = out / "report.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
