"""Spiking networks of snnTorch, SpikingJelly and Norse as ``sast`` models (:func:`convert`).

The result is a :class:`ConvertedNet`: a sequence of :class:`~sast.layers.PerFrame` layers and
:class:`~sast.layers.LIF` layers over time-first input ``[T, B, ...]`` whose output is the source's
last layer per step, ``[T, B, ...]``, with the same weights and neuron constants. Each source
neuron maps onto ``sast``'s LIF, u[t] = β·u[t−1] + α·I[t] − r·s[t−1] (or the reset to zero):

- snnTorch ``Leaky``: β, ϑ, α = 1, reset by subtraction after the leak (r = ϑ) or to zero;
- SpikingJelly ``LIFNode``: β = 1 − 1/τ, α = 1/τ with ``decay_input`` (else 1); the soft reset
  (``v_reset=None``) subtracts ϑ before the leak (r = β·ϑ); a hard reset to ``v_reset`` is the
  reset to zero of u − v_reset, with threshold ϑ − v_reset. ``IFNode`` is β = 1;
- Norse ``LIFBoxCell``: β = 1 − dt·τ⁻¹, α = dt·τ⁻¹, the reset to ``v_reset`` (equal to
  ``v_leak``) as for SpikingJelly, or its subtractive reset before the leak.

Affine layers, pooling, flattening and dropout are copied per frame (SpikingJelly's dropout, which
keeps one mask for all steps, becomes :class:`~sast.layers.StepSharedDropout`); batch norm is folded
into the affine layer before it (its running statistics). A module that is not a container is read
as the one container it holds (SpikingJelly's ``NMNISTNet`` runs its ``conv_fc``). Whatever cannot
be reproduced exactly raises a ``ValueError`` that names the layer, its position and what is
supported.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from sast.layers import LIF, PerFrame, StepSharedDropout

FRAME_LAYERS = (nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Dropout,
                nn.Identity)
SUPPORTED = ("nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Dropout, "
             "BatchNorm after Linear/Conv2d, snntorch.Leaky, spikingjelly LIFNode/IFNode/"
             "Dropout/VotingLayer, norse LIFBoxCell")


class ConvertedNet(nn.Sequential):
    """A network converted by :func:`convert`: ``[T, B, ...]`` in, the last layer's output per
    step ``[T, B, ...]`` out (spikes, when it ends in neurons). ``source`` names the library."""

    def __init__(self, *layers: nn.Module, source: str = "") -> None:
        super().__init__(*layers)
        self.source = source


def _library(module: nn.Module) -> str:
    return type(module).__module__.split(".")[0]


def _where(position: str, module: nn.Module) -> str:
    return f"layer {position} ({type(module).__module__.split('.')[0]}.{type(module).__name__})"


def _unsupported(position: str, module: nn.Module, why: str = "") -> ValueError:
    reason = f": {why}" if why else ""
    return ValueError(f"cannot convert {_where(position, module)}{reason}. Supported: "
                      f"{SUPPORTED}")


def _is_container(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) or type(module).__name__ in (
        "SequentialState", "SeqToANNContainer", "MultiStepContainer")


def _voting(m: nn.Module) -> nn.Module:
    """SpikingJelly's ``VotingLayer``: the mean of each group of ``voting_size`` neurons, per
    step (an average pooling over the last dimension)."""
    size = int(m.voting_size)
    return nn.Sequential(nn.Unflatten(-1, (-1, size)), _Mean(-1))


class _Mean(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(self.dim)


def _children(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The layers in order, containers (Sequential, SequentialState, SpikingJelly's
    SeqToANNContainer) unrolled; positions are dotted paths of child names."""
    for name, child in module.named_children():
        position = f"{prefix}{name}"
        if _is_container(child):
            yield from _children(child, position + ".")
        else:
            yield position, child


def _scalar_or_tensor(value: object) -> float | Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).detach().clone()
    return float(t.reshape(())) if t.numel() == 1 else t


