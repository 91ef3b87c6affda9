"""The Ray backend of the sweep runner gives the same results as the local process pool."""

import csv
import json
import sys
from pathlib import Path

import pytest

from sast.study.ray import ray_pool, task_options, task_threads
from sast.study.runner import run_sweep
from sast.study.sweep import load_sweep

ray = pytest.importorskip("ray")

TIMING = ("epoch_time_s", "step_time_s", "peak_memory_mb")
GRID = """\
grid:
  dataset: synthetic-nmnist
  method: [surrogate, sast]
  rho: 0.3
  seed: [0, 1]
  epochs: 1
  max_train_samples: 96
  hidden: [16]
  time_bins: 6
  batch_size: 32
"""


def without_timing(rows: list[dict]) -> list[dict]:
    """Result rows with the wall-clock and memory columns, the only ones allowed to differ,
    removed."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def read_csv(sweep_folder: Path) -> list[dict]:
    with open(sweep_folder / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_task_resources_default_to_one_cpu_and_no_gpu():
    assert task_options({}) == {"num_cpus": 1, "num_gpus": 0,
                                "runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}}
    assert task_options({"num_cpus": 4, "num_gpus": 0.25}) == {"num_cpus": 4, "num_gpus": 0.25}
    assert task_threads({"num_cpus": 0.5}) == 1


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes ``import ray`` fail
    with pytest.raises(ImportError, match=r"pip install 'sast\[ray\]'"):
        next(ray_pool(None, {}, {}))


@pytest.mark.slow
def test_ray_sweep_matches_local_sweep(tmp_path, monkeypatch):
    # A fresh cache that only the Ray workers fill shows that they inherit the environment.
    cache = tmp_path / "cache"
    monkeypatch.setenv("SAST_CACHE_DIR", str(cache))
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)

    ray_sweep = load_sweep(grid, tmp_path / "ray")
    ray_rows = run_sweep(ray_sweep, "ray", workers=2, log=lambda _: None)
    assert not ray.is_initialized()  # the backend shuts down the Ray it started
    assert any(cache.iterdir())
    local_rows = run_sweep(load_sweep(grid, tmp_path / "local"), "local", workers=2,
                           log=lambda _: None)

    assert len(ray_rows) == 4
    assert {row["status"] for row in ray_rows} == {"finished"}
    assert without_timing(ray_rows) == without_timing(local_rows)
    for cfg in ray_sweep.configs:
        final = json.loads((ray_sweep.folder(cfg) / "final.json").read_text())
        assert final["epochs"] == 1
    assert without_timing(read_csv(tmp_path / "ray")) == without_timing(
        read_csv(tmp_path / "local"))
