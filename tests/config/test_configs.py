import json
from pathlib import Path

import pytest

from sast.config import RunConfig, load_config_file

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
GRIDS = [p for p in CONFIGS if "grid" in load_config_file(p)]
RUN_CONFIGS = [p for p in CONFIGS if p not in GRIDS]
STUDIES = [p for p in GRIDS if p.name.startswith("reproduce-")]
ATLASES = [p for p in GRIDS if p.name.startswith("atlas")]


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.name)
def test_every_shipped_grid_expands(path):
    from sast.study.sweep import load_sweep

    sweep = load_sweep(path)  # every run config of the grid is validated
    assert len(sweep.configs) >= 2
    assert len({c.method for c in sweep.configs}) >= 2  # something to compare


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_grids_are_valid(path):
    from sast.study.sweep import load_sweep

    sweep = load_sweep(path)
    methods = {c.method for c in sweep.configs}
    assert {"surrogate", "sast"} <= methods
    sast_epochs = {c.epochs for c in sweep.configs if c.method == "sast"}
    matched = [c for c in sweep.configs if c.method == "surrogate" and c.epochs not in sast_epochs]
    assert matched and all(c.epochs == 2 * max(sast_epochs) for c in matched)


@pytest.mark.parametrize("path", ATLASES, ids=lambda p: p.name)
def test_atlas_grids_are_valid(path):
    from sast.study.sweep import load_sweep

    sweep = load_sweep(path)
    assert {c.method for c in sweep.configs} == {"surrogate", "sast"}
    cells = {json.dumps({k: v for k, v in c.to_dict().items()
                         if k not in ("method", "rho", "seed", "rho_warmup_epochs")},
                        sort_keys=True) for c in sweep.configs}
    for cell in cells:  # every cell has a baseline and at least two radii, on two seeds or more
        runs = [c for c in sweep.configs
                if json.dumps({k: v for k, v in c.to_dict().items()
                               if k not in ("method", "rho", "seed", "rho_warmup_epochs")},
                              sort_keys=True) == cell]
        assert len({c.seed for c in runs}) >= 2
        assert len({c.rho for c in runs if c.method == "sast"}) >= 2
        assert any(c.method == "surrogate" for c in runs)


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = RunConfig.from_dict(load_config_file(path), source=str(path))
    assert cfg.dataset in path.name


def test_compute_matched_preset_matches_sast_gradient_evaluations():
    folder = RUN_CONFIGS[0].parent
    sast = RunConfig.from_dict(load_config_file(folder / "synthetic-nmnist.yaml"))
    matched_file = folder / "synthetic-nmnist-compute-matched.yaml"
    matched = RunConfig.from_dict(load_config_file(matched_file))
    assert sast.method == "sast" and matched.method == "surrogate"
    assert matched.epochs == 2 * sast.epochs and matched.batch_size == sast.batch_size


@pytest.mark.parametrize("dataset", ["nmnist", "dvsgesture"])
def test_regime_pair_is_the_reproduce_regime(dataset):
    """The regime pair differs only in method and radius, and is the regime the study runs."""
    from sast.study.sweep import load_sweep

    folder = RUN_CONFIGS[0].parent
    base = RunConfig.from_dict(load_config_file(folder / f"{dataset}-regime-baseline.yaml"))
    sast = RunConfig.from_dict(load_config_file(folder / f"{dataset}-regime-sast.yaml"))
    assert base.method == "surrogate" and sast.method == "sast" and sast.rho > 0
    varying = ("method", "rho", "rho_warmup_epochs")
    shared = {k: v for k, v in base.to_dict().items() if k not in varying}
    assert shared == {k: v for k, v in sast.to_dict().items() if k not in varying}
    study = load_sweep(folder / f"reproduce-{dataset}.yaml").configs
    same_regime = [c for c in study if c.method == "sast" and c.rho == sast.rho
                   and c.rho_warmup_epochs == sast.rho_warmup_epochs]
    assert same_regime, f"reproduce-{dataset}.yaml never runs SAST at rho = {sast.rho}"
    ignore = (*varying, "seed", "dataset", "data_root")
    expected = {k: v for k, v in same_regime[0].to_dict().items() if k not in ignore}
    assert {k: v for k, v in sast.to_dict().items() if k not in ignore} == expected
