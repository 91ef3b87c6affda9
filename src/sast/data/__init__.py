"""Event datasets: what is available, and event samples turned into frame tensors.

Data flows one way: events (:class:`~sast.data.events.EventSet`) → binned frames, cached on
disk (:class:`~sast.data.frames.FrameSet`, uint8 counts ``[N, T, P, H, W]``) → model.

Floor 4: readers (N-MNIST, DVS128 Gesture), the synthetic sets, corruptions, binning,
the frame cache and subsets. May import :mod:`sast.infra` only: nothing here knows of
networks or training.
"""

from sast.data.frames import FrameSet, time_first
from sast.data.registry import (
    DATASETS,
    DatasetSpec,
    get_dataset,
    load_frames,
    split_available,
)

__all__ = ["DATASETS", "DatasetSpec", "FrameSet", "get_dataset", "load_frames", "split_available",
           "time_first"]
