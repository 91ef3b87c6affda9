"""Which LIF layer loses the accuracy when surrogate spikes are swapped for hard ones.

For a trained network with LIF layers 1 … L, on an evaluation set:

- **one layer at a time**: layer ℓ alone in hard mode (the others surrogate); the accuracy lost
  is ``loss_alone_pp[ℓ] = 100·(acc_surrogate − acc_{ℓ hard})``;
- **prefixes**: layers 1 … k hard, the rest surrogate, for k = 1 … L (k = L is the deployed
  network): ``loss_prefix_pp[k]``;
- **activity divergence** of each layer between the all-surrogate and the all-hard network:
  its firing rate in each (mean spike value per neuron and step), the fraction of state-steps
  with |u − ϑ| < 0.1 in the surrogate network (where H and σ_k disagree most), and how far the
  hard membrane drifts from the surrogate one over time, per step t:

      drift_network[t]  = mean |u_hard[t] − u_surrogate[t]|   (each network on its own inputs)
      drift_isolated[t] = the same with the hard layer fed the surrogate network's input
                          current: the layer's own contribution, without what earlier layers
                          passed on.

docs/protocol.md ("Attribution") says how to read them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sast.data import FrameSet, time_first
from sast.layers import LIF, lif_attributes
from sast.neuron import lif_scan_reference

NEAR_THRESHOLD = 0.1


@contextmanager
def hard_layers(model: nn.Module, hard: Sequence[int]) -> Iterator[nn.Module]:
    """LIF layers whose index (network order) is in ``hard`` in hard mode, the others in
    surrogate mode; every layer's previous mode restored on exit."""
    with lif_attributes(model, "spike_mode") as layers:
        for i, layer in enumerate(layers):
            layer.spike_mode = "hard" if i in hard else "surrogate"
        yield model


@torch.no_grad()
def _mixed_accuracy(model: nn.Module, data: FrameSet, device: torch.device | str,
                    batch_size: int) -> float:
    """Accuracy with every layer in the spike mode it is set to (possibly mixed)."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, len(data), batch_size):
            frames, labels = data.batch(slice(start, start + batch_size))
            logits = model(time_first(frames, device))
            correct += int((logits.argmax(1).cpu() == labels).sum())
    finally:
        model.train(was_training)
    return correct / len(data)


class _Recorder:
    """Forward hooks on every LIF layer: its input current and output spikes of the last call."""

    def __init__(self, layers: list[LIF]) -> None:
        self.currents: list[Tensor | None] = [None] * len(layers)
        self.spikes: list[Tensor | None] = [None] * len(layers)
        self.handles = [layer.register_forward_hook(self._hook(i))
                        for i, layer in enumerate(layers)]

    def _hook(self, i: int):  # noqa: ANN202
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            self.currents[i], self.spikes[i] = inputs[0].detach(), output.detach()
        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def activity_divergence(
    model: nn.Module, data: FrameSet, device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Per LIF layer: firing rates in the all-surrogate and all-hard network, the fraction of
    surrogate state-steps near threshold, and the membrane drift per time step (module
    docstring)."""
    was_training = model.training
    model.eval()
    n_layers = sum(1 for m in model.modules() if isinstance(m, LIF))
    sums = [{"rate_surrogate": 0.0, "rate_hard": 0.0, "near": 0.0, "states": 0,
             "drift_network": None, "drift_isolated": None, "rows": 0}
            for _ in range(n_layers)]
    try:
        with lif_attributes(model, "spike_mode", "record", "membrane", record=True) as layers:
            recorder = _Recorder(layers)
            try:
                for start in range(0, len(data), batch_size):
                    frames, _ = data.batch(slice(start, start + batch_size))
                    x = time_first(frames, device)
                    runs = {}
                    for mode in ("surrogate", "hard"):
                        for layer in layers:
                            layer.spike_mode = mode
                        model(x)
                        runs[mode] = ([layer.membrane.double() for layer in layers],
                                      [s.double() for s in recorder.spikes],
                                      list(recorder.currents))
                    for i, layer in enumerate(layers):
                        u_s, u_h = runs["surrogate"][0][i], runs["hard"][0][i]
                        s_s, s_h = runs["surrogate"][1][i], runs["hard"][1][i]
                        current = runs["surrogate"][2][i].double() * layer.input_scale
                        _, u_iso = lif_scan_reference(
                            current, layer.beta, layer.threshold, layer.surrogate, "hard",
                            reset=layer.reset, reset_before_leak=layer.reset_before_leak)
                        acc = sums[i]
                        acc["rate_surrogate"] += float(s_s.sum())
                        acc["rate_hard"] += float(s_h.sum())
                        acc["near"] += float(((u_s - layer.threshold).abs()
                                              < NEAR_THRESHOLD).sum())
                        acc["states"] += u_s.numel()
                        per_t = (u_h - u_s).abs().flatten(1).sum(1)
                        iso_t = (u_iso - u_s).abs().flatten(1).sum(1)
                        acc["drift_network"] = per_t if acc["drift_network"] is None \
                            else acc["drift_network"] + per_t
                        acc["drift_isolated"] = iso_t if acc["drift_isolated"] is None \
                            else acc["drift_isolated"] + iso_t
                        acc["rows"] += u_s[0].numel()
            finally:
                recorder.close()
    finally:
        model.train(was_training)
    out = []
    for i, acc in enumerate(sums):
        states = max(acc["states"], 1)
        rows = max(acc["rows"], 1)
        out.append({
            "layer": i,
            "rate_surrogate": acc["rate_surrogate"] / states,
            "rate_hard": acc["rate_hard"] / states,
            "rate_difference": (acc["rate_hard"] - acc["rate_surrogate"]) / states,
            "near_threshold_fraction": acc["near"] / states,
            "drift_network": (acc["drift_network"] / rows).tolist(),
            "drift_isolated": (acc["drift_isolated"] / rows).tolist(),
        })
    return out


