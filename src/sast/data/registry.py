"""The datasets ``sast`` can read, and their frames, built once and then read from the cache.

Each dataset describes a split as an :class:`EventSource`: how many samples, the sensor size
after any downsampling, a fingerprint of its source (for the cache key), and a generator of
consecutive :class:`~sast.data.events.EventSet` chunks, so that no dataset has to be decoded
into memory whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sast.data.cache import FrameCache
from sast.data.events import EventSet, eventset_to_frames
from sast.data.frames import FrameSet
from sast.data.synthetic import SYNTHETIC_NMNIST_VERSION, synthetic_nmnist

SYNTHETIC_DATA_SEED = 0
"""Seed of the built-in synthetic datasets: fixed, so runs with different seeds share data."""


@dataclass(frozen=True)
class EventSource:
    """One split of a dataset, ready to be binned chunk by chunk."""

    n_samples: int
    sensor_size: tuple[int, int, int]
    fingerprint: dict[str, Any]
    chunks: Callable[[], Iterator[EventSet]]
    t_window: tuple[int, int] | None = None
    """Fixed binning window in µs for every sample; None: each sample's own [t_first, t_last]."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    sensor_size: tuple[int, int, int]
    n_classes: int
    needs: str
    description: str
    source: Callable[..., EventSource]
    needs_root: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    """Dataset-specific preprocessing options and their defaults."""


def _in_chunks(events: EventSet, size: int = 4096) -> Callable[[], Iterator[EventSet]]:
    def chunks() -> Iterator[EventSet]:
        for start in range(0, len(events), size):
            yield events.subset(np.arange(start, min(start + size, len(events))))
    return chunks


def _synthetic_nmnist_source(split: str, data_root: Path | None) -> EventSource:
    events = synthetic_nmnist(split, seed=SYNTHETIC_DATA_SEED)
    fingerprint = {"version": SYNTHETIC_NMNIST_VERSION, "seed": SYNTHETIC_DATA_SEED}
    return EventSource(len(events), events.sensor_size, fingerprint, _in_chunks(events))


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "synthetic-nmnist", (34, 34, 2), 10, "nothing (built in, generated once and cached)",
            "scikit-learn's 1797 handwritten 8×8 digits shown to a simulated event camera making "
            "N-MNIST's three saccades on a 34×34 sensor (about 300 ms, ON/OFF events)",
            _synthetic_nmnist_source,
        ),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


def resolve_options(spec: DatasetSpec, options: dict[str, Any]) -> dict[str, Any]:
    """The dataset's option defaults updated with the given (non-None) options; an option the
    dataset does not have is an error."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        allowed = ", ".join(sorted(spec.options)) or "none"
        raise ValueError(f"dataset {spec.name} has no option {', '.join(unknown)} "
                         f"(its options: {allowed})")
    return {**spec.options, **given}


def load_frames(
    name: str, split: str, time_bins: int, binning: str = "time",
    data_root: str | Path | None = None, cache_dir: str | Path | None = None,
    progress: bool = False, **options: Any,
) -> FrameSet:
    """The samples of ``split`` (``"train"`` or ``"test"``) binned into ``time_bins`` frames
    each, read from the frame cache or built into it first."""
    spec = get_dataset(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if spec.needs_root and data_root is None:
        raise ValueError(f"dataset {name} is read from disk: give --data-root DIR ({spec.needs})")
    if data_root is not None and not spec.needs_root:
        raise ValueError(f"dataset {name} is built in and takes no data root")
    opts = resolve_options(spec, options)
    root = None if data_root is None else Path(data_root).resolve()
    source = spec.source(split, root, **opts)
    params = {
        "dataset": name, "split": split, "time_bins": time_bins, "binning": binning,
        "options": opts, "root": None if root is None else str(root),
        "source": source.fingerprint, "t_window": source.t_window,
    }
    w, h, p = source.sensor_size
    shape = (source.n_samples, time_bins, p, h, w)

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from tqdm.auto import tqdm

        with tqdm(total=source.n_samples, desc=f"binning {name}/{split}", unit="sample",
                  disable=not progress, leave=False) as bar:
            for chunk in source.chunks():
                window = source.t_window if binning == "time" else None
                frames = eventset_to_frames(chunk, time_bins, mode=binning, t_window=window,
                                            dtype=np.uint8)
                bar.update(len(chunk))
                yield frames, chunk.labels

    frames, labels, _ = FrameCache(cache_dir).get_or_build(params, lambda: shape, chunks)
    return FrameSet(torch.from_numpy(frames), torch.from_numpy(labels), spec.n_classes)
