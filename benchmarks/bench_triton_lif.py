"""Time the fused Triton LIF scan against the PyTorch scan and SpikingJelly on a CUDA device.

Two parts, every variant timed round-robin in one process (medians, CUDA-synchronised):

1. The scan alone, forward + backward, at the sizes of the two networks' first LIF layers:
   Triton kernels (``sast.kernels.triton_lif``) | the PyTorch scan (``SAST_LIF_BACKEND=torch``) |
   SpikingJelly's multi-step ``LIFNode`` on its fastest CUDA backend (triton or cupy), where
   installed.
2. One training step (forward, cross-entropy, backward, Adam) of ``build_model("nmnist-mlp")``
   (T = 20, batch 128) and ``build_model("dvsgesture-conv")`` (T = 16, batch 32): Triton scan |
   PyTorch scan | the same network with SpikingJelly LIF nodes | the dense twin (ReLU in place of
   every LIF layer, as in ``bench_step.py``).

SpikingJelly's node is set up with the same dynamics where it can be: no input decay, soft
(subtract) reset, τ = 1/(1 − β), a sigmoid surrogate of the same slope.

Usage: ``python benchmarks/bench_triton_lif.py [--quick] [--reps 30] [--json out.json]``.
Without a CUDA device it prints "no CUDA device: nothing measured" and exits 0
(``--dry-run-cpu`` runs the harness on the CPU instead, where every sast variant is the PyTorch
scan: a check of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

from sast.layers import LIF
from sast.models import build_model
from sast.neuron import lif_scan

DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import dense_twin  # noqa: E402


@contextlib.contextmanager
def lif_backend(name: str | None) -> Iterator[None]:
    """Set ``SAST_LIF_BACKEND`` for the duration (``None``: leave it as it is)."""
    old = os.environ.get("SAST_LIF_BACKEND")
    if name is not None:
        os.environ["SAST_LIF_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SAST_LIF_BACKEND", None)
        else:
            os.environ["SAST_LIF_BACKEND"] = old


def spikingjelly_node(beta: float, threshold: float, slope: float) -> tuple[nn.Module, str]:
    """A multi-step SpikingJelly LIF node on its fastest working backend; raises when there is
    none (not installed, no cupy, ...). SpikingJelly < 2 takes ``backend=`` (triton where it
    has one, else cupy); SpikingJelly 2 picks its CUDA implementation itself ("auto")."""
    import inspect

    from spikingjelly.activation_based import neuron, surrogate

    kwargs = dict(tau=1.0 / (1.0 - beta), decay_input=False, v_threshold=threshold,
                  v_reset=None, surrogate_function=surrogate.Sigmoid(alpha=slope), step_mode="m")
    if "backend" in inspect.signature(neuron.LIFNode.__init__).parameters:
        backends = ("triton", "cupy") if DEVICE == "cuda" else ("torch",)
    else:
        backends = ("auto",)
    errors = []
    for backend in backends:
        try:
            extra = {} if backend == "auto" else {"backend": backend}
            node = neuron.LIFNode(**kwargs, **extra).to(DEVICE)
            x = torch.randn(4, 2, 8, device=DEVICE, requires_grad=True)
            node(x).sum().backward()
            node.reset()
            return node, backend
        except Exception as exc:  # unsupported backend, cupy missing, ...
            errors.append(f"{backend}: {type(exc).__name__}: {exc}".splitlines()[0])
    raise RuntimeError("; ".join(errors))


class SJLayer(nn.Module):
    """A SpikingJelly node in place of a sast LIF layer (state reset before every call)."""

    def __init__(self, lif: LIF) -> None:
        super().__init__()
        self.node, self.backend = spikingjelly_node(float(lif.beta), float(lif.threshold),
                                                    float(lif.slope))

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        self.node.reset()
        return self.node(current)


def sj_twin(model: nn.Module) -> nn.Module:
    for name, child in model.named_children():
        if isinstance(child, LIF):
            setattr(model, name, SJLayer(child))
        else:
            sj_twin(child)
    return model


def timed(fns: dict[str, Callable[[], None]], reps: int, warmup: int) -> dict[str, float]:
    """Median milliseconds of each function, run round-robin, synchronised around each call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def scan_part(shape: tuple[int, ...], reps: int, warmup: int,
              notes: list[str]) -> dict[str, float]:
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = (0.3 + 0.8 * torch.randn(shape, device=DEVICE, generator=gen)).requires_grad_()
    g = torch.randn(shape, device=DEVICE, generator=gen)

    def ours(backend: str) -> Callable[[], None]:
        def run() -> None:
            with lif_backend(backend):
                s, _ = lif_scan(x, 0.9, 1.0, "sigmoid", "surrogate", slope=5.0)
            s.backward(g)
            x.grad = None
        return run

    with lif_backend("triton"):
        s_tr, u_tr = lif_scan(x, 0.9, 1.0, "sigmoid", "surrogate", slope=5.0)
    with lif_backend("torch"):
        s_pt, u_pt = lif_scan(x, 0.9, 1.0, "sigmoid", "surrogate", slope=5.0)
    notes.append(f"scan {list(shape)}: max |Δs| triton vs torch = "
                 f"{(s_tr - s_pt).abs().max().item():.2e}, max |Δu| = "
                 f"{(u_tr - u_pt).abs().max().item():.2e}")
    fns = {"sast, Triton kernels": ours("triton"), "sast, PyTorch scan": ours("torch")}
    try:
        node, backend = spikingjelly_node(0.9, 1.0, 5.0)

        def sj() -> None:
            node.reset()
            node(x).backward(g)
            x.grad = None

        fns[f"SpikingJelly LIFNode ({backend})"] = sj
    except Exception as exc:
        notes.append(f"SpikingJelly skipped: {exc}")
    return timed(fns, reps, warmup)


