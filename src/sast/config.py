"""The resolved configuration of one training run, and how it is read from YAML/JSON files.

Every default here is a choice of this package, documented in the README; none is taken from
the paper's body, which is not public with its abstract.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import numbers
import reprlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sast.layers import SCAN_IMPLEMENTATIONS
from sast.models import ARCHITECTURES, CONV_SCHEDULES, NORMS, READOUTS
from sast.optim import SAM_POLICIES, SAM_REUSES
from sast.quantise import MAX_BITS, MIN_BITS
from sast.surrogate import RESETS, SURROGATES

METHODS = ("surrogate", "sast", "ste", "ste-sam")
OPTIMIZERS = ("adam", "adamw", "sgd")
BINNINGS = ("time", "count", "tonic")
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
INITS = ("default", "firing-rate")
LATER_FIELDS: dict[str, Any] = {"reset": "subtract", "qat_weight_bits": None,
                                "qat_per_channel": True, "sam_interval": 1, "sam_reuse": "none",
                                "looksam_alpha": 0.7, "sam_start_epoch": 0}
"""Fields added after run folders and sweeps already existed, with the value every earlier run
had: a saved config without one of them reads as that value, and a config holding that value
hashes (:func:`sast.study.sweep.config_hash`) and groups (the report) as if the field were
absent, so earlier sweeps keep their folder names."""


FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    "binning": BINNINGS, "arch": tuple(ARCHITECTURES), "surrogate": tuple(SURROGATES),
    "readout": READOUTS, "conv_schedule": CONV_SCHEDULES,
    "scan_implementation": SCAN_IMPLEMENTATIONS, "method": METHODS,
    "sam_policy": SAM_POLICIES, "sam_reuse": SAM_REUSES, "optimizer": OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES, "device": DEVICES, "norm": NORMS, "init": INITS,
    "reset": RESETS,
}
"""The values each categorical config field may take (the CLI's ``choices`` too)."""


@dataclass
class RunConfig:
    """Everything that determines a training run (with the code version, its seed fixes it)."""

    # data
    dataset: str = "synthetic-nmnist"
    data_root: str | None = None
    time_bins: int = 20
    binning: str = "time"
    window_ms: float | None = None
    downsample: int | None = None
    first_saccade_only: bool | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    max_train_samples: int | None = None
    split_seed: int = 0
    # model
    arch: str | None = None
    hidden: tuple[int, ...] | None = None
    channels: tuple[int, ...] | None = None
    beta: float = 0.9
    threshold: float = 1.0
    reset: str = "subtract"
    surrogate: str = "sigmoid"
    slope: float = 5.0
    readout: str = "leaky"
    readout_beta: float = 0.9
    conv_schedule: str = "all"
    scan_implementation: str = "fused"
    norm: str = "none"
    init: str = "default"
    init_rate: float = 0.1
    slope_final: float | None = None
    # method
    method: str = "sast"
    rho: float = 0.3
    adaptive: bool = False
    eta: float = 0.01
    sam_policy: str = "same"
    rho_warmup_epochs: float = 0.0
    # cheaper SAM: exact steps every sam_interval-th step, the others plain or LookSAM reuse
    sam_interval: int = 1
    sam_reuse: str = "none"
    looksam_alpha: float = 0.7
    sam_start_epoch: int = 0
    # quantisation-aware training (sast.quantise): fake-quantised synaptic weights, STE
    qat_weight_bits: int | None = None
    qat_per_channel: bool = True
    # optimisation
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    epochs: int = 10
    ste_finetune_epochs: int = 0
    batch_size: int = 64
    eval_batch_size: int = 32
    """Samples per evaluation batch. It changes no number (evaluation is per sample, up to
    float rounding), so it is left out of run-folder names. On a 2-core CPU, 32 is 1.1–1.3×
    faster than 256 for conv nets (benchmarks/bench_eval_batch.py)."""
    # execution
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    cache_dir: str | None = None

    def dataset_options(self) -> dict[str, Any]:
        """The dataset-specific preprocessing options that were set."""
        options = {"window_ms": self.window_ms, "downsample": self.downsample,
                   "first_saccade_only": self.first_saccade_only}
        return {k: v for k, v in options.items() if v is not None}

    def __post_init__(self) -> None:
        for name in ("hidden", "channels"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, int):
                    value = (value,)
                setattr(self, name, tuple(int(v) for v in value))
        self.validate()

    @property
    def uses_sam(self) -> bool:
        return self.method in ("sast", "ste-sam")

    @property
    def train_spike_mode(self) -> str:
        """The spike mode the training forward pass starts in."""
        return "ste" if self.method in ("ste", "ste-sam") else "surrogate"

    def spike_mode_at(self, epoch: int) -> str:
        """The training forward pass's spike mode in (0-based) ``epoch``: the last
        ``ste_finetune_epochs`` epochs fine-tune with hard spikes forward (STE)."""
        if epoch >= self.epochs - self.ste_finetune_epochs:
            return "ste"
        return self.train_spike_mode

    def slope_at(self, epoch: int) -> float:
        """The surrogate slope k in (0-based) ``epoch``: ``slope`` throughout, or, with
        ``slope_final``, geometric steps from ``slope`` in the first epoch to ``slope_final`` in
        the last: k_e = k₀·(k₁/k₀)^(e/(E−1))."""
        if self.slope_final is None or self.epochs == 1:
            return self.slope if self.slope_final is None else self.slope_final
        fraction = min(max(epoch, 0), self.epochs - 1) / (self.epochs - 1)
        return self.slope * (self.slope_final / self.slope) ** fraction

    @property
    def qat_granularity(self) -> str:
        """The weight scale of quantisation-aware training: ``"per-channel"`` or
        ``"per-tensor"`` (as ``sast deploy`` names them)."""
        return "per-channel" if self.qat_per_channel else "per-tensor"

    def resolved_arch(self) -> str:
        if self.arch is not None:
            return self.arch
        return "dvsgesture-conv" if "gesture" in self.dataset else "nmnist-mlp"

    def validate(self) -> None:
        self._check_types()
        for name, allowed in FIELD_CHOICES.items():
            if name == "arch":
                continue  # None (the dataset's default) or a name, checked below
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got "
                                 f"{_short(getattr(self, name))}")
        if self.arch is not None and self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, got {self.arch!r}")
        positive_ints = ("time_bins", "epochs", "batch_size", "eval_batch_size")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("hidden", "channels"):
            widths = getattr(self, name)
            if widths is not None and any(width < 1 for width in widths):
                raise ValueError(f"{name} must hold positive widths, got {_short(widths)}")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"max_train_samples must be >= 1, got {self.max_train_samples}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int) \
                or self.split_seed < 0:
            raise ValueError(f"split_seed must be a non-negative integer, got {self.split_seed!r}")
        if self.window_ms is not None and not self.window_ms > 0:
            raise ValueError(f"window_ms must be positive, got {self.window_ms}")
        if self.downsample is not None and self.downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {self.downsample}")
        if not self.rho >= 0.0:
            raise ValueError(f"rho must be >= 0, got {self.rho}")
        if not self.lr > 0.0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {self.beta}")
        if not self.threshold > 0.0:
            raise ValueError(f"threshold must be positive, got {self.threshold}")
        if not self.slope > 0.0:
            raise ValueError(f"slope must be positive, got {self.slope}")
        if self.slope_final is not None and not self.slope_final > 0.0:
            raise ValueError(f"slope_final must be positive, got {self.slope_final}")
        if not 0.0 < self.init_rate < 1.0:
            raise ValueError(f"init_rate must lie in (0, 1), got {self.init_rate}")
        if not self.rho_warmup_epochs >= 0.0:
            raise ValueError(f"rho_warmup_epochs must be >= 0, got {self.rho_warmup_epochs}")
        if not self.sam_interval >= 1:
            raise ValueError(f"sam_interval must be an integer >= 1, got {self.sam_interval}")
        if not self.looksam_alpha >= 0.0:
            raise ValueError(f"looksam_alpha must be >= 0, got {self.looksam_alpha}")
        if not 0 <= self.sam_start_epoch <= self.epochs:
            raise ValueError(f"sam_start_epoch must be an integer in [0, epochs = {self.epochs}]"
                             f", got {self.sam_start_epoch}")
        if self.qat_weight_bits is not None:
            if not MIN_BITS <= self.qat_weight_bits <= MAX_BITS:
                raise ValueError(f"qat_weight_bits must be null or an integer in "
                                 f"{MIN_BITS}..{MAX_BITS}, got {self.qat_weight_bits}")
            if self.norm != "none":
                raise ValueError("qat_weight_bits needs norm: none: the deployed network's "
                                 "weights are the synaptic weights with batch norm folded in, "
                                 "which the training forward pass never sees")
        if not isinstance(self.ste_finetune_epochs, int) or isinstance(
                self.ste_finetune_epochs, bool) or not 0 <= self.ste_finetune_epochs <= self.epochs:
            raise ValueError(f"ste_finetune_epochs must be an integer in [0, epochs = "
                             f"{self.epochs}], got {self.ste_finetune_epochs!r}")

    def _check_types(self) -> None:
        """Each field holds a value of its annotated type (an int where a float is expected,
        a float where an int is, or a bool for either is refused; ``hidden`` and ``channels``
        are converted by ``__post_init__``)."""
        for f in fields(self):
            kinds = [kind.strip() for kind in str(f.type).split("|")]
            kind = next(k for k in kinds if k != "None")
            value = getattr(self, f.name)
            if kind in _TYPE_CHECKS and not (
                    (value is None and "None" in kinds) or _TYPE_CHECKS[kind](value)):
                optional = " or null" if "None" in kinds else ""
                raise ValueError(f"{f.name} must be {_TYPE_NAMES[kind]}{optional}, "
                                 f"got {_short(value)}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("hidden", "channels"):
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """The config of a mapping of field names to values; ``ValueError`` naming ``source``
        for anything else (not a mapping, unknown fields, values of the wrong type or range)."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of config fields, got "
                             f"{type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = [k for k in data if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), known, n=1)
                hints.append(_short(k) + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"{source}: unknown config field(s) {', '.join(hints)}")
        try:
            return cls(**data)
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"{source}: {err}") from None


def without_later_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a config as a mapping) without the :data:`LATER_FIELDS` that hold the value
    every earlier run had: the form in which a config is hashed and compared across versions."""
    return {k: v for k, v in data.items()
            if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


_TYPE_CHECKS = {
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
}
_TYPE_NAMES = {"str": "a string", "bool": "true or false", "int": "an integer",
               "float": "a number"}


def _short(value: Any) -> str:
    """A bounded repr: a value read from a file may be huge (YAML aliases nest cheaply)."""
    return reprlib.repr(value)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of config fields (not yet validated). ``FileNotFoundError``
    when ``path`` is not a file; ``ValueError`` naming it when it is not UTF-8 text, cannot be
    parsed or is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path} is not UTF-8 text (byte {err.start}: "
                         f"{err.reason})") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"config file {path} could not be parsed: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of field: value")
    return data
