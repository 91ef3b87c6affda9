"""The ``sast`` argument parser: one sub-parser per command (:func:`build_parser`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sast.cli.options import (
    _add_config_options,
    _bits_list,
    _float_tuple,
    _leak_bits,
    _membrane_format,
)
from sast.config import (
    DEVICES,
)
from sast.data.corruptions import CORRUPTIONS


def _add_train(sub: argparse._SubParsersAction) -> None:
    """``sast train``."""
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
    train.add_argument("--nir", type=Path, metavar="PATH",
                       help="train the network of this NIR graph (its layers, weights and "
                       "neuron constants; read by sast.from_nir) instead of --arch, on the "
                       "dataset and with the method and options given")
    train.add_argument("--nir-dt", type=float, metavar="SECONDS",
                       help="the simulation step the --nir graph's time constants assume "
                       "(default: the dt in its metadata)")
    _add_config_options(train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    """``sast evaluate``."""
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


def _add_deploy(sub: argparse._SubParsersAction) -> None:
    """``sast deploy``."""
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


def _add_export(sub: argparse._SubParsersAction) -> None:
    """``sast export``."""
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


def _add_report(sub: argparse._SubParsersAction) -> None:
    """``sast report``."""
    report = sub.add_parser(
        "report", help="write a Markdown report with tables and figures from run folders",
        description="Write OUT/report.md and OUT/figures/*.png from finished run folders: "
        "runs whose configs differ only in the seed are grouped (mean ± std over seeds).",
    )
    report.add_argument("run_dirs", type=Path, nargs="+", help="run folders")
    report.add_argument("--out", type=Path, default=Path("report"),
                        help="output folder (default: report)")


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    """``sast sweep``."""
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


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    """``sast reproduce``."""
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sast",
        description="Sharpness-Aware Surrogate Training of spiking neural networks: train "
        "with smooth surrogate spikes (optionally with SAM), evaluate with hard spikes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_deploy(sub)
    _add_export(sub)
    _add_report(sub)
    _add_sweep(sub)
    _add_reproduce(sub)
    sub.add_parser("datasets", help="list the datasets and what each needs",
                   description="List the datasets sast can read and what each needs.")
    return parser
