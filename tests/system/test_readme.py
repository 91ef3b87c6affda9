import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert blocks, "README has no Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert (tmp_path / "runs" / "api-example" / "final.json").exists()
    lines = capsys.readouterr().out.splitlines()
    api = next(line for line in lines if len(line.split()) == 3).split()
    assert 0.0 <= float(api[0]) <= 1.0
    converted = next(line for line in lines if line.startswith("hard ")).split()
    assert 0.0 <= float(converted[1]) <= 1.0 and converted[2] == "gap"
    assert (tmp_path / "mlp.nir").stat().st_size > 0


def test_readme_starts_with_install_and_test_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "sast reproduce nmnist --quick" in commands[0]
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = commands[1].split("&& ", 2)[2]  # after creating and activating the venv
    assert ci.rstrip().endswith(test_command)
