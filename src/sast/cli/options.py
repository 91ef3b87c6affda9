"""The options every training command shares: one ``--field`` per :class:`~sast.config.RunConfig`
field, with its help, type and choices, and the config they resolve to (defaults ← ``--config``
file ← options, :func:`resolve_config`); the argument types of the other options.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from sast.config import FIELD_CHOICES, RunConfig, load_config_file

FIELD_HELP: dict[str, str] = {
    "dataset": "dataset name (see `sast datasets`)",
    "data_root": "folder holding a real dataset in its original layout",
    "time_bins": "number of frames T each sample is binned into",
    "binning": "cut samples into frames of equal time or of equal event count, or as tonic's "
    "ToFrame(n_time_bins=T) does",
    "window_ms": "sample window in ms from the gesture start (gesture datasets; default 1500)",
    "downsample": "spatial downsampling factor (gesture datasets; default 4: 128 → 32)",
    "first_saccade_only": "keep only N-MNIST's first saccade (t < 100 ms)",
    "val_fraction": "fraction of the training split held out for validation (stratified; "
    "whole subjects where a dataset has them)",
    "test_fraction": "where the copy has no test split: fraction of the training split carved "
    "out as the test split",
    "max_train_samples": "train on at most this many samples, equally many per class (quick runs)",
    "split_seed": "seed of the validation, carved test and max_train_samples subsets (the same "
    "for every run of a study)",
    "arch": "architecture (default: nmnist-mlp, or dvsgesture-conv for gesture data)",
    "hidden": "widths of hidden LIF layers, e.g. 256 or 512,256",
    "channels": "conv channel widths, e.g. 16,32",
    "beta": "membrane leak β in [0, 1)",
    "threshold": "firing threshold ϑ",
    "reset": "after a spike, subtract ϑ from the membrane, or set it to zero (exportable to "
    "NIR)",
    "surrogate": "surrogate spike function σ_k",
    "slope": "surrogate slope k (σ_k → Heaviside as k → ∞)",
    "readout": "logits from a leaky integrator's mean membrane, or from spike counts",
    "readout_beta": "leak of the leaky-integrator readout",
    "conv_schedule": "run convolutions on all T·B frames at once (all, the faster) or step by step",
    "scan_implementation": "LIF scan: fused backward-through-time, or plain autograd",
    "norm": "batch norm between each synaptic layer and its LIF layer (folded into the weights "
    "for evaluation), or none",
    "init": "initialisation: PyTorch's default, or firing-rate (each LIF layer scaled to fire at "
    "--init-rate on one training batch)",
    "init_rate": "target fraction of state-steps above threshold for --init firing-rate",
    "slope_final": "anneal the surrogate slope geometrically from --slope to this value over the "
    "epochs",
    "method": "training method: surrogate | sast (SAM) | ste | ste-sam",
    "rho": "SAM radius ρ (sast and ste-sam)",
    "adaptive": "adaptive SAM (ASAM): scale the ball by |w| + η",
    "eta": "ASAM's η",
    "sam_policy": "descent gradient on the same minibatch, or an independent second one",
    "rho_warmup_epochs": "raise ρ linearly from 0 over this many epochs",
    "sam_interval": "cheaper SAM: an exact SAM step every k-th step of an epoch (the first is "
    "one), plain or --sam-reuse steps in between (one forward-backward pass each)",
    "sam_reuse": "between exact SAM steps: none (plain base-optimiser steps) or looksam (reuse "
    "the last ascent's sharpness direction, LookSAM)",
    "looksam_alpha": "LookSAM's α: weight of the reused sharpness direction",
    "sam_start_epoch": "plain base-optimiser steps before this 0-based epoch, SAM from it on "
    "(ρ warm-up counts from it)",
    "qat_weight_bits": "quantisation-aware training: forward passes use the weights quantised "
    "to this many bits (2..16) as `sast deploy` quantises them, the gradient passes straight "
    "through to the float weights (default: off)",
    "qat_per_channel": "with --qat-weight-bits: one weight scale per output channel (true) or "
    "per layer (false)",
    "optimizer": "base optimiser",
    "lr": "learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "lr_schedule": "learning-rate schedule over epochs",
    "epochs": "number of training epochs",
    "ste_finetune_epochs": "train the last N of the epochs with hard spikes forward (STE)",
    "batch_size": "training minibatch size (under torchrun the global batch, split equally "
    "across the processes: a multiple of their number)",
    "eval_batch_size": "evaluation batch size",
    "seed": "seed of initialisation and shuffling",
    "device": "auto (CUDA if present), cpu or cuda",
    "cache_dir": "frame cache folder (default: $SAST_CACHE_DIR or ~/.cache/sast)",
    "compile": "train through torch.compile (reference scan, fused by the compiler; costs about "
    "a minute of compilation, pays off for conv nets on long runs)",
}



def _tuple_of(cast: type, what: str):  # noqa: ANN202
    """An argparse type for comma-separated values, e.g. ``16,32``."""

    def parse(text: str) -> tuple:
        try:
            return tuple(cast(v) for v in text.replace(" ", "").split(",") if v != "")
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}, got {text!r}"
            ) from None

    return parse


_int_tuple = _tuple_of(int, "integers")
_float_tuple = _tuple_of(float, "numbers")


def _bits_list(text: str) -> tuple[int, ...]:
    bits = _int_tuple(text)
    if not bits or any(not 2 <= b <= 16 for b in bits):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated bit widths, each an integer in 2..16, got {text!r}")
    return bits


def _leak_bits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 30:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..30, got {text!r}")
    return value


def _membrane_format(text: str) -> str:
    from sast.deploy.fixedpoint import QFormat

    try:
        return str(QFormat.parse(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(RunConfig)
    defaults = RunConfig()
    for field in dataclasses.fields(RunConfig):
        hint = str(hints[field.name])
        kwargs: dict[str, Any] = {"default": None, "dest": field.name}
        if "tuple" in hint:
            kwargs["type"], kwargs["metavar"] = _int_tuple, "N[,N...]"
        elif "bool" in hint:
            kwargs["type"], kwargs["metavar"] = _bool, "BOOL"
        elif "int" in hint:
            kwargs["type"] = int
        elif "float" in hint:
            kwargs["type"] = float
        if field.name in FIELD_CHOICES:
            kwargs["choices"] = FIELD_CHOICES[field.name]
        default = getattr(defaults, field.name)
        kwargs["help"] = FIELD_HELP[field.name] + (
            "" if default is None or "default" in FIELD_HELP[field.name]
            else f" (default: {default})")
        parser.add_argument("--" + field.name.replace("_", "-"), **kwargs)


def resolve_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> RunConfig:
    """Defaults ← ``base`` (a saved run's config) ← --config file ← command-line options."""
    data: dict[str, Any] = dict(base or {})
    source = "command line"
    if args.config is not None:
        data.update(load_config_file(args.config))
        source = f"{args.config} + command line"
    for field in dataclasses.fields(RunConfig):
        value = getattr(args, field.name)
        if value is not None:
            data[field.name] = value
    return RunConfig.from_dict(data, source=source)
