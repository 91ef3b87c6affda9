"""Nothing downloads at run time: the main paths run with network access made impossible."""

import socket

import pytest

from sast.config import RunConfig
from sast.protocol.evaluate import evaluate_run
from sast.study.report import write_report
from sast.training.loop import fit


class NetworkAccess(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise NetworkAccess(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    with pytest.raises(NetworkAccess):  # the guard itself works
        socket.create_connection(("pypi.org", 443))


def test_train_evaluate_and_report_without_a_network(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("SAST_CACHE_DIR", str(tmp_path / "cache"))  # generate, do not reuse
    cfg = RunConfig(method="sast", rho=0.1, epochs=1, max_train_samples=48, hidden=(8,),
                    time_bins=4, cache_dir=str(tmp_path / "cache"))
    fit(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    evaluate_run(tmp_path / "run", "cpu", robustness=True, levels=(0.0, 0.5),
                 corruption_seeds=(0,), attribution=True)
    assert write_report([tmp_path / "run"], tmp_path / "report").exists()
