"""sast's spiking nets against snnTorch, Norse and SpikingJelly: one training step and one
inference pass, each in fresh processes under the same process settings.

Two nets, each built by ``sast.models.build_model`` (seed 0) and rebuilt in every peer library
with the *same* synaptic weights (the sast model's Linear/Conv2d modules are copied) and the same
leaky readout (sast's ``LeakyReadout``), so that only the LIF neuron differs:

- A: ``nmnist-mlp``, 2·34·34 = 2312 → Linear 256 → LIF → leaky readout 10; T = 20, batch 128.
- B: ``dvsgesture-conv``, 2×32×32 → conv16-LIF-avgpool2 → conv32-LIF-avgpool2 → flatten →
  leaky readout 11; T = 16, batch 32.

Input: random event frames (Bernoulli(0.1) × a count 1–3, fixed seed), time-first
``[T, B, 2, H, W]``, the layout every implementation here takes directly.

Implementations (``--impls``):

- ``sast``: ``build_model`` as it stands (its default conv schedule: all T·B frames in one
  call, channels-last), trained in its "surrogate" spike mode (smooth spikes forward), inference in
  "hard" spike mode. ``sast-sam``: the same model, one ``sast.training.steps.sam_step`` with
  ``sast.optim.SAM`` around Adam (two forward–backward passes); train mode only.
  ``sast-compiled`` (only when named in ``--impls``: each worker compiles for about 30 s):
  the same model on the plain-autograd scan through ``torch.compile``, as ``sast train
  --compile true`` runs it; its compilation falls in the warm-up steps.
- ``snntorch``: ``snn.Leaky(beta=0.9, threshold=1, reset_mechanism="subtract",
  spike_grad=surrogate.sigmoid(slope=5))`` stepped over T in Python (snnTorch's only mode).
- ``norse``: Norse's box LIF (``lif_box_feed_forward_step``: no synaptic current, as sast's LIF)
  run over the time-first sequence by Norse's ``SNN`` base module (as its ``LIF`` module is);
  dt·τ_mem⁻¹ = 0.1 (β = 0.9), subtractive reset (``reset_subtract``), default SuperSpike
  surrogate (Norse has no sigmoid one). Its Euler step v ← v + 0.1·(I − v) scales the membrane
  by 0.1, so its threshold is 0.1 (the same spikes as ϑ = 1 on sast's scale).
- ``spikingjelly``: ``neuron.LIFNode(tau=10, decay_input=False, v_reset=None (soft reset),
  v_threshold=1, surrogate.Sigmoid(alpha=5), step_mode="m")`` — its multi-step CPU operator —
  with the synaptic layers in ``layer.SeqToANNContainer`` (all T·B frames in one call).
- ``dense``: sast's model with a ReLU in place of every LIF layer (no temporal dynamics): the
  cost of the synaptic layers alone.

The peers' synaptic layers run on all T·B frames at once (contiguous), the usual multi-step
pattern (SpikingJelly's own container does just that); sast runs its own default (the same, in
channels-last).

Cross-check (before any timing): every implementation's logits in hard-spike forward mode on one
input, against sast's (``spike_mode(model, "hard")``), with all synaptic weights ×4 (still the
same in every implementation) so that every hidden layer fires often enough for the check to see
the dynamics. snnTorch's subtractive Leaky is sast's dynamics exactly (u[t] = β·u[t−1] + I[t] −
ϑ·s[t−1]) and must agree to 1e-5. Norse's and SpikingJelly's subtractive resets act on the
membrane *before* the leak, u[t] = β·(u[t−1] − ϑ·s[t−1]) + I[t] (the reset is leaked: βϑ is
subtracted, not ϑ), so their logits differ from sast's; that difference is printed, not
asserted, next to their difference from a plain-torch recurrence of exactly that leaked-reset
form (0 when the explanation is right). Their reset-to-zero variants, u[t] = β·(1 − s[t−1])·u[t−1]
+ I[t], are sast's ``reset="zero"`` and those rows are asserted (1e-5). An exact row that fails
makes the script exit nonzero before any timing. (Hard-spike logits are a function of the spikes
alone, so an exact match shows as 0, and one flipped spike as ~1e-4 or more.)

Timing: one subprocess per (impl, net, mode, round), running this script with ``--worker``;
rounds interleaved (round r runs every impl once), ``--rounds`` of them (default 3). Each worker
applies the same process settings before anything else (torch threads, flush-denormal, glibc
``mallopt`` keeping large blocks on the heap; see ``apply_process_settings``), warms up until the
median of the last 5 step times moves < 5 % from the 5 before (or a cap), then reports the median
of ``--steps`` timed steps as JSON. The table gives the median over rounds.

- ``train``: zero_grad, forward, cross-entropy, backward, Adam step.
- ``infer``: forward under ``torch.no_grad()`` (sast in hard spike mode, peers' own forward).

Usage: ``python benchmarks/bench_peers.py [--rounds 3] [--steps 15] [--nets A,B]
[--impls sast,sast-sam,snntorch,norse,spikingjelly,dense] [--threads N] [--no-flush-denormal]
[--no-mallopt] [--json out.json] [--quick]``. Peers: ``pip install --no-deps norse spikingjelly
loguru`` (their declared torchvision/torchaudio dependencies are not needed for this and would
pull another torch). A peer that is not installed is reported and skipped.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sast.layers import (
    LIF,
    LeakyReadout,
    PerFrame,
    set_scan_implementation,
    set_spike_mode,
    spike_mode,
)
from sast.models import build_model

PEERS = ("snntorch", "norse", "spikingjelly")
DEFAULT_IMPLS = ("sast", "sast-sam", *PEERS, "dense")
IMPLS = (*DEFAULT_IMPLS, "sast-compiled")
MODES = ("train", "infer")
PEER_MODULES = {"snntorch": "snntorch", "norse": "norse", "spikingjelly": "spikingjelly"}
BETA, THRESHOLD, SLOPE = 0.9, 1.0, 5.0
EXACT_TOL = 1e-5
CHECK_GAIN = 4.0
"""The cross-check scales sast's synaptic weights by this (before they are copied, so every
implementation still has the same ones): at the initial scale the conv net's second LIF layer is
nearly silent (spike rate ~0.001) and a check would compare almost nothing; ×4 makes every hidden
layer fire 13–44 % of the time."""


@dataclass(frozen=True)
class NetSpec:
    arch: str
    time_steps: int
    batch: int
    input_shape: tuple[int, int, int]
    n_classes: int
    widths: dict = field(default_factory=dict)  # build_model overrides (hidden=, channels=)

    def build_sast(self, reset: str = "subtract", weight_gain: float = 1.0) -> nn.Module:
        """sast's model from seed 0; ``weight_gain`` scales its synaptic (not readout) layers."""
        torch.manual_seed(0)
        model = build_model(self.arch, self.input_shape, self.n_classes, reset=reset,
                            **self.widths)
        if weight_gain != 1.0:
            with torch.no_grad():
                for layer in model.children():
                    if isinstance(layer, PerFrame):
                        for p in layer.parameters():
                            p.mul_(weight_gain)
        return model

    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(1)
        shape = (self.time_steps, self.batch, *self.input_shape)
        events = (torch.rand(shape, generator=gen) < 0.1).float()
        x = events * torch.randint(1, 4, shape, generator=gen).float()
        y = torch.randint(0, self.n_classes, (self.batch,), generator=gen)
        return x, y


