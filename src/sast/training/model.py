""":func:`train_model`: SAST (or any method of ``sast train``) for a network and data of the
user's own — a converted snnTorch, SpikingJelly or Norse network (:func:`sast.convert`), a NIR
graph (:func:`sast.from_nir`), or a hand-written module of ``sast`` LIF layers — with the run
folder, checkpoints, resume and final evaluation of :func:`sast.fit`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sast.classifier import Loss, Readout, as_classifier
from sast.config import RunConfig
from sast.data.batches import Batches, frames_from_batches
from sast.layers import lif_layers
from sast.runs.splits import SplitPart, SplitPlan, Splits
from sast.training.loop import GivenNetwork, fit

GIVEN_DATASET = "given"
"""The ``dataset`` a run of :func:`train_model` records: its data came from the caller."""

FIXED_BY_THE_MODEL_AND_DATA = (
    "dataset", "data_root", "time_bins", "binning", "window_ms", "downsample",
    "first_saccade_only", "val_fraction", "test_fraction", "max_train_samples", "split_seed",
    "cache_dir", "arch", "hidden", "channels", "beta", "threshold", "reset", "surrogate",
    "readout", "readout_beta", "conv_schedule", "norm", "scan_implementation",
)
"""RunConfig fields that build ``sast``'s own datasets and architectures: the network and the
data given to :func:`train_model` fix them instead."""


def _model_slope(model: nn.Module, given: float | None) -> float:
    slopes = {float(layer.slope) for layer in lif_layers(model)}
    if not slopes:
        raise ValueError(f"train_model trains networks of sast LIF layers; "
                         f"{type(model).__name__} holds none (convert it first: sast.convert)")
    if given is not None:
        return given
    if len(slopes) > 1:
        raise ValueError(f"the network's LIF layers have surrogate slopes {sorted(slopes)}; "
                         "pass slope=… to train them all with one")
    return slopes.pop()


def _config(model: nn.Module, method: str, rho: float | None, epochs: int,
            options: dict[str, Any]) -> RunConfig:
    fixed = sorted(set(options) & set(FIXED_BY_THE_MODEL_AND_DATA))
    if fixed:
        raise ValueError(f"train_model: {', '.join(fixed)} set sast's own datasets and "
                         "architectures; the network and data you pass fix them")
    unknown = sorted(set(options) - set(RunConfig.__dataclass_fields__))
    if unknown:
        raise TypeError(f"train_model got unexpected options {', '.join(unknown)}; it takes "
                        "RunConfig's training fields (lr, batch_size, optimizer, …)")
    options["slope"] = _model_slope(model, options.get("slope"))
    if rho is not None:
        options["rho"] = rho
    cfg = RunConfig(dataset=GIVEN_DATASET, method=method, epochs=epochs, **options)
    cfg.validate()
    return cfg


def _splits(train: Batches, val: Batches | None, test: Batches | None, batch_first: bool,
            ) -> tuple[Splits, str]:
    parts = {"train": train, "val": val, "test": test}
    sets = {name: frames_from_batches(data, batch_first=batch_first, what=name)
            for name, data in parts.items() if data is not None}
    n_classes = max(s.n_classes for s in sets.values())
    shapes = {name: s.input_shape for name, s in sets.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"the splits' per-step frame shapes differ: {shapes}")
    for s in sets.values():
        s.n_classes = n_classes
    final = "test" if "test" in sets else "val" if "val" in sets else "train"
    empty = sets["train"].subset(np.zeros(0, dtype=np.int64))
    whole = SplitPart("test", None)
    splits = Splits(
        sets["train"], sets.get("val", empty), sets[final], SplitPlan(whole, whole, whole),
        sources={"train": "the data given as train",
                 "val": "the data given as val" if "val" in sets else "none given",
                 "test": f"the data given as {final}"},
    )
    return splits, final


def _size(model: nn.Module) -> dict[str, int]:
    """What ``final.json``'s ``model`` records of a network's size."""
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "lif_layers": sum(1 for _ in lif_layers(model))}


def train_model(
    model: nn.Module, train: Batches, *, val: Batches | None = None,
    test: Batches | None = None, method: str = "sast", rho: float | None = None,
    epochs: int = 10, batch_first: bool = False, readout: Readout | None = None,
    loss: Loss | None = None, out: str | Path | None = None, resume: bool = False,
    progress: bool = True, log=print,  # noqa: ANN001
    **options: Any,
) -> dict[str, Any]:
    """Train ``model`` in place on ``train`` and return what ``final.json`` holds, on the last
    split given (``test``, else ``val``, else ``train``)::

        {"surrogate": {"accuracy": …, "loss": …, "n": …}, "hard": {…},
         "transfer_gap_pp": …, "validation": {…}, "timing": {…}, "config": {…}, …}

    ``model`` maps time-first input ``[T, B, ...]`` to per-step output ``[T, B, C]``, read out
    as logits by ``readout`` (``"count"``, ``"mean"``, ``"membrane"`` or a callable:
    :mod:`sast.classifier`; by default the model's own ``readout`` attribute, else
    ``"count"``), or to logits ``[B, C]`` itself. Its LIF layers are trained in
    surrogate mode and scored in both modes.

    ``train``, ``val`` and ``test`` are ``(frames, labels)`` batches — a ``DataLoader``, a
    list, one pair, a :class:`~sast.data.FrameSet` — time-first, or batch-first with
    ``batch_first=True`` (tonic's ``PadTensors``). They are read once into memory
    (:mod:`sast.data.batches`), so every epoch's order is fixed by (``seed``, epoch).

    ``method`` (``"sast"``, ``"surrogate"``, ``"ste"``, ``"ste-sam"``), ``rho`` and every
    training field of :class:`RunConfig` (``lr``, ``batch_size``, ``optimizer``,
    ``adaptive``, ``sam_policy``, ``sam_interval``, ``sam_reuse``, ``init="firing-rate"``,
    ``qat_weight_bits``, ``ste_finetune_epochs``, ``slope_final``, ``seed``, ``device``, …)
    work as in ``sast train``. The surrogate slope is the model's own unless ``slope`` is
    given. ``out``: a run folder to keep (config, splits, metrics, checkpoints; ``resume=True``
    continues it); without one the run is kept in a temporary folder and removed.

    Training order and SAM's batches are seeded; dropout draws from torch's global generator,
    seeded with ``seed`` here, so a resumed run with dropout differs from a straight one.
    """
    classifier = as_classifier(model, readout, loss)
    cfg = _config(classifier, method, rho, epochs, dict(options))
    splits, final_split = _splits(train, val, test, batch_first)
    description = {
        "name": type(model).__name__, "source": getattr(model, "source", "torch"),
        "readout": classifier.readout if isinstance(classifier.readout, str) else getattr(
            classifier.readout, "__name__", "callable"),
        "loss": "cross_entropy" if loss is None else getattr(loss, "__name__", "callable"),
        **_size(classifier),
    }
    given = GivenNetwork(classifier, splits, final_split, description)
    torch.manual_seed(cfg.seed)
    if out is not None:
        return fit(cfg, out, resume=resume, progress=progress, log=log, given=given)
    if resume:
        raise ValueError("resume=True continues the run in out=…; no out was given")
    with tempfile.TemporaryDirectory(prefix="sast-train-model-") as folder:
        return fit(cfg, Path(folder) / "run", progress=progress, log=log, given=given)


def train_network_on_dataset(
    cfg: RunConfig, model: nn.Module, out: str | Path, description: dict[str, Any], *,
    readout: Readout | None = None, resume: bool = False, progress: bool = True,
    log=print,  # noqa: ANN001
) -> dict[str, Any]:
    """:func:`sast.fit` of ``cfg`` — its dataset, splits, method and options — with ``model``
    in place of ``cfg``'s architecture (``sast train --nir``). The surrogate slope of every
    LIF layer is ``cfg.slope``; ``description`` (its ``name``, ``source``, ``file``) is what
    ``final.json`` records as ``"model"``."""
    classifier = as_classifier(model, readout)
    description = {**description, "readout": classifier.readout, **_size(classifier)}
    torch.manual_seed(cfg.seed)
    return fit(cfg, out, resume=resume, progress=progress, log=log,
               given=GivenNetwork(classifier, None, "test", description))

