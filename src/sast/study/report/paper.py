"""What a study shows: its numbers beside the paper's abstract (ρ selected on validation),
the rivals table (every way of getting a good hard-spike network, with its compute), SAM's
measured cost, and the generated conclusion in plain words.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sast.study.report.render import markdown_table, pm, seed_spread
from sast.study.report.runs import (
    Group,
    Run,
    baseline_group,
    grad_evals_total,
    select_best_rho,
    val_hard_accuracy,
)

PAPER_OVERHEAD = 2.08
"""SAST's per-epoch training cost relative to the baseline, as the paper's abstract reports."""


def paper_section(groups: list[Group], study: Any) -> list[str]:
    """This study's headline numbers beside the ones the paper's abstract publishes; the best
    ρ is chosen on validation accuracy, and its test accuracy is reported."""
    base = baseline_group(groups)
    sam = [g for g in groups if g.config["method"] == "sast"]
    if base is None or not sam:
        return []

    def hard(r: Run) -> float:
        return r.final["hard"]["accuracy"]

    best = select_best_rho(sam)
    if best is None:
        return ["## Against the published numbers", "", "No SAST run has a validation part "
                "(`val_fraction: 0`), so no ρ can be selected without reading the test split.",
                ""]
    ratio, _, warning = sam_cost(base, best)
    cost = f"{ratio:.2f}×" + (" (implausible: timings disturbed)" if warning else "")
    rows = [
        ["baseline hard-spike accuracy", f"{pm(base.values(hard), 100)} % (`{base.label}`)",
         f"{100 * study.baseline_hard:.1f} %"],
        ["best SAST hard-spike accuracy",
         f"{pm(best.values(hard), 100)} % at ρ = {best.config['rho']:g} (selected on "
         f"validation hard accuracy {pm(best.values(val_hard_accuracy), 100)} %)",
         f"{100 * study.sast_hard:.1f} % at ρ = {study.best_rho:.2f}"],
        ["SAST surrogate accuracy at that ρ",
         f"{pm(best.values(lambda r: r.final['surrogate']['accuracy']), 100)} %",
         "“remains high” (no number given)"],
        ["SAST step cost / baseline", cost, f"{PAPER_OVERHEAD:.2f}× (per epoch)"],
    ]
    return ["## Against the published numbers", "",
            "The paper's numbers are those of its abstract (arXiv 2603.18039); its "
            "architectures, surrogate and hyperparameters are not public, so ours are this "
            "package's defaults (see the config of each run). The best ρ is the one with the "
            "highest mean hard-spike accuracy on the validation part; the test part is only "
            "reported.", "",
            markdown_table(["", "this study", "paper"], rows)]


def rival_role(g: Group, base: Group | None = None) -> str | None:
    """What a run group is in the rivals table: the question it answers. Plain surrogate
    groups are told apart by how they depart from ``base``, the study's baseline."""
    c = g.config
    if c["method"] == "sast":
        return "sast"
    if c["method"] in ("ste", "ste-sam"):
        return "ste"
    if c.get("ste_finetune_epochs"):
        return "ste-finetune"
    if c.get("slope_final") is not None:
        return "slope-annealing"
    if base is None or g is base:
        return "surrogate"
    if c.get("init") != base.config.get("init"):
        return "init"
    if c["epochs"] > base.config["epochs"]:
        return "longer"
    return "variant"


RIVAL_NAMES = {
    "ste": "STE (hard forward, surrogate gradient)",
    "ste-finetune": "baseline, then an STE fine-tune",
    "slope-annealing": "baseline with the slope annealed towards a step",
    "init": "baseline with another initialisation",
    "longer": "baseline trained longer",
    "variant": "another baseline variant",
}
"""The rivals table's name for each role of :func:`rival_role`."""