NETS = {
    "A": NetSpec("nmnist-mlp", 20, 128, (2, 34, 34), 10),
    "B": NetSpec("dvsgesture-conv", 16, 32, (2, 32, 32), 11),
}
TINY_NETS = {  # for the tests: the same structure, small
    "A": NetSpec("nmnist-mlp", 6, 4, (2, 8, 8), 10, {"hidden": (32,)}),
    "B": NetSpec("dvsgesture-conv", 5, 3, (2, 8, 8), 11, {"channels": (4, 8)}),
}


# ---------------------------------------------------------------------------------------------
# process settings: the same for every worker, every library


def apply_process_settings(threads: int, flush_denormal: bool = True,
                           mallopt: bool = True) -> dict:
    """Set torch's thread count, flush-denormal and glibc's malloc thresholds (large blocks stay
    on the heap instead of being mmap'ed and unmapped on every step); return what was set."""
    torch.set_num_threads(threads)
    settings: dict = {"threads": torch.get_num_threads(), "flush_denormal": False,
                      "mallopt": None}
    if flush_denormal:
        settings["flush_denormal"] = bool(torch.set_flush_denormal(True))
    if mallopt:
        # the setting `sast` commands apply (sast.infra.runtime): no mmap for large blocks, no heap
        # trimming, so freed activation buffers are reused instead of faulted in anew
        m_trim_threshold, m_mmap_max = -1, -4
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            settings["mallopt"] = "unavailable (not glibc)"
        else:
            settings["mallopt"] = {
                "M_MMAP_MAX": 0 if libc.mallopt(m_mmap_max, 0) else None,
                "M_TRIM_THRESHOLD": 2**31 - 1 if libc.mallopt(m_trim_threshold, 2**31 - 1)
                else None}
    return settings


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def installed(impl: str) -> bool:
    module = PEER_MODULES.get(impl)
    return module is None or importlib.util.find_spec(module) is not None


