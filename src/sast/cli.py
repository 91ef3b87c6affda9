"""The ``sast`` command: ``train``, ``evaluate``, ``deploy``, ``export``, ``report``, ``sweep``,
``reproduce``, ``datasets``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

from sast.config import (
    BINNINGS,
    DEVICES,
    INITS,
    LR_SCHEDULES,
    METHODS,
    OPTIMIZERS,
    RunConfig,
    load_config_file,
)
from sast.data.corruptions import CORRUPTIONS
from sast.layers import SCAN_IMPLEMENTATIONS
from sast.models import ARCHITECTURES, CONV_SCHEDULES, NORMS, READOUTS
from sast.neuron import RESETS, SURROGATES
from sast.optim import SAM_POLICIES, SAM_REUSES
from sast.runtime import tune_process

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

FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    "binning": BINNINGS, "arch": tuple(ARCHITECTURES), "surrogate": tuple(SURROGATES),
    "readout": READOUTS, "conv_schedule": CONV_SCHEDULES,
    "scan_implementation": SCAN_IMPLEMENTATIONS, "method": METHODS,
    "sam_policy": SAM_POLICIES, "sam_reuse": SAM_REUSES, "optimizer": OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES,
    "device": DEVICES, "norm": NORMS, "init": INITS, "reset": RESETS,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sast",
        description="Sharpness-Aware Surrogate Training of spiking neural networks: train "
        "with smooth surrogate spikes (optionally with SAM), evaluate with hard spikes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train one network into a run folder",
        description="Train one network and evaluate it with surrogate and hard spikes. "
        "Options override the values of --config, which override the defaults. "
        "`torchrun --nproc-per-node N -m sast train ...` trains one run on N processes "
        "(devices): --batch-size is the global batch, gradients are averaged across them, "
        "rank 0 writes the run folder.",
    )
    train.add_argument("--config", type=Path, help="YAML or JSON file of config fields")
    train.add_argument(
        "--out", type=Path,
        help="run folder (default: runs/<dataset>_<method>[_rho<rho>]_seed<seed>)",
    )
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _add_config_options(train)

    evaluate = sub.add_parser(
        "evaluate", help="run the evaluation protocol on a trained run",
        description="Evaluate a run folder's trained network with surrogate and hard spikes: "
        "accuracy, NLL, calibration, firing rates, membrane margins, transfer gap, threshold "
        "calibration and training overhead (evaluation.json); optionally robustness to "
        "event corruption (robustness.json) and theory/sharpness diagnostics "
        "(diagnostics.json). Scores the run's test part (carved out of the training split when "
        "the copy has none); everything fitted is fitted on the validation part.",
    )
    evaluate.add_argument("run_dir", type=Path, help="a run folder written by `sast train`")
    evaluate.add_argument("--robustness", action="store_true",
                          help="accuracy against corruption severity, both spike modes")
    evaluate.add_argument("--corruption", default="drop", choices=sorted(CORRUPTIONS),
                          help="corruption for --robustness (default: drop)")
    evaluate.add_argument("--levels", type=_float_tuple, default=None, metavar="L[,L...]",
                          help="severities for --robustness (default for drop: 0,0.1,...,0.9)")
    evaluate.add_argument("--corruption-seeds", type=int, default=3, metavar="N",
                          help="corruption seeds per severity (default: 3)")
    evaluate.add_argument("--diagnostics", action="store_true",
                          help="sharpness, Hessian spectrum, loss slice, contraction and "
                          "gradient-norm diagnostics (a minute or so on CPU)")
    evaluate.add_argument("--attribution", action="store_true",
                          help="accuracy lost per LIF layer swapped alone (and per prefix of "
                          "layers) to hard spikes, and each layer's surrogate-vs-hard activity "
                          "divergence (attribution.json)")
    evaluate.add_argument("--sharpness-rho", type=float, default=0.3, metavar="RHO",
                          help="radius of the worst-case sharpness measurement, the same for "
                          "every run whatever ρ it was trained with (default: 0.3)")
    evaluate.add_argument("--diagnostic-samples", type=int, default=256, metavar="N",
                          help="training samples the diagnostics are measured on, equally "
                          "many per class (default: 256; the Hessian's cost grows with it)")
    evaluate.add_argument("--device", choices=DEVICES, default="auto",
                          help="auto (CUDA if present), cpu or cuda (default: auto)")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    deploy = sub.add_parser(
        "deploy", help="quantise a trained run, run it in integers, count SynOps",
        description="Quantise a run folder's trained network post-training (symmetric b-bit "
        "weights, a saturating fixed-point membrane, a discrete leak), run it with integer "
        "arithmetic only and hard spikes, and write deploy.json: float hard accuracy, integer "
        "accuracy per weight width, SynOps and dense MACs per sample, firing rate per layer, "
        "model size, effective leak. Scores the part `sast evaluate` scores (the test part) "
        "unless --split says otherwise.",
    )
    deploy.add_argument("run_dir", type=Path, help="a run folder written by `sast train`")
    deploy.add_argument("--weight-bits", type=_bits_list, default=None, metavar="B[,B...]",
                        help="weight widths to deploy, each 2..16 (default: 8,4; a run "
                        "trained with --qat-weight-bits B: B first, then 8,4)")
    granularity = deploy.add_mutually_exclusive_group()
    granularity.add_argument("--per-channel", dest="granularity", action="store_const",
                             const="per-channel", help="one weight scale per output channel "
                             "(default, except for a run trained per tensor with QAT)")
    granularity.add_argument("--per-tensor", dest="granularity", action="store_const",
                             const="per-tensor", help="one weight scale per layer")
    deploy.set_defaults(granularity=None)
    deploy.add_argument("--membrane-format", type=_membrane_format, default="Q8.8",
                        metavar="Q<I>.<F>", help="membrane word: I integer bits (sign "
                        "included) and F fraction bits, saturating (default: Q8.8)")
    deploy.add_argument("--leak", choices=("multiplier", "shift"), default="multiplier",
                        help="leak as a fixed-point multiplier, or as u − (u >> s) with "
                        "1 − 2^−s nearest to β (default: multiplier)")
    deploy.add_argument("--leak-fraction-bits", type=_leak_bits, default=12, metavar="N",
                        help="fraction bits of the leak multiplier, 0..30 (default: 12)")
    deploy.add_argument("--split", choices=("test", "val"), default="test",
                        help="the run's part to score (default: test, as `sast evaluate`)")
    deploy.add_argument("--device", choices=DEVICES, default="auto",
                        help="device of the float reference evaluation; integer inference "
                        "runs on the CPU (default: auto)")
    deploy.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    export = sub.add_parser(
        "export", help="write a trained run's network as a NIR graph",
        description="Write a run folder's trained network (hard spikes) as a NIR graph "
        "(Input, Conv2d, AvgPool2d, Flatten, Affine, LIF, LI, Output) for other simulators and "
        "neuromorphic hardware. NIR's LIF resets to v_reset, so only networks trained with "
        "--reset zero are exported (exactly); reset by subtraction is refused. Needs the nir "
        "package: pip install 'sast[nir]'. docs/nir.md gives the mapping and discretisation.",
    )
    export.add_argument("run_dir", type=Path, help="a run folder written by `sast train`")
    export.add_argument("out", type=Path, help="the file to write, e.g. net.nir")
    export.add_argument("--format", dest="fmt", choices=("nir",), default="nir",
                        help="output format (default: nir)")
    export.add_argument("--dt", type=float, default=1e-4, metavar="SECONDS",
                        help="the time step the exported time constants assume: "
                        "tau = dt/(1 − β) (default: 1e-4, the step snnTorch's NIR importer "
                        "simulates with)")

    report = sub.add_parser(
        "report", help="write a Markdown report with tables and figures from run folders",
        description="Write OUT/report.md and OUT/figures/*.png from finished run folders: "
        "runs whose configs differ only in the seed are grouped (mean ± std over seeds).",
    )
    report.add_argument("run_dirs", type=Path, nargs="+", help="run folders")
    report.add_argument("--out", type=Path, default=Path("report"),
                        help="output folder (default: report)")

    sweep = sub.add_parser(
        "sweep", help="run a grid of configs (skips finished runs, resumes the rest)",
        description="Expand GRID (a YAML/JSON file whose config fields may be lists) into runs, "
        "one folder per config named by its hash, and run those not finished. Re-running "
        "skips finished runs, resumes interrupted ones and retries failed ones; results.jsonl "
        "and results.csv in the sweep folder grow as runs finish.",
    )
    sweep.add_argument("grid", type=Path, help="grid file")
    sweep.add_argument("--out", type=Path, help="sweep folder (default: the grid's `out`, or "
                       "sweeps/<grid file name>)")
    sweep.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local process pool, or Ray tasks on an existing cluster "
                       "(pip install sast[ray]) (default: local)")
    sweep.add_argument("--workers", type=int, default=1,
                       help="runs at once; local workers share the cores (default: 1)")
    sweep.add_argument("--address", help="Ray cluster address for --backend ray "
                       "(default: start a local Ray instance)")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and their status")

    repro = sub.add_parser(
        "reproduce", help="run a whole study (the paper's protocol, or the gap atlas) and write "
        "its report",
        description="nmnist / dvsgesture: train surrogate, STE and SAST over a ρ grid with "
        "several seeds and the compute-matched control, evaluate every run (robustness, "
        "calibration, theory diagnostics) and write a report beside the paper's published "
        "numbers. atlas: map the baseline's and SAST's transfer gap over surrogate, slope, "
        "network and initialisation on N-MNIST and synthetic gestures (heat maps). Without "
        "--data-root the built-in synthetic stand-in is used (the report says so). Re-running "
        "skips finished runs.",
    )
    repro.add_argument("study", choices=("nmnist", "dvsgesture", "atlas"),
                       help="the paper's protocol on one dataset, or the gap atlas")
    repro.add_argument("--quick", action="store_true",
                       help="fewer seeds, epochs and ρ values, part of the data (minutes)")
    repro.add_argument("--data-root", type=Path, help="the real dataset's folder")
    repro.add_argument("--out", type=Path, help="study folder (default: reproduce/<study>…)")
    repro.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="as for `sast sweep` (default: local)")
    repro.add_argument("--workers", type=int, default=1, help="runs at once (default: 1)")
    repro.add_argument("--address", help="Ray cluster address for --backend ray")

    sub.add_parser("datasets", help="list the datasets and what each needs",
                   description="List the datasets sast can read and what each needs.")
    return parser


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


def default_out(cfg: RunConfig) -> Path:
    rho = f"_rho{cfg.rho:g}" if cfg.uses_sam else ""
    return Path("runs") / f"{cfg.dataset}_{cfg.method}{rho}_seed{cfg.seed}"


def _print_result(result: dict[str, Any], where: Path) -> None:
    print(f"\n{where}")
    print(f"  {'mode':<10} {'accuracy':>9} {'NLL':>8}")
    for mode in ("surrogate", "hard"):
        r = result[mode]
        print(f"  {mode:<10} {100 * r['accuracy']:8.2f}% {r['loss']:8.4f}")
    print(f"  transfer gap {result['transfer_gap_pp']:+.2f} pp")


def cmd_train(args: argparse.Namespace) -> int:
    from sast import distributed
    from sast.train import TrainingDiverged, fit

    cfg = resolve_config(args)
    out = args.out or default_out(cfg)
    if args.resume:
        from sast.runfolder import RunFolder, read_json

        if not RunFolder(out).config.exists():
            raise FileNotFoundError(f"{out} holds no run to resume (no config.json); drop "
                                    "--resume to start one there")
        cfg = resolve_config(args, base=read_json(out / "config.json"))
    try:
        final = fit(cfg, out, resume=args.resume, progress=not args.no_progress)
    except TrainingDiverged as err:
        print(f"sast train: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        from sast.runfolder import RunFolder, read_json

        status = RunFolder(out).status
        message = read_json(status).get("message", "") if status.exists() else ""
        print(f"sast train: {message or 'interrupted'}", file=sys.stderr)
        return 130
    if distributed.launched_rank() != 0:  # torchrun's other ranks: rank 0 reports
        return 0
    _print_result(final, out / "final.json")
    if "note" in final:
        print(f"  note: {final['note']}")
    timing = final["timing"]
    print(f"  {timing['epoch_time_s_median']:.2f} s per epoch (median), "
          f"{timing['grad_evals_per_step']:.0f} forward-backward passes per step")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sast.evaluate import DROP_LEVELS
    from sast.protocol import evaluate_run

    if args.levels is None and args.corruption != "drop":
        raise ValueError(f"--levels is needed for --corruption {args.corruption}")
    written = evaluate_run(
        args.run_dir, args.device, robustness=args.robustness, diagnostics=args.diagnostics,
        corruption=args.corruption, levels=args.levels or DROP_LEVELS,
        corruption_seeds=tuple(range(args.corruption_seeds)), progress=not args.no_progress,
        sharpness_rho=args.sharpness_rho, attribution=args.attribution,
        diagnostic_samples=args.diagnostic_samples,
    )
    evaluation = written["evaluation.json"]
    _print_result(evaluation["clean"], args.run_dir / "evaluation.json")
    for mode in ("surrogate", "hard"):
        cal = evaluation["clean"][mode]["calibration"]
        print(f"  {mode:<10} ECE {cal['ece']:.4f}  MCE {cal['mce']:.4f}  "
              f"Brier {cal['brier']:.4f}")
    if "threshold_calibration" in evaluation:
        tc = evaluation["threshold_calibration"]
        print(f"  threshold calibration: hard {100 * tc['hard_accuracy_before']:.2f}% → "
              f"{100 * tc['hard_accuracy_after']:.2f}% (scales {tc['scales']})")
    if "attribution.json" in written:
        from sast.attribution import summarise

        print("  attribution (test part):\n" + summarise(written["attribution.json"]))
    for name in written:
        if name != "evaluation.json":
            print(f"  wrote {args.run_dir / name}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from sast.deploy.protocol import deploy_run

    result = deploy_run(
        args.run_dir, args.weight_bits, args.granularity, args.membrane_format, args.leak,
        args.leak_fraction_bits, args.split, args.device, progress=not args.no_progress,
    )
    print(f"\n{args.run_dir / 'deploy.json'}  ({args.split} part, {result['float_hard']['n']} "
          f"samples, membrane {args.membrane_format}, {result['options']['granularity']} "
          f"weights, leak {args.leak})")
    print(f"  {'network':<12} {'accuracy':>9} {'agrees':>7} {'SynOps/sample':>14} "
          f"{'bytes':>10}")
    fh = result["float_hard"]
    print(f"  {'float, hard':<12} {100 * fh['accuracy']:8.2f}% {'':>7} "
          f"{fh['synops_per_sample']:14.0f} {fh['model_size_bytes']:10d}")
    qat = result.get("qat")
    if qat is not None:
        name = f"qat{qat['weight_bits']}, hard"
        agrees = qat["agreement_with_integer"]
        print(f"  {name:<12} {100 * qat['hard']['accuracy']:8.2f}% "
              f"{'' if agrees is None else f'{100 * agrees:6.1f}%':>7} "
              f"{qat['hard']['synops_per_sample']:14.0f}")
    for s in result["settings"]:
        name = f"int{s['weight_bits']}"
        print(f"  {name:<12} {100 * s['accuracy']:8.2f}% "
              f"{100 * s['agreement_with_float_hard']:6.1f}% {s['synops_per_sample']:14.0f} "
              f"{s['model_size_bytes']:10d}")
    print(f"  dense MACs per sample {result['dense_macs_per_sample']}")
    for i, leak in enumerate(result["leak"]):
        if "beta" in leak:
            print(f"  layer {i} leak: β {leak['beta']:g} → {leak['beta_effective']:.6g} "
                  f"(error {leak['beta_error']:+.3g})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sast.deploy.nirexport import export_run

    try:
        summary = export_run(args.run_dir, args.out, args.fmt, args.dt)
    except ImportError as err:
        print(f"sast export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['path']} (NIR, dt {summary['dt']:g} s, {summary['time_steps']} "
          f"time steps, {summary['readout']} readout)")
    print("  " + " → ".join(f"{name} ({kind})" for name, kind in summary["nodes"].items()))
    logits = ("the mean of the Output stream over the time steps" if summary["readout"] ==
              "leaky" else "the Output's spike counts over the time steps")
    print(f"  logits: {logits}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sast.report import write_report

    path = write_report(args.run_dirs, args.out)
    print(f"wrote {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from sast.experiment import describe, differing_fields, load_sweep, run_sweep

    sweep = load_sweep(args.grid, args.out)
    if args.dry_run:
        fields = differing_fields(sweep.configs) or ["method"]
        print(f"{sweep.out}: {len(sweep.configs)} runs")
        for name, status, cfg in describe(sweep):
            detail = " ".join(f"{f}={getattr(cfg, f)}" for f in fields)
            print(f"  {status:<11} {name:<22} {detail}")
        return 0
    rows = run_sweep(sweep, args.backend, args.workers, args.address)
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"{sweep.out / 'results.csv'}: {len(rows) - len(failed)} finished, "
          f"{len(failed)} failed")
    return 1 if failed else 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    import time

    from sast.reproduce import reproduce

    start = time.time()
    path = reproduce(args.study, args.quick, args.data_root, args.out, args.backend,
                     args.workers, args.address)
    print(f"wrote {path} ({(time.time() - start) / 60:.1f} min)")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from sast.data import DATASETS

    for spec in DATASETS.values():
        w, h, p = spec.sensor_size
        origin = f"\n  get it from: {spec.origin}" if spec.origin else ""
        print(f"{spec.name}\n  {spec.description}\n  sensor {w}×{h}, {p} polarities, "
              f"{spec.n_classes} classes\n  needs: {spec.needs}{origin}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_process()
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "deploy": cmd_deploy,
                "export": cmd_export, "report": cmd_report,
                "sweep": cmd_sweep, "reproduce": cmd_reproduce, "datasets": cmd_datasets}
    try:
        return commands[args.command](args)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"sast {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
