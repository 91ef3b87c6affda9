"""``sast deploy``: a run folder's trained network quantised, run in integers, and measured.

Writes ``RUN_DIR/deploy.json`` (atomically): the run's header and config; the float network's
hard-spike accuracy, SynOps, firing rates and size; and per weight-bit setting the integer
network's accuracy, its agreement with the float hard predictions, SynOps, firing rates, size,
weight quantisation error and effective leak. The data are the run's own parts, built as
``sast evaluate`` builds them (:func:`sast.runs.splits.prepare_data`). docs/protocol.md
("Deployment: SynOps and MACs") defines every number.

A run trained with quantisation-aware training (``qat_weight_bits`` = b, :mod:`sast.quantise`) is
read with its float master weights: ``float_hard`` is those weights with hard spikes, each
integer setting quantises them as post-training quantisation would (at b bits that gives
exactly the integers its training saw), and ``qat`` adds the trained network itself — the
fake-quantised weights in float arithmetic with hard spikes, what ``final.json`` scored — and
how often the integer network at b bits agrees with it. Unless told otherwise, such a run is
deployed at b bits first (then 8 and 4) with its training's weight scale (per channel or per
tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sast.config import RunConfig
from sast.data import FrameSet, time_first
from sast.deploy.fixedpoint import QFormat
from sast.deploy.integer import IntegerNetwork, float_model_size_bytes, quantise_network
from sast.deploy.leak import LEAK_MODES
from sast.deploy.synops import NOT_EVENTS, dense_macs, synops_from_counts
from sast.deploy.topology import Topology, read_topology
from sast.infra.lock import folder_lock
from sast.layers import lif_attributes
from sast.quantise import check_bits, check_granularity, fake_quantised_weights
from sast.runs.folder import RunFolder, atomic_write_json
from sast.runs.load import load_run, resolve_device
from sast.runs.results import run_header
from sast.runs.splits import prepare_data
from sast.surrogate import heaviside

DEPLOY_SPLITS = ("test", "val")
DEFAULT_WEIGHT_BITS = (8, 4)
DEFAULT_GRANULARITY = "per-channel"


class _Tally:
    """Accuracy, SynOps and spike counts accumulated over batches."""

    def __init__(self, n_layers: int, n_spiking: int) -> None:
        self.correct = self.n = 0
        self.synops = [0] * n_layers
        self.spikes = [0] * n_spiking
        self.neuron_steps = [0] * n_spiking
        self.predictions: list[torch.Tensor] = []

    def add(self, pred: torch.Tensor, labels: torch.Tensor, synops: Sequence[int],
            spike_counts: Sequence[torch.Tensor], steps: int) -> None:
        self.correct += int((pred.cpu() == labels).sum())
        self.n += len(labels)
        self.predictions.append(pred.cpu())
        self.synops = [a + b for a, b in zip(self.synops, synops, strict=True)]
        for i, c in enumerate(spike_counts):
            self.spikes[i] += int(c.sum())
            self.neuron_steps[i] += c.numel() * steps

    def result(self) -> dict[str, Any]:
        n = max(self.n, 1)
        return {
            "accuracy": self.correct / n, "n": self.n,
            "synops_per_sample": sum(self.synops) / n,
            "synops_per_sample_per_layer": [s / n for s in self.synops],
            "firing_rates": [s / max(m, 1) for s, m in
                             zip(self.spikes, self.neuron_steps, strict=True)],
        }


@torch.no_grad()
def evaluate_float_hard(model: nn.Module, topology: Topology, data: FrameSet,
                        device: torch.device | str = "cpu", batch_size: int = 256
                        ) -> tuple[dict[str, Any], torch.Tensor]:
    """The float network with hard spikes: accuracy, SynOps per sample (per layer too) and
    firing rate per LIF layer (mean spikes per neuron per step); and its predictions."""
    if len(data) == 0:
        raise ValueError("cannot deploy on an empty dataset")
    was_training = model.training
    model.eval()
    n_layers = len(topology.stages)
    tally: _Tally | None = None
    try:
        with lif_attributes(model, "membrane", record=True, spike_mode="hard") as layers:
            tally = _Tally(n_layers, len(layers))
            for start in range(0, len(data), batch_size):
                frames, labels = data.batch(slice(start, start + batch_size))
                logits = model(time_first(frames, device))
                counts = [heaviside(layer.membrane - layer.threshold).sum(0).to(torch.int64)
                          for layer in layers]
                activity = [frames.transpose(0, 1).to(torch.int64).sum(0).to(device), *counts]
                synops = synops_from_counts(topology.synapses, activity[:n_layers])
                tally.add(logits.argmax(1), labels, synops, counts, data.time_bins)
    finally:
        model.train(was_training)
    return tally.result(), torch.cat(tally.predictions)


@torch.no_grad()
def evaluate_integer(net: IntegerNetwork, data: FrameSet, batch_size: int = 256
                     ) -> tuple[dict[str, Any], torch.Tensor]:
    """The integer network on ``data`` (CPU, int64): accuracy, SynOps per sample (per layer
    too), firing rate per spiking stage; and its predictions."""
    if len(data) == 0:
        raise ValueError("cannot deploy on an empty dataset")
    tally = _Tally(len(net.stages), sum(st.spiking for st in net.stages))
    for start in range(0, len(data), batch_size):
        frames, labels = data.batch(slice(start, start + batch_size))
        trace = net.run(frames.transpose(0, 1))
        synops = synops_from_counts(net.synapses, trace.presynaptic_counts())
        tally.add(trace.prediction(), labels, synops, trace.spike_counts, trace.time_steps)
    return tally.result(), torch.cat(tally.predictions)


def weight_errors(topology: Topology, net: IntegerNetwork) -> list[float]:
    """Per stage, ‖W − s·q‖ / ‖W‖ (0 for an all-zero W)."""
    out = []
    for st, ist in zip(topology.stages, net.stages, strict=True):
        norm = float(st.weight.norm())
        diff = float((st.weight - ist.weight.dequantised()).norm())
        out.append(diff / norm if norm > 0 else 0.0)
    return out


def _threshold_summary(threshold: torch.Tensor | None) -> int | dict[str, int] | None:
    if threshold is None:
        return None
    if threshold.dim() == 0:
        return int(threshold)
    return {"min": int(threshold.min()), "max": int(threshold.max())}


def deploy_model(
    model: nn.Module, data: FrameSet, weight_bits: Sequence[int] = (8, 4),
    granularity: str = "per-channel", membrane: str | QFormat = "Q8.8",
    leak: str = "multiplier", leak_fraction_bits: int = 12,
    device: torch.device | str = "cpu", batch_size: int = 256,
    qat: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """Everything ``deploy.json`` holds about a network, measured on ``data``. ``qat`` =
    (bits, granularity) of a network trained with fake-quantised weights (``model`` holding
    its float master weights) adds the ``qat`` entry: that network as trained, with hard
    spikes."""
    bits = [check_bits(b) for b in weight_bits]
    if not bits:
        raise ValueError("give at least one weight bit width")
    check_granularity(granularity)
    fmt = QFormat.parse(membrane)
    if leak not in LEAK_MODES:
        raise ValueError(f"unknown leak mode {leak!r}; expected one of {LEAK_MODES}")
    topology = read_topology(model)
    float_hard, float_pred = evaluate_float_hard(model, topology, data, device, batch_size)
    float_hard["model_size_bytes"] = float_model_size_bytes(topology)
    qat_entry, qat_pred = None, None
    if qat is not None:
        qat_bits, qat_granularity = check_bits(qat[0]), check_granularity(qat[1])
        with fake_quantised_weights(model, qat_bits, qat_granularity):
            qat_hard, qat_pred = evaluate_float_hard(model, topology, data, device, batch_size)
        qat_entry = {"weight_bits": qat_bits, "granularity": qat_granularity,
                     "hard": qat_hard, "agreement_with_integer": None}
    settings = []
    for b in bits:
        net = quantise_network(topology, b, granularity, fmt, leak, leak_fraction_bits)
        result, pred = evaluate_integer(net, data, batch_size)
        if qat_entry is not None and (b, granularity) == (qat_entry["weight_bits"],
                                                           qat_entry["granularity"]) \
                and qat_entry["agreement_with_integer"] is None:
            qat_entry["agreement_with_integer"] = float((pred == qat_pred).double().mean())
        settings.append({
            "weight_bits": b, "granularity": granularity, "membrane_format": str(fmt),
            **result,
            "accuracy_change_pp": 100.0 * (result["accuracy"] - float_hard["accuracy"]),
            "agreement_with_float_hard": float((pred == float_pred).double().mean()),
            "model_size_bytes": net.size_bytes(),
            "weight_relative_error": weight_errors(topology, net),
        })
    return {
        "options": {"weight_bits": bits, "granularity": granularity,
                    "membrane_format": str(fmt), "leak": leak,
                    "leak_fraction_bits": leak_fraction_bits},
        "readout": topology.readout,
        "layers": [{"kind": s.kind, "in_shape": list(s.in_shape), "pool": s.pool,
                    "out_shape": list(s.out_shape)} for s in topology.synapses],
        "time_steps": data.time_bins,
        "dense_macs_per_sample": dense_macs(topology.synapses, data.time_bins),
        "leak": [st.leak.summary() for st in net.stages],
        "thresholds_on_grid": [_threshold_summary(st.threshold) for st in net.stages],
        "float_hard": float_hard,
        **({"qat": qat_entry} if qat_entry is not None else {}),
        "float_surrogate_synops": None,
        "float_surrogate_synops_note": NOT_EVENTS,
        "settings": settings,
    }


def default_settings(cfg: RunConfig, weight_bits: Sequence[int] | None = None,
                     granularity: str | None = None) -> tuple[tuple[int, ...], str]:
    """The weight widths and scale a run is deployed at when not told: 8 and 4 bits per
    channel; a QAT run's own width first and its own scale."""
    if granularity is None:
        granularity = (cfg.qat_granularity if cfg.qat_weight_bits is not None
                       else DEFAULT_GRANULARITY)
    if weight_bits is None:
        own = () if cfg.qat_weight_bits is None else (cfg.qat_weight_bits,)
        weight_bits = (*own, *(b for b in DEFAULT_WEIGHT_BITS if b not in own))
    return tuple(weight_bits), granularity