def rivals_section(groups: list[Group]) -> list[str]:
    """What closes the gap, and at what cost: the baseline, SAST at its validation-selected ρ
    and every rival run on the same data, with the baseline's calibrated thresholds."""
    base = baseline_group(groups)
    if base is None:
        return []
    sam = [g for g in groups if rival_role(g, base) == "sast"]
    rivals = [g for g in groups if rival_role(g, base) in RIVAL_NAMES]
    if not (sam or rivals):
        return []
    base_evals = float(np.median(base.values(grad_evals_total)))
    best = select_best_rho(sam) if sam else None
    rows = []

    def row(name: str, g: Group) -> list[str]:
        evals = g.values(grad_evals_total)
        after = g.values(lambda r: r.evaluation["threshold_calibration"]["hard_accuracy_after"])
        return [name, f"`{g.label}`",
                pm(g.values(lambda r: r.final["surrogate"]["accuracy"]), 100, 1),
                pm(g.values(lambda r: r.final["hard"]["accuracy"]), 100, 1),
                pm(g.values(lambda r: r.final["transfer_gap_pp"]), digits=1),
                f"{np.median(evals) / base_evals:.1f}×" if len(evals) else "–",
                pm(after, 100, 1)]

    rows.append(row("baseline (surrogate forward, base optimiser)", base))
    if best is not None:
        rows.append(row("SAST at its validation-selected ρ", best))
    for g in rivals:
        role = rival_role(g, base)
        name = RIVAL_NAMES[role]
        if role == "init":
            name += f" ({g.config.get('init')})"
        if "compute-matched" in g.label and role in ("longer", "variant"):
            name += " (compute-matched)"
        rows.append(row(name, g))
    return ["## What closes the gap, and at what cost", "",
            "Every way of getting a good hard-spike network from these runs, on the test part. "
            "Compute is forward–backward passes relative to the baseline. The last column is "
            "each method's hard accuracy after threshold calibration (per-layer threshold "
            "scales fitted on validation, free at deployment), where `sast evaluate` ran.", "",
            markdown_table(["approach", "run group", "surrogate acc %", "hard acc %", "gap pp",
                            "compute", "hard acc % with calibrated thresholds"], rows)]


PLAUSIBLE_SAM_COST = (1.3, 4.0)
"""A SAM step makes two forward–backward passes: a measured step-time ratio outside this range
says the timing was disturbed (a busy machine), not what SAM costs."""


def _step_time(run: Run) -> float:
    return run.final["timing"]["step_time_s_median"]


def sam_cost(base: Group, sam: Group) -> tuple[float, float, str | None]:
    """(step-time ratio, per-pass ratio, warning): medians over each group's runs of their
    median step time (warm-up and evaluation excluded, as each epoch's median is); the
    per-pass ratio divides SAM's step by its two passes. The warning is set when the step-time
    ratio is implausible for two passes."""
    b, s_ = np.median(base.values(_step_time)), np.median(sam.values(_step_time))
    ratio = float(s_ / b)
    passes = np.median(sam.values(lambda r: r.final["timing"]["grad_evals_per_step"]))
    warning = None
    lo, hi = PLAUSIBLE_SAM_COST
    if not lo <= ratio <= hi:
        warning = (f"a SAM step measured {ratio:.2f}× a baseline step, implausible for "
                   f"{passes:.0f} forward–backward passes: the timings were disturbed (a busy "
                   "machine?); time the two on an idle machine, e.g. `python "
                   "benchmarks/bench_step.py`")
    return ratio, ratio / passes, warning


def _compare(name: str, a: np.ndarray, b: np.ndarray, unit: str, higher: str,
             lower: str) -> str:
    """'<name> is D unit higher/lower (a → b), more than / within the seeds' spread'."""
    diff = float(np.mean(b) - np.mean(a))
    spread = seed_spread(a) + seed_spread(b)
    if len(a) < 2 or len(b) < 2:
        verdict = "one seed per side, so no spread to compare with"
    elif abs(diff) > spread:
        verdict = f"more than the seeds' spread ({spread:.1f} {unit}, sum of the two stds)"
    else:
        verdict = f"within the seeds' spread ({spread:.1f} {unit}): not a measured difference"
    word = higher if diff > 0 else lower
    return (f"{name} is {abs(diff):.1f} {unit} {word} ({np.mean(a):.1f} → {np.mean(b):.1f}), "
            f"{verdict}")


