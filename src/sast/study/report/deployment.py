"""The report's "Deployment" section: what ``sast deploy`` measured (``deploy.json``), per run
group, beside the numbers of the follow-up paper's abstract.

Per run group (mean ± std over the seeds that have ``deploy.json``): hard-spike accuracy of the
float network and of the integer network per weight width, SynOps and dense MACs per sample,
model size; and ``deployment.png``, accuracy against weight width for the baseline and SAST at
its validation-selected ρ (:func:`sast.study.report.runs.baseline_group`,
:func:`sast.study.report.runs.select_best_rho`), one pair per dataset and training quantisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sast.study.report.render import markdown_table, pm, pyplot, save_figure
from sast.study.report.runs import Group, Run, baseline_group, select_best_rho

DEPLOY_PAPER = "arXiv 2604.09696"
"""The follow-up paper whose abstract gives deployment numbers."""
PAPER_DEPLOYMENT: dict[str, dict[str, tuple[float, float]]] = {
    "N-MNIST": {"int8": (0.476, 0.969), "int4": (0.432, 0.810),
                "synops": (1_734e3, 1_315e3)},
    "DVS Gesture": {"int8": (0.253, 0.476), "int4": (0.260, 0.438),
                    "synops": (86_221e3, 4_323e3)},
}
"""(baseline, SAST) as the abstract of arXiv 2604.09696 gives them: hard-spike accuracy with
INT8 and INT4 weights, SynOps per sample. Its quantisation details are not public."""
FIGURE_GROUPS = 6
"""Without a baseline/SAST pair, the figure draws at most this many groups."""


def paper_dataset(dataset: str) -> str | None:
    """The paper's name of the dataset a run used (its synthetic stand-in included)."""
    if "gesture" in dataset:
        return "DVS Gesture"
    if "nmnist" in dataset:
        return "N-MNIST"
    return None


def _deployed(run: Run) -> dict[str, Any]:
    if run.deploy is None:
        raise KeyError("deploy")
    return run.deploy


def setting(run: Run, bits: int, granularity: str | None = None) -> dict[str, Any]:
    """The integer setting of ``run``'s ``deploy.json`` at ``bits`` (and ``granularity``, when
    given); KeyError when it was not deployed so."""
    for s in _deployed(run)["settings"]:
        if s["weight_bits"] == bits and granularity in (None, s["granularity"]):
            return s
    raise KeyError(bits)


def _settings(groups: list[Group]) -> list[tuple[int, str]]:
    """Every (weight bits, granularity) deployed, widest first."""
    found = {(s["weight_bits"], s["granularity"]) for g in groups for r in g.runs if r.deploy
             for s in r.deploy["settings"]}
    return sorted(found, key=lambda k: (-k[0], k[1]))


def _bit_widths(groups: list[Group]) -> list[int]:
    return sorted({b for b, _ in _settings(groups)}, reverse=True)


def _name(key: tuple[int, str], settings: list[tuple[int, str]]) -> str:
    bits, granularity = key
    several = len({g for b, g in settings if b == bits}) > 1
    return f"INT{bits}" + (f" {granularity}" if several else "")


def _seeds(g: Group) -> int:
    return sum(1 for r in g.runs if r.deploy)


@dataclass
class Pair:
    """The baseline and SAST at its validation-selected ρ among the groups of one dataset and
    one training quantisation (either may be missing)."""

    dataset: str
    qat: str
    baseline: Group | None
    sast: Group | None


def _qat_name(config: dict[str, Any]) -> str:
    bits = config.get("qat_weight_bits")
    if bits is None:
        return "float-trained"
    return f"QAT {bits}-bit" + ("" if config.get("qat_per_channel", True) else " per tensor")


def deployment_pairs(groups: list[Group]) -> list[Pair]:
    """Per dataset and training quantisation (float-trained, QAT b-bit): the baseline
    (:func:`~sast.study.report.runs.baseline_group`) and the SAST group with the best mean
    hard-spike
    **validation** accuracy (:func:`~sast.study.report.runs.select_best_rho`; the test part plays no
    part), among the groups with ``deploy.json``."""
    with_deploy = [g for g in groups if any(r.deploy for r in g.runs)]
    keys: list[tuple[str, str]] = []
    for g in with_deploy:
        key = (g.config["dataset"], _qat_name(g.config))
        if key not in keys:
            keys.append(key)
    keys.sort(key=lambda k: (k[1] != "float-trained",))  # float-trained first, else in order
    pairs = []
    for dataset, qat in keys:
        subset = [g for g in with_deploy if (g.config["dataset"], _qat_name(g.config))
                  == (dataset, qat)]
        base = baseline_group(subset)
        best = select_best_rho([g for g in subset if g.config["method"] == "sast"])
        if base is not None or best is not None:
            pairs.append(Pair(dataset, qat, base, best))
    return pairs