def layer_attribution(
    model: nn.Module, data: FrameSet, device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Accuracy lost by swapping each LIF layer alone, and each prefix of layers, to hard
    spikes; and each layer's activity divergence (module docstring)."""
    n_layers = sum(1 for m in model.modules() if isinstance(m, LIF))
    if n_layers == 0:
        raise ValueError("the model has no LIF layer")

    def accuracy(hard: Sequence[int]) -> float:
        with hard_layers(model, hard):
            return _mixed_accuracy(model, data, device, batch_size)

    surrogate = accuracy(())
    alone = [accuracy((i,)) for i in range(n_layers)]
    prefix = [accuracy(tuple(range(k))) for k in range(1, n_layers + 1)]
    layers = activity_divergence(model, data, device, batch_size)
    for i, entry in enumerate(layers):
        entry["hard_alone_accuracy"] = alone[i]
        entry["loss_alone_pp"] = 100.0 * (surrogate - alone[i])
    return {
        "surrogate_accuracy": surrogate,
        "hard_accuracy": prefix[-1],
        "transfer_gap_pp": 100.0 * (surrogate - prefix[-1]),
        "prefix": [{"hard_layers": k, "accuracy": a, "loss_pp": 100.0 * (surrogate - a)}
                   for k, a in enumerate(prefix, start=1)],
        "layers": layers,
        "near_threshold": NEAR_THRESHOLD,
        "n": len(data),
    }


def summarise(attribution: dict[str, Any]) -> str:
    """One line per layer, for the command line."""
    lines = []
    for entry, prefix in zip(attribution["layers"], attribution["prefix"], strict=True):
        drift = np.asarray(entry["drift_isolated"])
        lines.append(
            f"  LIF {entry['layer'] + 1}: alone hard −{entry['loss_alone_pp']:.1f} pp, "
            f"layers 1–{prefix['hard_layers']} hard −{prefix['loss_pp']:.1f} pp, rate "
            f"{entry['rate_surrogate']:.3f} → {entry['rate_hard']:.3f}, near threshold "
            f"{100 * entry['near_threshold_fraction']:.1f} %, own drift "
            f"{drift[0]:.3f} → {drift[-1]:.3f}")
    return "\n".join(lines)
