"""The report's PNG figures: robustness curves, reliability diagrams, membrane margins, loss
slices, accuracy and gap against ρ, and the accuracy lost per layer. Each returns False (and
writes nothing) when no run holds its data.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from sast.study.report.render import pyplot, save_figure
from sast.study.report.runs import MODES, Group, Run, baseline_group, first_with, select_best_rho

ATTRIBUTION_FIGURE_GROUPS = 6
"""The attribution figure draws the baseline and SAST at its validation-selected ρ where a
study has both, else at most this many groups."""


def _attribution_groups(groups: list[Group]) -> list[tuple[Group, Run]]:
    with_attr = first_with(groups, "attribution")
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
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def figure_robustness(groups: list[Group], path: Path) -> bool:
    with_curves = [g for g in groups if any(r.robustness for r in g.runs)]
    if not with_curves:
        return False
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def figure_reliability(groups: list[Group], path: Path) -> bool:
    with_eval = first_with(groups, "evaluation")
    if not with_eval:
        return False
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def figure_margins(groups: list[Group], path: Path) -> bool:
    with_eval = first_with(groups, "evaluation")
    if not with_eval:
        return False
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def figure_loss_slices(groups: list[Group], path: Path) -> bool:
    with_diag = first_with(groups, "diagnostics")
    if not with_diag:
        return False
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def figure_rho(groups: list[Group], path: Path) -> bool:
    sam = [g for g in groups if g.config["method"] == "sast"]
    if len({g.config["rho"] for g in sam}) < 2:
        return False
    plt = pyplot()
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
    save_figure(fig, path)
    return True
