"""One training run on several processes: ``torchrun --nproc-per-node N -m sast train …``.

torchrun starts N copies of the command with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. :func:`process_group` reads them and
starts the process group (``gloo`` on CPU; ``nccl`` on CUDA, rank r on ``cuda:LOCAL_RANK``),
once per process: it is destroyed when the process exits, so several runs trained in one
process share it (PyTorch cannot reliably start the default group again after destroying it,
pytorch/pytorch#55967). Without these variables (or with ``WORLD_SIZE=1``) nothing here does
anything and training is the one-process code path, bit for bit. Otherwise the run is the
one-process run, up to float rounding:

**Batches.** ``batch_size`` B is the *global* batch. Every rank builds the epoch's shuffled
order from (seed, epoch, stream) alone (:func:`sast.training.epoch.epoch_generator`), so all ranks
cut
the same global batches; rank r of N takes the contiguous block r of each
(:func:`shard`), B/N samples. B must be divisible by N (:meth:`Context.check_batch_size`
refuses it otherwise, naming ``batch_size``). A last partial batch of B' < B samples is split
as evenly as possible (blocks of ⌈B'/N⌉ or ⌊B'/N⌋); when B' < N some rank would get no sample,
and that batch is dropped on every rank (the one deviation from one process; it never happens
when the training part holds a multiple of B, or a remainder of at least N). SAM's
``sam_policy: independent`` draws its second minibatch the same way from its own streams: each
rank descends on its block of the one global second batch a single process would use.

**Gradients.** Rank r computes the mean loss over its n_r samples and its gradient g_r; one
all-reduce (sum) of [n_r·g_r, n_r] gives every rank the gradient of the mean loss over the
global batch,

    g = Σ_r n_r·g_r / Σ_r n_r,

exact for unequal blocks too (a last partial batch). :func:`average_gradients` runs after
*every* backward pass of training (:func:`sast.training.steps._forward_backward`): SAM's ascent
pass at
w and its descent pass at w + ε alike. Every rank then holds the same g, takes the same
ε = ρ·g/‖g‖ and the same base-optimiser step, so the weights stay identical on every rank
(they are broadcast from rank 0 once, before the first step: :func:`broadcast_model`). The loss
of each pass is averaged the same way before it is checked, so a NaN or infinite loss stops
every rank at the same step with the same message.

**Batch norm.** Each rank normalises with its own block's statistics (no SyncBatchNorm), as
DistributedDataParallel does, so a ``norm: batch`` run is not the one-process run; the running
statistics are averaged over the ranks after every epoch (:func:`average_batchnorm_statistics`),
before validation and the checkpoint.

**Metrics, files, evaluation.** The epoch's training loss and accuracy are summed over the ranks
(:func:`sum_over_ranks`). Only rank 0 takes the run folder's lock and writes it (config,
checkpoints, metrics, ``final.json``) and shows progress bars; the other ranks read it (to
resume; a barrier holds rank 0's first write until every rank has) and write nothing.
Validation and the final evaluation are rank 0's alone (its weights are every rank's): the
other ranks wait for it in the next epoch's first collective, and end when training ends.
:func:`sast.training.loop.fit` returns ``final.json`` on rank 0, ``{}`` on the others. A run may be
resumed with another number of processes (or with one): the checkpoint holds no trace of it.
An error on one rank ends that process; torchrun then stops the others.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
"""What torchrun sets for every process it starts."""

TIMEOUT = datetime.timedelta(minutes=60)
"""How long a collective waits for the slowest rank before it fails."""


@dataclass(frozen=True)
class Context:
    """This process's place in a distributed run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run folder."""
        return self.rank == 0

    def check_batch_size(self, batch_size: int) -> None:
        """``ValueError`` naming ``batch_size`` when it does not split into equal blocks."""
        if batch_size % self.world_size:
            nearest = batch_size - batch_size % self.world_size or self.world_size
            raise ValueError(
                f"batch_size (--batch-size) {batch_size} is the global batch and must be "
                f"divisible by the number of processes, {self.world_size}: each takes an equal "
                f"block (e.g. --batch-size {nearest})")

    def describe(self) -> dict[str, object]:
        """What ``env.json`` records about the run's processes."""
        return {"world_size": self.world_size, "backend": self.backend}


_current: Context | None = None


def current() -> Context | None:
    """The distributed run this process is part of (inside :func:`process_group`), or None."""
    return _current


def is_main() -> bool:
    """Whether this process writes the run folder: True in one process and on rank 0."""
    return _current is None or _current.is_main


def launched_rank() -> int:
    """This process's rank as torchrun set it in the environment (0 when not launched so)."""
    return int(os.environ.get("RANK", "0"))


def _from_environment() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's variables; None in one process."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return None
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start "
                           "distributed runs with torchrun")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


