"""Accuracy in each spike mode and the transfer gap.

The transfer gap is the accuracy lost when the trained network's surrogate spikes σ_k are
swapped for hard spikes H, weights and neuron parameters unchanged::

    transfer_gap_pp = 100 · (accuracy_surrogate − accuracy_hard)
"""

from __future__ import annotations

import torch
from torch import nn

from sast.data import FrameSet, time_first
from sast.layers import spike_mode

EVAL_MODES = ("surrogate", "hard")


@torch.no_grad()
def evaluate_mode(
    model: nn.Module, data: FrameSet, mode: str, device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> dict[str, float]:
    """Accuracy (fraction in [0, 1]) and mean negative log-likelihood of ``model`` on ``data``
    with every LIF layer in spike mode ``mode``."""
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    was_training = model.training
    model.eval()
    correct, nll = 0, 0.0
    try:
        with spike_mode(model, mode):
            for start in range(0, len(data), batch_size):
                frames, labels = data.batch(slice(start, start + batch_size))
                x, y = time_first(frames, device), labels.to(device)
                logits = model(x)
                nll += nn.functional.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
    finally:
        model.train(was_training)
    return {"accuracy": correct / len(data), "loss": nll / len(data), "n": len(data)}


def evaluate_spike_modes(
    model: nn.Module, data: FrameSet, device: torch.device | str = "cpu", batch_size: int = 256,
) -> dict[str, object]:
    """:func:`evaluate_mode` in surrogate and hard mode, and the transfer gap in percentage
    points."""
    result: dict[str, object] = {
        mode: evaluate_mode(model, data, mode, device, batch_size) for mode in EVAL_MODES
    }
    result["transfer_gap_pp"] = 100.0 * (
        result["surrogate"]["accuracy"] - result["hard"]["accuracy"]  # type: ignore[index]
    )
    return result