def _from_snntorch(position: str, m: nn.Module, **lif: object) -> LIF:
    name = type(m).__name__
    if name != "Leaky":
        why = "a recurrent Leaky feeds its spikes back" if name == "RLeaky" else \
            f"snnTorch's {name} has dynamics sast's LIF does not"
        raise _unsupported(position, m, why)
    checks = {
        "init_hidden=False (a Sequential needs init_hidden=True)": not m.init_hidden,
        "inhibition": bool(m.inhibition),
        "state_quant": bool(m.state_quant),
        "reset_delay=False": not getattr(m, "reset_delay", True),
        "graded_spikes_factor ≠ 1": bool(torch.as_tensor(m.graded_spikes_factor).ne(1).any()),
        "reset_mechanism='none'": m.reset_mechanism == "none",
    }
    for what, bad in checks.items():
        if bad:
            raise _unsupported(position, m, f"{what} is not supported")
    for attr in ("beta", "threshold"):
        p = getattr(m, attr)
        if isinstance(p, nn.Parameter) and p.numel() > 1:
            raise _unsupported(position, m, f"a learnable per-neuron {attr} is not supported "
                               "(sast trains the weights with fixed neuron constants)")
    beta = _scalar_or_tensor(torch.as_tensor(m.beta).clamp(0, 1))
    return LIF(beta=beta, threshold=_scalar_or_tensor(m.threshold),
               reset="subtract" if m.reset_mechanism == "subtract" else "zero", **lif)


def _shifted_reset(position: str, m: nn.Module, threshold: float, v_reset: float | None,
                   beta: float, alpha: float, **lif: object) -> LIF:
    """A reset to ``v_reset`` (None: subtract ϑ before the leak) as sast's LIF on u − v_reset."""
    if v_reset is None:
        return LIF(beta=beta, threshold=threshold, input_scale=alpha, reset="subtract",
                   reset_before_leak=True, **lif)
    if threshold - v_reset <= 0:
        raise _unsupported(position, m, f"its threshold {threshold:g} does not lie above its "
                           f"reset potential {v_reset:g}")
    return LIF(beta=beta, threshold=threshold - v_reset, input_scale=alpha, reset="zero", **lif)


def _from_spikingjelly(position: str, m: nn.Module, **lif: object) -> LIF:
    name = type(m).__name__
    if name not in ("LIFNode", "IFNode"):
        raise _unsupported(position, m, f"SpikingJelly's {name} has dynamics sast's LIF does "
                           "not (LIFNode and IFNode are supported)")
    v_reset = None if m.v_reset is None else float(m.v_reset)
    if name == "IFNode":
        beta, alpha = 1.0, 1.0
    else:
        tau = float(m.tau)
        beta = 1.0 - 1.0 / tau
        alpha = 1.0 / tau if m.decay_input else 1.0
    return _shifted_reset(position, m, float(m.v_threshold), v_reset, beta, alpha, **lif)


def _from_norse(position: str, m: nn.Module, **lif: object) -> LIF:
    name = type(m).__name__
    if name not in ("LIFBoxCell", "LIFBox"):
        raise _unsupported(position, m, f"Norse's {name} has dynamics sast's LIF does not "
                           "(LIFBoxCell and LIFBox are supported)")
    p = m.p
    values = {k: _scalar_or_tensor(getattr(p, k)) for k in ("tau_mem_inv", "v_leak", "v_th",
                                                              "v_reset")}
    if any(isinstance(v, Tensor) for v in values.values()):
        raise _unsupported(position, m, "per-neuron Norse parameters are not supported")
    subtract = getattr(p.reset_method, "__name__", "") == "reset_subtract"
    if not subtract and values["v_leak"] != values["v_reset"]:
        raise _unsupported(position, m, "v_leak ≠ v_reset is not supported")
    rate = float(m.dt) * values["tau_mem_inv"]
    if not 0 < rate <= 1:
        raise _unsupported(position, m, f"dt·τ⁻¹ = {rate:g} must lie in (0, 1]")
    if subtract and values["v_leak"] != 0:
        raise _unsupported(position, m, "a subtractive reset with v_leak ≠ 0 is not supported")
    v_reset = None if subtract else values["v_reset"]
    return _shifted_reset(position, m, values["v_th"], v_reset, 1.0 - rate, rate, **lif)


