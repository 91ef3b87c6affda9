"""benchmarks/bench_peers.py: the weight copy and the hard-spike cross-check against the peer
libraries, and the ``--json`` rows of a tiny quick run (nothing here is timed)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_peers.py"
pytestmark = pytest.mark.filterwarnings(  # Norse scripts its functions at import
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _load():
    spec = importlib.util.spec_from_file_location("bench_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


bench = _load()


def _needs(module: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed (optional benchmark peer: pip install --no-deps "
               f"{module}; see the bench extra in pyproject.toml)",
    )


@pytest.mark.parametrize("net", ["A", "B"])
def test_peer_nets_get_sast_weights_and_readout(net):
    spec = bench.TINY_NETS[net]
    sast_model = spec.build_sast()
    peer = bench.peer_net(sast_model, "leaked-reset")
    ours = [p for name, p in sast_model.named_parameters()]
    theirs = [p for name, p in peer.named_parameters()]
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and torch.equal(a, b) and a.data_ptr() != b.data_ptr()


@_needs("snntorch")
@pytest.mark.parametrize("net", ["A", "B"])
def test_snntorch_hard_spike_logits_equal_sast(net):
    spec = bench.TINY_NETS[net]
    assert min(bench.spike_rates(spec)) > 0.05  # the check compares real spike trains
    (row,) = bench.cross_check(spec, ("snntorch",))
    assert row.exact and row.max_diff <= 1e-5 and row.max_logit > 0.1


@pytest.mark.parametrize("peer", [pytest.param("norse", marks=_needs("norse")),
                                  pytest.param("spikingjelly", marks=_needs("spikingjelly"))])
@pytest.mark.parametrize("net", ["A", "B"])
def test_norse_and_spikingjelly_differ_only_by_their_leaked_reset(peer, net):
    rows = {r.variant: r for r in bench.cross_check(bench.TINY_NETS[net], (peer,))}
    assert rows["reset=zero"].exact and rows["reset=zero"].max_diff <= 1e-5
    soft = rows["reset=subtract"]
    assert not soft.exact and soft.max_diff > 1e-3  # the leaked reset is visible...
    assert soft.explained_diff <= 1e-5  # ...and is all there is to it


def test_a_missing_peer_is_skipped_not_a_crash(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec",
                        lambda name, *a: None if name == "norse" else real(name, *a))
    assert not bench.installed("norse") and bench.installed("sast")
    assert [r.impl for r in bench.cross_check(bench.TINY_NETS["A"], ("norse",))] == []


def test_process_settings_are_applied_and_recorded():
    threads = torch.get_num_threads()
    try:
        settings = bench.apply_process_settings(1, flush_denormal=True, mallopt=True)
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    assert settings["threads"] == 1
    if sys.platform == "linux":
        assert settings["mallopt"]["M_TRIM_THRESHOLD"] == 2**31 - 1


def test_quick_run_writes_json_rows(tmp_path):
    out = tmp_path / "rows.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--tiny", "--skip-check", "--nets", "A",
         "--impls", "sast-sam", "--modes", "train,infer", "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    # one worker, a fresh process: sast-sam has a train row only
    assert [(r["net"], r["impl"], r["mode"]) for r in rows] == [("A", "sast-sam", "train")]
    for r in rows:
        assert set(r) == {"net", "impl", "mode", "median_ms"}
        assert isinstance(r["median_ms"], float) and r["median_ms"] > 0
    assert "| sast-sam |" in done.stdout and "process settings" in done.stdout
