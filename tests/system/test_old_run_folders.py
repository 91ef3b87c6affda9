"""A sweep folder written by an earlier layout of the package (``tests/fixtures/sweep-6000484``,
see its README) still loads and resumes: same run-folder names and config hashes, the same
accuracies when re-evaluated, and a grown grid trains only its new run."""

import json
import shutil
from pathlib import Path

import pytest

from sast.evaluation.accuracy import evaluate_spike_modes
from sast.runs.load import load_run
from sast.runs.splits import prepare_data
from sast.study.execute import run_status
from sast.study.runner import run_sweep
from sast.study.sweep import load_sweep, run_name

from ..study.test_experiment import _inline_pool

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sweep-6000484"
RUN = "surrogate-5d5fd7bcc5"


@pytest.fixture()
def old_sweep(tmp_path):
    shutil.copytree(FIXTURE / "sweep", tmp_path / "sweep")
    return tmp_path / "sweep"


def test_an_old_run_folder_loads_with_its_name_and_re_evaluates_to_its_numbers(old_sweep):
    folder = old_sweep / "runs" / RUN
    cfg, model = load_run(folder)
    assert run_name(cfg) == RUN  # the config hash names the folder as it did
    final = json.loads((folder / "final.json").read_text())
    assert run_status(folder, cfg, {}) == "finished"
    splits = prepare_data(cfg)
    assert len(splits.test) == final["sizes"]["test"]
    scores = evaluate_spike_modes(model, splits.test, "cpu", cfg.eval_batch_size)
    for mode in ("surrogate", "hard"):
        assert scores[mode]["accuracy"] == pytest.approx(final[mode]["accuracy"], abs=1e-12)
        assert scores[mode]["loss"] == pytest.approx(final[mode]["loss"], rel=1e-5)


def test_an_old_sweep_resumes_keeping_its_finished_run(old_sweep, monkeypatch):
    kept = {p.name: p.read_bytes() for p in (old_sweep / "runs" / RUN).iterdir()}
    monkeypatch.setattr("sast.study.runner.local_pool", _inline_pool)
    sweep = load_sweep(FIXTURE / "resume.yaml", old_sweep)
    assert [run_name(c) for c in sweep.configs][0] == RUN
    rows = run_sweep(sweep, log=lambda *_: None)
    assert sorted(r["status"] for r in rows) == ["finished", "finished"]
    # the finished run was skipped: not one of its files was rewritten
    assert {p.name: p.read_bytes() for p in (old_sweep / "runs" / RUN).iterdir()} == kept
    new = [r["run"] for r in rows if r["run"] != RUN]
    assert len(new) == 1 and new[0].startswith("sast-")
    assert (old_sweep / "runs" / new[0] / "final.json").exists()
