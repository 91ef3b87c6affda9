"""Train the N-MNIST networks of snnTorch's and SpikingJelly's own tutorials: by their own
library (hard spikes forward, surrogate gradient backward) and, converted with
:func:`sast.convert`, by :func:`sast.train_model` (surrogate forward: baseline, SAST, and the
baseline after the firing-rate initialisation). Writes one JSON line per run to
``OUT/results.jsonl`` (a run already there is not trained again) and the table of
``docs/tutorial-nets.md`` to standard output.

    python docs/scripts/tutorial_nets.py --data ../shared/data/nmnist --out runs/tutorial-nets

The networks:

- **snnTorch** (its tutorial 7, "Neuromorphic datasets with Tonic + snnTorch"): Conv2d(2, 12, 5)
  → MaxPool2d(2) → Leaky → Conv2d(12, 32, 5) → MaxPool2d(2) → Leaky → Linear(800, 10) → Leaky,
  β = 0.5, arctan surrogate gradient;
- **SpikingJelly** (its model zoo's ``parametric_lif_net.NMNISTNet`` with ``LIFNode``, τ = 2,
  hard reset, arctan surrogate): conv + batch norm + LIF twice, dropout, Linear → LIF twice,
  a voting layer; ``channels`` 32 instead of its default 128, for a CPU.

Every run reads the same frames (``sast``'s own N-MNIST binning, ``time_bins`` steps), the same
seeded splits, the same loss (cross entropy of the output spike counts), Adam and batch size.
The tutorials' own losses (snnTorch's ``mse_count_loss``, SpikingJelly's MSE on rates) and
time steps (snnTorch's 1 ms frames, ~300 steps) are not used: one loss for all runs keeps the
comparison about the forward pass alone. SpikingJelly's batch norm trains in its own runs; the
conversion folds it (at initialisation, near the identity), so the converted runs have none.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

import sast
from sast.config import RunConfig
from sast.runs.splits import prepare_data
from sast.training.epoch import batch_loader, epoch_generator

SAST_RUNS = {
    "sast: baseline (surrogate forward)": {"method": "surrogate"},
    "sast: SAST": {"method": "sast"},
    "sast: baseline + firing-rate init": {"method": "surrogate", "init": "firing-rate"},
}


def snntorch_net() -> nn.Module:
    import snntorch as snn
    from snntorch import surrogate

    grad = surrogate.atan()
    return nn.Sequential(
        nn.Conv2d(2, 12, 5), nn.MaxPool2d(2),
        snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Conv2d(12, 32, 5), nn.MaxPool2d(2),
        snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Flatten(), nn.Linear(32 * 5 * 5, 10),
        snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, output=True),
    )


def spikingjelly_net() -> nn.Module:
    from spikingjelly.activation_based import functional, neuron, surrogate
    from spikingjelly.activation_based.model.parametric_lif_net import NMNISTNet

    net = NMNISTNet(channels=32, spiking_neuron=neuron.LIFNode,
                    surrogate_function=surrogate.ATan(), detach_reset=True)
    functional.set_step_mode(net, "m")
    return net


NETS = {"snnTorch tutorial 7": snntorch_net, "SpikingJelly NMNISTNet": spikingjelly_net}


def own_forward(library: str, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output spike counts [B, 10] of ``net``'s own (hard-spike) forward on x [T, B, ...]."""
    if library.startswith("snnTorch"):
        from snntorch import utils

        utils.reset(net)
        return torch.stack([net(x[t])[0] for t in range(x.shape[0])]).sum(0)
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    return net(x).sum(0)


def own_accuracy(library: str, net: nn.Module, data: sast.data.FrameSet) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for frames, labels in batch_loader(data, 64):
            x = sast.data.time_first(frames)
            correct += int((own_forward(library, net, x).argmax(1) == labels).sum())
    return correct / len(data)


