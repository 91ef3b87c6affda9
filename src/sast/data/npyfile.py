"""``.npy`` and ``.npz`` files that may be damaged, checked before ``np.load`` trusts them.

``np.load`` allocates the whole array that a file's header announces before it reads the
data, so a few bytes claiming shape ``(10**9, 4)`` cost gigabytes; and a malformed file
raises many error types (``EOFError``, ``zlib.error``, an ``NpzFile`` where an array was
expected ...). Here every header is checked against the bytes the file really holds first,
and every way a file can be malformed is one ``ValueError`` naming it.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from typing import IO

import numpy as np

_DEFLATE_MAX_RATIO = 1032
"""Deflate never expands a stream by more than this factor (RFC 1951: 258 bytes per 2 bits)."""


class MalformedArrayFile(ValueError):
    """A ``.npy`` or ``.npz`` file that cannot be read safely; the message names it."""


_ZIP_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, RuntimeError,
               NotImplementedError)


def _array_header(fp: IO[bytes], source: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data bytes)`` from the header at the start of ``fp``; ``fp`` is left
    at the first data byte. Object arrays (pickles) are refused."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as err:  # noqa: BLE001 - numpy's header parser raises many types
        raise MalformedArrayFile(f"{source}: not a .npy array: {err}") from None
    if dtype.hasobject:
        raise MalformedArrayFile(f"{source}: holds Python objects (dtype {dtype}), not numbers")
    if any(n < 0 for n in shape):
        raise MalformedArrayFile(f"{source}: negative dimension in the shape {shape}")
    return shape, dtype, math.prod(shape) * dtype.itemsize


def load_npy(path: str | os.PathLike, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load(path, mmap_mode, allow_pickle=False)`` of a ``.npy`` file, once its header
    is checked: ``ValueError`` naming the file for anything that is not a plain array (an
    ``.npz`` archive, a pickle, object arrays, a damaged header) and for a header whose
    shape needs more bytes than the file holds (checked before anything is allocated)."""
    name = os.fspath(path)
    with open(path, "rb") as fp:
        shape, _, nbytes = _array_header(fp, name)
        held = os.fstat(fp.fileno()).st_size - fp.tell()
    if nbytes > held:
        raise MalformedArrayFile(f"{name}: the header announces shape {shape} ({nbytes} bytes "
                                 f"of data) but the file holds {held}: truncated or damaged")
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise MalformedArrayFile(f"{name}: unreadable array: {err}") from None
    if not isinstance(array, np.ndarray):  # pragma: no cover - the header said .npy
        raise MalformedArrayFile(f"{name}: not a .npy array")
    return array


def check_npz(path: str | os.PathLike) -> None:
    """``ValueError`` naming the file unless ``np.load(path)`` can read each ``.npy`` member
    of the archive within the memory that member can really hold: members must be plain
    (stored) or deflated, unencrypted, and announce no more data than the archive can give
    back; each array header must fit its member. Then ``np.load`` of the archive allocates
    at most what its bytes decompress to."""
    name = os.fspath(path)
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                where = f"{name}: member {info.filename!r}"
                if info.flag_bits & 0x1:
                    raise MalformedArrayFile(f"{where} is encrypted")
                ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: _DEFLATE_MAX_RATIO}
                if info.compress_type not in ratio:
                    raise MalformedArrayFile(
                        f"{where} uses compression method {info.compress_type}; "
                        "expected stored or deflated")
                if info.compress_size > size or (
                        info.file_size > ratio[info.compress_type] * info.compress_size):
                    raise MalformedArrayFile(
                        f"{where} announces {info.file_size} bytes ({info.compress_size} "
                        f"compressed) in a {size}-byte file")
                if info.filename.endswith(".npy"):
                    with archive.open(info) as fp:
                        shape, _, nbytes = _array_header(fp, where)
                        held = info.file_size - fp.tell()
                    if nbytes > held:
                        raise MalformedArrayFile(
                            f"{where}: the header announces shape {shape} ({nbytes} bytes of "
                            f"data) but the member holds {held}")
    except MalformedArrayFile:
        raise
    except _ZIP_ERRORS as err:
        raise MalformedArrayFile(f"{name}: not a readable .npz archive: {err}") from None
