"""Sweeps: a grid of run configs, one run folder per config, backends that execute them.

A grid file (YAML or JSON) holds config fields, any of which may be a list; the sweep is their
cartesian product::

    out: sweeps/rho-grid              # sweep folder (default: sweeps/<grid file name>)
    evaluate: {robustness: true}      # protocol after training (optional; see below)
                                      # (deploy: true also runs `sast deploy`)
    resources: {num_cpus: 1, num_gpus: 0}   # per run, for the Ray backend
    grid:
      dataset: synthetic-nmnist
      method: [surrogate, sast]
      rho: [0.1, 0.3]
      seed: [0, 1]

Fields a method does not use are normalised away (ρ of a ``surrogate`` run, for example), so
the grid above is 2 surrogate runs and 4 sast runs. Each run's folder is
``<out>/runs/<method>-<hash>``, the hash of its resolved config: re-running the sweep skips
finished runs, resumes interrupted ones from their last checkpoint and retries failed ones. A
failed run is recorded with its error and does not stop the others. As runs finish,
``<out>/results.jsonl`` and ``<out>/results.csv`` are rewritten atomically with one row per
finished run, so a half-finished grid is already useful.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sast.config import RunConfig, load_config_file, without_later_defaults

SAM_FIELDS = ("rho", "adaptive", "eta", "sam_policy", "rho_warmup_epochs", "sam_interval",
              "sam_reuse", "looksam_alpha", "sam_start_epoch")
EVALUATE_OPTIONS = {"robustness": False, "diagnostics": False, "attribution": False,
                    "corruption": "drop", "levels": None, "corruption_seeds": 3,
                    "sharpness_rho": 0.3, "diagnostic_samples": 256, "deploy": False,
                    "deploy_bits": None}
LATER_EVALUATE_OPTIONS = {"deploy": False, "deploy_bits": None}
"""Evaluate options added after sweeps already existed, with the value every earlier
``evaluated.json`` had: a run evaluated before they existed still counts as evaluated with them
at these values. ``deploy: true`` runs ``sast deploy`` on each run after the protocol
(``deploy.json``) at ``deploy_bits`` (a list of widths, 2..16; null: ``sast deploy``'s
defaults, 8 and 4 bits, a QAT run's own width first)."""
MAX_GRID_COMBINATIONS = 20_000
"""The most field combinations a grid file may expand to (before deduplication; about 0.4 ms
each): the largest shipped grid, atlas.yaml, has 2136, and a few lines of YAML could otherwise
describe billions."""


@dataclass
class Sweep:
    """An expanded grid: where it lives, its runs, and what to do after training."""

    out: Path
    configs: list[RunConfig]
    evaluate: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)

    def folder(self, cfg: RunConfig) -> Path:
        return self.out / "runs" / run_name(cfg)


def canonical(cfg: RunConfig) -> RunConfig:
    """The config with the fields it ignores set to their defaults: SAM's of a method without
    SAM, ``qat_per_channel`` of a run without quantisation-aware training."""
    defaults = RunConfig()
    ignored = [] if cfg.uses_sam else list(SAM_FIELDS)
    if cfg.qat_weight_bits is None:
        ignored.append("qat_per_channel")
    if not any(getattr(cfg, k) != getattr(defaults, k) for k in ignored):
        return cfg
    return cfg.replace(**{k: getattr(defaults, k) for k in ignored})


HASH_PINNED = {"device": "auto", "eval_batch_size": 256, "conv_schedule": "step"}
"""Fields that change no result (beyond float rounding), pinned to one value in the hash (the
values folders were first named with), so choosing another renames no run folder."""


def config_hash(cfg: RunConfig) -> str:
    """sha256 of the canonical config's JSON (sorted keys), 10 hex digits. Fields that change
    no result (``HASH_PINNED``) are pinned, and fields added later are left out while they hold
    the value every earlier run had, so an earlier sweep's folders keep their names."""
    fields_ = {**without_later_defaults(canonical(cfg).to_dict()), **HASH_PINNED}
    return hashlib.sha256(json.dumps(fields_, sort_keys=True).encode()).hexdigest()[:10]


def run_name(cfg: RunConfig) -> str:
    return f"{cfg.method}-{config_hash(cfg)}"


def expand_grid(grid: dict[str, Any], source: str = "grid") -> list[RunConfig]:
    """The cartesian product of the list-valued fields, canonicalised and deduplicated (in the
    order of the grid). ``hidden`` and ``channels`` are lists themselves: give a list of lists
    to sweep them. At most ``MAX_GRID_COMBINATIONS`` combinations."""
    axes = _grid_axes(grid, source)
    _check_combinations(math.prod(len(values) for _, values in axes), source)
    configs, seen = [], set()
    for combo in itertools.product(*(values for _, values in axes)):
        fields_ = {key: value for (key, _), value in zip(axes, combo, strict=True)}
        cfg = canonical(RunConfig.from_dict(fields_, source=source))
        name = run_name(cfg)
        if name not in seen:
            seen.add(name)
            configs.append(cfg)
    return configs