def step_part(arch: str, x: torch.Tensor, y: torch.Tensor, reps: int, warmup: int,
              notes: list[str]) -> dict[str, float]:
    def model(kind: str) -> nn.Module:
        torch.manual_seed(0)
        m = build_model(arch)
        if kind == "dense":
            m = dense_twin(m)
        elif kind == "sj":
            m = sj_twin(m)
        return m.to(DEVICE)

    def step_of(m: nn.Module, backend: str | None) -> Callable[[], None]:
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)

        def step() -> None:
            with lif_backend(backend):
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(m(x), y).backward()
                opt.step()
        return step

    fns = {
        "sast, Triton kernels": step_of(model("sast"), "triton"),
        "sast, PyTorch scan": step_of(model("sast"), "torch"),
    }
    try:
        fns["sast net, SpikingJelly LIF nodes"] = step_of(model("sj"), None)
    except Exception as exc:
        notes.append(f"{arch}: SpikingJelly skipped: {exc}")
    fns["dense twin (ReLU, no LIF dynamics)"] = step_of(model("dense"), None)
    return timed(fns, reps, warmup)


def table(title: str, medians: dict[str, float], reference: str) -> str:
    base = medians[reference]
    rows = [f"\n**{title}**\n", "| variant | ms (median) | vs " + reference + " |",
            "|---|---:|---:|"]
    rows += [f"| {name} | {ms:.3f} | {ms / base:.2f}× |" for name, ms in medians.items()]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, for a smoke run")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 30; 5 quick)")
    parser.add_argument("--json", help="also write the medians to this file")
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="run the harness on the CPU (the PyTorch scan only): no measurement")
    args = parser.parse_args()
    global DEVICE
    from sast.kernels.triton_lif import triton_available

    if args.dry_run_cpu:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 0
    elif not triton_available():
        print("Triton cannot be imported: nothing measured (pip install 'sast[cuda]')")
        return 0

    reps = args.reps or (5 if args.quick else 30)
    warmup = 2 if args.quick else 5
    torch.backends.cudnn.benchmark = True
    if DEVICE == "cuda":
        import triton

        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton "
              f"{triton.__version__}, {reps} repetitions")
    else:
        print(f"DRY RUN on the CPU (every sast variant is the PyTorch scan), {reps} repetitions")
    notes: list[str] = []
    results: dict[str, dict[str, float]] = {}
    out: list[str] = []

    for name, shape in (("scan alone, N-MNIST MLP layer [20, 128, 256]", (20, 128, 256)),
                        ("scan alone, DVS-Gesture first conv layer [16, 32, 16, 32, 32]",
                         (16, 32, 16, 32, 32))):
        try:
            results[name] = scan_part(shape, reps, warmup, notes)
            out.append(table(name + ", forward + backward", results[name],
                             "sast, PyTorch scan"))
        except Exception as exc:
            notes.append(f"{name}: failed: {type(exc).__name__}: {exc}")

    gen = torch.Generator().manual_seed(0)
    for name, arch, shape, classes in (
        ("N-MNIST MLP, T=20, batch 128", "nmnist-mlp", (20, 128, 2, 34, 34), 10),
        ("DVS-Gesture conv net, T=16, batch 32", "dvsgesture-conv", (16, 32, 2, 32, 32), 11),
    ):
        x = (torch.rand(shape, generator=gen) < 0.05).float().to(DEVICE)
        y = torch.randint(0, classes, (shape[1],), generator=gen).to(DEVICE)
        try:
            results[name] = step_part(arch, x, y, reps, warmup, notes)
            out.append(table(name + ", one training step", results[name],
                             "dense twin (ReLU, no LIF dynamics)"))
        except Exception as exc:
            notes.append(f"{name}: failed: {type(exc).__name__}: {exc}")

    print("\n".join(out))
    if notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in notes))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results_ms": results, "notes": notes}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