def _accuracy_table(groups: list[Group]) -> str:
    settings = _settings(groups)
    qat = any(r.deploy and r.deploy.get("qat") for g in groups for r in g.runs)
    rows = []
    for g in groups:
        row = [g.label, str(_seeds(g)),
               pm(g.values(lambda r: _deployed(r)["float_hard"]["accuracy"]), 100, 1)]
        if qat:
            row.append(pm(g.values(lambda r: _deployed(r)["qat"]["hard"]["accuracy"]), 100, 1))
        for key in settings:
            row.append(pm(g.values(lambda r, k=key: setting(r, *k)["accuracy"]), 100, 1))
        rows.append(row)
    header = ["run group", "seeds", "float hard acc %"]
    if qat:
        header.append("as trained (QAT: fake-quantised weights) hard acc %")
    header += [f"{_name(k, settings)} hard acc %" for k in settings]
    return markdown_table(header, rows)


def _cost_table(groups: list[Group]) -> str:
    settings = _settings(groups)
    rows = []
    for g in groups:
        row = [g.label,
               pm(g.values(lambda r: _deployed(r)["dense_macs_per_sample"]), 1e-3, 0),
               pm(g.values(lambda r: _deployed(r)["float_hard"]["synops_per_sample"]), 1e-3, 0)]
        for key in settings:
            row.append(pm(g.values(lambda r, k=key: setting(r, *k)["synops_per_sample"]),
                          1e-3, 0))
        row.append(pm(g.values(lambda r: _deployed(r)["float_hard"]["model_size_bytes"]),
                      1e-3, 1))
        for key in settings:
            row.append(pm(g.values(lambda r, k=key: setting(r, *k)["model_size_bytes"]),
                          1e-3, 1))
        rows.append(row)
    names = [_name(k, settings) for k in settings]
    return markdown_table(["run group", "dense MACs / sample (k)",
                           "SynOps / sample, float hard (k)",
                           *[f"SynOps / sample, {n} (k)" for n in names], "size, float32 (kB)",
                           *[f"size, {n} (kB)" for n in names]], rows)


def _paper_table(pairs: list[Pair]) -> list[str]:
    """Ours beside the follow-up paper's abstract, one column per pair on a dataset it
    reports."""
    shown = [p for p in pairs if paper_dataset(p.dataset) is not None]
    if not shown:
        return []
    out = []
    for dataset in dict.fromkeys(paper_dataset(p.dataset) for p in shown):
        mine = [p for p in shown if paper_dataset(p.dataset) == dataset]
        paper = PAPER_DEPLOYMENT[dataset]  # type: ignore[index]
        rows = []
        for quantity, bits in (("INT8", 8), ("INT4", 4)):
            for i, role in enumerate(("baseline", "SAST")):
                cells = []
                for p in mine:
                    g = p.baseline if role == "baseline" else p.sast
                    cells.append("–" if g is None else
                                 pm(g.values(lambda r, b=bits: setting(r, b)["accuracy"]),
                                    100, 1) + " %")
                rows.append([f"{quantity} hard-spike accuracy, {role}", *cells,
                             f"{100 * paper[quantity.lower()][i]:.1f} %"])
        for i, role in enumerate(("baseline", "SAST")):
            cells = []
            for p in mine:
                g = p.baseline if role == "baseline" else p.sast
                if g is None:
                    cells.append("–")
                    continue
                values = g.values(lambda r: setting(r, 8)["synops_per_sample"])
                what = "INT8"
                if not len(values):
                    values = g.values(lambda r: _deployed(r)["float_hard"]["synops_per_sample"])
                    what = "float hard"
                cells.append(f"{pm(values, 1e-3, 0)}k ({what})")
            rows.append([f"SynOps per sample, {role}", *cells,
                         f"{paper['synops'][i] / 1e3:,.0f}k"])
        header = ["", *[f"this study: {p.dataset}, {p.qat}" for p in mine],
                  f"paper ({DEPLOY_PAPER} abstract): {dataset}"]
        who = []
        for p in mine:
            base = f"`{p.baseline.label}`" if p.baseline else "none"
            best = (f"`{p.sast.label}` (selected on validation hard accuracy)" if p.sast
                    else "none with a validation part")
            who.append(f"- {p.dataset}, {p.qat}: baseline {base}; SAST {best}.")
        out += [*who, "", markdown_table(header, rows)]
    return out


