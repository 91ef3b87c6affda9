from pathlib import Path

import pytest

from sast.config import RunConfig, load_config_file

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = RunConfig.from_dict(load_config_file(path), source=str(path))
    assert cfg.dataset in path.name


def test_compute_matched_preset_matches_sast_gradient_evaluations():
    folder = CONFIGS[0].parent
    sast = RunConfig.from_dict(load_config_file(folder / "synthetic-nmnist.yaml"))
    matched_file = folder / "synthetic-nmnist-compute-matched.yaml"
    matched = RunConfig.from_dict(load_config_file(matched_file))
    assert sast.method == "sast" and matched.method == "surrogate"
    assert matched.epochs == 2 * sast.epochs and matched.batch_size == sast.batch_size
