"""The report's Markdown tables, one per kind of result: clean accuracy and gap, calibration,
threshold calibration, training overhead, robustness, diagnostics, attribution, firing rates
and the data splits.
"""

from __future__ import annotations

import json

import numpy as np

from sast.runs.folder import RunFolder
from sast.study.report.render import markdown_table, pm
from sast.study.report.runs import (
    MODES,
    TIMING_FIELDS,
    Group,
    Run,
    baseline_group,
    grad_evals_total,
)

STE_NOTE = ("† `ste` / `ste-sam` train the hard network itself: for them the gap column is "
            "the accuracy lost by running the trained network with *smooth* spikes (the "
            "reverse swap), not a deployment cost; compare their hard accuracy instead.")


def _is_ste(g: Group) -> bool:
    return g.config["method"] in ("ste", "ste-sam")


def epochs_to(run: Run, accuracy: float = 0.5, mode: str = "surrogate") -> float | None:
    """The first epoch whose validation accuracy in ``mode`` reaches ``accuracy``; inf when
    none did; None when the run has no per-epoch validation record."""
    rows = RunFolder(run.path).read_metrics() if run.path.is_dir() else []
    key = f"val_{mode}_accuracy"
    if not rows or key not in rows[0]:
        return None
    return next((float(r["epoch"]) for r in rows if r[key] >= accuracy), float("inf"))


def _epochs_cell(values: np.ndarray) -> str:
    if len(values) == 0:
        return "–"
    reached = values[np.isfinite(values)]
    text = pm(reached, digits=1) if len(reached) else "never"
    return text + (f" ({len(reached)} of {len(values)} reached it)"
                   if len(reached) < len(values) else "")


def clean_table(groups: list[Group]) -> str:
    rows = []
    for g in groups:
        rows.append([
            g.label + (" †" if _is_ste(g) else ""), str(len(g.runs)),
            pm(g.values(lambda r: r.final["surrogate"]["accuracy"]), 100),
            pm(g.values(lambda r: r.final["hard"]["accuracy"]), 100),
            pm(g.values(lambda r: r.final["transfer_gap_pp"])),
            pm(g.values(lambda r: r.final["surrogate"]["loss"]), digits=3),
            pm(g.values(lambda r: r.final["hard"]["loss"]), digits=3),
            _epochs_cell(g.values(epochs_to)),
        ])
    text = markdown_table(["run group", "seeds", "surrogate acc %", "hard acc %", "gap pp",
                           "NLL surrogate", "NLL hard", "epochs to 50 % val (surrogate)"], rows)
    return text + (f"\n{STE_NOTE}\n" if any(_is_ste(g) for g in groups) else "")


def calibration_table(groups: list[Group]) -> str:
    rows = []
    for g in groups:
        for mode in MODES:
            def cal(r: Run, key: str, mode: str = mode) -> float:
                return r.evaluation["clean"][mode]["calibration"][key]
            rows.append([
                g.label, mode,
                pm(g.values(lambda r: cal(r, "ece")), digits=4),
                pm(g.values(lambda r: cal(r, "mce")), digits=4),
                pm(g.values(lambda r: cal(r, "brier")), digits=4),
                pm(g.values(lambda r: cal(r, "nll")), digits=4),
                pm(g.values(lambda r: cal(r, "ece_temperature_scaled")), digits=4),
                pm(g.values(lambda r: cal(r, "temperature")), digits=3),
            ])
    return markdown_table(["run group", "mode", "ECE", "MCE", "Brier", "NLL", "ECE after T-scaling",
                           "T"], rows)


def threshold_table(groups: list[Group]) -> str:
    rows = []
    for g in groups:
        def tc(r: Run, key: str) -> float:
            return r.evaluation["threshold_calibration"][key]
        before = g.values(lambda r: tc(r, "hard_accuracy_before"))
        if len(before) == 0:
            continue
        rows.append([g.label, pm(before, 100), pm(g.values(lambda r: tc(r, "hard_accuracy_after")),
                                                   100),
                     "; ".join(str(r.evaluation["threshold_calibration"]["scales"])
                               for r in g.runs
                               if r.evaluation and "threshold_calibration" in r.evaluation)])
    if not rows:
        return ("No run has fitted threshold scales: they are fitted on the validation part, "
                "and these runs have none (`val_fraction: 0`).\n")
    return markdown_table(
        ["run group", "hard acc % before", "hard acc % after", "scales (per run)"], rows)


