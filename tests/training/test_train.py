import json

import pytest
import torch

from sast.config import RunConfig
from sast.runs.folder import RunFolder, read_json
from sast.runs.load import load_run
from sast.runs.splits import prepare_data
from sast.training.loop import fit
from sast.training.steps import TrainingDiverged

SMALL = dict(max_train_samples=96, hidden=(16,), time_bins=6, batch_size=32, epochs=2,
             eval_batch_size=512)


def small(**changes):
    return RunConfig(**{**SMALL, **changes})


def quiet(*_):
    pass


def _strip_times(rows):
    drop = ("epoch_time_s", "step_time_s_median", "peak_memory_mb")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


@pytest.mark.parametrize("method", ["surrogate", "sast", "ste", "ste-sam"])
def test_fit_writes_a_complete_run_folder(tmp_path, method):
    final = fit(small(method=method), tmp_path / "run", progress=False, log=quiet)
    run = tmp_path / "run"
    for name in ("config.json", "env.json", "metrics.jsonl", "checkpoint.pt", "final.json"):
        assert (run / name).exists(), name
    assert read_json(run / "status.json")["status"] == "finished"
    on_disk = read_json(run / "final.json")
    assert on_disk == json.loads(json.dumps(final))
    for mode in ("surrogate", "hard"):
        assert 0.0 <= final[mode]["accuracy"] <= 1.0
    gap = 100 * (final["surrogate"]["accuracy"] - final["hard"]["accuracy"])
    assert final["transfer_gap_pp"] == pytest.approx(gap)
    assert final["method"] == method and final["seed"] == 0
    assert final["rho"] == (0.3 if method in ("sast", "ste-sam") else None)
    assert final["config"]["method"] == method
    passes = 2 if method in ("sast", "ste-sam") else 1
    assert final["timing"]["grad_evals_per_step"] == passes
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"val_surrogate_accuracy", "val_hard_accuracy", "train_loss"} <= set(rows[0])


def test_training_learns_the_synthetic_digits(tmp_path):
    cfg = RunConfig(max_train_samples=600, hidden=(64,), time_bins=10, epochs=3,
                    method="surrogate")
    final = fit(cfg, tmp_path / "run", progress=False, log=quiet)
    assert final["surrogate"]["accuracy"] > 0.6  # chance is 0.1


