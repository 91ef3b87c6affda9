"""NIR export: a trained network as a graph of NIR primitives, written with the ``nir`` package
(the optional extra ``pip install 'sast[nir]'``; nothing else in sast imports it).

The network is read as :func:`~sast.deploy.topology.read_topology` reads it (batch norm folded
into the weights) and each stage becomes a chain of nodes:

    frames [P, H, W] of one step   → Input
    k×k average pooling            → AvgPool2d (kernel k, stride k, padding 0)
    flattening                     → Flatten (start_dim 0, end_dim −1: NIR shapes have no
                                     batch dimension)
    Conv2d / Linear                → Conv2d (stride 1, zero padding, dilation 1, groups 1) /
                                     Affine (weight [out, in], bias)
    LIF neurons (reset to zero)    → LIF (tau, r, v_leak = 0, v_threshold = ϑ, v_reset = 0)
    the leaky readout's integrator → LI (tau, r, v_leak = 0)
                                   → Output

Discretisation (docs/nir.md): NIR's LIF is the ODE τ·dv/dt = (v_leak − v) + R·I with
z = H(v − v_threshold) and v ← v_reset after a spike. Forward Euler with step dt gives

    v[t] = (1 − dt/τ)·v[t−1] + (dt/τ)·R·I[t],

which is sast's u[t] = β·u[t−1] + I[t] for τ = dt/(1 − β) and R = τ/dt = 1/(1 − β), v_leak = 0
(the same for LI, the readout's v[t] = β·v[t−1] + I[t]). With v_reset = 0 NIR's reset is
sast's reset to zero; it cannot express reset by subtraction, so such a network is refused.
The graph's metadata records dt, the number of time steps it was trained with, and how its
Output stream becomes logits (the mean of the LI membrane over the steps, or the spike count).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sast.deploy.topology import Stage, Topology, read_topology

DEFAULT_DT = 1e-4
"""The time step, in seconds, that the exported time constants assume (τ = dt/(1 − β)). A
discrete-time network fixes only dt/τ; this dt is the step snnTorch's NIR importer simulates
with, so it reads β back unchanged."""

FORMATS = ("nir",)
NIR_EXTRA = "pip install 'sast[nir]'"


class SubtractiveResetError(ValueError):
    """The network resets by subtraction, which NIR's LIF (reset to v_reset) cannot express."""


def require_nir():  # noqa: ANN201
    """The ``nir`` module; ``ImportError`` naming the extra that installs it when absent."""
    try:
        import nir
    except ImportError as err:
        raise ImportError(f"NIR export needs the nir package, which is an optional extra of "
                          f"sast: {NIR_EXTRA}") from err
    return nir


