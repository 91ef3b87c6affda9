"""What each ``sast`` sub-command does with its parsed arguments (``cmd_<name>``): it calls
the library and prints what the user needs to read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sast.cli.options import resolve_config
from sast.config import (
    RunConfig,
)


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
    from sast.infra import distributed
    from sast.training.loop import fit
    from sast.training.steps import TrainingDiverged

    if args.nir_dt is not None and args.nir is None:
        raise ValueError("--nir-dt is the time step of a --nir graph; pass --nir PATH too")
    cfg = resolve_config(args)
    out = args.out or default_out(cfg)
    if args.resume:
        from sast.runs.folder import RunFolder, read_json

        if not RunFolder(out).config.exists():
            raise FileNotFoundError(f"{out} holds no run to resume (no config.json); drop "
                                    "--resume to start one there")
        cfg = resolve_config(args, base=read_json(out / "config.json"))
    try:
        if args.nir is not None:
            final = _train_nir(cfg, args, out)
        else:
            final = fit(cfg, out, resume=args.resume, progress=not args.no_progress)
    except TrainingDiverged as err:
        print(f"sast train: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        from sast.runs.folder import RunFolder, read_json

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


def _train_nir(cfg: RunConfig, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """``sast train --nir PATH``: the graph's network, trained as ``cfg`` says."""
    import hashlib

    from sast.interop.nir_import import from_nir
    from sast.training.model import train_network_on_dataset

    net = from_nir(args.nir, dt=args.nir_dt)
    description = {"name": f"NIR graph {args.nir.name}", "source": "nir",
                   "file": str(args.nir), "dt": args.nir_dt,
                   "sha256": hashlib.sha256(args.nir.read_bytes()).hexdigest()}
    return train_network_on_dataset(cfg, net, out, description, resume=args.resume,
                                    progress=not args.no_progress)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sast.evaluation.accuracy import DROP_LEVELS
    from sast.protocol.evaluate import evaluate_run

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
        from sast.evaluation.attribution import summarise

        print("  attribution (test part):\n" + summarise(written["attribution.json"]))
    for name in written:
        if name != "evaluation.json":
            print(f"  wrote {args.run_dir / name}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from sast.protocol.deploy import deploy_run

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
    from sast.protocol.export import export_run

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
    from sast.study.report import write_report

    path = write_report(args.run_dirs, args.out)
    print(f"wrote {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from sast.study.runner import describe, differing_fields, run_sweep
    from sast.study.sweep import load_sweep

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

    from sast.study.reproduce import reproduce

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


