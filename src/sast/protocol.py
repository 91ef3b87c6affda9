"""The evaluation protocol of a finished run, written into its run folder.

- ``evaluation.json``: the clean protocol in both spike modes (accuracy, NLL, calibration,
  firing rates, membrane margins, transfer gap), threshold calibration, training overhead;
- ``robustness.json`` (``robustness=True``): accuracy against corruption severity, both modes;
- ``diagnostics.json`` (``diagnostics=True``): sharpness, Hessian spectrum, loss slice,
  contraction and gradient-norm measures.

docs/protocol.md says exactly what every number means.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sast.data import FrameSet, load_frames, time_first
from sast.data.corruptions import Corruption
from sast.evaluate import DROP_LEVELS, evaluate_clean, evaluate_mode, robustness_curve
from sast.runfolder import RunFolder, atomic_write_json
from sast.thresholds import calibrate_thresholds, threshold_scales
from sast.train import (
    load_run,
    prepare_data,
    resolve_device,
    run_header,
    timing_summary,
    validation_split,
)

SHARPNESS_RHO = 0.3
"""The radius of the worst-case sharpness measurement: one radius for every run, so that
methods trained with different ρ (or none) are compared in the same ball."""
DIAGNOSTIC_SAMPLES = 256
"""Training samples (the first of the training part) the diagnostics are measured on."""


def evaluate_run(
    run_dir: str | Path, device: str = "auto", robustness: bool = False,
    diagnostics: bool = False, corruption: str = "drop", levels: Sequence[float] = DROP_LEVELS,
    corruption_seeds: Sequence[int] = (0, 1, 2), progress: bool = False,
    sharpness_rho: float = SHARPNESS_RHO,
) -> dict[str, Any]:
    """Run the protocol on a run folder; returns what was written, keyed by file name."""
    folder = RunFolder(run_dir)
    dev = resolve_device(device)
    cfg, model = load_run(run_dir, device=str(dev))
    splits = prepare_data(cfg, progress)
    split, data = ("test", splits.test) if splits.test is not None else ("val", splits.val)
    val = splits.val if len(splits.val) else None
    written: dict[str, Any] = {}

    evaluation = {**run_header(cfg, split),
                  "clean": evaluate_clean(model, data, val, dev, cfg.eval_batch_size)}
    if val is not None and split != "val":
        fitted = calibrate_thresholds(model, val, device=dev, batch_size=cfg.eval_batch_size)
        with threshold_scales(model, fitted["scales"]):
            after = evaluate_mode(model, data, "hard", dev, cfg.eval_batch_size)["accuracy"]
        fitted["hard_accuracy_before"] = evaluation["clean"]["hard"]["accuracy"]
        fitted["hard_accuracy_after"] = after
        evaluation["threshold_calibration"] = fitted
    evaluation["overhead"] = timing_summary(folder.read_metrics())
    evaluation["config"] = cfg.to_dict()
    atomic_write_json(folder.root / "evaluation.json", evaluation)
    written["evaluation.json"] = evaluation

    if robustness:
        def frames_under(c: Corruption | None, seed: int) -> FrameSet:
            frames = load_frames(cfg.dataset, "train" if split == "val" else split,
                                 cfg.time_bins, cfg.binning, cfg.data_root, cfg.cache_dir,
                                 corruption=c, corruption_seed=seed, **cfg.dataset_options())
            if split == "val":
                return frames.subset(validation_split(len(frames), cfg.val_fraction)[1])
            return frames

        curve = robustness_curve(model, frames_under, corruption, levels, corruption_seeds,
                                 dev, cfg.eval_batch_size, progress)
        result = {**run_header(cfg, split), **curve, "config": cfg.to_dict()}
        atomic_write_json(folder.root / "robustness.json", result)
        written["robustness.json"] = result

    if diagnostics:
        from sast.diagnostics import run_diagnostics

        sample = splits.train.subset(range(min(DIAGNOSTIC_SAMPLES, len(splits.train))))
        batches = []
        for start in range(0, len(sample), 64):
            frames, labels = sample.batch(slice(start, start + 64))
            batches.append((time_first(frames, "cpu"), labels))
        model = model.to("cpu").float()
        with torch.enable_grad():
            diag = run_diagnostics(model, batches, rho=sharpness_rho, seed=cfg.seed)
        result = {**run_header(cfg, "train"), "samples": len(sample), **diag,
                  "config": cfg.to_dict()}
        atomic_write_json(folder.root / "diagnostics.json", result)
        written["diagnostics.json"] = result
    return written