def _grid_axes(grid: dict[str, Any], source: str) -> list[tuple[str, list[Any]]]:
    """``(field, values)`` of each field of a grid: its list, or its one value."""
    axes: list[tuple[str, list[Any]]] = []
    for key, value in grid.items():
        is_shape = key in ("hidden", "channels")
        if isinstance(value, list) and (not is_shape or any(isinstance(v, list) for v in value)):
            if not value:
                raise ValueError(f"{source}: field {reprlib.repr(key)} has an empty list of "
                                 "values")
            axes.append((key, value))
        else:
            axes.append((key, [value]))
    return axes


def _check_combinations(n: int, source: str) -> None:
    if n > MAX_GRID_COMBINATIONS:
        raise ValueError(f"{source}: the grid expands to {n} field combinations, more than "
                         f"MAX_GRID_COMBINATIONS = {MAX_GRID_COMBINATIONS}")


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Read a grid file (see the module docstring). ``FileNotFoundError`` when it does not
    exist, ``ValueError`` naming it for anything malformed."""
    path = Path(path)
    return sweep_from_dict(load_config_file(path), str(path), out, Path("sweeps") / path.stem)


def sweep_from_dict(data: dict[str, Any], source: str, out: str | Path | None = None,
                    default_out: str | Path = "sweeps/sweep",
                    overrides: dict[str, Any] | None = None) -> Sweep:
    """A sweep from the contents of a grid file; ``overrides`` replace fields in every grid.
    ``grid`` may also be a list of grids, whose runs are concatenated (deduplicated)."""
    path = source
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields or 'grid:'")
    known = {"grid", "out", "evaluate", "resources"}
    grid = data.get("grid", {k: v for k, v in data.items() if k not in known})
    grids = grid if isinstance(grid, list) else [grid]
    if not grids or not all(isinstance(g, dict) and g for g in grids):
        raise ValueError(f"{path}: expected config fields, or a 'grid:' mapping of them")
    evaluate = data.get("evaluate") or {}
    if not isinstance(evaluate, dict):
        raise ValueError(f"{path}: evaluate must be a mapping of options")
    unknown = set(evaluate) - set(EVALUATE_OPTIONS)
    if unknown:
        raise ValueError(f"{path}: unknown evaluate option(s) "
                         f"{reprlib.repr(sorted(map(str, unknown)))}; expected "
                         f"{sorted(EVALUATE_OPTIONS)}")
    _check_evaluate(evaluate, path)
    resources = data.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - {"num_cpus", "num_gpus"} or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 0
            for v in resources.values()):
        raise ValueError(f"{path}: resources takes num_cpus and num_gpus, numbers >= 0")
    if not isinstance(data.get("out"), str | None):
        raise ValueError(f"{path}: out must be a folder name, got {reprlib.repr(data['out'])}")
    folder = Path(out or data.get("out") or default_out)
    _check_combinations(sum(math.prod(len(values) for _, values in
                                      _grid_axes({**g, **(overrides or {})}, path))
                            for g in grids), path)
    configs, names = [], set()
    for g in grids:
        for cfg in expand_grid({**g, **(overrides or {})}, path):
            if run_name(cfg) not in names:
                names.add(run_name(cfg))
                configs.append(cfg)
    return Sweep(folder, configs, evaluate, resources)


def _check_evaluate(evaluate: dict[str, Any], source: str) -> None:
    """Each evaluate option holds a value of its default's type (``levels``: null or a list of
    numbers; ``deploy_bits``: null or a list of integers in 2..16)."""
    for key, value in evaluate.items():
        default = EVALUATE_OPTIONS[key]
        if key == "deploy_bits":
            ok = value is None or (isinstance(value, list) and value != [] and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and 2 <= v <= 16
                for v in value))
            if not ok:
                raise ValueError(f"{source}: evaluate option 'deploy_bits' = "
                                 f"{reprlib.repr(value)} must be null or a list of weight "
                                 "widths, integers in 2..16")
            continue
        if default is None:
            ok = value is None or (isinstance(value, list) and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value))
        elif isinstance(default, bool | str):
            ok = isinstance(value, type(default))
        else:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 0
            ok = ok and (isinstance(value, numbers.Integral) or isinstance(default, float))
        if not ok:
            raise ValueError(f"{source}: evaluate option {key!r} = {reprlib.repr(value)} is not "
                             f"of the type of its default {default!r}")
