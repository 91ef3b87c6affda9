"""From a config or a run folder to a model: the device, the configured architecture seeded
from the config (:func:`make_model`), the weights each forward pass sees (QAT's fake-quantised
ones, :func:`weight_context`), and a finished run loaded back (:func:`load_run`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch import nn

from sast.config import RunConfig
from sast.layers import (
    set_slope,
)
from sast.models import SpikingNet, build_model, fold_batchnorm
from sast.quantise import fake_quantised_weights, quantise_weights_
from sast.runs.folder import (
    RunFolder,
    load_checkpoint,
    read_json,
)

WeightContext = Callable[[nn.Module], AbstractContextManager]
"""What a forward–backward pass runs inside: :func:`weight_context` of the config."""


def weight_context(cfg: RunConfig) -> WeightContext:
    """The weights every forward pass of ``cfg``'s training and evaluation sees: the float
    weights themselves, or (``qat_weight_bits``) their fake-quantised values with the
    straight-through gradient (:func:`sast.quantise.fake_quantised_weights`)."""
    if cfg.qat_weight_bits is None:
        return nullcontext
    bits, granularity = cfg.qat_weight_bits, cfg.qat_granularity
    return lambda model: fake_quantised_weights(model, bits, granularity)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA device is available")
    return torch.device(name)


def make_model(
    cfg: RunConfig, input_shape: tuple[int, int, int], n_classes: int
) -> SpikingNet:
    """The configured architecture, initialised from ``cfg.seed`` (without touching the global
    RNG state of the caller)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(
            cfg.resolved_arch(), input_shape, n_classes,
            hidden=cfg.hidden, channels=cfg.channels, beta=cfg.beta, threshold=cfg.threshold,
            surrogate=cfg.surrogate, slope=cfg.slope, spike_mode=cfg.train_spike_mode,
            readout=cfg.readout, readout_beta=cfg.readout_beta,
            conv_schedule=cfg.conv_schedule, scan_implementation=cfg.scan_implementation,
            norm=cfg.norm, time_bins=cfg.time_bins, reset=cfg.reset,
        )
    return model


def load_run(run_dir: str | Path, device: str = "cpu", fake_quantise: bool = True
             ) -> tuple[RunConfig, SpikingNet]:
    """The config and trained model of a run folder: the weights of its last checkpoint, the
    surrogate slope of its last epoch, batch norm (if any) folded into the weights. A run
    trained with ``qat_weight_bits`` comes with its weights fake-quantised, the network its
    training evaluated (``final.json``), unless ``fake_quantise=False`` asks for its float
    master weights."""
    folder = RunFolder(run_dir)
    if not folder.config.exists():
        raise FileNotFoundError(f"{folder.root} is not a run folder (no config.json)")
    if not folder.checkpoint.exists():
        raise FileNotFoundError(f"{folder.root} has no checkpoint.pt; has it trained an epoch?")
    cfg = RunConfig.from_dict(read_json(folder.config), source=str(folder.config))
    state = load_checkpoint(folder.checkpoint)
    if "network" in state:
        network = state["network"]
        how = (f"sast.from_nir({network['file']!r})" if network.get("source") == "nir"
               else f"your {network.get('name', 'network')}")
        raise ValueError(
            f"{folder.root} trained a network of its own ({network.get('name')}, from "
            f"{network.get('source')}), not one of sast's architectures: build it with {how}, "
            "load checkpoint.pt's 'model' weights into sast.SpikingClassifier(net) and score "
            "it with sast.evaluate_model")
    model = make_model(cfg, tuple(state["input_shape"]), state["n_classes"])
    model.load_state_dict(state["model"])
    set_slope(model, cfg.slope_at(state["epoch"] - 1))
    if fake_quantise and cfg.qat_weight_bits is not None:
        quantise_weights_(model, cfg.qat_weight_bits, cfg.qat_granularity)
    return cfg, fold_batchnorm(model).to(resolve_device(device))
