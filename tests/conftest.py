import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("SAST_TEST_DATA")
                   or Path(__file__).resolve().parents[2] / "shared" / "data")
"""Real recordings for the tests that need them: ``$SAST_TEST_DATA``, else ``../shared/data``
beside the repository (``nmnist/Train/<digit>/*.bin``, ``dvsgesture/...``). Tests that need
them skip, saying so, where the folder is absent."""


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Keep the synthetic-data cache of a test session out of the user's cache folder."""
    old = os.environ.get("SAST_CACHE_DIR")
    os.environ["SAST_CACHE_DIR"] = str(tmp_path_factory.mktemp("sast-cache"))
    yield
    if old is None:
        os.environ.pop("SAST_CACHE_DIR", None)
    else:
        os.environ["SAST_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _denormals_back_on():
    """``sast`` commands and ``fit`` flush denormals process-wide (:mod:`sast.infra.runtime`); give
    every test the IEEE default back, which hypothesis checks for."""
    yield
    torch.set_flush_denormal(False)