def _models_equal(a, b):
    a = torch.load(a / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(b / "checkpoint.pt", weights_only=False)["model"]
    return all(torch.equal(a[k], b[k]) for k in a)


def test_extending_a_finished_run_equals_training_longer(tmp_path):
    cfg = small(method="sast", epochs=3, sam_policy="independent")
    fit(cfg, tmp_path / "straight", progress=False, log=quiet)
    fit(cfg.replace(epochs=1), tmp_path / "resumed", progress=False, log=quiet)
    fit(cfg, tmp_path / "resumed", resume=True, progress=False, log=quiet)

    assert _models_equal(tmp_path / "straight", tmp_path / "resumed")
    rows_a = [json.loads(x) for x in (tmp_path / "straight/metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()]
    assert _strip_times(rows_a) == _strip_times(rows_b)
    fa, fb = (read_json(tmp_path / d / "final.json") for d in ("straight", "resumed"))
    assert fa["surrogate"] == fb["surrogate"] and fa["hard"] == fb["hard"]


def test_crash_mid_epoch_then_resume(tmp_path, monkeypatch):
    import sast.training.steps as train

    cfg = small(method="sast", epochs=3, lr_schedule="cosine")
    fit(cfg, tmp_path / "straight", progress=False, log=quiet)

    real_step, calls = train.KIND_STEPS["exact"], {"n": 0}

    def crashing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # inside the second epoch (3 steps per epoch)
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setitem(train.KIND_STEPS, "exact", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "crashed", progress=False, log=quiet)
    status = read_json(tmp_path / "crashed" / "status.json")
    assert status["status"] == "interrupted" and status["epoch"] == 1
    assert "interrupted after epoch 1; continue with `sast train --out" in status["message"]
    assert not (tmp_path / "crashed" / "final.json").exists()
    monkeypatch.setitem(train.KIND_STEPS, "exact", real_step)
    fit(cfg, tmp_path / "crashed", resume=True, progress=False, log=quiet)

    assert _models_equal(tmp_path / "straight", tmp_path / "crashed")
    fa, fb = (read_json(tmp_path / d / "final.json") for d in ("straight", "crashed"))
    assert fa["surrogate"] == fb["surrogate"] and fa["hard"] == fb["hard"]


def test_existing_run_needs_resume_and_same_config(tmp_path):
    cfg = small(epochs=1)
    fit(cfg, tmp_path / "run", progress=False, log=quiet)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(cfg, tmp_path / "run", progress=False, log=quiet)
    with pytest.raises(ValueError, match="rho"):
        fit(cfg.replace(rho=0.1), tmp_path / "run", resume=True, progress=False, log=quiet)
    again = fit(cfg, tmp_path / "run", resume=True, progress=False, log=quiet)
    assert again == read_json(tmp_path / "run" / "final.json")


def test_divergence_stops_with_a_clear_message(tmp_path, monkeypatch):
    import sast.training.steps as train

    real = train.nn.functional.cross_entropy
    monkeypatch.setattr(train.nn.functional, "cross_entropy",
                        lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(TrainingDiverged, match="nan"):
        fit(small(), tmp_path / "run", progress=False, log=quiet)
    status = read_json(tmp_path / "run" / "status.json")
    assert status["status"] == "diverged" and "nan" in status["message"]


def test_load_run_restores_the_trained_model(tmp_path):
    cfg = small(epochs=1)
    final = fit(cfg, tmp_path / "run", progress=False, log=quiet)
    cfg2, model = load_run(tmp_path / "run")
    assert cfg2 == cfg
    from sast.evaluation.accuracy import evaluate_spike_modes

    again = evaluate_spike_modes(model, prepare_data(cfg).test)
    assert again["hard"]["accuracy"] == final["hard"]["accuracy"]
    assert again["surrogate"]["accuracy"] == final["surrogate"]["accuracy"]


def test_splits_are_disjoint_and_fixed():
    cfg = small(max_train_samples=None)
    s1, s2 = prepare_data(cfg), prepare_data(cfg.replace(seed=5))
    assert torch.equal(s1.val.batch(slice(None))[0], s2.val.batch(slice(None))[0])
    assert len(s1.train) + len(s1.val) + len(s1.test) == 1797  # scikit-learn's digits
    assert len(s1.test) == 359 and len(s1.val) == round(0.1 * 1438)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    cfg = small(method="sast", epochs=1)
    fit(cfg, tmp_path / "eager", progress=False, log=quiet)
    fit(cfg.replace(compile=True), tmp_path / "compiled", progress=False, log=quiet)
    a = torch.load(tmp_path / "eager" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "compiled" / "checkpoint.pt", weights_only=False)["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k


@pytest.mark.parametrize("independent", [False, True])
def test_sam_step_descends_with_the_gradient_at_the_perturbed_point(independent):
    from torch import nn

    from sast.optim import SAM
    from sast.training.steps import sam_step

    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    w0 = [p.detach().clone() for p in model.parameters()]
    x1, y1 = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    x2, y2 = torch.randn(5, 4, dtype=torch.float64), torch.tensor([2, 2, 1, 0, 0])
    rho, lr = 0.2, 0.5

    def grads(params, x, y):
        w, b = (p.detach().clone().requires_grad_() for p in params)
        loss = nn.functional.cross_entropy(x @ w.T + b, y)
        return torch.autograd.grad(loss, (w, b))

    g1 = grads(w0, x1, y1)
    norm = torch.sqrt(sum((g * g).sum() for g in g1))
    perturbed = [p + rho * g / norm for p, g in zip(w0, g1, strict=True)]
    g2 = grads(perturbed, *((x2, y2) if independent else (x1, y1)))
    expected = [p - lr * g for p, g in zip(w0, g2, strict=True)]

    sam = SAM(torch.optim.SGD(model.parameters(), lr=lr), rho=rho)
    result = sam_step(model, sam, x1, y1, (x2, y2) if independent else None)
    assert result.grad_evals == 2
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p, e, atol=1e-12)


def test_extending_a_cosine_run_follows_the_longer_schedule(tmp_path):
    cfg = small(method="surrogate", epochs=3, lr_schedule="cosine")
    fit(cfg, tmp_path / "straight", progress=False, log=quiet)
    fit(cfg.replace(epochs=1), tmp_path / "extended", progress=False, log=quiet)
    fit(cfg, tmp_path / "extended", resume=True, progress=False, log=quiet)
    lrs = [[r["lr"] for r in RunFolder(tmp_path / d).read_metrics()]
           for d in ("straight", "extended")]
    assert lrs[0] == pytest.approx([1e-3, 7.5e-4, 2.5e-4]) and lrs[1] == lrs[0]
    assert _models_equal(tmp_path / "straight", tmp_path / "extended")


def test_resuming_with_fewer_epochs_is_refused(tmp_path):
    fit(small(epochs=2), tmp_path / "run", progress=False, log=quiet)
    with pytest.raises(ValueError, match="already trained 2 epochs"):
        fit(small(epochs=1), tmp_path / "run", resume=True, progress=False, log=quiet)


def test_a_nan_gradient_stops_the_run_naming_epoch_and_step_and_resume_with_lower_lr(
        tmp_path, monkeypatch, capsys):
    import sast.training.loop as train_mod
    from sast.cli import main

    real_make_model = train_mod.make_model
    calls = {"n": 0}

    def poisoned(cfg, shape, n_classes):
        model = real_make_model(cfg, shape, n_classes)
        if cfg.lr > 5e-4:  # the first attempt: the 5th backward pass gives a NaN gradient
            def hook(grad):
                calls["n"] += 1
                return grad * float("nan") if calls["n"] == 5 else grad
            next(model.parameters()).register_hook(hook)
        return model

    monkeypatch.setattr(train_mod, "make_model", poisoned)
    out = tmp_path / "run"
    args = ["train", "--method", "surrogate", "--epochs", "3", "--max-train-samples", "96",
            "--hidden", "8", "--time-bins", "4", "--batch-size", "32", "--out", str(out),
            "--no-progress"]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "the gradient of the training loss became nan (its norm) at step 2 of 3 in epoch 2" \
        in err and "--resume --lr 0.0001" in err
    status = read_json(out / "status.json")
    assert status["status"] == "diverged" and status["epoch"] == 1
    assert main([*args, "--resume", "--lr", "0.0001"]) == 0
    metrics = RunFolder(out).read_metrics()
    assert [r["epoch"] for r in metrics] == [1, 2, 3]
    assert metrics[0]["lr"] == 1e-3 and metrics[1]["lr"] == metrics[2]["lr"] == 1e-4


def test_a_run_that_failed_before_its_first_epoch_does_not_block_its_folder(tmp_path, capsys):
    from sast.cli import main

    out = tmp_path / "run"
    bad = ["train", "--dataset", "nmnist", "--data-root", str(tmp_path / "typo"), "--out",
           str(out), "--no-progress"]
    assert main(bad) == 2  # the mistyped data root
    assert (out / "config.json").exists() and not RunFolder(out).holds_run()
    assert main(["train", "--method", "surrogate", "--epochs", "1", "--max-train-samples", "32",
                 "--hidden", "8", "--time-bins", "4", "--out", str(out), "--no-progress"]) == 0
    assert "stopped before finishing an epoch; starting afresh" in capsys.readouterr().out
    assert main(["train", "--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "nothing holds no run to resume (no config.json)" in capsys.readouterr().err


def test_ctrl_c_prints_one_line_and_records_an_interrupted_run(tmp_path, monkeypatch, capsys):
    import sast.training.steps as train
    from sast.cli import main

    real, calls = train.KIND_STEPS["plain"], {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setitem(train.KIND_STEPS, "plain", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--method", "surrogate", "--epochs", "3", "--max-train-samples", "96",
                 "--hidden", "8", "--time-bins", "4", "--batch-size", "32", "--out", str(out),
                 "--no-progress"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sast train: interrupted after epoch 1; continue with `sast train --out "
                   f"{out} --resume`"]
    assert read_json(out / "status.json")["status"] == "interrupted"


def test_a_run_begun_with_step_by_step_convolutions_resumes_under_the_default(tmp_path):
    from sast.study.sweep import config_hash

    cfg = small(arch="nmnist-conv", channels=(4, 8), hidden=(), epochs=1, conv_schedule="step")
    # the schedule changes no result beyond rounding: one folder name for both
    assert config_hash(cfg) == config_hash(cfg.replace(conv_schedule="all"))
    from sast.study.report.runs import Run, group_runs

    both = [Run(tmp_path / name, {"config": c.to_dict(), "seed": 0})
            for name, c in (("a", cfg), ("b", cfg.replace(conv_schedule="all")))]
    assert len(group_runs(both)) == 1
    fit(cfg, tmp_path / "run", progress=False, log=quiet)
    final = fit(cfg.replace(epochs=2, conv_schedule="all"), tmp_path / "run", resume=True,
                progress=False, log=quiet)
    assert final["config"]["conv_schedule"] == "all" and final["epochs"] == 2
