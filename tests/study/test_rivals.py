"""The rivals table: every way to a good hard-spike network, with its compute."""

from pathlib import Path

from sast.config import RunConfig
from sast.study.report.paper import rivals_section
from sast.study.report.runs import Run, group_runs, mark_compute_matched


def run(seed, surr, hard, evals, val_hard=0.5, after=None, **cfg):
    config = RunConfig(seed=seed, **cfg).to_dict()
    final = {"seed": seed, "config": config, "transfer_gap_pp": 100 * (surr - hard),
             "surrogate": {"accuracy": surr}, "hard": {"accuracy": hard},
             "validation": {"hard": {"accuracy": val_hard}},
             "timing": {"grad_evals_total": evals}}
    evaluation = None if after is None else {
        "threshold_calibration": {"hard_accuracy_after": after}}
    return Run(Path(f"r-{len(str(cfg))}-{seed}-{surr}"), final, evaluation=evaluation)


def test_rivals_table_names_each_approach_with_its_compute():
    runs = []
    for seed in (0, 1):
        runs += [
            run(seed, 0.80, 0.60, 100, after=0.70, method="surrogate", epochs=10),
            run(seed, 0.80, 0.70, 200, val_hard=0.9, method="sast", rho=0.1, epochs=10),
            run(seed, 0.70, 0.69, 200, val_hard=0.6, method="sast", rho=0.4, epochs=10),
            run(seed, 0.82, 0.62, 200, method="surrogate", epochs=20),
            run(seed, 0.75, 0.78, 200, method="surrogate", epochs=20, ste_finetune_epochs=10),
            run(seed, 0.79, 0.74, 100, method="surrogate", epochs=10, slope=2.0,
                slope_final=8.0),
        ]
    groups = group_runs(runs)
    mark_compute_matched(groups)
    labels = [g.label for g in groups]
    assert any("→ STE fine-tune 10 ep" in label for label in labels)
    assert any("k 2→8" in label for label in labels)
    text = "\n".join(rivals_section(groups))
    lines = {line.split("|")[1].strip(): line for line in text.splitlines()
             if line.startswith("| ")}
    baseline = lines["baseline (surrogate forward, base optimiser)"]
    assert "| 80.0 ± 0.0 | 60.0 ± 0.0 | 20.0 ± 0.0 | 1.0× | 70.0 ± 0.0 |" in baseline
    assert "`surrogate`" in baseline  # it departs from no shared field: no field named
    sast = lines["SAST at its validation-selected ρ"]
    assert "sast ρ=0.1" in sast and "| 2.0× |" in sast  # ρ = 0.1 wins on validation
    assert "| 2.0× |" in lines["baseline, then an STE fine-tune"]
    assert "| 1.0× |" in lines["baseline with the slope annealed towards a step"]
    assert "baseline trained longer (compute-matched)" in lines
    assert "`surrogate (epochs=20) — compute-matched`" in lines[
        "baseline trained longer (compute-matched)"]


def test_the_baseline_is_the_surrogate_group_trained_as_sast_is():
    """Among several surrogate groups of one length (another initialisation, an annealed
    slope), the baseline is the one SAST's runs differ from only by SAM; the others are
    rivals, named by what they change."""
    from sast.study.report.paper import rival_role
    from sast.study.report.runs import baseline_group

    runs = []
    for seed in (0, 1):
        runs += [
            run(seed, 0.91, 0.90, 100, method="surrogate", epochs=12, init="firing-rate"),
            run(seed, 0.85, 0.68, 100, after=0.83, method="surrogate", epochs=12),
            run(seed, 0.86, 0.83, 100, method="surrogate", epochs=12, slope=2.0,
                slope_final=16.0),
            run(seed, 0.82, 0.70, 200, val_hard=0.7, method="sast", rho=0.05, epochs=12,
                rho_warmup_epochs=2.0),
        ]
    groups = group_runs(runs)
    base = baseline_group(groups)
    assert base.config["init"] == "default" and base.config.get("slope_final") is None
    assert base.label == "surrogate"
    roles = {g.label: rival_role(g, base) for g in groups}
    assert roles == {"surrogate": "surrogate", "surrogate (init=firing-rate)": "init",
                     "surrogate, k 2→16 (slope=2.0)": "slope-annealing",
                     "sast ρ=0.05": "sast"}
    text = "\n".join(rivals_section(groups))
    assert ("| baseline with another initialisation (firing-rate) "
            "| `surrogate (init=firing-rate)`") in text
    assert "| baseline (surrogate forward, base optimiser) | `surrogate` | 85.0 ± 0.0 |" in text


def timed(run_, step_s, passes):
    run_.final["timing"].update(step_time_s_median=step_s, grad_evals_per_step=passes)
    return run_


def test_the_conclusion_says_what_the_numbers_show_whichever_way_they_fall():
    from sast.study.report.paper import conclusion

    runs = []
    for seed in (0, 1, 2):
        runs += [timed(run(seed, 0.85, 0.68 + 0.01 * seed, 100, after=0.83,
                           method="surrogate", epochs=12), 0.10, 1),
                 timed(run(seed, 0.84, 0.80, 200, val_hard=0.9, method="sast", rho=0.05,
                           epochs=12), 0.21, 2),
                 timed(run(seed, 0.60, 0.60, 200, val_hard=0.6, method="sast", rho=0.2,
                           epochs=12), 0.20, 2),
                 timed(run(seed, 0.40, 0.88, 100, method="ste", epochs=12), 0.1, 1)]
    text = " ".join(conclusion(group_runs(runs)))
    assert "a transfer gap of 16.0 ± 0.8 pp" in text
    assert "validation-selected ρ = 0.05 (the smallest radius of the grid, so a better" in text
    assert "Its gap is 12.0 pp narrower (16.0 → 4.0), more than the seeds' spread" in text
    assert "SAST does not halve" not in text and "SAST halves the baseline's gap" in text
    assert "A SAST step costs 2.10× a baseline step" in text and "1.05× per" in text
    assert "`ste`'s, 88.0 ± 0.0 %" in text and "gives 83.0 ± 0.0 % with hard spikes" in text


def test_an_implausible_sam_cost_is_flagged_not_reported():
    from sast.study.report.paper import conclusion

    runs = [timed(run(s, 0.8, 0.7, 100, method="surrogate"), 0.10, 1) for s in (0, 1)]
    runs += [timed(run(s, 0.8, 0.7, 200, method="sast", rho=0.1), 0.078, 2) for s in (0, 1)]
    text = " ".join(conclusion(group_runs(runs)))
    assert "a SAM step measured 0.78× a baseline step, implausible for 2" in text
    assert "A SAST step costs" not in text
    assert "one seed per side" not in text and "within the seeds' spread" in text
