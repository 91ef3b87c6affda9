"""The rivals table: every way to a good hard-spike network, with its compute."""

from pathlib import Path

from sast.config import RunConfig
from sast.report import Run, _rivals_section, group_runs


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
    labels = [g.label for g in groups]
    assert any("→ STE fine-tune 10 ep" in label for label in labels)
    assert any("k 2→8" in label for label in labels)
    text = "\n".join(_rivals_section(groups))
    lines = {line.split("|")[1].strip(): line for line in text.splitlines()
             if line.startswith("| ")}
    baseline = lines["baseline (surrogate forward, base optimiser)"]
    assert "| 80.0 ± 0.0 | 60.0 ± 0.0 | 20.0 ± 0.0 | 1.0× | 70.0 ± 0.0 |" in baseline
    assert "`surrogate (epochs=10, slope=5.0)`" in baseline
    sast = lines["SAST at its validation-selected ρ"]
    assert "sast ρ=0.1" in sast and "| 2.0× |" in sast  # ρ = 0.1 wins on validation
    assert "| 2.0× |" in lines["baseline, then an STE fine-tune"]
    assert "| 1.0× |" in lines["baseline with the slope annealed towards a step"]
    assert "baseline trained longer" in lines
