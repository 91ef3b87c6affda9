"""Named spiking architectures, built from a few hyperparameters.

Every model maps time-first event frames ``[T, B, P, H, W]`` to logits ``[B, n_classes]``.
These architectures, and all their defaults, are choices of this package (the paper's
architectures are not published with its abstract).

- ``nmnist-mlp``: flatten → (Linear → LIF) per hidden width → readout. Default hidden (256,).
- ``nmnist-conv``: (Conv3×3 → LIF → AvgPool2) per channel width → flatten → (Linear → LIF) per
  hidden width → readout. Default channels (16, 32), no hidden Linear layer.
- ``dvsgesture-conv``: the same shape for 2×32×32 DVS Gesture frames and 11 classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sast.layers import LIF, LeakyReadout, PerFrame, SpikeCountReadout


@dataclass(frozen=True)
class Architecture:
    name: str
    kind: str
    input_shape: tuple[int, int, int]
    n_classes: int
    hidden: tuple[int, ...]
    channels: tuple[int, ...] = field(default=())
    description: str = ""


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "nmnist-mlp", "mlp", (2, 34, 34), 10, (256,), (),
            "2×34×34 → 256 LIF → 10 leaky readout",
        ),
        Architecture(
            "nmnist-conv", "conv", (2, 34, 34), 10, (), (16, 32),
            "2×34×34 → conv16-LIF-pool → conv32-LIF-pool → 10 leaky readout",
        ),
        Architecture(
            "dvsgesture-conv", "conv", (2, 32, 32), 11, (), (16, 32),
            "2×32×32 → conv16-LIF-pool → conv32-LIF-pool → 11 leaky readout",
        ),
    )
}

READOUTS = ("leaky", "count")
CONV_SCHEDULES = ("step", "all")


class SpikingNet(nn.Sequential):
    """A sequence of time-first layers; ``forward(frames[T, B, ...]) → logits[B, C]``."""

    def forward(self, frames):  # noqa: ANN001, ANN201
        if frames.dim() < 3:
            raise ValueError(
                "SpikingNet expects time-first frames [T, B, ...], got shape "
                f"{tuple(frames.shape)}"
            )
        return super().forward(frames.float() if not frames.is_floating_point() else frames)


def build_model(
    arch: str = "nmnist-mlp",
    input_shape: tuple[int, ...] | None = None,
    n_classes: int | None = None,
    *,
    hidden: tuple[int, ...] | None = None,
    channels: tuple[int, ...] | None = None,
    beta: float = 0.9,
    threshold: float = 1.0,
    surrogate: str = "sigmoid",
    slope: float = 5.0,
    spike_mode: str = "surrogate",
    readout: str = "leaky",
    readout_beta: float = 0.9,
    conv_schedule: str = "step",
    channels_last: bool = True,
    scan_implementation: str = "fused",
) -> SpikingNet:
    """Build the named architecture. ``input_shape`` (P, H, W) and ``n_classes`` default to the
    architecture's own; ``hidden`` and ``channels`` override its widths."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; expected one of {READOUTS}")
    if conv_schedule not in CONV_SCHEDULES:
        raise ValueError(
            f"unknown conv_schedule {conv_schedule!r}; expected one of {CONV_SCHEDULES}"
        )
    spec = ARCHITECTURES[arch]
    input_shape = tuple(input_shape or spec.input_shape)
    n_classes = n_classes or spec.n_classes
    hidden = tuple(spec.hidden if hidden is None else hidden)
    channels = tuple(spec.channels if channels is None else channels)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (P, H, W), got {input_shape}")
    lif = dict(
        beta=beta, threshold=threshold, surrogate=surrogate, slope=slope,
        spike_mode=spike_mode, implementation=scan_implementation,
    )

    layers: list[nn.Module] = []
    if spec.kind == "conv":
        step = conv_schedule == "step"
        c_in, h, w = input_shape
        pre: list[nn.Module] = []
        for c_out in channels:
            conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
            layers += [PerFrame(nn.Sequential(*pre, conv), step, channels_last), LIF(**lif)]
            pre = [nn.AvgPool2d(2)]
            c_in, h, w = c_out, h // 2, w // 2
        features = c_in * h * w
        flatten = nn.Sequential(*pre, nn.Flatten())
        layers.append(PerFrame(flatten, step, channels_last))
    else:
        features = input_shape[0] * input_shape[1] * input_shape[2]
        layers.append(PerFrame(nn.Flatten()))
    for width in hidden:
        layers += [PerFrame(nn.Linear(features, width)), LIF(**lif)]
        features = width
    if readout == "leaky":
        layers.append(LeakyReadout(features, n_classes, readout_beta))
    else:
        layers.append(SpikeCountReadout(features, n_classes, **lif))
    model = SpikingNet(*layers)
    if spec.kind == "conv" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