def peer_version(impl: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(impl)
    except PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------------------------------------
# the nets


def dense_twin(model: nn.Module) -> nn.Module:
    """The same network with every LIF layer replaced by a ReLU (as in bench_step.py)."""
    for name, child in model.named_children():
        if isinstance(child, LIF):
            setattr(model, name, nn.ReLU())
        else:
            dense_twin(child)
    return model


class AllFrames(nn.Module):
    """A stateless module on all T·B frames of ``x[T, B, ...]`` in one call."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class SnnTorchLIF(nn.Module):
    """snnTorch's Leaky stepped over the time-first sequence, from zero membrane."""

    def __init__(self, reset: str = "subtract") -> None:
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        self.leaky = snn.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism=reset,
                               spike_grad=surrogate.sigmoid(slope=SLOPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem = torch.zeros_like(x[0])
        spikes = []
        for x_t in x.unbind(0):
            spk, mem = self.leaky(x_t, mem)
            spikes.append(spk)
        return torch.stack(spikes)


class NorseLIFBox(nn.Module):
    """Norse's box LIF over the time-first sequence (Norse's ``SNN`` time loop)."""

    def __init__(self, reset: str = "subtract") -> None:
        super().__init__()
        from norse.torch.functional.lif_box import (
            LIFBoxFeedForwardState,
            LIFBoxParameters,
            lif_box_feed_forward_step,
        )
        from norse.torch.functional.reset import reset_subtract, reset_value
        from norse.torch.module.snn import SNN

        dt, tau_mem_inv = 1e-3, 100.0  # v ← v + dt·τ⁻¹·(I − v): β = 1 − 0.1 = 0.9
        gain = dt * tau_mem_inv  # the membrane is gain·(sast's membrane): threshold gain·ϑ
        p = LIFBoxParameters(
            tau_mem_inv=torch.as_tensor(tau_mem_inv), v_leak=torch.as_tensor(0.0),
            v_th=torch.as_tensor(gain * THRESHOLD), v_reset=torch.as_tensor(0.0),
            reset_method=reset_subtract if reset == "subtract" else reset_value,
        )

        def zero_state(x: torch.Tensor) -> LIFBoxFeedForwardState:
            return LIFBoxFeedForwardState(v=torch.zeros_like(x[0]))

        self.snn = SNN(lif_box_feed_forward_step, zero_state, p, dt=dt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.snn(x)[0]


class SpikingJellyLIF(nn.Module):
    """SpikingJelly's multi-step LIFNode; its state is reset on every call."""

    def __init__(self, reset: str = "subtract") -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        self.node = neuron.LIFNode(
            tau=1.0 / (1.0 - BETA), decay_input=False, v_threshold=THRESHOLD,
            v_reset=None if reset == "subtract" else 0.0,
            surrogate_function=surrogate.Sigmoid(alpha=SLOPE), step_mode="m",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.node.reset()
        return self.node(x)


class LeakedResetLIF(nn.Module):
    """Plain-torch hard-spike LIF whose subtractive reset is leaked, u[t] = β·(u[t−1] −
    ϑ·s[t−1]) + I[t]: what Norse's and SpikingJelly's soft resets compute (cross-check only)."""

    def __init__(self, reset: str = "subtract") -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.zeros_like(x[0])
        s = torch.zeros_like(x[0])
        spikes = []
        for x_t in x.unbind(0):
            v = u - THRESHOLD * s  # after the reset
            u = v - v / (1.0 / (1.0 - BETA)) + x_t  # then the leak (SpikingJelly's arithmetic)
            s = (u >= THRESHOLD).to(x.dtype)  # SpikingJelly fires at u = ϑ too
            spikes.append(s)
        return torch.stack(spikes)


NEURONS = {"snntorch": SnnTorchLIF, "norse": NorseLIFBox, "spikingjelly": SpikingJellyLIF,
           "leaked-reset": LeakedResetLIF}


def peer_net(sast_model: nn.Module, impl: str, reset: str = "subtract") -> nn.Sequential:
    """``sast_model``'s layers with its LIF layers replaced by ``impl``'s neurons: the same
    synaptic weights (copied), the same readout, stateless layers on all T·B frames at once."""
    layers: list[nn.Module] = []
    for child in sast_model.children():
        if isinstance(child, PerFrame):
            module = copy.deepcopy(child.module).to(memory_format=torch.contiguous_format)
            if impl == "spikingjelly":
                from spikingjelly.activation_based import layer

                layers.append(layer.SeqToANNContainer(module))
            else:
                layers.append(AllFrames(module))
        elif isinstance(child, LIF):
            layers.append(NEURONS[impl](reset))
        elif isinstance(child, LeakyReadout):
            layers.append(copy.deepcopy(child))
        else:
            raise TypeError(f"peer_net does not know the layer {type(child).__name__}")
    return nn.Sequential(*layers)


def build(impl: str, spec: NetSpec) -> nn.Module:
    model = spec.build_sast()
    if impl in ("sast", "sast-sam"):
        return model
    if impl == "sast-compiled":
        set_scan_implementation(model, "reference")
        return torch.compile(model, dynamic=False)
    if impl == "dense":
        return dense_twin(model)
    return peer_net(model, impl)


# ---------------------------------------------------------------------------------------------
# cross-check


@dataclass
class Check:
    impl: str
    variant: str
    reference: str
    max_diff: float
    max_logit: float
    exact: bool
    why: str = ""
    explained_diff: float | None = None  # vs the leaked-reset recurrence, for inexact rows

    @property
    def ok(self) -> bool:
        return not self.exact or self.max_diff <= EXACT_TOL


WHY_LEAKED_RESET = ("reset before the leak: u[t] = β·(u[t−1] − ϑ·s[t−1]) + I[t] subtracts βϑ, "
                    "sast subtracts ϑ")
CHECKS = (  # impl, reset of the peer, reset of sast's reference, exact?, why not
    ("snntorch", "subtract", "subtract", True, ""),
    ("norse", "subtract", "subtract", False,
     WHY_LEAKED_RESET + " (and Euler form v ← v + 0.1·(I − v), membrane ×0.1)"),
    ("norse", "zero", "zero", True, ""),
    ("spikingjelly", "subtract", "subtract", False, WHY_LEAKED_RESET + "; spikes at u ≥ ϑ"),
    ("spikingjelly", "zero", "zero", True, ""),
)


@torch.no_grad()
def cross_check(spec: NetSpec, impls: tuple[str, ...] = PEERS,
                gain: float = CHECK_GAIN) -> list[Check]:
    """Hard-spike logits of every peer (each reset variant of :data:`CHECKS`) against sast's on
    one input, with the synaptic weights of all of them scaled by ``gain``."""
    x, _ = spec.data()
    rows: list[Check] = []
    references: dict[str, torch.Tensor] = {}
    for impl, peer_reset, sast_reset, exact, why in CHECKS:
        if impl not in impls or not installed(impl):
            continue
        sast_model = spec.build_sast(reset=sast_reset, weight_gain=gain).eval()
        if sast_reset not in references:
            with spike_mode(sast_model, "hard"):
                references[sast_reset] = sast_model(x)
        ref = references[sast_reset]
        peer = peer_net(sast_model, impl, reset=peer_reset).eval()
        out = peer(x)
        explained = None
        if not exact:
            leaked = peer_net(sast_model, "leaked-reset").eval()(x)
            explained = float((out - leaked).abs().max())
        rows.append(Check(impl, f"reset={peer_reset}", f"sast reset={sast_reset!r}",
                          float((out - ref).abs().max()), float(ref.abs().max()), exact, why,
                          explained))
    return rows


@torch.no_grad()
def spike_rates(spec: NetSpec, gain: float = CHECK_GAIN) -> list[float]:
    """The hard-spike rate of each of sast's LIF layers on the cross-check's input."""
    model = spec.build_sast(weight_gain=gain).eval()
    set_spike_mode(model, "hard")
    rates: list[float] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: rates.append(float(out.mean())))
             for m in model.modules() if isinstance(m, LIF)]
    model(spec.data()[0])
    for h in hooks:
        h.remove()
    return rates


def print_checks(net: str, spec: NetSpec, rows: list[Check]) -> None:
    rates = ", ".join(f"{r:.3f}" for r in spike_rates(spec))
    print(f"\nCross-check, net {net} ({spec.arch}), hard spikes, synaptic weights ×{CHECK_GAIN:g}"
          f" (sast's hidden spike rates {rates}), logits vs sast:\n")
    print("| impl | variant | reference | max abs diff | max abs logit | verdict |")
    print("|---|---|---|---:|---:|---|")
    for r in rows:
        if r.exact:
            verdict = f"exact: {'PASS' if r.ok else 'FAIL'} (tol {EXACT_TOL:g})"
        else:
            verdict = (f"differs by design: {r.why}; vs that leaked-reset recurrence in plain "
                       f"torch: {r.explained_diff:.3g}")
        print(f"| {r.impl} | {r.variant} | {r.reference} | {r.max_diff:.3g} | "
              f"{r.max_logit:.3g} | {verdict} |")


# ---------------------------------------------------------------------------------------------
# timing


def make_step(impl: str, mode: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor):  # noqa: ANN201
    if mode == "infer":
        model.eval()
        if impl in ("sast", "sast-compiled"):
            set_spike_mode(model, "hard")

        def infer() -> None:
            with torch.no_grad():
                model(x)

        return infer
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if impl == "sast-sam":
        from sast.optim import SAM
        from sast.training.steps import sam_step

        sam = SAM(opt, rho=0.05)
        return lambda: sam_step(model, sam, x, y)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return train


def settle_and_time(step, steps: int, cap: int, window: int = 5, tol: float = 0.05  # noqa: ANN001
                    ) -> tuple[float, int]:
    """Warm up until the median of the last ``window`` step times is within ``tol`` of the
    median of the ``window`` before (or ``cap`` steps); then the median of ``steps`` timed
    steps, in ms, and the number of warm-up steps."""
    warm: list[float] = []
    while len(warm) < cap:
        t0 = time.perf_counter()
        step()
        warm.append(time.perf_counter() - t0)
        if len(warm) >= 2 * window:
            last = statistics.median(warm[-window:])
            before = statistics.median(warm[-2 * window:-window])
            if abs(last - before) <= tol * before:
                break
    timed = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        timed.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(timed), len(warm)


def worker(args: argparse.Namespace) -> None:
    settings = apply_process_settings(args.threads, not args.no_flush_denormal,
                                      not args.no_mallopt)
    impl, net, mode = args.worker
    spec = (TINY_NETS if args.tiny else NETS)[net]
    x, y = spec.data()
    step = make_step(impl, mode, build(impl, spec), x, y)
    ms, warm = settle_and_time(step, args.steps, args.warmup_cap)
    print(json.dumps({"net": net, "impl": impl, "mode": mode, "median_ms": ms,
                      "warmup_steps": warm, "timed_steps": args.steps, "settings": settings}))


def spawn(impl: str, net: str, mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, net, mode,
           "--steps", str(args.steps), "--warmup-cap", str(args.warmup_cap),
           "--threads", str(args.threads)]
    cmd += ["--no-flush-denormal"] * args.no_flush_denormal + ["--no-mallopt"] * args.no_mallopt
    cmd += ["--tiny"] * args.tiny
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {impl} {net} {mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def jobs(nets: list[str], impls: list[str], modes: list[str]) -> list[tuple[str, str, str]]:
    return [(impl, net, mode) for net in nets for mode in modes for impl in impls
            if not (impl == "sast-sam" and mode != "train")]


def markdown_table(medians: dict[tuple[str, str, str], float], nets: list[str],
                   impls: list[str], modes: list[str]) -> str:
    cols = [(net, mode) for net in nets for mode in modes]
    head = ["impl"]
    for net, mode in cols:
        head += [f"{net} {mode} ms", f"{net} {mode} ×fastest peer", f"{net} {mode} ×dense"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for impl in impls:
        cells = [impl]
        for net, mode in cols:
            ms = medians.get((net, impl, mode))
            peers = [medians[(net, p, mode)] for p in PEERS if (net, p, mode) in medians]
            dense = medians.get((net, "dense", mode))
            if ms is None:
                cells += ["—", "—", "—"]
                continue
            cells.append(f"{ms:.1f}")
            cells.append(f"{ms / min(peers):.2f}" if peers else "—")
            cells.append(f"{ms / dense:.2f}" if dense else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="A,B", help="comma-separated: A (MLP), B (conv)")
    parser.add_argument("--impls", default=",".join(DEFAULT_IMPLS),
                        help=f"comma-separated, of {','.join(IMPLS)}")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per worker")
    parser.add_argument("--warmup-cap", type=int, default=40, help="most warm-up steps")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--no-flush-denormal", action="store_true")
    parser.add_argument("--no-mallopt", action="store_true")
    parser.add_argument("--json", help="write the medians as a JSON list of rows here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 round, 3 timed steps, at most 2 warm-up steps")
    parser.add_argument("--skip-check", action="store_true", help="no cross-check")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "NET", "MODE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup_cap = 1, 3, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    nets = [n for n in args.nets.split(",") if n]
    impls = [i for i in args.impls.split(",") if i]
    modes = [m for m in args.modes.split(",") if m]
    for name, given, known in (("net", nets, NETS), ("impl", impls, IMPLS),
                               ("mode", modes, MODES)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise SystemExit(f"unknown {name}(s) {unknown}; expected some of {list(known)}")
    specs = TINY_NETS if args.tiny else NETS
    settings = apply_process_settings(args.threads, not args.no_flush_denormal,
                                      not args.no_mallopt)
    print(f"torch {torch.__version__}, python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("peers: " + ", ".join(f"{p} {peer_version(p)}" for p in PEERS))
    print(f"process settings (every worker): {json.dumps(settings)}")
    missing = [i for i in impls if not installed(i)]
    for impl in missing:
        print(f"{impl}: not installed, skipped")
    impls = [i for i in impls if i not in missing]

    if not args.skip_check:
        failed = []
        for net in nets:
            rows = cross_check(specs[net], tuple(i for i in impls if i in PEERS))
            print_checks(net, specs[net], rows)
            failed += [f"{net}/{r.impl}/{r.variant}" for r in rows if not r.ok]
        if failed:
            print(f"\nFAIL: exact cross-checks off by more than {EXACT_TOL:g}: {failed}",
                  file=sys.stderr)
            return 1

    times: dict[tuple[str, str, str], list[float]] = {}
    todo = jobs(nets, impls, modes)
    for r in range(args.rounds):
        order = todo[r % len(todo):] + todo[:r % len(todo)]  # rotate who goes first
        for impl, net, mode in order:
            row = spawn(impl, net, mode, args)
            times.setdefault((net, impl, mode), []).append(row["median_ms"])
            print(f"  round {r + 1}/{args.rounds} {net} {impl:<13} {mode:<5} "
                  f"{row['median_ms']:8.1f} ms (warm-up {row['warmup_steps']} steps)",
                  file=sys.stderr, flush=True)
    medians = {key: statistics.median(v) for key, v in times.items()}
    print(f"\nMedian step time (ms) over {args.rounds} round(s) of fresh processes, "
          f"{args.steps} timed steps each; A = {specs['A'].arch} T={specs['A'].time_steps} "
          f"batch {specs['A'].batch}, B = {specs['B'].arch} T={specs['B'].time_steps} "
          f"batch {specs['B'].batch}:\n")
    print(markdown_table(medians, nets, impls, modes))
    if args.json:
        rows = [{"net": net, "impl": impl, "mode": mode, "median_ms": ms}
                for (net, impl, mode), ms in medians.items()]
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
