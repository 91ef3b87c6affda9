"""A Markdown report with tables and PNG figures from finished run folders.

Runs whose configs differ only in ``seed`` form one group; tables show mean ± std over a
group's seeds. Each group is labelled by its method and ρ, plus each config field in which it
departs from what most groups share. What the report reads, per run: ``final.json`` (required),
``evaluation.json``, ``robustness.json``, ``diagnostics.json``, ``attribution.json``,
``deploy.json`` (:mod:`sast.deployreport`) and ``metrics.jsonl`` (each section appears when its
files exist).
"""

from __future__ import annotations

import json
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sast.config import LATER_FIELDS
from sast.experiment import SAM_FIELDS
from sast.runfolder import RunFolder, atomic_write_bytes, read_json

IGNORED_FIELDS = ("seed", "device", "cache_dir", "compile", "conv_schedule")
"""Config fields that do not define a group: the seed, and fields that change no accuracy
(their timings may differ, as timings differ between code versions and machines)."""
TIMING_FIELDS = ("conv_schedule", "compile", "device")
"""Ignored fields that change how long a run takes: the overhead table says when its runs mix
them."""
PAPER_OVERHEAD = 2.08
"""SAST's per-epoch training cost relative to the baseline, as the paper's abstract reports."""
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


def _mark_compute_matched(groups: list[Group]) -> None:
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


