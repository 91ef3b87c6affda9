import dataclasses
import subprocess
import sys

import pytest

from sast.cli import main
from sast.config import RunConfig
from sast.runs.folder import read_json

SMALL = ["--max-train-samples", "96", "--hidden", "16", "--time-bins", "6",
         "--batch-size", "32", "--no-progress"]


def test_datasets_lists_the_builtin_data(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "synthetic-nmnist" in out and "needs: nothing" in out


@pytest.mark.parametrize("command", ["train", "evaluate", "report", "datasets"])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    if command == "train":
        for field in dataclasses.fields(RunConfig):
            assert "--" + field.name.replace("_", "-") in out
        assert "--resume" in out and "--config" in out


def test_train_evaluate_and_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--method", "sast", "--rho", "0.1", "--epochs", "1", "--seed", "3",
                 "--out", str(run), *SMALL]) == 0
    out = capsys.readouterr().out
    assert "transfer gap" in out and "hard" in out
    final = read_json(run / "final.json")
    assert final["rho"] == 0.1 and final["seed"] == 3 and final["epochs"] == 1

    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    final = read_json(run / "final.json")
    assert final["epochs"] == 2 and final["rho"] == 0.1 and final["seed"] == 3

    assert main(["evaluate", str(run), "--device", "cpu", "--no-progress"]) == 0
    evaluation = read_json(run / "evaluation.json")
    for mode in ("surrogate", "hard"):
        assert evaluation["clean"][mode]["accuracy"] == final[mode]["accuracy"]
    assert evaluation["config"] == final["config"]


def test_config_file_with_command_line_override(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("method: surrogate\nepochs: 3\nhidden: [16]\nslope: 2.5\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "1", "--out", str(run),
                 *SMALL]) == 0
    saved = read_json(run / "config.json")
    assert saved["method"] == "surrogate" and saved["epochs"] == 1 and saved["slope"] == 2.5


def test_bad_input_gets_a_clear_error(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("methd: sast\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "cfg.yaml" in err and "'methd'" in err and "did you mean 'method'" in err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--method", "adam"])


@pytest.mark.slow
def test_console_script_end_to_end(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "sast.cli", "train", "--method", "sast", "--epochs", "2",
           "--out", str(run), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    final = read_json(run / "final.json")
    assert final["surrogate"]["accuracy"] > 0.5 and final["hard"]["accuracy"] > 0.5