def deploy_run(
    run_dir: str | Path, weight_bits: Sequence[int] | None = None,
    granularity: str | None = None, membrane: str | QFormat = "Q8.8", leak: str = "multiplier",
    leak_fraction_bits: int = 12, split: str = "test", device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Deploy a run folder's network on its ``split`` part (``"test"``, as ``sast evaluate``
    scores it, or ``"val"``) and write ``deploy.json``; returns what was written. Weight widths
    and scale default to :func:`default_settings`. The run folder is locked meanwhile."""
    if split not in DEPLOY_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {DEPLOY_SPLITS}")
    folder = RunFolder(run_dir)
    if not folder.config.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    with folder_lock(run_dir, "run folder"):
        dev = resolve_device(device)
        cfg, model = load_run(run_dir, device=str(dev), fake_quantise=False)
        weight_bits, granularity = default_settings(cfg, weight_bits, granularity)
        qat = (None if cfg.qat_weight_bits is None
               else (cfg.qat_weight_bits, cfg.qat_granularity))
        splits = prepare_data(cfg, progress)
        data = splits.test if split == "test" else splits.val
        if len(data) == 0:
            raise ValueError(f"the run has no {split} part (val_fraction is 0?)")
        result = {
            **run_header(cfg, split),
            **deploy_model(model, data, weight_bits, granularity, membrane, leak,
                           leak_fraction_bits, dev, cfg.eval_batch_size, qat),
            "splits": splits.manifest(),
            "config": cfg.to_dict(),
        }
        atomic_write_json(folder.root / "deploy.json", result)
    return result