def pm(values: np.ndarray, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± std' (std over seeds, ddof = 0), or 'mean' for one value, or '–'."""
    if len(values) == 0:
        return "–"
    mean = float(np.mean(values)) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {float(np.std(values)) * scale:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


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


def _clean_table(groups: list[Group]) -> str:
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
    text = _table(["run group", "seeds", "surrogate acc %", "hard acc %", "gap pp",
                   "NLL surrogate", "NLL hard", "epochs to 50 % val (surrogate)"], rows)
    return text + (f"\n{STE_NOTE}\n" if any(_is_ste(g) for g in groups) else "")


def _calibration_table(groups: list[Group]) -> str:
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
    return _table(["run group", "mode", "ECE", "MCE", "Brier", "NLL", "ECE after T-scaling",
                   "T"], rows)


def _threshold_table(groups: list[Group]) -> str:
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
    return _table(["run group", "hard acc % before", "hard acc % after", "scales (per run)"],
                  rows)


def _overhead_table(groups: list[Group]) -> str:
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
    return _table(["run group", "s / epoch", "ms / step", "passes / step",
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


def grad_evals_total(run: Run) -> float:
    """Forward–backward passes of the whole training run."""
    timing = run.final["timing"]
    if "grad_evals_total" in timing:
        return float(timing["grad_evals_total"])
    return float(sum(r["grad_evals"] for r in RunFolder(run.path).read_metrics()))


def _robustness_table(groups: list[Group]) -> str:
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
    return _table(["run group", "mode", *[f"{corruption} {lv:g}" for lv in levels]], rows)


def _diagnostics_tables(groups: list[Group]) -> str:
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
    text = "### Sharpness and gradients\n\n" + _table(
        ["run group", f"worst-case sharpness (ρ = {radius})", "top Hessian eigenvalue",
         "mean ‖∂ℓ/∂x‖", "Lipschitz bound", "median ‖∇_w ℓ_i‖",
         "Spearman(‖∇_w ℓ_i‖, ‖∂ℓ_i/∂x‖)"], rows)
    text += "\n### Theory alignment (per LIF layer)\n\n" + _table(
        ["run group", "layer", "global contraction factor", "run-level factor",
         "% state-steps with factor ≥ 1", "max \\|u\\|", "state bound"], layer_rows)
    return text


def _attribution_table(groups: list[Group]) -> str:
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
    return _table(["run group", "LIF layer", "acc lost, this layer alone hard (pp)",
                   "acc lost, layers 1…ℓ hard (pp)", "rate surrogate", "rate hard",
                   "% near threshold", "own drift at T (membrane units)"], rows)


ATTRIBUTION_FIGURE_GROUPS = 6
"""The attribution figure draws the baseline and SAST at its validation-selected ρ where a
study has both, else at most this many groups."""


def _attribution_groups(groups: list[Group]) -> list[tuple[Group, Run]]:
    with_attr = _first_with(groups, "attribution")
    base = baseline_group(groups)
    best = select_best_rho([g for g in groups if g.config["method"] == "sast"])
    chosen = [(g, r) for g, r in with_attr if g is base or g is best]
    return chosen if len(chosen) == 2 else with_attr[:ATTRIBUTION_FIGURE_GROUPS]


def figure_attribution(groups: list[Group], path: Path) -> bool:
    """Per LIF layer: the accuracy lost when that layer alone, and layers 1…ℓ together, run
    with hard spikes (bars, mean ± std over seeds); the firing rate with surrogate and with
    hard spikes; and each layer's own membrane drift over time (first run of each group).
    The baseline against SAST at its validation-selected ρ where the study has both."""
    chosen = _attribution_groups(groups)
    if not chosen:
        return False
    plt = _plt()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 4.0))
    width = 0.8 / len(chosen)
    n_max = max(len(run.attribution["layers"]) for _, run in chosen)
    for gi, (g, run) in enumerate(chosen):
        n_layers = len(run.attribution["layers"])
        xs = np.arange(1, n_layers + 1) + (gi - (len(chosen) - 1) / 2) * width

        def per_layer(key: str, g: Group = g, n: int = n_layers) -> list[np.ndarray]:
            return [g.values(lambda r, i=i: r.attribution["layers"][i][key]) for i in range(n)]

        alone = per_layer("loss_alone_pp")
        prefix = [g.values(lambda r, i=i: r.attribution["prefix"][i]["loss_pp"])
                  for i in range(n_layers)]
        ax1.bar(xs - width / 4, [v.mean() for v in alone], width / 2,
                yerr=[v.std() for v in alone], capsize=2, color=f"C{gi}",
                label=f"{g.label}: layer ℓ alone")
        ax1.bar(xs + width / 4, [v.mean() for v in prefix], width / 2,
                yerr=[v.std() for v in prefix], capsize=2, color=f"C{gi}", alpha=0.45,
                hatch="//", label=f"{g.label}: layers 1…ℓ")
        for key, style, mode in (("rate_surrogate", "-o", "surrogate"),
                                 ("rate_hard", "--s", "hard")):
            rates = per_layer(key)
            ax2.errorbar(np.arange(1, n_layers + 1), [v.mean() for v in rates],
                         yerr=[v.std() for v in rates], fmt=style, color=f"C{gi}",
                         capsize=2, label=f"{g.label}, {mode}")
        for li, entry in enumerate(run.attribution["layers"]):
            drift = entry["drift_isolated"]
            ax3.plot(np.arange(1, len(drift) + 1), drift, color=f"C{gi}",
                     ls=("-", "--", ":", "-.")[li % 4], label=f"{g.label}, LIF {li + 1}")
    ax1.axhline(0, color="black", lw=0.8)
    for ax in (ax1, ax2):
        ax.set_xticks(range(1, n_max + 1))
        ax.set_xlabel("LIF layer ℓ")
        ax.grid(alpha=0.3, axis="y")
    ax1.set_ylabel("accuracy lost with hard spikes (pp)")
    ax1.set_title("Where the transfer gap is lost", fontsize=10)
    ax2.set_ylabel("firing rate (spikes per neuron-step)")
    ax2.set_title("Firing rate, surrogate vs hard", fontsize=10)
    ax3.set_xlabel("time step")
    ax3.set_ylabel("mean |u_hard − u_surrogate|")
    ax3.set_title("Each layer's own membrane drift", fontsize=10)
    ax3.grid(alpha=0.3)
    for ax in (ax1, ax2, ax3):
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1,
                  frameon=False)
    fig.tight_layout()
    _save(fig, path)
    return True


def _firing_table(groups: list[Group]) -> str:
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
    return _table(["run group", "mode", "layer", "firing rate",
                   "% state-steps with margin < 0.1"], rows)


# ---------------------------------------------------------------- figures


def _first_with(groups: list[Group], result: str) -> list[tuple[Group, Run]]:
    """(group, its first run holding ``result``: "evaluation", "robustness" or "diagnostics")
    for every group where some run holds it."""
    out = []
    for g in groups:
        run = next((r for r in g.runs if getattr(r, result)), None)
        if run is not None:
            out.append((g, run))
    return out


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:  # noqa: ANN001
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    _plt().close(fig)


def figure_robustness(groups: list[Group], path: Path) -> bool:
    with_curves = [g for g in groups if any(r.robustness for r in g.runs)]
    if not with_curves:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for gi, g in enumerate(with_curves):
        curves = [r.robustness for r in g.runs if r.robustness]
        levels = np.asarray(curves[0]["levels"])
        for mode, style in (("surrogate", "-"), ("hard", "--")):
            # mean over corruption seeds within a run, then mean ± std over training seeds
            # (one run: std over corruption seeds)
            per_run = np.asarray([c[mode]["mean"] for c in curves])
            if len(curves) > 1:
                mean, std = per_run.mean(0), per_run.std(0)
            else:
                mean, std = per_run[0], np.asarray(curves[0][mode]["std"])
            ax.errorbar(levels, 100 * mean, yerr=100 * std, fmt=style + "o", ms=3, capsize=2,
                        color=colors[gi % len(colors)], label=f"{g.label} — {mode} spikes")
    corruption = with_curves[0].runs[0].robustness["corruption"]
    ax.set_xlabel("drop probability p" if corruption == "drop" else f"{corruption} severity")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy under event corruption (solid: surrogate spikes, dashed: hard)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def figure_reliability(groups: list[Group], path: Path) -> bool:
    with_eval = _first_with(groups, "evaluation")
    if not with_eval:
        return False
    plt = _plt()
    fig, axes = plt.subplots(len(with_eval), 2, figsize=(9, 3.6 * len(with_eval)),
                             squeeze=False)
    for gi, (g, run) in enumerate(with_eval):
        for mi, mode in enumerate(MODES):
            ax = axes[gi][mi]
            cal = run.evaluation["clean"][mode]["calibration"]
            rel = cal["reliability"]
            lower, upper = np.asarray(rel["lower"]), np.asarray(rel["upper"])
            acc, count = np.asarray(rel["accuracy"], float), np.asarray(rel["count"])
            width = upper - lower
            shown = count > 0
            # a bin's opacity grows with its share of the samples: a bin of two samples
            # should not look as weighty as one of two thousand
            share = count / max(count.max(), 1)
            for lo, w, a, n, f in zip(lower[shown], width[shown], acc[shown], count[shown],
                                      share[shown], strict=True):
                ax.bar(lo, a, width=w, align="edge", edgecolor="black", color="C0",
                       alpha=0.15 + 0.75 * f)
                ax.text(lo + w / 2, min(a, 0.93) + 0.02, str(int(n)), ha="center",
                        va="bottom", fontsize=6)
            ax.bar([], [], color="C0", alpha=0.6, edgecolor="black",
                   label="accuracy (samples above each bin)")
            ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.05)
            title = textwrap.fill(g.label, 45)
            ax.set_title(f"{title}\n{mode} spikes — ECE {cal['ece']:.3f} (seed "
                         f"{run.final['seed']})", fontsize=8)
            ax.set_xlabel("confidence")
            ax.set_ylabel("accuracy")
            if gi == 0 and mi == 0:
                ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    return True