NEURON_READERS = {"snntorch": _from_snntorch, "spikingjelly": _from_spikingjelly,
                  "norse": _from_norse}


def _fold_batchnorm(position: str, norm: nn.Module, layers: list[nn.Module]) -> None:
    """Fold ``norm`` (its running statistics) into the affine layer just before it."""
    previous = layers[-1].module if layers and isinstance(layers[-1], PerFrame) else None
    if not isinstance(previous, (nn.Linear, nn.Conv2d)):
        raise _unsupported(position, norm, "batch norm is folded into the Linear or Conv2d "
                           "layer just before it, and there is none")
    if norm.running_mean is None:
        raise _unsupported(position, norm, "batch norm without running statistics")
    with torch.no_grad():
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps) if norm.affine else \
            1.0 / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias if norm.affine else torch.zeros_like(scale)
        bias = previous.bias if previous.bias is not None else torch.zeros_like(scale)
        shape = (-1,) + (1,) * (previous.weight.dim() - 1)
        previous.weight.mul_(scale.reshape(shape))
        new_bias = (bias - norm.running_mean) * scale + shift
        if previous.bias is None:
            previous.bias = nn.Parameter(new_bias)
        else:
            previous.bias.copy_(new_bias)


def convert(module: nn.Module, *, surrogate: str = "sigmoid", slope: float = 5.0) -> ConvertedNet:
    """A ``sast`` model computing what ``module`` computes (see the module docstring): ``[T, B,
    ...]`` in, the last layer's output per step ``[T, B, ...]`` out. Its LIF layers run the
    smooth surrogate ``surrogate`` with slope ``slope`` in surrogate mode (this package's
    default, sigmoid with k = 5) and Heaviside spikes in hard mode, which give the source's
    spikes. The source is not modified.

    ``ValueError`` names the first layer it cannot reproduce exactly (an LSTM, a recurrent
    neuron, learnable per-neuron constants, an unknown layer) and its position.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert takes a torch.nn.Module, got {type(module).__name__}")
    if not _is_container(module) and len(list(module.children())) != 1:
        raise ValueError(
            f"convert reads the layers of an nn.Sequential in order; {type(module).__name__} "
            f"has its own forward over {len(list(module.children()))} children: pass the "
            "Sequential it runs")
    layers: list[nn.Module] = []
    sources = set()
    for position, child in _children(module):
        library = _library(child)
        if library == "spikingjelly" and type(child).__name__ == "VotingLayer":
            layers.append(PerFrame(_voting(child)))
        elif library == "spikingjelly" and type(child).__name__ == "Dropout":
            layers.append(StepSharedDropout(child.p))
        elif library in NEURON_READERS and not isinstance(child, FRAME_LAYERS) \
                and not isinstance(child, nn.modules.batchnorm._BatchNorm):
            layers.append(NEURON_READERS[library](position, child, surrogate=surrogate,
                                                  slope=slope))
            sources.add(library)
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            _fold_batchnorm(position, child, layers)
        elif isinstance(child, nn.Flatten) and child.start_dim == 0:
            raise _unsupported(position, child, "flattening the batch dimension")
        elif isinstance(child, FRAME_LAYERS):
            frame_layer = copy.deepcopy(child)
            if hasattr(frame_layer, "step_mode"):  # SpikingJelly's wrappers: one frame a call
                frame_layer.step_mode = "s"
            layers.append(PerFrame(frame_layer))
            if _library(child) in NEURON_READERS:
                sources.add(_library(child))
        else:
            raise _unsupported(position, child)
    if not any(isinstance(layer, LIF) for layer in layers):
        raise ValueError(f"{type(module).__name__} holds no spiking neuron layer to convert")
    net = ConvertedNet(*layers, source="+".join(sorted(sources)) or "torch")
    return net.train(module.training)
