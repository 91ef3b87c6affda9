"""The Ray backend of the sweep runner: each run of a sweep is one Ray task.

``sast sweep GRID --backend ray`` without an address starts a private Ray instance on this
machine (all its cores, no dashboard) and stops it when the sweep ends. With ``--address``
it connects to an existing cluster and leaves it running. On a cluster two things must hold
on every node, because a task trains in whichever node Ray places it:

* ``sast`` is importable in the Python environment Ray's workers use (install it there, or
  ship it with a Ray runtime environment);
* the sweep folder is on a file system every node can reach (NFS, a shared volume, ...):
  runs write their checkpoints and results there, and the driver reads them back to build
  the results table. Give the sweep an absolute ``out`` path that is the same on every node.

Connecting to a cluster that uses Ray's token authentication needs its token here, as Ray's
documentation describes.

The grid's ``resources`` (``num_cpus``, default 1; ``num_gpus``, default 0) are what Ray
reserves for each run. A fractional ``num_gpus`` such as 0.25 lets several small runs share
one GPU; with ``num_gpus: 0`` the run sees no GPU, so that runs Ray did not give a GPU do
not crowd onto one anyway.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from sast.study.execute import Submit, Task, execute_run

MISSING_RAY = "the Ray backend needs Ray: pip install 'sast[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, imported only when the Ray backend is used (it is an optional
    dependency), with an actionable error when it is not installed."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(MISSING_RAY) from err
    return ray


def task_options(resources: dict[str, float]) -> dict[str, Any]:
    """Ray task options for one run from the grid's ``resources``.

    >>> task_options({"num_cpus": 2, "num_gpus": 0.5})
    {'num_cpus': 2, 'num_gpus': 0.5}
    >>> task_options({})["runtime_env"]
    {'env_vars': {'CUDA_VISIBLE_DEVICES': ''}}
    """
    num_cpus = resources.get("num_cpus", 1)
    num_gpus = resources.get("num_gpus", 0)
    options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if not num_gpus:
        # Ray leaves the GPUs visible to a task that reserved none; hide them, or such runs
        # would train on a GPU ("device: auto") that the scheduler may have given to others.
        options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
    return options


def task_threads(resources: dict[str, float]) -> int:
    """Torch threads of one run: the cores Ray reserved for it (at least one), so that the
    runs sharing a node do not oversubscribe its cores.

    >>> task_threads({}), task_threads({"num_cpus": 0.5}), task_threads({"num_cpus": 4})
    (1, 1, 4)
    """
    return max(1, int(resources.get("num_cpus", 1)))


def connect(ray: Any, address: str | None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray instance when there is
    none; returns whether this call started Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    # Workers inherit this process's environment (SAST_CACHE_DIR, for one) and Python.
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level="warning")
    return True


def ray_pool(address: str | None, resources: dict[str, float],
             evaluate: dict[str, Any]) -> Iterator[Submit]:
    """Yield a function that submits one run (config, folder) as a Ray task and returns a
    ``concurrent.futures.Future`` of ``execute_run``'s outcome; like ``local_pool``, the
    generator cleans up when closed: it shuts Ray down if it started it.

    ``address`` is that of an existing cluster (``ray://host:10001`` or ``host:6379``; see
    the module docstring for what every node needs), or None to start Ray on this machine.
    """
    ray = import_ray()
    started = connect(ray, address)
    try:
        remote_run = ray.remote(execute_run).options(**task_options(resources))
        threads = task_threads(resources)

        def submit(task: Task) -> Future:
            cfg, folder = task
            ref = remote_run.remote(cfg.to_dict(), str(folder.resolve()), evaluate, threads)
            return ref.future()

        yield submit
    finally:
        if started:
            ray.shutdown()