def conclusion(groups: list[Group]) -> list[str]:
    """'What this study shows': the baseline's gap, SAST's at its validation-selected ρ, the
    accuracy and compute they cost, the best rival — in plain words, whichever way they fall."""
    base = baseline_group(groups)
    if base is None:
        return []
    sam = [g for g in groups if rival_role(g, base) == "sast"]

    def acc(g: Group, mode: str) -> np.ndarray:
        return 100 * g.values(lambda r: r.final[mode]["accuracy"])

    def gap(g: Group) -> np.ndarray:
        return g.values(lambda r: r.final["transfer_gap_pp"])

    lines = [f"The baseline (`{base.label}`, {len(base.runs)} seeds) reaches "
             f"{pm(acc(base, 'surrogate'), digits=1)} % with the surrogate spikes it was trained "
             f"with and {pm(acc(base, 'hard'), digits=1)} % with hard spikes: a transfer gap of "
             f"{pm(gap(base), digits=1)} pp."]
    best = select_best_rho(sam) if sam else None
    if best is not None:
        rho = best.config["rho"]
        edge = ""
        rhos = sorted(g.config["rho"] for g in sam)
        if len(rhos) > 1 and rho in (rhos[0], rhos[-1]):
            edge = (f" (the {'smallest' if rho == rhos[0] else 'largest'} radius of the "
                    "grid, so a better ρ may lie beyond it)")
        lines.append(
            f"SAST at its validation-selected ρ = {rho:g}{edge} reaches "
            f"{pm(acc(best, 'surrogate'), digits=1)} % (surrogate) and "
            f"{pm(acc(best, 'hard'), digits=1)} % (hard), a gap of {pm(gap(best), digits=1)} pp. "
            + _compare("Its gap", gap(base), gap(best), "pp", "wider", "narrower") + "; "
            + _compare("its hard accuracy", acc(base, "hard"), acc(best, "hard"), "pp",
                       "higher", "lower") + "; "
            + _compare("its surrogate accuracy", acc(base, "surrogate"),
                       acc(best, "surrogate"), "pp", "higher", "lower") + ".")
        if len(gap(base)) and np.mean(gap(base)) > 0:
            if np.mean(gap(best)) <= 0.5 * np.mean(gap(base)):
                lines.append("SAST halves the baseline's gap or better.")
            else:
                lines.append("SAST does not halve the baseline's gap.")
        ratio, per_pass, warning = sam_cost(base, best)
        lines.append(warning or f"A SAST step costs {ratio:.2f}× a baseline step (median step "
                                f"times; {per_pass:.2f}× per forward–backward pass).")
    rivals = [(g, acc(g, "hard")) for g in groups if g is not base and len(acc(g, "hard"))]
    calibrated = base.values(
        lambda r: r.evaluation["threshold_calibration"]["hard_accuracy_after"])
    if rivals:
        top, values = max(rivals, key=lambda gv: np.mean(gv[1]))
        evals = np.median(top.values(grad_evals_total)) / np.median(base.values(grad_evals_total))
        lines.append(f"The highest hard-spike accuracy of any run group is `{top.label}`'s, "
                     f"{pm(values, digits=1)} %, at {evals:.1f}× the baseline's compute.")
    if len(calibrated):
        lines.append(f"Calibrating the baseline's thresholds on validation, at no training "
                     f"cost, gives {pm(100 * calibrated, digits=1)} % with hard spikes.")
    return ["## What this study shows", "", " ".join(lines), ""]
