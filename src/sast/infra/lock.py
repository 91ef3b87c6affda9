"""One process per run or sweep folder: an exclusive advisory lock on ``<folder>/.lock``.

Training, evaluating and sweeping hold the lock of the folder they write for as long as they
write it. A second process that asks for a held lock is refused at once with
:class:`FolderInUse`, whose message names the holder (process id, host, since when), so no run
is trained twice and no file is written by two processes. The lock is ``flock(2)``: the
operating system releases it when its holder exits, even after ``kill -9``, so a crashed run
never leaves a stale lock behind. Where ``fcntl`` is missing (Windows) folders are not locked.
On network file systems that do not support ``flock`` the lock may not hold across machines.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock."""


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing) for the block; raise
    :class:`FolderInUse` at once when another process holds it. ``what`` names the folder in
    the message ("run folder", "sweep folder")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - Windows
        yield folder
        return
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise FolderInUse(
                f"{what} {folder} is in use by another sast process ({holder}); wait for it "
                "to finish or stop it, then run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}").encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the lock
