"""Integer-only inference of a quantised spiking network.

:func:`quantise_network` turns a trained network into integers once; after that every
operation of :meth:`IntegerNetwork.run` is int64 arithmetic on time-first event counts
``[T, B, P, H, W]``. For each stage, at each time step t, with x[t] the integer input (event
counts for the first stage, the previous stage's spikes 0/1 after it):

    P[t] = sum-pool_k(x[t])                     (k×k window sums, flattened if the stage says)
    A[t] = q ∗ P[t]                             (integer weights; conv or matmul, int64)
    I[t] = ((A[t]·m + 2^(r−1)) >> r) + B        (per channel; m/2^r ≈ s·2^F/k², B = round(b·2^F))
    U[t] = sat(leak(U[t−1]) + I[t] − Θ·S[t−1])  (U[−1] = S[−1] = 0; sat clamps to the Q(I.F)
                                                 range, never wraps)
    S[t] = 1 if U[t] > Θ else 0                 (Θ = round(ϑ·2^F): H(U − Θ) with H(0) = 0,
                                                 as the float hard mode)

for reset by subtraction; a stage trained with reset to zero sets the membrane to 0 after a
spike instead (leak(0) = 0 in both leak modes):

    U[t] = sat(leak((1 − S[t−1])·U[t−1]) + I[t])

The leaky readout's integrator is the same without threshold and reset, V[t] = sat(leak(V[t−1]) +
I[t]); its output is R = Σ_t V[t] (the float logits are R / (T·2^F)). A spike-count readout
outputs R = Σ_t S[t]. The prediction is argmax R (first maximum on ties, as ``torch.argmax``).
The synaptic sum A is held in a wide (int64) accumulator; :meth:`IntegerNetwork.run` raises
``OverflowError`` if A·m could leave int64. Rounding: :func:`~sast.deploy.fixedpoint.round_shift`
(nearest, ties to +∞) for the rescale and the leak multiplier; constants are placed on the grid
with ties to even.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from sast.deploy.fixedpoint import QFormat, round_shift
from sast.deploy.leak import Leak
from sast.deploy.topology import Stage, Synapses, Topology, read_topology
from sast.models import SpikingNet
from sast.quantise import QuantisedWeight, quantise_weight, requantiser

_INT64_HEADROOM = 1 << 62


@dataclass(frozen=True)
class IntegerStage:
    """One stage in integers: weights ``q``, per-channel multiplier ``m`` and shift ``r``,
    bias ``B`` and threshold ``Θ`` on the membrane grid (None for the leaky readout), the
    leak, and the reset after a spike (``"subtract"`` Θ or ``"zero"``)."""

    synapses: Synapses
    weight: QuantisedWeight
    multiplier: Tensor
    shift: Tensor
    bias: Tensor
    threshold: Tensor | None
    leak: Leak
    reset: str = "subtract"

    @property
    def spiking(self) -> bool:
        return self.threshold is not None

    def _per_channel(self, v: Tensor) -> Tensor:
        extra = len(self.synapses.out_shape) - 1
        return v.reshape((-1,) + (1,) * extra)

    def current(self, x: Tensor) -> Tensor:
        """I = ((A·m + 2^(r−1)) >> r) + B for one time step's input ``x`` [B, *in_shape]."""
        syn = self.synapses
        if syn.pool > 1:
            x = sum_pool(x, syn.pool)
        if syn.flatten:
            x = x.flatten(1)
        q = self.weight.q
        acc = conv_int(x, q, syn.padding) if syn.kind == "conv" else x @ q.T
        m = self._per_channel(self.multiplier)
        peak = int(acc.abs().max()) if acc.numel() else 0
        if peak * int(self.multiplier.max()) >= _INT64_HEADROOM:
            raise OverflowError(f"synaptic sum {peak} times multiplier "
                                f"{int(self.multiplier.max())} leaves int64")
        return round_shift(acc * m, self._per_channel(self.shift)) + self._per_channel(self.bias)


def sum_pool(x: Tensor, k: int) -> Tensor:
    """Sums over non-overlapping k×k windows of [B, C, H, W] (rows and columns that do not fill
    a window are dropped)."""
    b, c, h, w = x.shape
    hk, wk = h // k, w // k
    return x[:, :, : hk * k, : wk * k].reshape(b, c, hk, k, wk, k).sum((3, 5))