def figure_margins(groups: list[Group], path: Path) -> bool:
    with_eval = _first_with(groups, "evaluation")
    if not with_eval:
        return False
    plt = _plt()
    n_layers = len(with_eval[0][1].evaluation["clean"]["surrogate"]["margin"]["counts"])
    fig, axes = plt.subplots(1, n_layers, figsize=(5.5 * n_layers, 3.6), squeeze=False)
    for gi, (g, run) in enumerate(with_eval):
        margin = run.evaluation["clean"]["surrogate"]["margin"]
        edges = np.asarray(margin["edges"])
        for li, counts in enumerate(margin["counts"]):
            counts = np.asarray(counts, float)
            density = counts[:-1] / max(counts.sum(), 1) / np.diff(edges)
            axes[0][li].step(edges[:-1], density, where="post", label=g.label,
                             color=f"C{gi}")
    for li in range(n_layers):
        ax = axes[0][li]
        ax.axvspan(0, 0.1, color="red", alpha=0.1, label="|u − ϑ| < 0.1")
        ax.set_xlabel("membrane margin |u − ϑ|")
        ax.set_ylabel("density of state-steps")
        ax.set_title(f"LIF layer {li + 1}, surrogate mode (test data)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return True


def figure_loss_slices(groups: list[Group], path: Path) -> bool:
    with_diag = _first_with(groups, "diagnostics")
    if not with_diag:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for gi, (g, run) in enumerate(with_diag):
        sl = run.diagnostics["loss_slice"]
        alphas = np.asarray(sl["alphas"])
        surrogate = sl.get("loss_surrogate", sl.get("loss"))
        ax.plot(alphas, surrogate, "-", color=f"C{gi}", label=f"{g.label} — surrogate spikes")
        if "loss_hard" in sl:
            ax.plot(alphas, sl["loss_hard"], "--", color=f"C{gi}", label=f"{g.label} — hard spikes")
    ax.set_xlabel("α (step along a filter-normalised random direction)")
    ax.set_ylabel("training loss")
    ax.set_title("1-D loss slice through the trained weights")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return True


def figure_rho(groups: list[Group], path: Path) -> bool:
    sam = [g for g in groups if g.config["method"] == "sast"]
    if len({g.config["rho"] for g in sam}) < 2:
        return False
    plt = _plt()
    sam.sort(key=lambda g: g.config["rho"])
    rhos = [g.config["rho"] for g in sam]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode, style in (("surrogate", "-o"), ("hard", "--o")):
        vals = [g.values(lambda r, m=mode: r.final[m]["accuracy"]) for g in sam]
        ax1.errorbar(rhos, [100 * v.mean() for v in vals], yerr=[100 * v.std() for v in vals],
                     fmt=style, capsize=2, label=f"sast — {mode} spikes")
    gaps = [g.values(lambda r: r.final["transfer_gap_pp"]) for g in sam]
    ax2.errorbar(rhos, [v.mean() for v in gaps], yerr=[v.std() for v in gaps], fmt="-o",
                 capsize=2, label="sast")
    b = baseline_group(groups)
    if b is not None:
        for mode, style in (("surrogate", ":"), ("hard", "-.")):
            ax1.axhline(100 * b.values(lambda r, m=mode: r.final[m]["accuracy"]).mean(),
                        ls=style, color="gray", label=f"{b.label} — {mode} spikes")
        ax2.axhline(b.values(lambda r: r.final["transfer_gap_pp"]).mean(), ls=":",
                    color="gray", label=b.label)
    best = select_best_rho(sam)
    ax1.set_ylabel("accuracy (%)")
    ax2.set_ylabel("transfer gap (pp)")
    for ax in (ax1, ax2):
        if best is not None:
            ax.axvline(best.config["rho"], color="C3", lw=0.8, ls="--",
                       label=f"ρ selected on validation ({best.config['rho']:g})")
        if rhos[0] > 0 and rhos[-1] / rhos[0] >= 10:
            ax.set_xscale("log")
        ax.set_xlabel("ρ")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return True


# ---------------------------------------------------------------- the report


def _val_hard(run: Run) -> float:
    return run.final["validation"]["hard"]["accuracy"]


def select_best_rho(sam: list[Group]) -> Group | None:
    """The SAST group with the highest mean hard-spike **validation** accuracy (ties: the
    smaller ρ); None when no group has validation results. The test split plays no part."""
    scored = [(float(np.mean(g.values(_val_hard))), -float(g.config["rho"]), i)
              for i, g in enumerate(sam) if len(g.values(_val_hard))]
    if not scored:
        return None
    return sam[max(scored)[2]]


def _paper_section(groups: list[Group], study: Any) -> list[str]:
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
         f"validation hard accuracy {pm(best.values(_val_hard), 100)} %)",
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
            _table(["", "this study", "paper"], rows)]


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


