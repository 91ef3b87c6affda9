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
NORMS = ("none", "batch")
"""``batch``: batch norm between each synaptic layer and its LIF layer, over all T·B frames of
a batch in training; in evaluation (both spike modes) its running statistics make it a fixed
per-channel affine map, which :func:`fold_batchnorm` folds into the synaptic weights — so the
deployed hard-spike network has nothing the trained surrogate network lacks."""


class SpikingNet(nn.Sequential):
    """A sequence of time-first layers; ``forward(frames[T, B, ...]) → logits[B, C]``.

    ``input_shape`` (the frame shape, e.g. (P, H, W)) and ``time_bins`` (T), when set, are
    checked on every call, so batch-first input ``[B, T, ...]`` is refused instead of being
    read as T samples of B steps."""

    input_shape: tuple[int, ...] | None = None
    time_bins: int | None = None

    def forward(self, frames):  # noqa: ANN001, ANN201
        shape = tuple(frames.shape)
        if frames.dim() < 3:
            raise ValueError(f"SpikingNet expects time-first frames [T, B, ...], got shape {shape}")
        if self.input_shape is not None and shape[2:] != tuple(self.input_shape):
            raise ValueError(f"SpikingNet expects time-first frames [T, B, "
                             f"{', '.join(map(str, self.input_shape))}], got shape {shape}")
        if self.time_bins is not None and shape[0] != self.time_bins:
            hint = (" — batch-first? pass frames.transpose(0, 1)"
                    if shape[1] == self.time_bins else "")
            raise ValueError(f"SpikingNet was built for T = {self.time_bins} time steps first "
                             f"([T, B, ...]), got shape {shape}{hint}")
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
    conv_schedule: str = "all",
    channels_last: bool = True,
    scan_implementation: str = "fused",
    norm: str = "none",
    time_bins: int | None = None,
    reset: str = "subtract",
) -> SpikingNet:
    """Build the named architecture. ``input_shape`` (P, H, W) and ``n_classes`` default to the
    architecture's own; ``hidden`` and ``channels`` override its widths. The model checks the
    frame shape of its input, and with ``time_bins`` also the number of time steps (so
    batch-first input is refused). ``reset`` is every LIF layer's reset (``"subtract"`` or
    ``"zero"``, see :class:`sast.layers.LIF`).

    It is long because its signature names every option of every architecture (20 lines)
    and each is checked here, where the user's call is."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; expected one of {READOUTS}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
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
        spike_mode=spike_mode, implementation=scan_implementation, reset=reset,
    )

    layers: list[nn.Module] = []
    if spec.kind == "conv":
        step = conv_schedule == "step"
        c_in, h, w = input_shape
        pre: list[nn.Module] = []
        for c_out in channels:
            conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
            layers.append(PerFrame(nn.Sequential(*pre, conv), step, channels_last))
            if norm == "batch":
                layers.append(PerFrame(nn.BatchNorm2d(c_out)))
            layers.append(LIF(**lif))
            pre = [nn.AvgPool2d(2)]
            c_in, h, w = c_out, h // 2, w // 2
        features = c_in * h * w
        flatten = nn.Sequential(*pre, nn.Flatten())
        layers.append(PerFrame(flatten, step, channels_last))
    else:
        features = input_shape[0] * input_shape[1] * input_shape[2]
        layers.append(PerFrame(nn.Flatten()))
    for width in hidden:
        layers.append(PerFrame(nn.Linear(features, width)))
        if norm == "batch":
            layers.append(PerFrame(nn.BatchNorm1d(width)))
        layers.append(LIF(**lif))
        features = width
    if readout == "leaky":
        layers.append(LeakyReadout(features, n_classes, readout_beta))
    else:
        layers.append(SpikeCountReadout(features, n_classes, **lif))
    model = SpikingNet(*layers)
    model.input_shape, model.time_bins = input_shape, time_bins
    if spec.kind == "conv" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _last_affine(module: nn.Module) -> nn.Conv2d | nn.Linear | None:
    found = None
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            found = m
    return found


@torch.no_grad()
def fold_batchnorm(model: SpikingNet) -> SpikingNet:
    """A copy of ``model`` with every batch norm folded into the synaptic layer before it, equal
    to ``model`` in evaluation mode:

        BN(W·x + b) = γ·(W·x + b − μ)/√(σ² + ε) + β_bn = W'·x + b',
        W' = s·W, b' = s·(b − μ) + β_bn, s = γ/√(σ² + ε) per output channel.

    A model without batch norm is returned as a plain copy."""
    import copy

    folded = copy.deepcopy(model).eval()
    children = list(folded)
    for i, module in enumerate(children):
        bn = module.module if isinstance(module, PerFrame) else None
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        affine = _last_affine(children[i - 1]) if i else None
        if affine is None:
            raise ValueError(f"batch norm at position {i} follows no Linear or Conv2d")
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shape = (-1,) + (1,) * (affine.weight.dim() - 1)
        affine.weight.mul_(scale.reshape(shape))
        bias = affine.bias if affine.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = scale * (bias - bn.running_mean) + bn.bias
        if affine.bias is None:
            affine.bias = nn.Parameter(new_bias)
        else:
            affine.bias.copy_(new_bias)
        folded[i] = PerFrame(nn.Identity())
    return folded