def conv_int(x: Tensor, q: Tensor, padding: tuple[int, int]) -> Tensor:
    """Stride-1 zero-padded convolution in int64 (PyTorch has no integer conv2d): one
    channel contraction per kernel tap,

        A[b, o, i, j] = Σ_{c, di, dj} q[o, c, di, dj] · x_pad[b, c, i + di, j + dj].
    """
    ph, pw = padding
    kh, kw = q.shape[2:]
    xp = functional.pad(x, (pw, pw, ph, ph))
    ho, wo = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    out = torch.zeros((x.shape[0], q.shape[0], ho, wo), dtype=torch.int64, device=x.device)
    for di in range(kh):
        for dj in range(kw):
            out += torch.einsum("oc,bchw->bohw", q[:, :, di, dj],
                                xp[:, :, di: di + ho, dj: dj + wo])
    return out


@dataclass
class IntegerTrace:
    """What :meth:`IntegerNetwork.run` returns.

    ``readout`` [B, n_classes] int64: Σ_t V[t] (leaky readout) or Σ_t S[t] (spike counts).
    ``input_counts`` [B, P, H, W]: the input events summed over time; ``spike_counts[ℓ]``
    [B, *shape]: Σ_t S[t] of spiking stage ℓ. With ``record=True``: ``membranes[ℓ]`` of every
    stage and ``spikes[ℓ]`` of every spiking stage, [T, B, *shape] int64."""

    readout: Tensor
    input_counts: Tensor
    spike_counts: list[Tensor]
    time_steps: int
    n_stages: int
    membranes: list[Tensor] = field(default_factory=list)
    spikes: list[Tensor] = field(default_factory=list)

    def prediction(self) -> Tensor:
        return self.readout.argmax(1)

    def presynaptic_counts(self) -> list[Tensor]:
        """The events each stage receives, summed over time: the input's for the first stage,
        the spikes of stage ℓ − 1 for stage ℓ (what SynOps are counted from)."""
        return [self.input_counts, *self.spike_counts][: self.n_stages]