def lif_parameters(beta: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """τ = dt/(1 − β) and R = τ/dt (float64), so that forward Euler with step dt gives back
    v[t] = β·v[t−1] + I[t]; v_leak = 0."""
    beta = np.asarray(beta, dtype=np.float64)
    if not (np.all(beta >= 0) and np.all(beta < 1)):
        raise ValueError(f"beta must lie in [0, 1), got {beta.min():g}…{beta.max():g}")
    if not (dt > 0 and np.isfinite(dt)):
        raise ValueError(f"dt must be a positive number of seconds, got {dt}")
    tau = dt / (1.0 - beta)
    return {"tau": tau, "r": tau / dt, "v_leak": np.zeros_like(tau)}


def _refuse_subtraction(topology: Topology) -> None:
    subtracting = [i for i, st in enumerate(topology.stages)
                   if st.neuron == "lif" and st.reset != "zero"]
    if subtracting:
        raise SubtractiveResetError(
            f"this network resets by subtraction (LIF layer(s) at stage {subtracting}): after a "
            "spike its membrane keeps u − ϑ, while NIR's LIF sets it to v_reset, so no NIR graph "
            "computes what it computes. Train with reset to zero (sast train --reset zero, or "
            "RunConfig(reset='zero')) to export it exactly.")


def _neuron_node(nir: Any, stage: Stage, dt: float):  # noqa: ANN202
    shape = stage.synapses.out_shape
    beta = np.broadcast_to(stage.beta, shape).astype(np.float64)
    params = lif_parameters(beta, dt)
    meta: dict[str, Any] = {"beta": float(stage.beta) if stage.beta.ndim == 0 else beta}
    if stage.neuron == "leaky":
        return nir.LI(**params, metadata=meta)
    threshold = np.broadcast_to(stage.threshold, shape).astype(np.float64)
    meta["reset"] = "zero"
    return nir.LIF(**params, v_threshold=threshold, v_reset=np.zeros_like(threshold),
                   metadata=meta)


def to_nir(model: nn.Module | Topology, dt: float = DEFAULT_DT, time_steps: int | None = None,  # noqa: ANN201
           input_shape: tuple[int, ...] | None = None):
    """``model`` (a network :func:`sast.build_model` or :func:`sast.convert` made, or its
    topology) as a ``nir.NIRGraph`` (see the module docstring for the mapping).
    ``input_shape``: the frame shape (P, H, W) of a network that does not record it (a
    converted one). Weights keep the model's floating-point type; τ, R and thresholds are
    float64. ``SubtractiveResetError`` for a network that resets by subtraction;
    ``ImportError`` naming the extra without ``nir``."""
    nir = require_nir()
    if isinstance(model, Topology):
        topology, dtype = model, np.float32
    else:
        topology = read_topology(model, input_shape)
        first = next(model.parameters(), None)
        dtype = np.float64 if first is not None and first.dtype == torch.float64 else np.float32
    _refuse_subtraction(topology)
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array(topology.input_shape))}
    for i, st in enumerate(topology.stages):
        syn = st.synapses
        if syn.pool > 1:
            k = np.array([syn.pool, syn.pool])
            nodes[f"pool{i}"] = nir.AvgPool2d(kernel_size=k, stride=k.copy(),
                                              padding=np.array([0, 0]))
        if syn.flatten:
            nodes[f"flatten{i}"] = nir.Flatten(input_type={"input": np.array(syn.pooled_shape)},
                                               start_dim=0, end_dim=-1)
        weight = st.weight.numpy().astype(dtype)
        bias = st.bias.numpy().astype(dtype)
        if syn.kind == "conv":
            nodes[f"conv{i}"] = nir.Conv2d(
                input_shape=tuple(int(v) for v in syn.synapse_in_shape[1:]), weight=weight,
                stride=(1, 1), padding=tuple(int(v) for v in syn.padding), dilation=(1, 1),
                groups=1, bias=bias)
        else:
            nodes[f"affine{i}"] = nir.Affine(weight=weight, bias=bias)
        nodes[f"{'li' if st.neuron == 'leaky' else 'lif'}{i}"] = _neuron_node(nir, st, dt)
    nodes["output"] = nir.Output(output_type=np.array(topology.stages[-1].synapses.out_shape))
    names = list(nodes)
    edges = list(zip(names[:-1], names[1:], strict=True))
    logits = ("mean over the time steps of the Output stream (the LI membrane)"
              if topology.readout == "leaky" else
              "sum over the time steps of the Output stream (spike counts)")
    metadata = {
        "producer": "sast", "sast_version": _version(), "dt": float(dt),
        "readout": topology.readout, "logits": logits, "reset": "zero",
        "input": "event counts per polarity and pixel [P, H, W], one frame per time step",
        "discretisation": "forward Euler with step dt: v[t] = (1 - dt/tau)*v[t-1] + "
                          "(dt/tau)*r*I[t]; LIF: z[t] = H(v[t] - v_threshold), H(0) = 0, then "
                          "v[t] = v_reset where z[t] = 1",
    }
    if time_steps is not None:
        metadata["time_steps"] = int(time_steps)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _version() -> str:
    """The installed package's version (read from its metadata, not from ``sast``: the
    package imports this module)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sast")
    except PackageNotFoundError:
        return "unknown"


def nir_bytes(graph: Any) -> bytes:
    """The HDF5 file ``nir.write`` makes of ``graph``, in memory."""
    nir = require_nir()
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    return buffer.getvalue()


def export_nir(model: nn.Module, path: str | Path, dt: float = DEFAULT_DT,
               time_steps: int | None = None, input_shape: tuple[int, ...] | None = None):  # noqa: ANN201
    """Write ``model`` as a NIR file at ``path`` (atomically); return the graph
    (:func:`to_nir`)."""
    from sast.infra.atomicio import atomic_write_bytes

    graph = to_nir(model, dt, time_steps, input_shape)
    atomic_write_bytes(path, nir_bytes(graph))
    return graph