def overhead_table(groups: list[Group]) -> str:
    base = baseline_group(groups)

    def epoch_time(r: Run) -> float:
        return r.final["timing"]["epoch_time_s_median"]

    def step_time(r: Run) -> float:
        return r.final["timing"]["step_time_s_median"]

    def ratio(g: Group, getter) -> str:  # noqa: ANN001
        if base is None or len(g.values(getter)) == 0:
            return "–"
        return f"{np.median(g.values(getter)) / np.median(base.values(getter)):.2f}×"

    rows = []
    for g in groups:
        times = g.values(epoch_time)
        rows.append([
            g.label, pm(times, digits=3),
            pm(g.values(lambda r: r.final["timing"]["step_time_s_median"]), 1e3, 1),
            pm(g.values(lambda r: r.final["timing"]["grad_evals_per_step"]), digits=0),
            pm(g.values(grad_evals_total), digits=0),
            pm(g.values(lambda r: r.final["timing"]["peak_memory_mb"]), digits=0),
            ratio(g, epoch_time), ratio(g, step_time),
        ])
    ref = f" to `{base.label}`" if base else ""
    return markdown_table(["run group", "s / epoch", "ms / step", "passes / step",
                           "gradient evaluations", "peak memory MB", f"epoch-time ratio{ref}",
                           f"step-time ratio{ref}"], rows) + _timing_mix_note(groups)


def _timing_mix_note(groups: list[Group]) -> str:
    """A warning when the runs differ in a :data:`TIMING_FIELDS` setting."""
    mixed = []
    for name in TIMING_FIELDS:
        values = sorted({json.dumps(r.config.get(name)) for g in groups for r in g.runs})
        if len(values) > 1:
            mixed.append(f"`{name}` ({', '.join(values)})")
    if not mixed:
        return ""
    return ("\nThese runs differ in " + ", ".join(mixed) + ", which change how long a step "
            "takes but not what it computes: timings and ratios across them compare those "
            "settings as well as the methods.\n")


def robustness_table(groups: list[Group]) -> str:
    with_curves = [g for g in groups if any(r.robustness for r in g.runs)]
    if not with_curves:
        return ""
    levels = next(r.robustness for r in with_curves[0].runs if r.robustness)["levels"]
    rows = []
    for g in with_curves:
        for mode in MODES:
            cells = []
            for i in range(len(levels)):
                cells.append(pm(g.values(lambda r, i=i, mode=mode:
                                         r.robustness[mode]["mean"][i]), 100, 1))
            rows.append([g.label, mode, *cells])
    corruption = with_curves[0].runs[0].robustness["corruption"]
    return markdown_table(["run group", "mode", *[f"{corruption} {lv:g}" for lv in levels]], rows)


def diagnostics_tables(groups: list[Group]) -> str:
    rows, layer_rows = [], []
    for g in groups:
        if not any(r.diagnostics for r in g.runs):
            continue
        def grad(r: Run, *keys: str) -> float:
            value = r.diagnostics["gradients"]
            for key in keys:
                value = value[key]
            return value

        rows.append([
            g.label,
            pm(g.values(lambda r: r.diagnostics["sharpness"]["sharpness"]), digits=4),
            pm(g.values(lambda r: r.diagnostics["hessian"]["top_eigenvalues"][0]), digits=3),
            pm(g.values(lambda r: grad(r, "input_grad_norm", "mean")), digits=4),
            pm(g.values(lambda r: grad(r, "lipschitz_bound")), digits=3),
            pm(g.values(lambda r: grad(r, "param_grad_norm", "median")), digits=4),
            pm(g.values(lambda r: grad(r, "spearman")), digits=3),
        ])
        first = next(r for r in g.runs if r.diagnostics)
        for i, _ in enumerate(first.diagnostics["contraction"]["layers"]):
            def lay(r: Run, key: str, i: int = i) -> float:
                return r.diagnostics["contraction"]["layers"][i][key]
            layer_rows.append([
                g.label, str(i + 1),
                pm(g.values(lambda r: lay(r, "global_factor")), digits=3),
                pm(g.values(lambda r: lay(r, "run_max_factor")), digits=3),
                pm(g.values(lambda r: lay(r, "fraction_factor_ge_1")), 100, 2),
                pm(g.values(lambda r: lay(r, "max_abs_membrane")), digits=2),
                pm(g.values(lambda r: lay(r, "state_bound")), digits=1),
            ])
    if not rows:
        return ""
    radii = sorted({r.diagnostics["sharpness"]["rho"] for g in groups for r in g.runs
                    if r.diagnostics})
    radius = ", ".join(f"{x:g}" for x in radii)
    text = "### Sharpness and gradients\n\n" + markdown_table(
        ["run group", f"worst-case sharpness (ρ = {radius})", "top Hessian eigenvalue",
         "mean ‖∂ℓ/∂x‖", "Lipschitz bound", "median ‖∇_w ℓ_i‖",
         "Spearman(‖∇_w ℓ_i‖, ‖∂ℓ_i/∂x‖)"], rows)
    text += "\n### Theory alignment (per LIF layer)\n\n" + markdown_table(
        ["run group", "layer", "global contraction factor", "run-level factor",
         "% state-steps with factor ≥ 1", "max \\|u\\|", "state bound"], layer_rows)
    return text


