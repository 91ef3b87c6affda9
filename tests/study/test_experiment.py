"""Sweeps: grid expansion, run naming, status, results table, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sast.cli import main
from sast.config import RunConfig
from sast.runs.folder import RunFolder
from sast.study.execute import run_status
from sast.study.runner import run_sweep
from sast.study.sweep import canonical, config_hash, expand_grid, load_sweep

from ..conftest import assert_figure

TIMING = ("epoch_time_s", "step_time_s", "peak_memory_mb")
GRID = """\
grid:
  dataset: synthetic-nmnist
  method: [surrogate, sast]
  rho: [0.1, 0.3]
  seed: [0, 1]
  epochs: 3
  max_train_samples: 96
  hidden: [16]
  time_bins: 6
  batch_size: 32
"""


def test_expand_grid_is_a_deduplicated_cartesian_product():
    configs = expand_grid({"method": ["surrogate", "sast"], "rho": [0.1, 0.3], "seed": [0, 1],
                           "hidden": [[16], [32, 8]]})
    # surrogate ignores rho: 2 seeds × 2 widths; sast: 2 rho × 2 seeds × 2 widths
    assert len(configs) == 4 + 8
    assert {c.hidden for c in configs} == {(16,), (32, 8)}
    assert all(c.rho == RunConfig().rho for c in configs if c.method == "surrogate")
    assert expand_grid({"hidden": [16, 8]})[0].hidden == (16, 8)  # one list = one value
    with pytest.raises(ValueError, match="empty list"):
        expand_grid({"seed": []})
    with pytest.raises(ValueError, match="unknown config field"):
        expand_grid({"sed": [0, 1]})


def test_config_hash_ignores_what_changes_no_result():
    a = RunConfig(method="surrogate", rho=0.1, device="cpu")
    b = RunConfig(method="surrogate", rho=0.5, device="auto")
    assert config_hash(a) == config_hash(b)
    assert config_hash(RunConfig(method="sast", rho=0.1)) != config_hash(
        RunConfig(method="sast", rho=0.5))
    assert canonical(a).rho == RunConfig().rho


def _rows(out):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_sweep_resumes_without_repeating_finished_runs(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    straight = run_sweep(load_sweep(grid, tmp_path / "straight"), log=lambda *_: None)
    assert len(straight) == 6 and all(r["status"] == "finished" for r in straight)

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sast.cli", "sweep", str(grid), "--out", str(out)]
    # The same intra-op thread count as this process: float sums are reduced in another order
    # under another count, and the rows are compared exactly.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        results = out / "results.jsonl"
        if results.exists() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {r["run"]: (out / "runs" / r["run"] / "final.json").stat().st_mtime_ns
                       for r in _rows(out)}
    assert 2 <= len(finished_before) < 6

    assert main(["sweep", str(grid), "--out", str(out)]) == 0
    for name, mtime in finished_before.items():  # not trained again
        assert (out / "runs" / name / "final.json").stat().st_mtime_ns == mtime
    assert _rows(out) == _rows(tmp_path / "straight")
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 7 and csv_lines[0].startswith("run,status,")


def test_failed_run_is_recorded_and_does_not_stop_the_others(tmp_path, monkeypatch):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.replace("epochs: 3", "epochs: 1").replace("[0, 1]", "0"))
    sweep = load_sweep(grid, tmp_path / "out")
    bad = next(c for c in sweep.configs if c.method == "sast" and c.rho == 0.1)
    import sast.training.loop as train

    real = train.fit

    def flaky_fit(cfg, out, **kwargs):
        if cfg == bad:
            raise RuntimeError("simulated failure")
        return real(cfg, out, **kwargs)

    monkeypatch.setattr(train, "fit", flaky_fit)
    # run in-process so that the monkeypatch applies
    monkeypatch.setattr("sast.study.runner.local_pool", _inline_pool)
    rows = run_sweep(sweep, log=lambda *_: None)
    status = {r["run"]: r["status"] for r in rows}
    assert sorted(status.values()) == ["failed", "finished", "finished"]
    failed = next(r for r in rows if r["status"] == "failed")
    assert "simulated failure" in failed["error"]
    assert (sweep.folder(bad) / "error.txt").exists()
    assert run_status(sweep.folder(bad), bad, {}) == "failed"

    monkeypatch.setattr(train, "fit", real)  # a re-run retries the failed run only
    rows = run_sweep(sweep, log=lambda *_: None)
    assert all(r["status"] == "finished" for r in rows)


def _inline_pool(workers, evaluate):
    import concurrent.futures

    from sast.study.execute import execute_run

    def submit(task):
        future = concurrent.futures.Future()
        future.set_result(execute_run(task[0].to_dict(), str(task[1]), evaluate))
        return future

    yield submit


def test_dry_run_lists_runs_and_status(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    assert main(["sweep", str(grid), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 runs" in out and out.count("pending") == 6 and "rho=0.1" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: {methd: [sast]}\n")
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    assert "did you mean 'method'" in capsys.readouterr().err


def test_reproduce_runs_the_study_and_sets_it_beside_the_paper(tmp_path, monkeypatch):
    import sast.study.reproduce as reproduce_mod

    tiny = {
        "evaluate": {"robustness": True, "levels": [0.0, 0.5], "corruption_seeds": 1},
        "grid": [
            {"dataset": "synthetic-nmnist", "method": ["surrogate", "sast"], "rho": [0.1, 0.3],
             "epochs": 1, "max_train_samples": 64, "hidden": [8], "time_bins": 4},
            {"dataset": "synthetic-nmnist", "method": "surrogate", "epochs": 2,
             "max_train_samples": 64, "hidden": [8], "time_bins": 4},
        ],
    }
    monkeypatch.setattr(reproduce_mod, "study_grid", lambda name, quick: tiny)
    assert main(["reproduce", "nmnist", "--quick", "--out", str(tmp_path / "study")]) == 0
    report = (tmp_path / "study" / "report" / "report.md").read_text()
    assert report.index("Built-in synthetic data") < report.index("Against the published")
    assert "65.7 %" in report and "94.7 % at ρ = 0.30" in report and "2.08×" in report
    assert "compute-matched" in report
    rows = (tmp_path / "study" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 4
    with pytest.raises(FileNotFoundError, match="--data-root"):
        reproduce_mod.reproduce("nmnist", data_root=tmp_path / "missing")


def test_shipped_study_grids_load_from_the_package():
    from sast.study.reproduce import study_grid

    full = study_grid("nmnist")
    regime = full["grid"][0]
    assert regime["arch"] == "nmnist-conv" and regime["slope"] == 2 and regime["init"] == "default"
    assert regime["rho"] == [0.005, 0.01, 0.02, 0.05, 0.1]
    assert study_grid("dvsgesture", quick=True)["grid"][0]["dataset"] == "synthetic-gesture"
    assert study_grid("atlas", quick=True)["grid"][1]["dataset"] == "synthetic-gesture"


def test_status_follows_the_evaluation_asked_for(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.replace("epochs: 3", "epochs: 1").replace("[0, 1]", "0")
                    .replace("[surrogate, sast]", "surrogate")
                    + "evaluate: {robustness: true, levels: [0.0, 0.5], corruption_seeds: 1}\n")
    sweep = load_sweep(grid, tmp_path / "out")
    run_sweep(sweep, log=lambda *_: None)
    cfg = sweep.configs[0]
    assert run_status(sweep.folder(cfg), cfg, sweep.evaluate) == "finished"
    other = {**sweep.evaluate, "corruption": "noise", "levels": [0.0, 10.0]}
    assert run_status(sweep.folder(cfg), cfg, other) == "interrupted"
    (sweep.folder(cfg) / "evaluated.json").unlink()
    RunFolder(sweep.folder(cfg)).write_status("failed", "evaluation crashed")
    assert run_status(sweep.folder(cfg), cfg, sweep.evaluate) == "failed"


def test_grid_keeps_the_device_but_hashes_without_it():
    cpu, auto = expand_grid({"device": ["cpu", "auto"]}), expand_grid({"device": "auto"})
    assert [c.device for c in cpu] == ["cpu"]  # one run: the device changes no result
    assert config_hash(cpu[0]) == config_hash(auto[0])


def test_results_table_has_a_column_for_every_field_the_grid_varies(tmp_path):
    import csv

    grid = tmp_path / "grid.yaml"
    grid.write_text("grid:\n  dataset: synthetic-nmnist\n  method: surrogate\n"
                    "  surrogate: [sigmoid, atan]\n  slope: [2, 5]\n  epochs: 1\n"
                    "  max_train_samples: 32\n  hidden: [8]\n  time_bins: 4\n")
    sweep = load_sweep(grid, tmp_path / "out")
    rows = run_sweep(sweep, log=lambda *_: None)
    table = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    header = list(table[0])
    assert header.index("surrogate") == header.index("seed") + 1 and "slope" in header
    assert header[-1] == "config"
    assert {(r["surrogate"], float(r["slope"])) for r in table} == {
        ("sigmoid", 2.0), ("sigmoid", 5.0), ("atan", 2.0), ("atan", 5.0)}
    for row in table:
        config = json.loads(row["config"])
        assert config["surrogate"] == row["surrogate"] and config["hidden"] == [8]
    assert {r["surrogate"] for r in rows} == {"sigmoid", "atan"}


def test_time_left_is_weighted_by_the_cost_of_each_kind_of_run():
    from sast.study.runner import Progress

    mlp = RunConfig(method="surrogate", epochs=2)
    conv = RunConfig(method="surrogate", arch="nmnist-conv", epochs=2)
    progress = Progress(total=6, left=[mlp, mlp.replace(seed=1), conv, conv.replace(seed=1),
                                       conv.replace(method="sast", seed=2),
                                       mlp.replace(method="sast", epochs=4)])
    progress.finished(mlp, seconds=10.0, ok=True)          # 5 s per epoch-pass
    progress.finished(conv, seconds=40.0, ok=True)         # 20 s per epoch-pass
    # left: mlp 2 units, conv 2 units, conv SAM 4 units, mlp SAM 8 units
    assert progress.seconds_left(workers=1) == pytest.approx(2 * 5 + 2 * 20 + 4 * 20 + 8 * 5)
    assert progress.seconds_left(workers=2) == pytest.approx(170 / 2)
    progress.running = 2
    assert "2/6 done (0 already), 2 running, 0 failed, about 3 min left" in progress.line(1)


def test_evaluation_batch_size_changes_no_folder_name():
    """eval_batch_size changes no number, so it is pinned in the hash: evaluating with
    another batch size names the same run folder."""
    from sast.study.sweep import config_hash

    assert config_hash(RunConfig(eval_batch_size=32)) == config_hash(
        RunConfig(eval_batch_size=256)) == config_hash(RunConfig())


def test_a_sweep_can_deploy_every_run_after_training(tmp_path, monkeypatch):
    """evaluate: {deploy: true} runs `sast deploy` on each run after the protocol; the report
    of the sweep then has its Deployment section; an evaluated.json written before the option
    existed still counts as evaluated where deploy is not asked for."""
    import torch

    from sast.runs.folder import atomic_write_json, read_json
    from sast.study.report import write_report

    torch.set_num_threads(1)
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.replace("epochs: 3", "epochs: 1").replace("[0, 1]", "0")
                    .replace("rho: [0.1, 0.3]", "rho: 0.1\n  qat_weight_bits: 8")
                    + "evaluate: {deploy: true}\n")
    sweep = load_sweep(grid, tmp_path / "out")
    assert len(sweep.configs) == 2
    monkeypatch.setattr("sast.study.runner.local_pool", _inline_pool)
    rows = run_sweep(sweep, log=lambda *_: None)
    assert [r["status"] for r in rows] == ["finished", "finished"]
    for cfg in sweep.configs:
        folder = sweep.folder(cfg)
        deployed = read_json(folder / "deploy.json")
        assert deployed["options"]["weight_bits"] == [8, 4]  # the QAT width first
        assert deployed["qat"]["weight_bits"] == 8 and deployed["method"] == cfg.method
        evaluated = read_json(folder / "evaluated.json")
        assert evaluated["deploy"] is True and evaluated["deploy_bits"] is None
        assert run_status(folder, cfg, sweep.evaluate) == "finished"
        assert run_status(folder, cfg, {"robustness": False}) == "interrupted"
        # evaluated before `deploy` existed: the same as deploy: false
        atomic_write_json(folder / "evaluated.json", {
            k: v for k, v in evaluated.items() if k not in ("deploy", "deploy_bits")})
        assert run_status(folder, cfg, {"robustness": False}) == "finished"
        assert run_status(folder, cfg, sweep.evaluate) == "interrupted"
    report = write_report([sweep.out], tmp_path / "report").read_text()
    assert "## Deployment" in report and "QAT 8-bit" in report
    assert_figure(tmp_path / "report" / "figures" / "deployment.png")


@pytest.mark.parametrize("bits", ["[1]", "[8.0]", "[]", "8", "[true]"])
def test_deploy_bits_must_be_weight_widths(tmp_path, bits):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID + f"evaluate: {{deploy: true, deploy_bits: {bits}}}\n")
    with pytest.raises(ValueError, match="deploy_bits"):
        load_sweep(grid)
