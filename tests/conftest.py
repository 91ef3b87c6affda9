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


def assert_figure(path: Path, min_pixels: int = 300) -> None:
    """``path`` is a PNG at least ``min_pixels`` on each side whose pixels are not all one
    colour, and of which at least 1 % differ from the background (the corner pixel)."""
    import numpy as np
    from matplotlib import image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pixels = image.imread(path)[..., :3]
    height, width = pixels.shape[:2]
    assert min(height, width) >= min_pixels, f"{path} is {width}×{height} px"
    drawn = np.abs(pixels - pixels[0, 0]).max(axis=-1) > 0.05
    assert drawn.mean() > 0.01, f"{path} is blank ({drawn.mean():.2%} of pixels drawn)"
