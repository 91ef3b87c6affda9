"""A trained :class:`~sast.models.SpikingNet` read as a chain of synaptic stages.

Each stage is one synaptic layer (a 3×3 convolution or a Linear layer), what comes before it
(average pooling, flattening) and the neurons it drives (LIF neurons, or the non-spiking leaky
integrator of the readout). Average pooling of k×k binary spikes is a sum over the window
divided by k²; a stage keeps the *sum* (``pool = k``, trailing rows and columns that do not
fill a window dropped, as ``nn.AvgPool2d`` does) and the 1/k² travels with the weights
(:attr:`Stage.input_gain`), so the deployed network sum-pools integers and folds 1/k² into the
next layer's weight scale.

Batch norm is folded into the synaptic weights first (:func:`sast.models.fold_batchnorm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sast.classifier import SpikingClassifier
from sast.layers import LIF, LeakyReadout, PerFrame, SpikeCountReadout, StepSharedDropout
from sast.models import SpikingNet, fold_batchnorm

READOUT_KINDS = ("leaky", "count")


@dataclass(frozen=True)
class Synapses:
    """The geometry of one synaptic layer: its presynaptic population ``in_shape`` (one
    sample, before pooling), k×k sum pooling (``pool``; 1 = none), flattening, then a
    convolution (stride 1, ``kernel``, zero ``padding``) or a Linear layer into
    ``out_channels`` outputs (channels or features)."""

    kind: str
    in_shape: tuple[int, ...]
    out_channels: int
    pool: int = 1
    flatten: bool = False
    kernel: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def pooled_shape(self) -> tuple[int, ...]:
        if self.pool == 1:
            return self.in_shape
        c, h, w = self.in_shape
        return (c, h // self.pool, w // self.pool)

    @property
    def synapse_in_shape(self) -> tuple[int, ...]:
        """What the synaptic layer reads: the pooled population, flattened if asked."""
        shape = self.pooled_shape
        return (int(np.prod(shape)),) if self.flatten else shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.kind == "linear":
            return (self.out_channels,)
        _, h, w = self.synapse_in_shape
        (kh, kw), (ph, pw) = self.kernel, self.padding
        return (self.out_channels, h + 2 * ph - kh + 1, w + 2 * pw - kw + 1)


@dataclass(frozen=True)
class Stage:
    """One synaptic layer with its float parameters and the neurons it drives.

    ``weight`` and ``bias`` are the trained ones (float64); the current into the neurons is
    ``input_gain · W ∗ pooled_sum(x) + b`` with ``input_gain = 1/k²``. ``neuron`` is ``"lif"``
    (β and ϑ, numbers or per neuron, and its ``reset``, ``"subtract"`` or ``"zero"``) or
    ``"leaky"`` (the readout's non-spiking integrator, threshold None)."""

    synapses: Synapses
    weight: Tensor
    bias: Tensor
    neuron: str
    beta: np.ndarray
    threshold: np.ndarray | None
    reset: str = "subtract"

    @property
    def input_gain(self) -> float:
        return 1.0 / self.synapses.pool**2


@dataclass(frozen=True)
class Topology:
    """The stages of a network in order, its frame shape (P, H, W) and its readout
    (``"leaky"``: mean membrane of the last stage's integrator; ``"count"``: spike counts of
    the last stage's LIF neurons)."""

    stages: tuple[Stage, ...]
    input_shape: tuple[int, int, int]
    readout: str

    @property
    def synapses(self) -> tuple[Synapses, ...]:
        return tuple(stage.synapses for stage in self.stages)

    @property
    def n_classes(self) -> int:
        return self.stages[-1].synapses.out_channels


def _flat_modules(model: nn.Module) -> list[object]:
    """The network as a flat list of leaf operations in order."""
    ops: list[object] = []
    for child in model.children():
        if isinstance(child, PerFrame):
            inner = child.module
            ops.extend(inner.children() if isinstance(inner, nn.Sequential) else [inner])
        elif isinstance(child, (LIF, StepSharedDropout)):
            ops.append(child)
        elif isinstance(child, LeakyReadout):
            ops.extend([child.linear, ("leaky", child.beta)])
        elif isinstance(child, SpikeCountReadout):
            ops.extend([child.linear.module, child.lif, ("count", None)])
        else:
            raise ValueError(f"cannot deploy a {type(child).__name__} layer; expected the "
                             "layers sast.build_model or sast.convert makes")
    return ops


def _buffer(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy().copy()


@torch.no_grad()
def read_topology(model: SpikingNet | nn.Sequential,
                  input_shape: tuple[int, ...] | None = None) -> Topology:
    """The stages of ``model`` (batch norm folded first): a network :func:`sast.build_model`
    made, or a sequence of :class:`PerFrame` and :class:`LIF` layers (:func:`sast.convert`'s
    networks, a :class:`~sast.classifier.SpikingClassifier` counting their spikes) whose last
    LIF layer's spike count is the readout. ``input_shape`` (the frame shape, e.g. (P, H, W))
    for a network that does not record one."""
    if isinstance(model, SpikingClassifier):
        if model.readout != "count" or model.loss is not None:
            raise ValueError(f"only the spike-count readout can be deployed, got readout "
                             f"{model.readout!r}")
        model = model.net
    shape_given = input_shape if input_shape is not None else getattr(model, "input_shape",
                                                                      None)
    if shape_given is None:
        raise ValueError("the model does not record its input shape: pass input_shape=(P, H, "
                         "W) (the shape of one frame)")
    model = fold_batchnorm(model)
    input_shape = tuple(int(v) for v in shape_given)
    shape: tuple[int, ...] = input_shape
    pool, flatten, readout = 1, False, None
    pending: tuple[str, nn.Module] | None = None
    stages: list[Stage] = []

    def close(neuron: str, beta: np.ndarray, threshold: np.ndarray | None,
              reset: str = "subtract") -> None:
        nonlocal pending, pool, flatten, shape
        if pending is None:
            raise ValueError("a neuron layer follows no Conv2d or Linear layer")
        kind, layer = pending
        syn = _synapses(kind, layer, shape, pool, flatten)
        bias = layer.bias if layer.bias is not None else torch.zeros(syn.out_channels)
        stages.append(Stage(syn, layer.weight.detach().to("cpu", torch.float64).clone(),
                            bias.detach().to("cpu", torch.float64).clone(), neuron, beta,
                            threshold, reset))
        pending, pool, flatten, shape = None, 1, False, syn.out_shape

    ops = _flat_modules(model)
    for op in ops:
        if isinstance(op, tuple):
            if op[0] == "leaky":
                close("leaky", np.asarray(op[1], dtype=np.float64), None)
            readout = op[0]
        elif isinstance(op, LIF):
            _check_deployable(op)
            close("lif", _buffer(op.beta), _buffer(op.threshold), op.reset)
        elif isinstance(op, nn.AvgPool2d):
            pool = _check_pool(op, pool, flatten)
        elif isinstance(op, nn.Flatten):
            flatten = True
        elif isinstance(op, (nn.Conv2d, nn.Linear)):
            if pending is not None:
                raise ValueError("two synaptic layers without neurons between them")
            pending = ("conv" if isinstance(op, nn.Conv2d) else "linear", op)
        elif isinstance(op, (nn.Identity, nn.Dropout, StepSharedDropout)):
            continue  # the identity in evaluation
        else:
            raise ValueError(f"cannot deploy a {type(op).__name__} layer")
    if readout is None and pending is None and stages and isinstance(ops[-1], LIF):
        readout = "count"  # the per-step spikes of the last LIF layer, counted
    if readout is None or pending is not None or not stages:
        raise ValueError("the network must end in a leaky or spike-count readout")
    return Topology(tuple(stages), input_shape, readout)  # type: ignore[arg-type]


def _check_deployable(layer: LIF) -> None:
    """The integer path runs u[t] = β·u[t−1] + I[t] − ϑ·s[t−1] (or the reset to zero) on the
    synaptic current itself; a layer that scales its input or resets before the leak is
    refused rather than deployed as another network."""
    if layer.input_scale.dim() or float(layer.input_scale) != 1.0:
        raise ValueError("cannot deploy a LIF layer with input_scale ≠ 1 on the integer path: "
                         "fold the scale into the synaptic weights first")
    if layer.reset_before_leak and layer.reset == "subtract":
        raise ValueError("cannot deploy a LIF layer that resets before the leak "
                         "(reset_before_leak=True) on the integer path")
    if bool((layer.beta >= 1).any()):
        raise ValueError("cannot deploy an integrate-and-fire layer (β = 1) on the integer path")


def _check_pool(op: nn.AvgPool2d, pool: int, flatten: bool) -> int:
    k, stride = op.kernel_size, op.stride
    k = k if isinstance(k, int) else k[0] if k[0] == k[1] else -1
    stride = stride if isinstance(stride, int) else stride[0] if stride[0] == stride[1] else -1
    padding = op.padding if isinstance(op.padding, int) else max(op.padding)
    if k < 1 or stride != k or padding or op.ceil_mode or pool != 1 or flatten:
        raise ValueError(f"only square, non-overlapping average pooling without padding "
                         f"before a synaptic layer can be deployed, got {op}")
    return k


def _synapses(kind: str, layer: nn.Module, shape: tuple[int, ...], pool: int,
              flatten: bool) -> Synapses:
    if pool > 1 and len(shape) != 3:
        raise ValueError(f"pooling needs a [C, H, W] population, got shape {shape}")
    if kind == "conv":
        conv: nn.Conv2d = layer  # type: ignore[assignment]
        padding = conv.padding
        if (isinstance(padding, str) or conv.stride != (1, 1) or conv.dilation != (1, 1)
                or conv.groups != 1 or conv.padding_mode != "zeros" or flatten
                or len(shape) != 3):
            raise ValueError(f"only stride-1, undilated, ungrouped, zero-padded convolutions "
                             f"of a [C, H, W] population can be deployed, got {conv}")
        syn = Synapses("conv", shape, conv.out_channels, pool, False,
                       tuple(conv.kernel_size), tuple(padding))  # type: ignore[arg-type]
        expected = conv.in_channels
        got = syn.synapse_in_shape[0]
    else:
        linear: nn.Linear = layer  # type: ignore[assignment]
        if len(shape) != 1:
            flatten = True
        syn = Synapses("linear", shape, linear.out_features, pool, flatten)
        expected, got = linear.in_features, syn.synapse_in_shape[0]
    if expected != got:
        raise ValueError(f"{layer} reads {expected} inputs but its presynaptic population "
                         f"gives {got} (shape {shape})")
    return syn
