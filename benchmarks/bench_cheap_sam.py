"""What one training epoch costs with exact SAM, its cheaper variants and the plain baseline.

The N-MNIST gap regime's conv net (2×34×34 → conv16-LIF-pool → conv32-LIF-pool → 10 leaky
readout, sigmoid k = 2, T = 20, batch 64, Adam 1e-3) takes one epoch of ``--steps`` steps
(12: 720 training recordings / 64) on random events, with the step each variant takes at each
step (:func:`sast.training.steps.step_kind`): plain Adam, exact SAM (ρ = 0.05), SAM every 2nd or
4th step,
LookSAM every 4th step, and SAM only in the last 3 of 12 epochs (averaged over the run: 9 plain
epochs and 3 exact ones). The variants run round-robin in one process, epoch by epoch, for
``--rounds`` rounds; the report gives median epoch times and their ratio to the baseline.

Usage: ``python benchmarks/bench_cheap_sam.py [--rounds 5] [--steps 12]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sast.config import RunConfig
from sast.infra.runtime import tune_process
from sast.models import build_model
from sast.training.loop import make_optimizer
from sast.training.steps import KIND_STEPS, step_kind

REGIME = dict(dataset="nmnist", arch="nmnist-conv", channels=(16, 32), surrogate="sigmoid",
              slope=2.0, time_bins=20, batch_size=64, epochs=12, rho=0.05)
VARIANTS = {
    "baseline (Adam)": dict(method="surrogate"),
    "exact SAST": dict(method="sast"),
    "SAM every 2nd step": dict(method="sast", sam_interval=2),
    "SAM every 4th step": dict(method="sast", sam_interval=4),
    "LookSAM, exact every 4th step": dict(method="sast", sam_interval=4, sam_reuse="looksam"),
    "SAM in the last 3 epochs": dict(method="sast", sam_start_epoch=9),
}


def epoch_runner(cfg: RunConfig, x: torch.Tensor, y: torch.Tensor, steps: int):  # noqa: ANN201
    torch.manual_seed(0)
    model = build_model(cfg.arch, channels=cfg.channels, surrogate=cfg.surrogate,
                        slope=cfg.slope)
    optimizer = make_optimizer(cfg, model)
    epoch_count = [0]

    def run_epoch() -> None:
        # the last-epochs variant cycles through the run's epochs, so its median is the run's
        epoch = epoch_count[0] % cfg.epochs
        epoch_count[0] += 1
        for step in range(steps):
            KIND_STEPS[step_kind(cfg, epoch, step)](model, optimizer, x, y)

    return run_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    tuned = tune_process()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(20, 64, 2, 34, 34, generator=g) < 0.1).float()
    y = torch.randint(0, 10, (64,), generator=g)
    runners = {name: epoch_runner(RunConfig(**{**REGIME, **v}), x, y, args.steps)
               for name, v in VARIANTS.items()}
    for run in runners.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runners}
    last_epochs = "SAM in the last 3 epochs"
    for _ in range(args.rounds):
        for name, run in runners.items():
            for _ in range(12 if name == last_epochs else 1):  # a whole run's epochs
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["baseline (Adam)"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, process tuning "
          f"{tuned}, {args.rounds} rounds of one {args.steps}-step epoch\n")
    print("| variant | epoch time (s, median) | × baseline |\n|---|---|---|")
    for name, ts in times.items():
        value = statistics.mean(ts) if name == last_epochs else statistics.median(ts)
        print(f"| {name} | {value:.2f} | {value / base:.2f}× |")
    print(f"\n('{last_epochs}': mean over the run's 12 epochs, 9 plain and 3 exact)")


if __name__ == "__main__":
    main()
