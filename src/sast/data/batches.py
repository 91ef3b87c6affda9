"""A user's batches — a ``DataLoader``, tonic's ``PadTensors`` output, a list of tensors — as
one in-memory :class:`~sast.data.FrameSet`.

Training reads its data in an order fixed by (seed, epoch), so that a run is reproduced and
resumed exactly; a loader's own order cannot be. :func:`frames_from_batches` therefore reads
the batches once and keeps the samples: frames that are whole numbers in 0…255 (event counts,
as tonic's ``ToFrame`` gives them) are kept as uint8, others as float32. Batches whose number
of steps differs (tonic's ``ToFrame(time_window=…)``) are padded at the end with empty steps
to the longest, as ``PadTensors`` pads within a batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sast.data.frames import FrameSet

Batches = FrameSet | tuple[Any, Any] | Iterable[Any]


def _tensor(value: Any, what: str) -> Tensor:
    try:
        return torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what}: expected a tensor or array, got {type(value).__name__}"
                        ) from err


def _batch_first(frames: Tensor, labels: Tensor, batch_first: bool, what: str) -> Tensor:
    """``frames`` as ``[B, T, ...]``, checked against ``labels`` ``[B]``."""
    if frames.dim() < 3:
        raise ValueError(f"{what}: frames must have at least 3 dimensions ([T, B, ...] or, with "
                         f"batch_first=True, [B, T, ...]), got {tuple(frames.shape)}")
    if labels.dim() != 1:
        raise ValueError(f"{what}: labels must be one class index per sample [B], got shape "
                         f"{tuple(labels.shape)}")
    b = len(labels)
    axis = 0 if batch_first else 1
    if frames.shape[axis] != b:
        hint = ""
        if frames.shape[1 - axis] == b:
            hint = (" — the batch is on the other axis: pass batch_first="
                    f"{not batch_first}" + (" (tonic's PadTensors is batch-first)"
                                            if not batch_first else ""))
        layout = "[B, T, ...]" if batch_first else "[T, B, ...]"
        raise ValueError(f"{what}: frames {tuple(frames.shape)} read as {layout} hold "
                         f"{frames.shape[axis]} samples, labels {b}{hint}")
    return frames if batch_first else frames.transpose(0, 1)


def _compact(frames: Tensor) -> Tensor:
    """uint8 when every value is a whole number in 0…255, else float32."""
    if frames.dtype == torch.uint8:
        return frames
    if not (frames.is_floating_point() or frames.dtype in (torch.int16, torch.int32,
                                                           torch.int64, torch.int8, torch.bool)):
        raise ValueError(f"frames must be numbers, got dtype {frames.dtype}")
    whole = frames.dtype == torch.bool or not frames.is_floating_point() or bool(
        (frames == frames.round()).all())
    if whole and (frames.numel() == 0 or (frames.min() >= 0 and frames.max() <= 255)):
        return frames.to(torch.uint8)
    return frames.to(torch.float32)


def _pad_steps(frames: list[Tensor]) -> list[Tensor]:
    steps = max(f.shape[1] for f in frames)
    return [f if f.shape[1] == steps else torch.cat(
        [f, f.new_zeros((f.shape[0], steps - f.shape[1], *f.shape[2:]))], 1) for f in frames]


def frames_from_batches(data: Batches, *, batch_first: bool = False, what: str = "data",
                        n_classes: int | None = None) -> FrameSet:
    """The samples of ``data`` as one :class:`FrameSet` (see the module docstring).

    ``data`` is a FrameSet (returned as it is), one ``(frames, labels)`` pair, or an iterable of
    such pairs (a ``DataLoader``; a pair may carry more items after the labels, which are
    ignored). Frames are time-first ``[T, B, ...]`` or, with ``batch_first=True``,
    ``[B, T, ...]``; labels are class indices ``[B]``. ``n_classes`` defaults to the largest
    label + 1. ``what`` names ``data`` in errors."""
    if isinstance(data, FrameSet):
        return data
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(
            data[0], Tensor | np.ndarray) and isinstance(data[1], Tensor | np.ndarray) and len(
            np.shape(data[1])) == 1:
        data = [data]
    try:
        batches = iter(data)
    except TypeError:
        raise TypeError(f"{what}: expected a FrameSet, a (frames, labels) pair or an iterable "
                        f"of (frames, labels) batches, got {type(data).__name__}") from None
    frames, labels = [], []
    for i, batch in enumerate(batches):
        where = f"{what}, batch {i}"
        if not isinstance(batch, tuple | list) or len(batch) < 2:
            raise ValueError(f"{where}: expected a (frames, labels) pair, got "
                             f"{type(batch).__name__}")
        y = _tensor(batch[1], f"{where} labels")
        if y.is_floating_point() or y.is_complex():
            raise ValueError(f"{where}: labels must be integer class indices, got {y.dtype}")
        x = _batch_first(_tensor(batch[0], f"{where} frames"), y, batch_first, where)
        if frames and x.shape[2:] != frames[0].shape[2:]:
            raise ValueError(f"{where}: frames of per-step shape {tuple(x.shape[2:])}, the "
                             f"first batch's are {tuple(frames[0].shape[2:])}")
        frames.append(_compact(x.detach().cpu()))
        labels.append(y.detach().cpu().long())
    if not frames:
        raise ValueError(f"{what}: holds no batch")
    if len({f.dtype for f in frames}) > 1:
        frames = [f.to(torch.float32) for f in frames]
    all_labels = torch.cat(labels)
    if all_labels.numel() and int(all_labels.min()) < 0:
        raise ValueError(f"{what}: labels must be class indices >= 0, got {int(all_labels.min())}")
    classes = int(all_labels.max()) + 1 if n_classes is None else n_classes
    if int(all_labels.max()) >= classes:
        raise ValueError(f"{what}: label {int(all_labels.max())} is not below n_classes "
                         f"{classes}")
    return FrameSet(torch.cat(_pad_steps(frames)), all_labels, classes)
