"""Binned event frames in memory or memory-mapped, and their conversion to model input."""

from __future__ import annotations

import numpy as np
import torch

NIBBLE_MAX = 15


def pack_nibbles(counts: np.ndarray) -> np.ndarray:
    """Two counts in [0, 15] per byte along the last axis: byte j = c[2j] | c[2j+1] << 4
    (an odd width is padded with a zero count)."""
    counts = np.asarray(counts, dtype=np.uint8)
    if counts.shape[-1] % 2:
        counts = np.concatenate([counts, np.zeros_like(counts[..., :1])], axis=-1)
    return counts[..., 0::2] | (counts[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor, width: int) -> torch.Tensor:
    """The inverse of :func:`pack_nibbles`: ``[..., ⌈W/2⌉]`` bytes → ``[..., W]`` counts."""
    out = torch.empty((*packed.shape[:-1], 2 * packed.shape[-1]), dtype=torch.uint8)
    out[..., 0::2] = packed & 15
    out[..., 1::2] = packed >> 4
    return out[..., :width]


class FrameSet:
    """Binned event frames: uint8 counts ``[N, T, P, H, W]`` and int64 labels ``[N]``. Frames of
    any other per-step shape ``[N, T, ...]`` and dtype (a user's features, float frames) work
    too: :func:`time_first` makes every batch float32.

    ``frames`` may be memory-mapped from the frame cache; :meth:`subset` only composes index
    arrays, and :meth:`batch` reads just the rows it needs, so a large dataset never has to sit
    in RAM whole.
    """

    def __init__(self, frames: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                 n_classes: int, indices: torch.Tensor | None = None,
                 packed_width: int | None = None) -> None:
        self._frames = torch.as_tensor(frames)
        self._packed_width = packed_width
        self._labels = torch.as_tensor(labels, dtype=torch.long)
        self.n_classes = int(n_classes)
        if self._frames.dim() < 3 or self._frames.shape[0] != self._labels.shape[0]:
            raise ValueError(
                f"FrameSet needs frames [N, T, ...] (N samples of T steps) and labels [N], got "
                f"{tuple(self._frames.shape)} and {tuple(self._labels.shape)}"
            )
        self._indices = indices

    def __len__(self) -> int:
        return int(self._labels.shape[0] if self._indices is None else self._indices.shape[0])

    def __repr__(self) -> str:
        return f"FrameSet(n={len(self)}, frame shape={self.input_shape}, " \
            f"T={self.time_bins}, n_classes={self.n_classes})"

    @property
    def input_shape(self) -> tuple[int, ...]:
        shape = tuple(int(v) for v in self._frames.shape[2:])
        return shape if self._packed_width is None else (*shape[:-1], self._packed_width)

    @property
    def time_bins(self) -> int:
        return int(self._frames.shape[1])

    @property
    def labels(self) -> torch.Tensor:
        return self._labels if self._indices is None else self._labels[self._indices]

    @property
    def rows(self) -> torch.Tensor:
        """Which stored samples this set holds: indices into the frames it was made from (two
        subsets of one FrameSet overlap exactly when their rows do)."""
        n = int(self._labels.shape[0])
        return torch.arange(n) if self._indices is None else self._indices

    def _rows(self, idx: torch.Tensor | slice) -> torch.Tensor | slice:
        if self._indices is None:
            return idx
        return self._indices[idx]

    def batch(self, idx: torch.Tensor | slice | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames uint8 [b, T, P, H, W], labels [b]) of the samples ``idx`` of this set."""
        if isinstance(idx, list):
            idx = torch.as_tensor(idx, dtype=torch.long)
        rows = self._rows(idx)
        frames = self._frames[rows]
        if self._packed_width is not None:
            frames = unpack_nibbles(frames, self._packed_width)
        return frames, self._labels[rows]

    __getitem__ = batch

    def subset(self, indices: np.ndarray | torch.Tensor) -> FrameSet:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return FrameSet(self._frames, self._labels, self.n_classes, self._rows(idx),
                        self._packed_width)


def time_first(frames: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Batch-first count frames ``[B, T, ...]`` → float32, time-first ``[T, B, ...]`` on
    ``device`` (the transfer moves the compact uint8 tensor)."""
    if frames.dim() < 3:
        raise ValueError(f"expected batch-first frames [B, T, ...], got {tuple(frames.shape)}")
    x = frames.to(device, non_blocking=True).transpose(0, 1)
    return x.to(torch.float32, memory_format=torch.contiguous_format)