@dataclass(frozen=True)
class IntegerNetwork:
    """A quantised network: its stages, membrane format and readout (see the module
    docstring)."""

    stages: tuple[IntegerStage, ...]
    membrane: QFormat
    readout: str
    input_shape: tuple[int, int, int]

    @property
    def synapses(self) -> tuple[Synapses, ...]:
        return tuple(stage.synapses for stage in self.stages)

    def logits(self, trace: IntegerTrace) -> Tensor:
        """The readout in the float model's units: R / (T·2^F) (leaky) or the counts."""
        if self.readout == "leaky":
            return trace.readout.double() / (trace.time_steps * self.membrane.one)
        return trace.readout.double()

    @torch.no_grad()
    def run(self, frames: Tensor, record: bool = False) -> IntegerTrace:
        """Integer inference on time-first integer event counts ``frames`` [T, B, P, H, W]."""
        if frames.is_floating_point() or frames.is_complex() or frames.dtype == torch.bool:
            raise TypeError(f"integer inference takes integer event counts, got {frames.dtype}")
        if frames.dim() != 5 or tuple(frames.shape[2:]) != tuple(self.input_shape):
            raise ValueError(f"expected time-first frames [T, B, "
                             f"{', '.join(map(str, self.input_shape))}], got shape "
                             f"{tuple(frames.shape)}")
        x = frames.to(torch.int64)
        if x.numel() and int(x.min()) < 0:
            raise ValueError("event counts must be non-negative")
        n_steps, batch = x.shape[:2]
        fmt = self.membrane
        u = [torch.zeros((batch, *st.synapses.out_shape), dtype=torch.int64)
             for st in self.stages]
        s = [torch.zeros_like(v) for v in u]
        counts = [torch.zeros_like(v) for v, st in zip(u, self.stages, strict=True)
                  if st.spiking]
        input_counts = x.sum(0)
        readout = torch.zeros((batch, self.stages[-1].synapses.out_channels), dtype=torch.int64)
        mem_log: list[list[Tensor]] = [[] for _ in self.stages]
        spike_log: list[list[Tensor]] = [[] for _ in self.stages]
        for t in range(n_steps):
            inp = x[t]
            for i, st in enumerate(self.stages):
                current = st.current(inp)
                if st.spiking:
                    if st.reset == "zero":
                        u[i] = fmt.saturate(st.leak.apply(u[i] * (1 - s[i])) + current)
                    else:
                        u[i] = fmt.saturate(st.leak.apply(u[i]) + current - st.threshold * s[i])
                    s[i] = (u[i] > st.threshold).to(torch.int64)
                    counts[i] += s[i]
                    inp = s[i]
                    if record:
                        spike_log[i].append(s[i])
                else:
                    u[i] = fmt.saturate(st.leak.apply(u[i]) + current)
                if record:
                    mem_log[i].append(u[i])
            readout += u[-1] if self.readout == "leaky" else s[-1]
        trace = IntegerTrace(readout, input_counts, counts, n_steps, len(self.stages))
        if record and n_steps:
            trace.membranes = [torch.stack(m) for m in mem_log]
            trace.spikes = [torch.stack(m) for m in spike_log if m]
        return trace

    def size_bytes(self) -> int:
        """Bytes to store the network: weights packed at b bits per weight; biases and
        thresholds at the membrane word (⌈(I+F)/8⌉ bytes each; a threshold per layer or per
        neuron); a 16-bit multiplier and an 8-bit shift per output channel (per layer when
        quantised per tensor); the leak factor (16-bit multiplier or 8-bit shift) per layer or
        per neuron. Structure (shapes, padding) is not counted."""
        word = -(-self.membrane.word_bits // 8)
        total = 0
        for st in self.stages:
            total += -(-st.weight.q.numel() * st.weight.bits // 8)
            rescales = st.multiplier.numel() if st.weight.granularity == "per-channel" else 1
            total += st.bias.numel() * word + rescales * 3
            if st.threshold is not None:
                total += st.threshold.numel() * word
            total += np.asarray(st.leak.factor).size * (2 if st.leak.mode == "multiplier" else 1)
        return int(total)

    def describe(self) -> list[dict[str, Any]]:
        """Per stage: kind, shapes, weight bits, leak, threshold on the grid."""
        out = []
        for st in self.stages:
            syn = st.synapses
            out.append({
                "kind": syn.kind, "in_shape": list(syn.in_shape), "pool": syn.pool,
                "out_shape": list(syn.out_shape), "neuron": "lif" if st.spiking else "leaky",
                "threshold": None if st.threshold is None else
                (int(st.threshold) if st.threshold.dim() == 0 else "per neuron"),
                "reset": st.reset if st.spiking else None,
                "leak": st.leak.summary(),
            })
        return out


def float_model_size_bytes(topology: Topology) -> int:
    """Bytes of the float32 network the integer one replaces: 4 per weight, bias, threshold
    and β (a threshold and β per layer or per neuron)."""
    total = 0
    for st in topology.stages:
        total += 4 * (st.weight.numel() + st.bias.numel() + st.beta.size)
        if st.threshold is not None:
            total += 4 * st.threshold.size
    return int(total)


def quantise_stage(stage: Stage, bits: int, granularity: str, membrane: QFormat, leak: str,
                   leak_fraction_bits: int) -> IntegerStage:
    """One float stage in integers (see the module docstring for m, r, B and Θ)."""
    qw = quantise_weight(stage.weight, bits, granularity)
    factor = qw.scale.numpy() * stage.input_gain * membrane.one
    m, r = requantiser(factor)
    threshold = None
    if stage.threshold is not None:
        threshold = torch.from_numpy(membrane.threshold_on_grid(stage.threshold))
    return IntegerStage(stage.synapses, qw, torch.from_numpy(m), torch.from_numpy(r),
                        torch.from_numpy(membrane.to_grid(stage.bias.numpy())), threshold,
                        Leak.from_beta(stage.beta, leak, leak_fraction_bits), stage.reset)


def quantise_network(
    model: SpikingNet | Topology, weight_bits: int = 8, granularity: str = "per-channel",
    membrane: str | QFormat = "Q8.8", leak: str = "multiplier", leak_fraction_bits: int = 12,
) -> IntegerNetwork:
    """Quantise a trained network (or its :func:`~sast.deploy.topology.read_topology`) for
    integer-only inference: ``weight_bits``-bit symmetric weights per output channel or per
    tensor, a saturating ``membrane`` word Q(I.F), and the leak as a ``"multiplier"`` with
    ``leak_fraction_bits`` fraction bits or as a ``"shift"``.

    >>> import sast
    >>> net = quantise_network(sast.build_model("nmnist-mlp", hidden=(8,)), weight_bits=4)
    >>> trace = net.run(torch.randint(0, 3, (5, 2, 2, 34, 34)))
    >>> tuple(trace.readout.shape), trace.readout.dtype
    ((2, 10), torch.int64)
    """
    topology = model if isinstance(model, Topology) else read_topology(model)
    fmt = QFormat.parse(membrane)
    stages = tuple(quantise_stage(st, weight_bits, granularity, fmt, leak, leak_fraction_bits)
                   for st in topology.stages)
    return IntegerNetwork(stages, fmt, topology.readout, topology.input_shape)
