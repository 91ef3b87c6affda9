"""``sast reproduce``: a whole study from one command.

The study grids ship with the package (``sast/configs/<grid>[-quick].yaml``, also ``configs/``
in the source tree):

- ``nmnist``, ``dvsgesture``: the paper's protocol for one dataset — ``surrogate``, ``ste`` and
  ``sast`` over the ρ grid, several seeds, the compute-matched control, then robustness,
  calibration and theory diagnostics on every run, and a report that sets the results beside
  the paper's published numbers;
- ``atlas``: the gap atlas (:mod:`sast.study.report.atlas`) — baseline and SAST over surrogate,
slope,
  network, initialisation and more, on N-MNIST and synthetic gestures.

Without a data root the built-in synthetic stand-in of the study's real dataset is used (only
the grids on that dataset change), and the report says so at the top.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sast.study.report import write_report
from sast.study.runner import run_sweep
from sast.study.sweep import sweep_from_dict


@dataclass(frozen=True)
class Study:
    name: str
    real_dataset: str
    synthetic_dataset: str
    baseline_hard: float | None = None
    sast_hard: float | None = None
    best_rho: float | None = None
    grid: str = ""
    """The grid file's stem under ``sast/configs`` (``-quick`` is appended for ``--quick``)."""

    @property
    def is_atlas(self) -> bool:
        return self.baseline_hard is None


STUDIES = {
    s.name: s for s in (
        Study("nmnist", "nmnist", "synthetic-nmnist", 0.657, 0.947, 0.30, "reproduce-nmnist"),
        Study("dvsgesture", "dvsgesture", "synthetic-gesture", 0.318, 0.633, 0.40,
              "reproduce-dvsgesture"),
        Study("atlas", "nmnist", "synthetic-nmnist", grid="atlas"),
    )
}


def study_grid(name: str, quick: bool = False) -> dict[str, Any]:
    """The contents of the study's grid file shipped with the package."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; expected one of {sorted(STUDIES)}")
    file = f"{STUDIES[name].grid}{'-quick' if quick else ''}.yaml"
    return yaml.safe_load(resources.files("sast").joinpath("configs", file).read_text())


def on_real_data(grid: dict[str, Any], study: Study, root: Path) -> dict[str, Any]:
    """The grid with every entry on the study's synthetic stand-in moved to the real dataset
    under ``root`` (entries on other datasets are left as they are)."""
    entries = grid["grid"] if isinstance(grid["grid"], list) else [grid["grid"]]
    moved = []
    for entry in entries:
        if entry.get("dataset", study.synthetic_dataset) == study.synthetic_dataset:
            entry = {**entry, "dataset": study.real_dataset, "data_root": str(root.resolve())}
        moved.append(entry)
    return {**grid, "grid": moved}


def reproduce(
    name: str, quick: bool = False, data_root: str | Path | None = None,
    out: str | Path | None = None, backend: str = "local", workers: int = 1,
    address: str | None = None, log=print,  # noqa: ANN001
) -> Path:
    """Run the study (skipping finished runs, resuming interrupted ones) and write its report;
    returns the report's path."""
    study = STUDIES.get(name)
    if study is None:
        raise ValueError(f"unknown study {name!r}; expected one of {sorted(STUDIES)}")
    grid = study_grid(name, quick)
    if data_root is not None:
        root = Path(data_root)
        if not root.is_dir():
            raise FileNotFoundError(f"--data-root {root} is not a folder")
        grid = on_real_data(grid, study, root)
    suffix = "-quick" if quick else ""
    source = f"sast/configs/{study.grid}{suffix}.yaml"
    default_out = Path("reproduce") / f"{name}{suffix}{'' if data_root else '-synthetic'}"
    sweep = sweep_from_dict(grid, source, out, default_out)
    dataset = ", ".join(sorted({c.dataset for c in sweep.configs}))
    log(f"sast reproduce {name}{' --quick' if quick else ''}: {len(sweep.configs)} runs on "
        f"{dataset} in {sweep.out}")
    rows = run_sweep(sweep, backend, workers, address, log=log)
    finished = [sweep.out / "runs" / r["run"] for r in rows if r["status"] == "finished"]
    if not finished:
        raise RuntimeError(f"no run of the study finished; see {sweep.out / 'results.csv'}")
    if study.is_atlas:
        from sast.study.report.atlas import write_atlas

        path = write_atlas(finished, sweep.out / "report")
    else:
        path = write_report(finished, sweep.out / "report", study=study)
    failed = len(rows) - len(finished)
    if failed:
        log(f"{failed} runs failed (see {sweep.out / 'results.csv'}); the report covers the rest")
    return path
