"""The evaluation protocol of a finished run, written into its run folder.

- ``evaluation.json``: the clean protocol in both spike modes (accuracy, NLL, calibration,
  firing rates, membrane margins, transfer gap), threshold calibration, training overhead;
- ``robustness.json`` (``robustness=True``): accuracy against corruption severity, both modes;
- ``diagnostics.json`` (``diagnostics=True``): sharpness, Hessian spectrum, loss slice,
  contraction and gradient-norm measures;
- ``attribution.json`` (``attribution=True``): the accuracy lost per LIF layer swapped to hard
  spikes, and each layer's surrogate-vs-hard activity divergence
  (:mod:`sast.evaluation.attribution`).

docs/protocol.md says exactly what every number means.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sast.data import FrameSet, time_first
from sast.data.corruptions import Corruption
from sast.data.registry import load_events
from sast.data.subsets import class_counts
from sast.evaluation.accuracy import DROP_LEVELS, evaluate_clean, evaluate_mode, robustness_curve
from sast.evaluation.thresholds import calibrate_thresholds, threshold_scales
from sast.infra.lock import folder_lock
from sast.runs.folder import RunFolder, atomic_write_json
from sast.runs.load import load_run, resolve_device
from sast.runs.results import run_header, timing_summary
from sast.runs.splits import diagnostic_sample, prepare_data

SHARPNESS_RHO = 0.3
"""The radius of the worst-case sharpness measurement: one radius for every run, so that
methods trained with different ρ (or none) are compared in the same ball."""
DIAGNOSTIC_SAMPLES = 256
"""Training samples the diagnostics are measured on: a class-balanced, seeded sample of the
training part (the same for every run of a study)."""


def evaluate_run(
    run_dir: str | Path, device: str = "auto", robustness: bool = False,
    diagnostics: bool = False, corruption: str = "drop", levels: Sequence[float] = DROP_LEVELS,
    corruption_seeds: Sequence[int] = (0, 1, 2), progress: bool = False,
    sharpness_rho: float = SHARPNESS_RHO, attribution: bool = False,
    diagnostic_samples: int = DIAGNOSTIC_SAMPLES,
) -> dict[str, Any]:
    """Run the protocol on a run folder; returns what was written, keyed by file name.

    Everything fitted — the temperature, the threshold scales — is fitted on the validation
    part and scored on the test part, which never overlap (:mod:`sast.runs.splits`). The run folder
    is locked meanwhile (:mod:`sast.infra.lock`)."""
    if not RunFolder(run_dir).config.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    with folder_lock(run_dir, "run folder"):
        return _evaluate_run(run_dir, device, robustness, diagnostics, corruption, levels,
                             corruption_seeds, progress, sharpness_rho, attribution,
                             diagnostic_samples)


def _evaluate_run(
    run_dir: str | Path, device: str, robustness: bool, diagnostics: bool, corruption: str,
    levels: Sequence[float], corruption_seeds: Sequence[int], progress: bool,
    sharpness_rho: float, attribution: bool, diagnostic_samples: int,
) -> dict[str, Any]:
    folder = RunFolder(run_dir)
    dev = resolve_device(device)
    cfg, model = load_run(run_dir, device=str(dev))
    splits = prepare_data(cfg, progress)
    data = splits.test
    val = splits.val if len(splits.val) else None
    written: dict[str, Any] = {}

    evaluation = {**run_header(cfg, "test"),
                  "clean": evaluate_clean(model, data, val, dev, cfg.eval_batch_size)}
    if val is not None:
        fitted = calibrate_thresholds(model, val, device=dev, batch_size=cfg.eval_batch_size)
        with threshold_scales(model, fitted["scales"]):
            after = evaluate_mode(model, data, "hard", dev, cfg.eval_batch_size)["accuracy"]
        fitted["hard_accuracy_before"] = evaluation["clean"]["hard"]["accuracy"]
        fitted["hard_accuracy_after"] = after
        evaluation["threshold_calibration"] = fitted
    else:
        evaluation["threshold_calibration_skipped"] = (
            "val_fraction is 0: no validation part to fit threshold scales or a temperature on")
    evaluation["splits"] = splits.manifest()
    evaluation["overhead"] = timing_summary(folder.read_metrics())
    evaluation["config"] = cfg.to_dict()
    atomic_write_json(folder.root / "evaluation.json", evaluation)
    written["evaluation.json"] = evaluation

    if robustness:
        decoded = load_events(cfg.dataset, splits.plan.test.source, cfg.data_root,
                              cfg.cache_dir, **cfg.dataset_options())
        if splits.plan.test.rows is not None:
            decoded = decoded.subset(splits.plan.test.rows)

        def frames_under(c: Corruption | None, seed: int) -> FrameSet:
            return decoded.frames(cfg.time_bins, cfg.binning, c, seed)

        curve = robustness_curve(model, frames_under, corruption, levels, corruption_seeds,
                                 dev, cfg.eval_batch_size, progress)
        result = {**run_header(cfg, "test"), **curve, "config": cfg.to_dict()}
        atomic_write_json(folder.root / "robustness.json", result)
        written["robustness.json"] = result

    if attribution:
        from sast.evaluation.attribution import layer_attribution

        result = {**run_header(cfg, "test"),
                  **layer_attribution(model, data, dev, cfg.eval_batch_size),
                  "config": cfg.to_dict()}
        atomic_write_json(folder.root / "attribution.json", result)
        written["attribution.json"] = result

    if diagnostics:
        from sast.diagnostics import run_diagnostics

        sample = diagnostic_sample(splits.train, diagnostic_samples, cfg.split_seed)
        batches = []
        for start in range(0, len(sample), 64):
            frames, labels = sample.batch(slice(start, start + 64))
            batches.append((time_first(frames, "cpu"), labels))
        model = model.to("cpu")
        with torch.enable_grad():
            diag = run_diagnostics(model, batches, rho=sharpness_rho, seed=cfg.seed)
        result = {**run_header(cfg, "train"), "samples": len(sample),
                  "sample_class_counts": class_counts(sample.labels.numpy(), sample.n_classes),
                  **diag,
                  "config": cfg.to_dict()}
        atomic_write_json(folder.root / "diagnostics.json", result)
        written["diagnostics.json"] = result
    return written
