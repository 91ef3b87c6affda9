"""Model selection reads validation data only; the test part is scored, never fitted on."""

from pathlib import Path

import pytest
import torch

import sast.protocol.evaluate as protocol
import sast.runs.splits as splits
from sast.config import RunConfig
from sast.data import load_frames, registry
from sast.data.corruptions import EventDrop
from sast.protocol.evaluate import evaluate_run
from sast.runs.folder import read_json
from sast.study.report.runs import Group, Run, select_best_rho
from sast.training.loop import fit


@pytest.fixture(scope="module")
def carved_run(tmp_path_factory):
    """A run on a copy without a test split on disk: test and validation are both carved out
    of the training split, so a mix-up between them would go unnoticed by sizes alone."""
    root = tmp_path_factory.mktemp("carved")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(splits, "split_available", lambda *a, **k: False)
        cfg = RunConfig(method="surrogate", max_train_samples=64, hidden=(8,), time_bins=4,
                        epochs=1, batch_size=32, val_fraction=0.1)
        fit(cfg, root / "run", progress=False, log=lambda *_: None)
    return root / "run"


def rows(frames):
    return set(frames.rows.tolist())


def test_fitted_quantities_never_read_the_split_they_are_scored_on(carved_run, monkeypatch):
    monkeypatch.setattr(splits, "split_available", lambda *a, **k: False)
    seen = {}
    real_clean, real_calibrate = protocol.evaluate_clean, protocol.calibrate_thresholds
    real_mode = protocol.evaluate_mode

    def clean(model, test, val, *args, **kwargs):
        seen["scored"], seen["temperature fitted"] = rows(test), rows(val)
        return real_clean(model, test, val, *args, **kwargs)

    def calibrate(model, val, *args, **kwargs):
        seen["thresholds fitted"] = rows(val)
        return real_calibrate(model, val, *args, **kwargs)

    def mode(model, data, *args, **kwargs):
        seen["thresholds scored"] = rows(data)
        return real_mode(model, data, *args, **kwargs)

    monkeypatch.setattr(protocol, "evaluate_clean", clean)
    monkeypatch.setattr(protocol, "calibrate_thresholds", calibrate)
    monkeypatch.setattr(protocol, "evaluate_mode", mode)
    evaluation = evaluate_run(carved_run, "cpu")["evaluation.json"]

    manifest = read_json(carved_run / "splits.json")
    assert manifest["test"]["source"] == "carved out of the training split"
    assert len(seen["scored"]) == manifest["test"]["n"] == round(0.2 * 1438)
    assert seen["thresholds scored"] == seen["scored"]
    for fitted in ("temperature fitted", "thresholds fitted"):
        assert seen[fitted] and not seen[fitted] & seen["scored"], fitted
    assert evaluation["splits"] == manifest
    assert "temperature" in evaluation["clean"]["hard"]["calibration"]
    final = read_json(carved_run / "final.json")
    assert final["split"] == "test" and "carved out" in final["note"]


def test_robustness_decodes_once_and_matches_the_decode_per_level_path(carved_run,
                                                                      monkeypatch):
    monkeypatch.setattr(splits, "split_available", lambda *a, **k: False)
    opened = []
    real_resolve = registry._resolve

    def counting(*args, **kwargs):
        r = real_resolve(*args, **kwargs)
        source = r.source

        def open_():
            opened.append(args[1])
            return source.open()

        return registry._Resolved(r.spec, type(source)(source.sensor_size, source.fingerprint,
                                                       open_, source.t_window), r.params)

    monkeypatch.setattr(registry, "_resolve", counting)
    written = evaluate_run(carved_run, "cpu", robustness=True, levels=(0.0, 0.5, 0.8),
                           corruption_seeds=(0, 1))
    assert opened == ["train"]  # the events were decoded once, for 5 corrupted evaluations

    # the curve equals the old path: corrupt the whole split, bin, then take the test rows
    cfg = RunConfig.from_dict(read_json(carved_run / "config.json"))
    plan = splits.prepare_data(cfg).plan
    decoded = registry.load_events(cfg.dataset, "train").subset(plan.test.rows)
    for seed in (0, 1):
        old = load_frames(cfg.dataset, "train", cfg.time_bins, corruption=EventDrop(0.5),
                          corruption_seed=seed).subset(plan.test.rows)
        new = decoded.frames(cfg.time_bins, corruption=EventDrop(0.5), corruption_seed=seed)
        assert torch.equal(old.batch(slice(None))[0], new.batch(slice(None))[0])
    curve = written["robustness.json"]
    assert curve["split"] == "test" and len(curve["hard"]["raw"]) == 3


def fake_run(rho, val_hard, test_hard, seed=0):
    final = {"seed": seed, "config": {"method": "sast", "rho": rho, "epochs": 1},
             "hard": {"accuracy": test_hard}, "surrogate": {"accuracy": test_hard},
             "validation": {"hard": {"accuracy": val_hard}}}
    return Run(Path(f"r{rho}-{seed}"), final)


def test_best_rho_is_selected_on_validation_not_test():
    low = Group("sast ρ=0.1", {"method": "sast", "rho": 0.1},
                [fake_run(0.1, 0.90, 0.70), fake_run(0.1, 0.80, 0.72, seed=1)])
    high = Group("sast ρ=0.3", {"method": "sast", "rho": 0.3},
                 [fake_run(0.3, 0.70, 0.95), fake_run(0.3, 0.70, 0.93, seed=1)])
    assert select_best_rho([low, high]) is low  # test accuracy would pick ρ = 0.3
    tie = Group("sast ρ=0.2", {"method": "sast", "rho": 0.2},
                [fake_run(0.2, 0.90, 0.99), fake_run(0.2, 0.80, 0.99, seed=1)])
    assert select_best_rho([high, tie, low]) is low  # equal validation means: the smaller ρ
    assert select_best_rho([Group("x", {"method": "sast", "rho": 0.1},
                                  [Run(Path("r"), {"hard": {"accuracy": 1.0}})])]) is None
