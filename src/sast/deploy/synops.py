"""Synaptic operations (SynOps), dense MACs and firing rates of a hard-spike network.

The fan-out f(n) of a presynaptic neuron n (or input pixel) is the number of synapses its
spike reaches in the next synaptic layer: for a Linear layer its number of outputs; for a
stride-1 k_h×k_w convolution with zero padding (p_h, p_w) into C_out channels of H_o×W_o, from
position (y, x) of the (pooled) input,

    f(y, x) = C_out · n(y; H_o, k_h, p_h) · n(x; W_o, k_w, p_w),
    n(y; H_o, k, p) = #{o ∈ [0, H_o) : 0 ≤ y + p − o < k}

(borders counted exactly: a 3×3, padding-1 convolution reaches 4·C_out synapses from a corner,
9·C_out from the centre). With k×k sum pooling before the layer, a neuron inherits the fan-out
of its window, and a neuron in a row or column the pooling drops has f = 0.

    SynOps per sample = (1/N) Σ_samples Σ_t Σ_layers Σ_n s_n[t] · f(n)

where s_n[t] is a spike (0/1) of a LIF neuron, or, for the first layer, the number of input
events at a pixel in bin t (each event is delivered on its own). Dense MACs per sample are
what a clocked, non-event-driven implementation performs: every synapse at every step,
T · Σ_layers Σ_n f(n) over the (pooled) input positions n. Neither counts pooling additions,
leak updates or readout sums. Graded surrogate values are not events, so SynOps are defined
for hard spikes only; :func:`count_synops` refuses non-binary spikes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from sast.deploy.topology import Synapses

NOT_EVENTS = ("SynOps are defined for hard spikes only: graded (surrogate) spike values are "
              "not events")


def _reach(size_in: int, size_out: int, k: int, p: int) -> np.ndarray:
    """n(y) for y in [0, size_in): outputs o ∈ [0, size_out) with 0 ≤ y + p − o < k."""
    y = np.arange(size_in)
    lo = np.maximum(y + p - k + 1, 0)
    hi = np.minimum(y + p, size_out - 1)
    return np.maximum(hi - lo + 1, 0).astype(np.int64)


def pooled_fanout(syn: Synapses) -> np.ndarray:
    """f over the pooled input positions (``syn.pooled_shape``)."""
    shape = syn.pooled_shape
    if syn.kind == "linear":
        return np.full(shape, syn.out_channels, dtype=np.int64)
    _, h_in, w_in = shape
    _, h_out, w_out = syn.out_shape
    (kh, kw), (ph, pw) = syn.kernel, syn.padding
    plane = np.outer(_reach(h_in, h_out, kh, ph), _reach(w_in, w_out, kw, pw))
    return np.broadcast_to(syn.out_channels * plane, shape).copy()


def fanout(syn: Synapses) -> np.ndarray:
    """f(n) for every presynaptic neuron n of ``syn`` (shape ``syn.in_shape``).

    >>> syn = Synapses("conv", (1, 4, 4), 2, kernel=(3, 3), padding=(1, 1))
    >>> fanout(syn)[0].tolist()
    [[8, 12, 12, 8], [12, 18, 18, 12], [12, 18, 18, 12], [8, 12, 12, 8]]
    """
    f = pooled_fanout(syn)
    k = syn.pool
    if k == 1:
        return f
    out = np.zeros(syn.in_shape, dtype=np.int64)
    _, hp, wp = f.shape
    out[:, : hp * k, : wp * k] = np.repeat(np.repeat(f, k, axis=1), k, axis=2)
    return out


def dense_macs(synapses: Sequence[Synapses], time_steps: int) -> int:
    """Multiply-accumulates per sample when every synapse works at every step:
    T · Σ_layers (number of synapses)."""
    return int(time_steps * sum(int(pooled_fanout(syn).sum()) for syn in synapses))


def synops_from_counts(synapses: Sequence[Synapses], counts: Sequence[Tensor]) -> list[int]:
    """Σ over samples and neurons of count·f(n) per layer, where ``counts[ℓ]`` [B, *in_shape]
    holds each presynaptic neuron's events summed over time (integers)."""
    if len(counts) != len(synapses):
        raise ValueError(f"expected activity for {len(synapses)} layers, got {len(counts)}")
    totals = []
    for syn, c in zip(synapses, counts, strict=True):
        if c.is_floating_point() or tuple(c.shape[1:]) != tuple(syn.in_shape):
            raise ValueError(f"expected integer counts [B, {', '.join(map(str, syn.in_shape))}],"
                             f" got {c.dtype} {tuple(c.shape)}")
        f = torch.from_numpy(fanout(syn)).to(c.device)
        totals.append(int((c.to(torch.int64) * f).sum()))
    return totals


def count_synops(synapses: Sequence[Synapses], activity: Sequence[Tensor]) -> list[int]:
    """SynOps per layer, summed over the batch, from time-first activity: ``activity[0]`` the
    input event counts [T, B, *input] (non-negative integers), ``activity[ℓ]`` the spikes
    [T, B, ...] of the neurons feeding layer ℓ (0 or 1; any other value is refused, as
    surrogate spikes are not events)."""
    counts = []
    for i, a in enumerate(activity):
        if a.dim() < 3:
            raise ValueError(f"activity must be time-first [T, B, ...], got {tuple(a.shape)}")
        if i == 0:
            integral = torch.equal(a, torch.round(a)) if a.is_floating_point() else True
            if not integral or bool((a < 0).any()):
                raise ValueError("input activity must be non-negative integer event counts; "
                                 + NOT_EVENTS)
        elif not bool(((a == 0) | (a == 1)).all()):
            raise ValueError(NOT_EVENTS)
        counts.append(a.to(torch.int64).sum(0))
    return synops_from_counts(synapses, counts)


def firing_rates(counts: Sequence[Tensor], time_steps: int) -> list[float]:
    """Mean spikes per neuron per step of each population, from its per-sample spike counts
    summed over time [B, ...]."""
    return [float(c.sum()) / max(c.numel() * time_steps, 1) for c in counts]
