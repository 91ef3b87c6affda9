"""The synthetic N-MNIST stand-in against the statistics of real N-MNIST recordings."""

import csv

import numpy as np
import pytest

from sast.data.synthetic import synthetic_nmnist

from ..conftest import SHARED_DATA

MANIFEST = SHARED_DATA / "nmnist" / "manifest.csv"


@pytest.fixture(scope="module")
def real():
    if not MANIFEST.exists():
        pytest.skip(f"real N-MNIST samples not found at {MANIFEST}")
    with MANIFEST.open() as fh:
        rows = list(csv.DictReader(fh))
    return {
        "events": np.array([int(r["n_events"]) for r in rows]),
        "duration_ms": np.array([(int(r["t_last_us"]) - int(r["t_first_us"])) / 1e3
                                 for r in rows]),
        "on": np.array([float(r["on_fraction"]) for r in rows]),
    }


def test_synthetic_statistics_match_real_nmnist(real):
    data = synthetic_nmnist("train")
    events = data.lengths
    duration_ms = np.array([(e["t"].max() - e["t"].min()) / 1e3 for e, _ in data])
    on = np.array([e["p"].mean() for e, _ in data])
    assert abs(np.median(events) / np.median(real["events"]) - 1) < 0.15
    assert abs(np.median(duration_ms) / np.median(real["duration_ms"]) - 1) < 0.1
    assert abs(on.mean() - real["on"].mean()) < 0.03
    assert events.min() >= 0.5 * real["events"].min() and events.max() <= real["events"].max()