def figure_deployment(groups: list[Group], path: Path) -> bool:
    """Hard-spike accuracy against weight width (float, then each deployed width), mean ± std
    over seeds: the baseline against SAST at its validation-selected ρ for each dataset and
    training quantisation (other groups only where no such pair exists), and the follow-up
    paper's abstract's INT8 and INT4 numbers as open markers."""
    with_deploy = [g for g in groups if any(r.deploy for r in g.runs)]
    if not with_deploy:
        return False
    pairs = deployment_pairs(groups)
    lines: list[tuple[Group, str, str, str]] = []  # group, dataset, colour, line style
    styles = ("-", "--", ":", "-.")
    for i, p in enumerate(pairs):
        for g, colour in ((p.baseline, "C0"), (p.sast, "C1")):
            if g is not None:
                lines.append((g, p.dataset, colour, styles[i % len(styles)]))
    if not lines:
        lines = [(g, g.config["dataset"], f"C{i}", "-")
                 for i, g in enumerate(with_deploy[:FIGURE_GROUPS])]
    bits = _bit_widths(with_deploy)
    xs = np.arange(len(bits) + 1)
    datasets = list(dict.fromkeys(d for _, d, _, _ in lines))
    splits = sorted({r.deploy.get("split", "test") for g in with_deploy for r in g.runs
                     if r.deploy})
    plt = pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.0 * len(datasets), 4.2),
                             squeeze=False)
    for g, dataset, colour, style in lines:
        ax = axes[0][datasets.index(dataset)]
        values = [g.values(lambda r: _deployed(r)["float_hard"]["accuracy"])]
        values += [g.values(lambda r, b=b: setting(r, b)["accuracy"]) for b in bits]
        shown = [i for i, v in enumerate(values) if len(v)]
        ax.errorbar(xs[shown], [100 * values[i].mean() for i in shown],
                    yerr=[100 * values[i].std() for i in shown], fmt=style + "o", capsize=3,
                    color=colour, label=f"{g.label} ({_seeds(g)} seed{'s' * (_seeds(g) > 1)})")
    for ax, dataset in zip(axes[0], datasets, strict=True):
        name = paper_dataset(dataset)
        if name is not None:
            for i, (role, colour) in enumerate((("baseline", "C0"), ("SAST", "C1"))):
                at = [(xs[1 + bits.index(b)], PAPER_DEPLOYMENT[name][f"int{b}"][i])
                      for b in (8, 4) if b in bits]
                if at:
                    ax.plot([x for x, _ in at], [100 * y for _, y in at], "D", ms=8,
                            mfc="none", color=colour,
                            label=f"{DEPLOY_PAPER} abstract ({name}): {role}")
        ax.set_xticks(xs, ["float", *[f"INT{b}" for b in bits]])
        ax.set_xlabel("weights")
        ax.set_ylabel(f"hard-spike accuracy (%), {' / '.join(splits)} part")
        ax.set_title(f"{dataset}: accuracy against weight width\n(mean ± std over seeds)",
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def _options_line(groups: list[Group]) -> str:
    options = {}
    splits = set()
    for g in groups:
        for r in g.runs:
            if r.deploy:
                o = r.deploy["options"]
                key = (o["granularity"], o["membrane_format"], o["leak"],
                       o["leak_fraction_bits"])
                options[key] = None
                splits.add(r.deploy.get("split", "test"))
    described = "; ".join(
        f"{gran} weight scales, {fmt} membranes, leak as a "
        + (f"{bits}-fraction-bit multiplier" if leak == "multiplier" else "power-of-two shift")
        for gran, fmt, leak, bits in options)
    return (f"Integer networks: symmetric b-bit weights, {described} (`sast deploy`; "
            f"docs/protocol.md, Deployment). Scored on the {' / '.join(sorted(splits))} part.")


def deployment_section(groups: list[Group], figures: Path) -> list[str]:
    """The report's Markdown lines for the Deployment section (none when no run has
    ``deploy.json``), and ``figures/deployment.png``."""
    with_deploy = [g for g in groups if any(r.deploy for r in g.runs)]
    if not with_deploy:
        return []
    lines = ["## Deployment", "",
             "Where `sast deploy` ran: each network with hard spikes, in float arithmetic and "
             "quantised to integers, with what it costs per sample. " + _options_line(with_deploy)
             + " Float hard accuracy is the trained float weights with hard spikes; for a run "
             "trained with QAT those are its float master weights, and the column *as trained* "
             "is the fake-quantised network its `final.json` scored. Mean ± std over seeds "
             "(ddof = 0).", "",
             "### Accuracy", "", _accuracy_table(with_deploy),
             "### Cost per sample and model size", "",
             "SynOps count each spike (and each input event) once per synapse it reaches; dense "
             "MACs are every synapse at every step, what a non-spiking network of the same "
             "shape computes. Sizes: b-bit weights packed, biases, thresholds and rescales at "
             "their integer widths; the float32 network at 4 bytes a number. k = 10³, "
             "kB = 10³ bytes.", "", _cost_table(with_deploy)]
    paper = _paper_table(deployment_pairs(groups))
    if paper:
        synthetic = any(g.config["dataset"].startswith("synthetic") for g in with_deploy)
        lines += ["### Against the follow-up paper's abstract", "",
                  f"The paper's numbers are those of the abstract of the follow-up paper "
                  f"({DEPLOY_PAPER}): hard-spike accuracy with INT8 and INT4 weights and SynOps "
                  "per sample, baseline → SAST. Its quantisation details (scheme, scales, "
                  "membrane format, whether it trains quantisation-aware) are not public, so "
                  "ours are this package's choices, stated above. Ours: the baseline and SAST at "
                  "its validation-selected ρ; SynOps are the INT8 network's."
                  + (" These runs are on the built-in synthetic stand-in: the numbers are not "
                     "comparable with the paper's." if synthetic else ""), "", *paper]
    if figure_deployment(groups, figures / "deployment.png"):
        lines += ["![accuracy against weight width](figures/deployment.png)", ""]
    return lines
