"""NIR import: a NIR graph as a ``sast`` network (:func:`from_nir`), the inverse of
:mod:`sast.interop.nir`'s mapping.

A graph is read as a chain from its Input node to its Output node; each node becomes a layer
over time-first input ``[T, B, ...]``:

    Affine / Linear          → PerFrame(nn.Linear) (with / without bias)
    Conv2d                   → PerFrame(nn.Conv2d)
    Flatten                  → PerFrame(nn.Flatten) (NIR's dims have no batch dimension)
    AvgPool2d / SumPool2d    → PerFrame(nn.AvgPool2d) (a sum: divisor 1)
    Scale                    → PerFrame(scale) (elementwise)
    LIF                      → LIF, reset to zero of v − v_reset
    IF                       → LIF with β = 1
    LI                       → LeakyIntegrator (the membrane, no spikes)

Every neuron ODE is stepped by forward Euler with step ``dt``, the discretisation
:mod:`sast.interop.nir` writes and snnTorch's and Norse's importers simulate:

    LIF:  v[t] = v[t−1] + (dt/τ)·((v_leak − v[t−1]) + R·I[t]),  z[t] = H(v[t] − v_thr),
          v[t] ← v_reset where z[t] = 1
       → sast's u = v − v_reset with β = 1 − dt/τ, α = R·dt/τ, ϑ = v_thr − v_reset, the reset
         to zero; NIR's v_leak must equal v_reset (a leak towards another potential is a
         constant current sast's LIF does not have);
    IF:   v[t] = v[t−1] + dt·R·I[t] → β = 1, α = R·dt;
    LI:   v[t] = v[t−1] + (dt/τ)·((v_leak − v[t−1]) + R·I[t]), v_leak = 0.

A parameter that is equal for every neuron becomes one number, otherwise a tensor per neuron.
A network that ends in LI is read out by the mean of its membrane over the steps
(``readout="mean"``), one that ends in spikes by their count (``readout="count"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sast.interop.convert import ConvertedNet
from sast.interop.nir import require_nir
from sast.layers import LIF, PerFrame, check_time_first

SUPPORTED_NODES = ("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "AvgPool2d",
                   "SumPool2d", "Scale", "LIF", "IF", "LI")


class LeakyIntegrator(nn.Module):
    """Non-spiking leaky integrator over ``[T, B, ...]``: v[t] = β·v[t−1] + α·I[t] from
    v[−1] = 0; returns v ``[T, B, ...]``. β and α are buffers, one number or one per neuron."""

    def __init__(self, beta: float | Tensor, input_scale: float | Tensor = 1.0) -> None:
        super().__init__()
        self.register_buffer("beta", torch.as_tensor(beta, dtype=torch.float32))
        self.register_buffer("input_scale", torch.as_tensor(input_scale, dtype=torch.float32))

    def forward(self, current: Tensor) -> Tensor:
        check_time_first(current, 2, "LeakyIntegrator")
        beta = self.beta.to(current.dtype)
        scaled = current * self.input_scale.to(current.dtype)
        v = torch.zeros_like(scaled[0])
        out = []
        for t in range(scaled.shape[0]):
            v = beta * v + scaled[t]
            out.append(v)
        return torch.stack(out)


class Scale(nn.Module):
    """x ↦ s ⊙ x per step (NIR's Scale)."""

    def __init__(self, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.to(x.dtype)


def _array(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _constant(value: np.ndarray) -> float | Tensor:
    flat = value.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return float(flat[0])
    return torch.as_tensor(value, dtype=torch.float32)


def _pair(value: Any) -> tuple[int, int]:
    v = np.asarray(value).reshape(-1)
    return (int(v[0]), int(v[0])) if v.size == 1 else (int(v[0]), int(v[1]))


def _read(graph_or_path: Any) -> tuple[Any, str]:
    nir = require_nir()
    if isinstance(graph_or_path, nir.NIRGraph):
        return graph_or_path, "the graph"
    path = Path(graph_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NIR file")
    try:
        return nir.read(str(path)), str(path)
    except Exception as err:  # noqa: BLE001 (h5py and nir raise many kinds)
        raise ValueError(f"{path}: not a NIR file that the nir package can read "
                         f"({type(err).__name__}: {err})") from None


def _cycle_edge(edges: list[tuple[str, str]]) -> tuple[str, str] | None:
    """An edge that closes a cycle (depth-first search), or None for an acyclic graph."""
    successors: dict[str, list[str]] = {}
    for source, target in edges:
        successors.setdefault(source, []).append(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str) -> tuple[str, str] | None:
        state[node] = 1
        for nxt in successors.get(node, []):
            if state.get(nxt) == 1:
                return node, nxt
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        state[node] = 2
        return None

    for node in list(successors):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def _chain(graph: Any, where: str) -> list[str]:
    """The node names from Input to Output; a graph that is not one chain is refused."""
    if (edge := _cycle_edge(list(graph.edges))) is not None:
        raise ValueError(f"{where}: the graph is cyclic (the edge {edge[0]!r} → {edge[1]!r} "
                         "closes a loop): from_nir reads feed-forward chains; a recurrent "
                         "layer is not supported")
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    inputs = [n for n, k in kinds.items() if k == "Input"]
    if len(inputs) != 1:
        raise ValueError(f"{where}: expected one Input node, found {len(inputs)}")
    successors: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for source, target in graph.edges:
        successors.setdefault(source, []).append(target)
    order, node = [], inputs[0]
    while True:
        order.append(node)
        if kinds.get(node) == "Output":
            break
        nxt = successors.get(node, [])
        if len(nxt) != 1:
            raise ValueError(f"{where}: node {node!r} has {len(nxt)} successors; from_nir "
                             "reads a chain from Input to Output")
        node = nxt[0]
    off_chain = sorted(set(graph.nodes) - set(order))
    if off_chain:
        raise ValueError(f"{where}: nodes {off_chain} are not on the chain from Input to Output")
    return order


def _neuron(name: str, node: Any, kind: str, dt: float, where: str) -> nn.Module:
    def fail(why: str) -> ValueError:
        return ValueError(f"{where}: node {name!r} ({kind}): {why}")

    if kind == "IF":
        r, thr, reset = _array(node.r), _array(node.v_threshold), _array(node.v_reset)
        if np.any(thr - reset <= 0):
            raise fail("v_threshold must lie above v_reset")
        return LIF(beta=1.0, threshold=_constant(thr - reset), reset="zero",
                   input_scale=_constant(r * dt))
    tau, r, leak = _array(node.tau), _array(node.r), _array(node.v_leak)
    if np.any(tau < dt):
        raise fail(f"τ = {tau.min():g} s is shorter than dt = {dt:g} s: forward Euler would "
                   "give β = 1 − dt/τ < 0")
    beta, scale = 1.0 - dt / tau, r * dt / tau
    if kind == "LI":
        if np.any(leak != 0):
            raise fail("v_leak ≠ 0 is a constant current sast does not model")
        return LeakyIntegrator(_constant(beta), _constant(scale))
    thr, reset = _array(node.v_threshold), _array(node.v_reset)
    if np.any(leak != reset):
        raise fail("v_leak must equal v_reset (a leak towards another potential is a constant "
                   "current sast's LIF does not have)")
    if np.any(thr - reset <= 0):
        raise fail("v_threshold must lie above v_reset")
    return LIF(beta=_constant(beta), threshold=_constant(thr - reset), reset="zero",
               input_scale=_constant(scale))


def _layer(name: str, node: Any, kind: str, where: str) -> nn.Module:
    if kind in ("Affine", "Linear"):
        weight = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=kind == "Affine")
        with torch.no_grad():
            linear.weight.copy_(weight)
            if kind == "Affine":
                linear.bias.copy_(torch.as_tensor(np.asarray(node.bias), dtype=torch.float32))
        return linear
    if kind == "Conv2d":
        weight = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
        padding = node.padding if isinstance(node.padding, str) else _pair(node.padding)
        conv = nn.Conv2d(weight.shape[1] * int(node.groups), weight.shape[0],
                         tuple(weight.shape[2:]), stride=_pair(node.stride), padding=padding,
                         dilation=_pair(node.dilation), groups=int(node.groups),
                         bias=node.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if node.bias is not None:
                conv.bias.copy_(torch.as_tensor(np.asarray(node.bias), dtype=torch.float32))
        return conv
    if kind == "Flatten":
        end = int(node.end_dim)
        return nn.Flatten(int(node.start_dim) + 1, end + 1 if end >= 0 else end)
    if kind in ("AvgPool2d", "SumPool2d"):
        return nn.AvgPool2d(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding),
                            divisor_override=1 if kind == "SumPool2d" else None)
    if kind == "Scale":
        return Scale(torch.as_tensor(np.asarray(node.scale), dtype=torch.float32))
    raise ValueError(f"{where}: node {name!r} is a {kind}, which from_nir does not read. "
                     f"Supported: {', '.join(SUPPORTED_NODES)}")


def from_nir(graph_or_path: Any, dt: float | None = None) -> ConvertedNet:
    """A NIR graph (a ``nir.NIRGraph`` or the path of a ``.nir`` file) as a ``sast`` network,
    ``[T, B, ...]`` in, the Output stream per step out (see the module docstring). ``dt``: the
    simulation step in seconds; by default the ``dt`` of the graph's metadata (``sast`` writes
    it), which a graph without one must be given. The network's ``input_shape`` is the Input
    node's and its ``readout`` attribute says how its output becomes logits (``"mean"`` after
    an LI node, ``"count"`` after spikes)."""
    graph, where = _read(graph_or_path)
    if dt is None:
        dt = graph.metadata.get("dt") if isinstance(graph.metadata, dict) else None
        if dt is None:
            raise ValueError(f"{where}: its metadata holds no dt: pass dt=… (the simulation "
                             "step in seconds the graph's time constants assume)")
    dt = float(np.asarray(dt))
    if not (dt > 0 and np.isfinite(dt)):
        raise ValueError(f"dt must be a positive number of seconds, got {dt}")
    layers: list[nn.Module] = []
    input_shape = None
    last_neuron = None
    for name in _chain(graph, where):
        node = graph.nodes[name]
        kind = type(node).__name__
        if kind == "Input":
            shape = node.input_type.get("input") if isinstance(node.input_type, dict) else None
            input_shape = None if shape is None else tuple(int(v) for v in np.asarray(shape))
        elif kind == "Output":
            continue
        elif kind in ("LIF", "IF", "LI"):
            layers.append(_neuron(name, node, kind, dt, where))
            last_neuron = kind
        else:
            layers.append(PerFrame(_layer(name, node, kind, where)))
    if last_neuron is None:
        raise ValueError(f"{where}: holds no neuron node (LIF, IF or LI)")
    net = ConvertedNet(*layers, source="nir")
    net.input_shape = input_shape
    net.readout = "mean" if isinstance(layers[-1], LeakyIntegrator) else "count"
    return net
