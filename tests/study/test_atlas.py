"""The gap atlas: cells, validation-selected ρ, heat maps and the sentences they produce."""

import json
from pathlib import Path

import pytest

from sast.cli import main
from sast.config import RunConfig
from sast.study.report.atlas import build_cells, findings, write_atlas
from sast.study.report.runs import Run

from ..conftest import assert_figure


def fake(method, slope, seed, surr, hard, val_hard=0.5, rho=None, arch="nmnist-conv"):
    config = RunConfig(method=method, slope=slope, seed=seed, arch=arch,
                       rho=rho if rho is not None else 0.3).to_dict()
    final = {"seed": seed, "config": config, "transfer_gap_pp": 100 * (surr - hard),
             "surrogate": {"accuracy": surr}, "hard": {"accuracy": hard},
             "validation": {"hard": {"accuracy": val_hard}}}
    return Run(Path(f"{method}-{slope}-{seed}-{rho}"), final)


def test_cells_group_seeds_and_radii_and_select_rho_on_validation():
    runs = [fake("surrogate", 2, s, 0.80, 0.60 + 0.02 * s) for s in (0, 1)]
    runs += [fake("sast", 2, s, 0.78, 0.75, val_hard=0.70, rho=0.1) for s in (0, 1)]
    runs += [fake("sast", 2, s, 0.60, 0.60, val_hard=0.65, rho=0.4) for s in (0, 1)]
    runs += [fake("surrogate", 5, 0, 0.9, 0.9), fake("ste", 2, 0, 0.5, 0.5)]
    cells = build_cells(runs)
    assert len(cells) == 2  # the ste run is not part of any cell
    cell = next(c for c in cells if c.key["slope"] == 2)
    assert sorted(cell.sast) == [0.1, 0.4] and len(cell.baseline) == 2
    assert cell.best_rho() == 0.1  # ρ = 0.4 has the smaller test gap, but validation decides
    assert cell.baseline_gap() == pytest.approx([20.0, 18.0])
    assert cell.sast_gap() == pytest.approx([3.0, 3.0])
    assert cell.surrogate_cost() == pytest.approx([2.0, 2.0])
    text = "\n".join(findings(cells, []))
    assert "5 pp or more in 1 of 2 cells" in text
    assert "halves it in 1 of 1 cells" in text and "by more than the seeds' spread" in text
    assert "19.0 ± 1.0 → 3.0 ± 0.0 pp at ρ = 0.1" in text
    assert "within 2 pp of the baseline's in 1, and raises hard accuracy in 1" in text


def test_a_gap_closed_by_losing_surrogate_accuracy_is_not_counted_as_a_gain():
    """SAST that halves the gap by failing to train (surrogate accuracy collapses, hard
    accuracy falls) counts as halving, but neither as keeping accuracy nor as a hard gain."""
    runs = [fake("surrogate", 2, s, 0.44, 0.21) for s in (0, 1)]
    runs += [fake("sast", 2, s, 0.23, 0.13, val_hard=0.3, rho=0.05) for s in (0, 1)]
    runs += [fake("sast", 2, s, 0.12, 0.11, val_hard=0.1, rho=0.1) for s in (0, 1)]
    text = "\n".join(findings(build_cells(runs), []))
    assert "halves it in 1 of 1 cells" in text
    assert "within 2 pp of the baseline's in 0, and raises hard accuracy in 0" in text


def test_findings_say_so_when_there_is_no_gap():
    cells = build_cells([fake("surrogate", 5, s, 0.9, 0.89) for s in (0, 1)])
    assert findings(cells, [])[0].startswith("No cell has a baseline transfer gap of 5 pp")


def test_write_atlas_from_run_folders(tmp_path):
    for i, run in enumerate([fake("surrogate", 1, 0, 0.8, 0.5), fake("surrogate", 5, 0, 0.9, 0.9),
                             fake("sast", 1, 0, 0.8, 0.75, rho=0.2)]):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        (folder / "final.json").write_text(json.dumps(run.final))
    path = write_atlas(sorted(tmp_path.glob("run*")), tmp_path / "atlas")
    text = path.read_text()
    assert "## What the atlas shows" in text and "30.0 pp" in text
    png = tmp_path / "atlas" / "figures" / "atlas_1.png"
    assert_figure(png)


def test_reproduce_atlas_moves_only_the_nmnist_grids_to_real_data(tmp_path, monkeypatch):
    import sast.study.reproduce as reproduce_mod

    tiny = {"evaluate": {}, "grid": [
        {"dataset": "synthetic-nmnist", "method": ["surrogate", "sast"], "rho": 0.1,
         "epochs": 1, "max_train_samples": 32, "hidden": [8], "time_bins": 4},
        {"dataset": "synthetic-gesture", "method": "surrogate", "epochs": 1, "time_bins": 4,
         "channels": [2], "max_train_samples": 22},
    ]}
    monkeypatch.setattr(reproduce_mod, "study_grid", lambda name, quick: tiny)
    moved = reproduce_mod.on_real_data(tiny, reproduce_mod.STUDIES["atlas"], tmp_path)
    assert [e["dataset"] for e in moved["grid"]] == ["nmnist", "synthetic-gesture"]
    assert moved["grid"][0]["data_root"] == str(tmp_path.resolve())
    assert main(["reproduce", "atlas", "--quick", "--out", str(tmp_path / "study")]) == 0
    atlas = (tmp_path / "study" / "report" / "atlas.md").read_text()
    assert "synthetic-nmnist: MLP 8" in atlas and "synthetic-gesture: conv 2" in atlas