def attribution_table(groups: list[Group]) -> str:
    rows = []
    for g in groups:
        first = next((r for r in g.runs if r.attribution), None)
        if first is None:
            continue
        for i in range(len(first.attribution["layers"])):
            def lay(r: Run, key: str, i: int = i) -> float:
                return r.attribution["layers"][i][key]

            rows.append([
                g.label, str(i + 1),
                pm(g.values(lambda r: lay(r, "loss_alone_pp")), digits=1),
                pm(g.values(lambda r, i=i: r.attribution["prefix"][i]["loss_pp"]), digits=1),
                pm(g.values(lambda r: lay(r, "rate_surrogate")), digits=3),
                pm(g.values(lambda r: lay(r, "rate_hard")), digits=3),
                pm(g.values(lambda r: lay(r, "near_threshold_fraction")), 100, 1),
                pm(g.values(lambda r: lay(r, "drift_isolated")[-1]), digits=3),
            ])
    if not rows:
        return ""
    return markdown_table(["run group", "LIF layer", "acc lost, this layer alone hard (pp)",
                           "acc lost, layers 1…ℓ hard (pp)", "rate surrogate", "rate hard",
                           "% near threshold", "own drift at T (membrane units)"], rows)


def firing_table(groups: list[Group]) -> str:
    rows = []
    for g in groups:
        first = next((r for r in g.runs if r.evaluation), None)
        if first is None:
            continue
        for mode in MODES:
            n_layers = len(first.evaluation["clean"][mode]["firing_rates"])
            for i in range(n_layers):
                rows.append([
                    g.label, mode, str(i + 1),
                    pm(g.values(lambda r, i=i, mode=mode:
                                r.evaluation["clean"][mode]["firing_rates"][i]), digits=4),
                    pm(g.values(lambda r, i=i, mode=mode: r.evaluation["clean"][mode]["margin"]
                                ["fraction_within"][i]["0.1"]), 100, 2),
                ])
    if not rows:
        return ""
    return markdown_table(["run group", "mode", "layer", "firing rate",
                           "% state-steps with margin < 0.1"], rows)


def splits_section(runs: list[Run]) -> list[str]:
    """Where each run's training, validation and test parts come from, with class counts
    (one row per distinct split, as runs of a study share them)."""
    rows, seen = [], set()
    for run in runs:
        splits = run.final.get("splits")
        if not splits:
            continue
        for part in ("train", "val", "test"):
            info = splits[part]
            key = (run.config["dataset"], part, info["indices_sha256"], info["n"])
            if key in seen:
                continue
            seen.add(key)
            rows.append([run.config["dataset"], part, info["source"], str(info["n"]),
                         " ".join(str(c) for c in info["class_counts"]),
                         f"`{info['indices_sha256']}`" if info["indices_sha256"] else "all"])
    if not rows:
        return []
    return ["## Data splits", "", "Samples per class (class 0 first). Validation selects; "
            "test only reports; the two never overlap (docs/protocol.md, Splits).", "",
            markdown_table(["dataset", "part", "source", "samples", "per class", "indices digest"],
                   rows)]
