"""Event datasets: what is available, and event samples turned into frame tensors.

Data flows one way: events (:class:`~sast.data.events.EventSet`) → binned frames
(:class:`FrameSet`, ``uint8`` counts ``[N, T, P, H, W]``) → model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sast.data.events import EventSet, eventset_to_frames
from sast.data.synthetic import synthetic_nmnist

SYNTHETIC_DATA_SEED = 0
"""Seed of the built-in synthetic datasets: fixed, so runs with different seeds share data."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    sensor_size: tuple[int, int, int]
    n_classes: int
    needs: str
    description: str
    load: Callable[[str, Path | None], EventSet]


def _load_synthetic_nmnist(split: str, data_root: Path | None) -> EventSet:
    return synthetic_nmnist(split, seed=SYNTHETIC_DATA_SEED)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "synthetic-nmnist", (34, 34, 2), 10, "nothing (built in, generated once and cached)",
            "scikit-learn's 1797 handwritten 8×8 digits shown to a simulated event camera making "
            "N-MNIST's three saccades on a 34×34 sensor (about 300 ms, ON/OFF events)",
            _load_synthetic_nmnist,
        ),
    )
}


@dataclass
class FrameSet:
    """Binned event frames: ``frames`` uint8 ``[N, T, P, H, W]`` and ``labels`` int64 ``[N]``."""

    frames: torch.Tensor
    labels: torch.Tensor
    n_classes: int

    def __post_init__(self) -> None:
        if self.frames.dim() != 5 or self.frames.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"FrameSet needs frames [N, T, P, H, W] and labels [N], got "
                f"{tuple(self.frames.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return f"FrameSet(n={len(self)}, frames={tuple(self.frames.shape)}, " \
            f"n_classes={self.n_classes})"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.frames.shape[2:])  # type: ignore[return-value]

    def subset(self, indices: np.ndarray | torch.Tensor) -> FrameSet:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return FrameSet(self.frames[idx], self.labels[idx], self.n_classes)


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


def load_events(name: str, split: str, data_root: str | Path | None = None) -> EventSet:
    """The event samples of ``split`` (``"train"`` or ``"test"``) of dataset ``name``."""
    spec = get_dataset(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return spec.load(split, None if data_root is None else Path(data_root))


def load_frames(
    name: str, split: str, time_bins: int, binning: str = "time",
    data_root: str | Path | None = None,
) -> FrameSet:
    """Events of ``split`` binned into ``time_bins`` frames per sample (see
    :func:`~sast.data.events.to_frames`)."""
    events = load_events(name, split, data_root)
    frames = eventset_to_frames(events, time_bins, mode=binning, dtype=np.uint8)
    return FrameSet(
        torch.from_numpy(frames), torch.from_numpy(events.labels.astype(np.int64)),
        get_dataset(name).n_classes,
    )


def time_first(frames: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Batch-first count frames ``[B, T, ...]`` → float32, time-first ``[T, B, ...]`` on
    ``device`` (the transfer moves the compact uint8 tensor)."""
    if frames.dim() < 3:
        raise ValueError(f"expected batch-first frames [B, T, ...], got {tuple(frames.shape)}")
    x = frames.to(device, non_blocking=True).transpose(0, 1)
    return x.to(torch.float32, memory_format=torch.contiguous_format)
