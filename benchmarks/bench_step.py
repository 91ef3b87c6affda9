"""Time one training step (forward, cross-entropy, backward, Adam step) side by side.

Two networks, each in several variants, timed round-robin in one process so that every variant
sees the same machine conditions; the report gives medians and ratios:

- N-MNIST MLP (2312 → 256 LIF → 10 leaky readout), T = 20, batch 128:
  fused LIF scan (default) | plain-autograd reference scan | the same layers without LIF
  dynamics (ReLU in place of every LIF layer).
- DVS-Gesture conv net (2×32×32 → conv16-LIF-pool → conv32-LIF-pool → 11), T = 16, batch 32:
  the default (fused scan, all T·B frames in one convolution, channels-last) | fused scan with
  the convolutions step by step | reference scan | the dense network without LIF dynamics run
  the default PyTorch way (all frames at once, contiguous) | with ``--compile``, the
  torch.compile'd variants too (each costs tens of seconds to compile).

The process runs under ``sast``'s own settings (:func:`sast.infra.runtime.tune_process`: flushed
denormals, large blocks kept on the heap), as ``sast`` commands and ``fit`` do.

Usage: ``python benchmarks/bench_step.py [--reps 15] [--compile] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from sast.infra.runtime import tune_process
from sast.layers import LIF, set_scan_implementation
from sast.models import build_model


def dense_twin(model: nn.Module) -> nn.Module:
    """The same network with every LIF layer replaced by a ReLU (no temporal dynamics)."""
    for name, child in model.named_children():
        if isinstance(child, LIF):
            setattr(model, name, nn.ReLU())
        else:
            dense_twin(child)
    return model


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):  # noqa: ANN201
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def build(arch: str, *, impl: str = "fused", schedule: str = "all", channels_last: bool = True,
          dense: bool = False, compiled: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(arch, conv_schedule=schedule, channels_last=channels_last)
    set_scan_implementation(model, impl)
    if dense:
        model = dense_twin(model)
    if compiled:
        model = torch.compile(model, dynamic=False)
    return model


def run(variants: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, reps: int,
        warmup: int = 3) -> dict[str, float]:
    steps = {name: make_step(m, x, y) for name, m in variants.items()}
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def report(title: str, medians: dict[str, float], reference: str) -> None:
    print(f"\n{title}")
    base = medians[reference]
    for name, ms in medians.items():
        print(f"  {name:<50} {ms:8.1f} ms   {ms / base:5.2f}× {reference}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd variants")
    parser.add_argument("--json", help="also write the medians to this file")
    args = parser.parse_args()
    settings = tune_process()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, process settings {settings}")
    gen = torch.Generator().manual_seed(0)

    x = (torch.rand(20, 128, 2, 34, 34, generator=gen) < 0.05).float()
    y = torch.randint(0, 10, (128,), generator=gen)
    mlp = run({
        "fused scan": build("nmnist-mlp"),
        "reference scan": build("nmnist-mlp", impl="reference"),
        "dense (no LIF dynamics)": build("nmnist-mlp", dense=True),
    }, x, y, args.reps)
    report("N-MNIST MLP, T=20, batch 128, one training step (median)", mlp,
           "dense (no LIF dynamics)")

    x = (torch.rand(16, 32, 2, 32, 32, generator=gen) < 0.05).float()
    y = torch.randint(0, 11, (32,), generator=gen)
    variants = {
        "default: fused, all frames at once, channels-last": build("dvsgesture-conv"),
        "fused, step by step, channels-last": build("dvsgesture-conv", schedule="step"),
        "reference scan": build("dvsgesture-conv", impl="reference"),
        "dense, all frames at once (plain PyTorch)": build(
            "dvsgesture-conv", channels_last=False, dense=True),
    }
    if args.compile:
        variants["compiled: reference, channels-last"] = build(
            "dvsgesture-conv", impl="reference", compiled=True)
        variants["compiled dense, all frames at once"] = build(
            "dvsgesture-conv", channels_last=False, dense=True, compiled=True)
    conv = run(variants, x, y, args.reps)
    report("DVS-Gesture conv net, T=16, batch 32, one training step (median)", conv,
           "dense, all frames at once (plain PyTorch)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"mlp_ms": mlp, "conv_ms": conv}, fh, indent=2)


if __name__ == "__main__":
    main()
