"""A run folder: the self-describing record of one training run, written atomically.

::

    RUN_DIR/
      config.json     the resolved RunConfig
      env.json        versions, device, threads, host
      status.json     running | finished | diverged | failed, with a message
      splits.json     where the training, validation and test parts come from: sizes, class
                      counts, a digest of their indices
      init.json       with ``init: firing-rate``: the scale given to each layer, its rate before
                      and after
      metrics.jsonl   one JSON object per finished epoch
      checkpoint.pt   model, optimiser and scheduler state after the last finished epoch
      final.json      test accuracy in both spike modes, the transfer gap, timing, config
"""

from __future__ import annotations

import io
import json
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sast.infra.atomicio import atomic_write_bytes, atomic_write_json
from sast.infra.runtime import tune_process

__all__ = ["RunFolder", "atomic_torch_save", "atomic_write_bytes", "atomic_write_json",
           "environment", "load_checkpoint", "read_json"]


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically. The object is serialised in memory first, so a
    failing disk surfaces as an ``OSError`` naming ``path`` (torch's own writer reports it as
    an opaque ``RuntimeError``)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "config", "input_shape", "n_classes")
_ZIP_MAGIC = b"PK\x03\x04"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A run's ``checkpoint.pt``, read with ``torch.load(weights_only=True)``: tensors and plain
    containers only, so a checkpoint from someone else's run folder cannot run code on this
    machine. ``ValueError`` naming the file when it is not a checkpoint ``sast`` wrote (a pickle
    payload, a damaged file, missing keys, torch's legacy non-zip format, whose loader allocates
    the storage sizes its header names before reading them)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != _ZIP_MAGIC:
                raise ValueError("not a zip archive, the format torch.save writes")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        # torch's message suggests weights_only=False; name the offending object instead
        reason = next((line for line in lines if "GLOBAL" in line),
                      lines[0] if lines else type(err).__name__)
        raise ValueError(f"{path}: not a checkpoint sast can load safely (tensors and plain "
                         f"values only): {reason}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a checkpoint dictionary, got {type(state).__name__}")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)}; it was not written by "
                         "sast train (or is damaged)")
    return state


def read_json(path: Path) -> Any:
    """The JSON value in ``path``: ``FileNotFoundError`` when it does not exist, ``ValueError``
    naming it when it is not UTF-8 JSON (or nests too deeply, or holds too long a number)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, ...
        raise ValueError(f"{path} is not valid JSON: {_reason(err)}") from None


def _reason(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte {err.start}: {err.reason})"
    return str(err)


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and machine facts recorded beside every run."""
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "process_tuning": tune_process(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        env["cuda_device"] = torch.cuda.get_device_name(device)
    return env


class RunFolder:
    """Paths and atomic writers of one run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def init(self) -> Path:
        return self.root / "init.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def final(self) -> Path:
        return self.root / "final.json"

    def holds_run(self) -> bool:
        """Whether a run has trained here: a checkpoint or a final result. A folder whose run
        failed before its first epoch (a mistyped data root, say) holds none and may be
        reused."""
        return self.config.exists() and (self.checkpoint.exists() or self.final.exists())

    def write_status(self, status: str, message: str = "", **extra: Any) -> None:
        atomic_write_json(
            self.status,
            {"status": status, "message": message, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             **extra},
        )

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` ([] when absent); ``ValueError`` naming the file and the
        line that is not a JSON object (or the byte that is not UTF-8)."""
        if not self.metrics.exists():
            return []
        try:
            text = self.metrics.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{self.metrics}: {_reason(err)}") from None
        rows = []
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                raise ValueError(f"{self.metrics}: line {n} is not valid JSON") from None
            if not isinstance(row, dict):
                raise ValueError(f"{self.metrics}: line {n} is not a JSON object")
            rows.append(row)
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_bytes(self.metrics, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Rewrite the log with ``row`` appended (atomically: a crash never leaves half a
        line)."""
        self.write_metrics([*self.read_metrics(), row])