@contextmanager
def process_group(device: torch.device) -> Iterator[Context | None]:
    """The distributed run of this process, for the block: None when the environment names
    none (one process). Starts the process group if none is (gloo for a CPU ``device``, nccl
    for CUDA, with this rank on ``cuda:LOCAL_RANK``) and destroys it when the process exits; a
    process group already started (by an earlier run, or by the caller) is used as it is."""
    global _current
    launched = _from_environment()
    if launched is None and not (dist.is_initialized() and dist.get_world_size() > 1):
        yield None
        return
    rank, world, local = launched if launched is not None else (
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"rank {rank} has LOCAL_RANK {local} but this machine has "
                               f"{torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT,
                                **({"device_id": device} if device.type == "cuda" else {}))
        atexit.register(_destroy)
    ctx = Context(dist.get_rank(), dist.get_world_size(), local, device,
                  str(dist.get_backend()))
    previous, _current = _current, ctx
    try:
        yield ctx
    finally:
        _current = previous


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """``device`` for this rank: ``cuda:LOCAL_RANK`` in a distributed CUDA run."""
    return _current.device if _current is not None and device.type == "cuda" else device


def barrier() -> None:
    """Wait until every rank is here (nothing in one process)."""
    if _current is not None:
        dist.barrier()


def describe() -> dict[str, object]:
    """What ``env.json`` records about a distributed run's processes ({} in one process)."""
    return {} if _current is None else _current.describe()


def shard(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous block of the global ``batch``: blocks of ⌈n/N⌉ samples for
    the first n mod N ranks, ⌊n/N⌋ for the rest, in order, disjoint, covering ``batch``.

    >>> [shard(list(range(7)), r, 3) for r in range(3)]
    [[0, 1, 2], [3, 4], [5, 6]]
    """
    q, extra = divmod(len(batch), world_size)
    start = rank * q + min(rank, extra)
    return list(batch[start:start + q + (rank < extra)])


class ShardedBatches:
    """This rank's blocks of the global batches of ``batches`` (a ``BatchSampler``); a global
    batch smaller than the world size is skipped on every rank (see the module docstring)."""

    def __init__(self, batches: BatchSampler, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if len(batch) >= self.world_size:
                yield shard(batch, self.rank, self.world_size)

    def __len__(self) -> int:
        n, size = len(self.batches.sampler), self.batches.batch_size
        last = n % size
        short = not self.batches.drop_last and 0 < last < self.world_size
        return len(self.batches) - short


def batch_shard() -> tuple[int, int] | None:
    """(rank, world size) of this process's block of every training batch; None in one
    process."""
    return None if _current is None else (_current.rank, _current.world_size)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def average_gradients(model: nn.Module, n: int) -> None:
    """Replace the gradients of ``model``'s parameters by g = Σ_r n_r·g_r / Σ_r n_r over the
    ranks, where this rank's gradient is of the mean loss over its ``n`` samples: one
    all-reduce of a flat vector. A parameter without a gradient on every rank keeps none."""
    if _current is None:
        return
    params = _params(model)
    ref = params[0]
    parts = [p.grad.reshape(-1) * n if p.grad is not None
             else torch.zeros(p.numel(), dtype=ref.dtype, device=ref.device) for p in params]
    flags = torch.tensor([p.grad is not None for p in params] + [n], dtype=ref.dtype,
                         device=ref.device)
    flat = torch.cat([*(part.to(ref.dtype) for part in parts), flags])
    dist.all_reduce(flat)
    total = flat[-1]
    offset = 0
    for p, has in zip(params, flat[-1 - len(params):-1].tolist(), strict=True):
        block = flat[offset:offset + p.numel()]
        offset += p.numel()
        p.grad = (block / total).view_as(p).to(p.dtype) if has else None


def mean_over_ranks(value: float, n: int) -> float:
    """The mean over the global batch of a per-rank mean ``value`` over ``n`` samples
    (``value`` itself in one process); NaN or infinite when it is on any rank."""
    if _current is None:
        return value
    t = torch.tensor([value * n if n else 0.0, float(n)], dtype=torch.float64,
                     device=_current.device)
    dist.all_reduce(t)
    return float(t[0] / t[1])


def sum_over_ranks(*values: float) -> tuple[float, ...]:
    """Each of ``values`` summed over the ranks (``values`` itself in one process)."""
    if _current is None:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_current.device)
    dist.all_reduce(t)
    return tuple(t.tolist())


@torch.no_grad()
def broadcast_model(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (before the first step)."""
    if _current is None:
        return
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, src=0)


@torch.no_grad()
def average_batchnorm_statistics(model: nn.Module) -> None:
    """The mean over the ranks of each batch-norm layer's running mean and variance."""
    if _current is None:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            for t in (m.running_mean, m.running_var):
                dist.all_reduce(t)
                t.div_(_current.world_size)