def train_own(library: str, net: nn.Module, splits, args: argparse.Namespace, seed: int) -> dict:
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        for frames, labels in batch_loader(splits.train, args.batch_size,
                                           epoch_generator(seed, epoch)):
            optimizer.zero_grad(set_to_none=True)
            logits = own_forward(library, net, sast.data.time_first(frames))
            nn.functional.cross_entropy(logits, labels).backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    own = {"hard": own_accuracy(library, net, splits.test),
           "val_hard": own_accuracy(library, net, splits.val)}
    # the same trained weights, converted: sast's two modes of the network just trained
    both = sast.evaluate_model(sast.convert(net.eval()), splits.test)
    return {"surrogate_accuracy": both["surrogate"]["accuracy"],
            "hard_accuracy": own["hard"], "converted_hard_accuracy": both["hard"]["accuracy"],
            "val_hard_accuracy": own["val_hard"],
            "firing_rates_hard": both["firing_rates"]["hard"], "train_time_s": seconds}


def train_converted(net: nn.Module, splits, args: argparse.Namespace, seed: int,
                    options: dict, folder: Path) -> dict:
    converted = sast.convert(net)
    final = sast.train_model(
        converted, splits.train, val=splits.val, test=splits.test, epochs=args.epochs,
        lr=args.lr, batch_size=args.batch_size, rho=args.rho, seed=seed, out=folder,
        resume=True, progress=False, log=lambda *_: None, **options)
    rates = sast.evaluate_model(converted, splits.test)["firing_rates"]["hard"]
    return {"surrogate_accuracy": final["surrogate"]["accuracy"],
            "hard_accuracy": final["hard"]["accuracy"],
            "val_hard_accuracy": final["validation"]["hard"]["accuracy"],
            "firing_rates_hard": rates, "train_time_s": final["timing"]["total_train_time_s"]}


def runs(args: argparse.Namespace):  # noqa: ANN201
    for net_name in NETS:
        for seed in args.seeds:
            yield net_name, f"{net_name.split()[0]}: its own training", seed
            for label in SAST_RUNS:
                yield net_name, label, seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the N-MNIST folder (holding Train/)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--time-bins", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--rho", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = RunConfig(dataset="nmnist", data_root=args.data, time_bins=args.time_bins)
    results_file = args.out / "results.jsonl"
    done = {}
    if results_file.exists():
        for line in results_file.read_text().splitlines():
            row = json.loads(line)
            done[(row["network"], row["training"], row["seed"])] = row
    if not args.table_only:
        splits = prepare_data(cfg)
        args.out.mkdir(parents=True, exist_ok=True)
        for net_name, label, seed in runs(args):
            if (net_name, label, seed) in done:
                continue
            torch.manual_seed(seed)
            net = NETS[net_name]()
            start = time.perf_counter()
            if label.startswith("sast"):
                folder = args.out / f"{net_name.split()[0]}-{SAST_RUNS[label]['method']}-" \
                    f"{SAST_RUNS[label].get('init', 'default')}-seed{seed}"
                row = train_converted(net, splits, args, seed, dict(SAST_RUNS[label]), folder)
            else:
                row = train_own(net_name, net, splits, args, seed)
            row = {"network": net_name, "training": label, "seed": seed, **row,
                   "wall_s": time.perf_counter() - start,
                   "config": {k: v for k, v in vars(args).items() if k != "out"} | {
                       "data": str(args.data), "out": str(args.out)},
                   "splits": splits.manifest()}
            with results_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[(net_name, label, seed)] = row
            print(f"{net_name} · {label} · seed {seed}: hard {row['hard_accuracy']:.3f} "
                  f"surrogate {row['surrogate_accuracy']:.3f} ({row['wall_s']:.0f} s)",
                  flush=True)
    print_table(list(done.values()))


def print_table(rows: list[dict]) -> None:
    print("| network | training | seed | surrogate acc. | hard acc. | gap (pp) "
          "| hard firing rates | train time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    order = {name: i for i, name in enumerate(NETS)}
    for row in sorted(rows, key=lambda r: (order[r["network"]], r["training"], r["seed"])):
        gap = 100 * (row["surrogate_accuracy"] - row["hard_accuracy"])
        rates = ", ".join(f"{r:.3f}" for r in row["firing_rates_hard"])
        print(f"| {row['network']} | {row['training']} | {row['seed']} "
              f"| {row['surrogate_accuracy']:.3f} | {row['hard_accuracy']:.3f} | {gap:+.1f} "
              f"| {rates} | {row['train_time_s']:.0f} |")


if __name__ == "__main__":
    main()
