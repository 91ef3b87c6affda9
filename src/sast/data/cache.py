"""On-disk cache of binned frames, keyed by a hash of every preprocessing parameter.

An entry is a folder ``<cache_dir>/frames/<key>/`` holding

- ``frames.npy``  the counts ``[N, T, P, H, W]``, memory-mapped on load, so a dataset never has
  to sit in RAM whole. Where every count is at most 15 (N-MNIST at T = 20 peaks at 9), two
  counts share a byte (``encoding: "u4"``, :func:`~sast.data.frames.pack_nibbles`, shape
  ``[N, T, P, H, ⌈W/2⌉]``); otherwise one byte per count, clipped at 255 (``"u8"``);
- ``labels.npy``  int64 ``[N]``;
- ``meta.json``   the parameters that produced it, the shapes, and a CRC-32 of each file.

``key = sha256(json(params, sorted keys))[:20]`` where ``params`` names the dataset, split,
binning, T, window, downsampling, reader versions, the data root and a fingerprint of its files:
a changed parameter gives a different key and can never read a stale entry. Entries are built
in a temporary folder and renamed into place (atomic); an entry whose files do not match its
``meta.json`` is reported and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sast.data.frames import NIBBLE_MAX, pack_nibbles
from sast.data.npyfile import load_npy

FRAME_CACHE_VERSION = 2
_CRC_CHUNK = 1 << 24
_verified: set[str] = set()


def default_cache_dir() -> Path:
    """``$SAST_CACHE_DIR``, else ``~/.cache/sast``."""
    env = os.environ.get("SAST_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "sast"


def cache_key(params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``params`` (and the cache format version), 20 hex
    digits."""
    text = json.dumps({"frame_cache_version": FRAME_CACHE_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CRC_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def files_fingerprint(paths: list[Path]) -> dict[str, Any]:
    """Number and total size of ``paths``, and a sha256 over each file's path, size and
    modification time: changes when a file is added, removed, moved (N-MNIST labels are folder
    names), grown or rewritten."""
    digest = hashlib.sha256()
    total = 0
    for p in paths:
        st = p.stat()
        total += st.st_size
        digest.update(f"{os.fspath(p)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return {"files": len(paths), "bytes": int(total), "sha256": digest.hexdigest()}


Chunk = tuple[np.ndarray, np.ndarray]
"""(frames uint8 [n, T, P, H, W], labels int64 [n]) for consecutive samples."""


class CachedFrames(NamedTuple):
    frames: np.ndarray
    """uint8 counts, or nibble-packed counts when ``packed_width`` is set."""
    labels: np.ndarray
    packed_width: int | None
    """The frame width W of nibble-packed frames; None for one byte per count."""


class FrameCache:
    """The frame cache under ``root`` (default :func:`default_cache_dir`)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def entry(self, key: str) -> Path:
        return self.root / "frames" / key

    def load(self, key: str) -> CachedFrames | None:
        """The cached frames (memory-mapped) and labels of ``key``; None when absent. A damaged
        entry (a file missing, unreadable, not matching its checksum, shape or dtype in
        ``meta.json``) raises ``ValueError`` naming the file."""
        folder = self.entry(key)
        if not folder.exists():
            return None
        meta_path = folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:  # ValueError: JSON, UTF-8
            raise ValueError(f"{meta_path} is unreadable: {err}") from None
        shape, packed = _meta_shape(meta, meta_path)
        frames_path, labels_path = folder / "frames.npy", folder / "labels.npy"
        for path in (frames_path, labels_path):
            if not path.is_file():
                raise ValueError(f"{path} is missing or not a file")
        if str(folder) not in _verified:
            for path, crc in ((frames_path, meta.get("frames_crc32")),
                              (labels_path, meta.get("labels_crc32"))):
                try:
                    matches = file_crc32(path) == crc
                except OSError as err:
                    raise ValueError(f"{path} is unreadable: {err}") from None
                if not matches:
                    raise ValueError(f"{path} does not match the checksum in {meta_path}")
            _verified.add(str(folder))
        frames = load_npy(frames_path, mmap_mode="c")
        labels = load_npy(labels_path)
        stored = shape[:-1] + [(shape[-1] + 1) // 2] if packed else shape
        if list(frames.shape) != stored or labels.shape != (frames.shape[0],):
            raise ValueError(f"{folder}: arrays do not have the shape recorded in meta.json")
        if frames.dtype != np.uint8 or labels.dtype != np.int64:
            raise ValueError(f"{folder}: frames.npy and labels.npy must hold uint8 and int64, "
                             f"found {frames.dtype} and {labels.dtype}")
        return CachedFrames(frames, labels, shape[-1] if packed else None)

    def store(self, key: str, params: dict[str, Any], shape: tuple[int, ...],
              chunks: Iterator[Chunk]) -> CachedFrames:
        """Write the chunks into a new entry (built aside, renamed into place) and return it
        memory-mapped. ``shape`` is the full frames shape ``[N, T, P, H, W]``."""
        parent = self.root / "frames"
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{key}."))
        try:
            frames = np.lib.format.open_memmap(
                tmp / "frames.npy", mode="w+", dtype=np.uint8, shape=tuple(shape)
            )
            labels = np.empty(shape[0], dtype=np.int64)
            start, max_count = 0, 0
            for chunk_frames, chunk_labels in chunks:
                stop = start + len(chunk_labels)
                frames[start:stop] = chunk_frames
                labels[start:stop] = chunk_labels
                max_count = max(max_count, int(chunk_frames.max(initial=0)))
                start = stop
            if start != shape[0]:
                raise RuntimeError(f"frame cache: expected {shape[0]} samples, got {start}")
            frames.flush()
            encoding = "u8"
            if max_count <= NIBBLE_MAX:
                _repack_nibbles(frames, tmp / "frames.u4.npy")
                del frames
                os.replace(tmp / "frames.u4.npy", tmp / "frames.npy")
                encoding = "u4"
            else:
                del frames
            np.save(tmp / "labels.npy", labels)
            meta = {
                "params": params, "shape": list(shape), "encoding": encoding,
                "max_count": max_count,
                "frames_crc32": file_crc32(tmp / "frames.npy"),
                "labels_crc32": file_crc32(tmp / "labels.npy"),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            final = self.entry(key)
            if final.exists():  # a damaged entry: move it aside first, then drop it
                stale = Path(tempfile.mkdtemp(dir=parent, prefix=f".{key}.stale."))
                os.replace(final, stale / "entry")
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process built it meanwhile
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        loaded = self.load(key)
        if loaded is None:
            raise RuntimeError(f"frame cache entry {final} vanished while it was being read")
        return loaded

    def get_or_build(
        self, params: dict[str, Any],
        build: Callable[[], tuple[tuple[int, ...], Iterator[Chunk]]],
    ) -> tuple[CachedFrames, bool]:
        """(entry, was_cached): the cached entry of ``params``, or a new one from
        ``build()`` → (frames shape, chunks); a damaged entry is rebuilt with a warning."""
        key = cache_key(params)
        try:
            found = self.load(key)
        except ValueError as err:
            warnings.warn(f"rebuilding damaged frame cache entry: {err}", stacklevel=2)
            found = None
        if found is not None:
            return found, True
        shape, chunks = build()
        return self.store(key, params, shape, chunks), False


def _meta_shape(meta: Any, meta_path: Path) -> tuple[list[int], bool]:
    """``(shape [N, T, P, H, W], nibble-packed)`` recorded in an entry's ``meta.json``."""
    shape = meta.get("shape") if isinstance(meta, dict) else None
    if not (isinstance(shape, list) and len(shape) == 5 and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise ValueError(f"{meta_path}: expected a JSON object with 'shape': [N, T, P, H, W] "
                         "(non-negative integers)")
    encoding = meta.get("encoding")
    if encoding not in ("u4", "u8"):
        raise ValueError(f"{meta_path}: unknown encoding {encoding!r}; expected 'u4' or 'u8'")
    return shape, encoding == "u4"


def _repack_nibbles(frames: np.ndarray, path: Path, block: int = 1024) -> None:
    """Write ``pack_nibbles(frames)`` to a new .npy file, ``block`` samples at a time."""
    n, *rest = frames.shape
    packed = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(n, *rest[:-1], (rest[-1] + 1) // 2)
    )
    for start in range(0, n, block):
        packed[start:start + block] = pack_nibbles(frames[start:start + block])
    packed.flush()