def _rivals_section(groups: list[Group]) -> list[str]:
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
            _table(["approach", "run group", "surrogate acc %", "hard acc %", "gap pp",
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


def _spread(values: np.ndarray) -> float:
    return float(np.std(values)) if len(values) > 1 else 0.0


def _compare(name: str, a: np.ndarray, b: np.ndarray, unit: str, higher: str,
             lower: str) -> str:
    """'<name> is D unit higher/lower (a → b), more than / within the seeds' spread'."""
    diff = float(np.mean(b) - np.mean(a))
    spread = _spread(a) + _spread(b)
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


def _splits_section(runs: list[Run]) -> list[str]:
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
            _table(["dataset", "part", "source", "samples", "per class", "indices digest"],
                   rows)]


def write_report(run_dirs: list[str | Path], out: str | Path, study: Any = None) -> Path:
    """Write ``out/report.md`` and its figures in ``out/figures/``; returns the report path.
    With a ``study`` (:class:`sast.reproduce.Study`) the published numbers are set beside the
    results."""
    runs = load_runs(run_dirs)
    if not runs:
        raise ValueError("no run folders given")
    groups = group_runs(runs)
    _mark_compute_matched(groups)
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
        lines += _paper_section(groups, study)
    splits = sorted({r.final["split"] for r in runs})
    carved = [r for r in runs if r.final.get("splits", {}).get("test", {}).get("source", "")
              .startswith("carved")]
    lines += [f"Accuracies are on the {' / '.join(splits)} split"
              + (" (carved out of the training split: the copy has no test split on disk)"
                 if carved else "")
              + ". Mean ± std over seeds (std with ddof = 0) where a group has several; "
              "docs/protocol.md defines every number.", ""]
    lines += _splits_section(runs)
    lines += ["## Clean accuracy and transfer gap", "", _clean_table(groups)]
    lines += _rivals_section(groups)
    if any(r.evaluation for r in runs):
        lines += ["## Calibration", "", "15 equal-width confidence bins, L1 (ECE) and max "
                  "(MCE) as torchmetrics defines them; temperature T fitted on the validation "
                  "split.", "", _calibration_table(groups)]
        if figure_reliability(groups, figures / "reliability.png"):
            lines += ["![reliability diagrams](figures/reliability.png)", ""]
        lines += ["## Threshold calibration (hard spikes)", "", "Per-layer threshold scales "
                  "fitted on the validation split for hard-spike deployment.", "",
                  _threshold_table(groups)]
        lines += ["## Firing rates and membrane margins", "", _firing_table(groups)]
        if figure_margins(groups, figures / "margins.png"):
            lines += ["![membrane margins](figures/margins.png)", ""]
    lines += ["## Training overhead", "", _overhead_table(groups)]
    robust = _robustness_table(groups)
    if robust:
        lines += ["## Robustness to event corruption", "", robust]
        if figure_robustness(groups, figures / "robustness.png"):
            lines += ["![accuracy vs corruption](figures/robustness.png)", ""]
    attribution = _attribution_table(groups)
    if attribution:
        lines += ["## Attribution: which layer loses the accuracy", "",
                  "Each LIF layer swapped alone to hard spikes (the others surrogate), and "
                  "layers 1…ℓ together, on the test part; rates, the share of surrogate "
                  "state-steps with |u − ϑ| < 0.1 and each layer's own membrane drift at the "
                  "last step (docs/protocol.md, Attribution).", "", attribution]
        if figure_attribution(groups, figures / "attribution.png"):
            lines += ["![accuracy lost per layer](figures/attribution.png)", ""]
    diag = _diagnostics_tables(groups)
    if diag:
        lines += ["## Diagnostics", "", diag]
        if figure_loss_slices(groups, figures / "loss_slice.png"):
            lines += ["![loss slices](figures/loss_slice.png)", ""]
    from sast.deployreport import deployment_section

    lines += deployment_section(groups, figures)
    if figure_rho(groups, figures / "rho.png"):
        lines += ["## Accuracy and gap against ρ", "", "![accuracy vs rho](figures/rho.png)", ""]
    path = out / "report.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
