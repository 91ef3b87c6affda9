""":func:`evaluate_model`: a network of the user's own scored as :func:`sast.fit` scores a run —
accuracy and loss in surrogate and hard mode, the transfer gap — plus the mean spike value of
every LIF layer in each mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sast.classifier import Readout, as_classifier
from sast.data.batches import Batches, frames_from_batches
from sast.evaluation.accuracy import EVAL_MODES, collect_outputs


def evaluate_model(
    model: nn.Module, data: Batches, *, batch_first: bool = False, readout: Readout | None = None,
    device: torch.device | str = "cpu", batch_size: int = 256,
) -> dict[str, Any]:
    """``model`` (see :func:`sast.train_model` for what it and ``readout`` may be) on ``data``
    (``(frames, labels)`` batches, time-first unless ``batch_first``)::

        {"surrogate": {"accuracy": …, "loss": …, "n": …}, "hard": {…}, "transfer_gap_pp": …,
         "firing_rates": {"surrogate": [r_1, …], "hard": [r_1, …]}}

    ``loss`` is the mean cross entropy of the logits. One rate per LIF layer, in network order:
    r_ℓ = mean over samples, steps and neurons of s_ℓ[t] — the fraction of state-steps that
    spike in hard mode, the mean graded spike σ_k(u − ϑ) in surrogate mode."""
    classifier = as_classifier(model, readout).to(device)
    frames = frames_from_batches(data, batch_first=batch_first, what="data")
    result: dict[str, Any] = {"firing_rates": {}}
    for mode in EVAL_MODES:
        out = collect_outputs(classifier, frames, mode, device, batch_size)
        loss = nn.functional.cross_entropy(out.logits.double(), out.labels)
        result[mode] = {"accuracy": out.accuracy(), "loss": float(loss), "n": len(out.labels)}
        result["firing_rates"][mode] = out.firing_rates
    result["transfer_gap_pp"] = 100.0 * (result["surrogate"]["accuracy"]
                                         - result["hard"]["accuracy"])
    return result
