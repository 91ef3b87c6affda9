"""AEDAT 3.1 recordings (the format of IBM's DVS128 Gesture release) decoded into the
event record: the text header up to ``#!END-HEADER``, then packets of a 28-byte header
and their events; polarity events (type 1) are kept, in time order, with their addresses
checked against the sensor. :func:`read_aedat31` has the byte layout."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sast.data.events import EVENT_DTYPE

_PACKET_HEADER = struct.Struct("<hhiiiiii")
_POLARITY_EVENT = 1
_END_HEADER = b"#!END-HEADER"


def read_aedat31(path: str | os.PathLike, sensor_size: Sequence[int] = (128, 128)) -> np.ndarray:
    """Polarity events of an AEDAT 3.1 recording, sorted by time, as ``EVENT_DTYPE``.

    Layout (all integers little-endian):

    - ASCII header lines starting with ``#``, the first ``#!AER-DAT3.1``, up to and
      including the line ``#!END-HEADER\\r\\n``.
    - Packets: a 28-byte header ``int16 eventType, int16 eventSource, int32 eventSize,
      int32 eventTSOffset, int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber,
      int32 eventValid``, then ``eventCapacity * eventSize`` bytes of events.
    - Only packets with ``eventType == 1`` (polarity) are decoded; the others are
      skipped. A polarity event is ``uint32 data, int32 timestamp`` (8 bytes) with
      ``valid = data & 1`` (invalid events are dropped), ``p = (data >> 1) & 1``,
      ``y = (data >> 2) & 0x7FFF``, ``x = (data >> 17) & 0x7FFF``, and time in
      microseconds ``t = (eventTSOverflow << 31) | timestamp``.

    ``ValueError`` naming the file for a missing end of header, a truncated packet
    (with its byte offset), a polarity packet whose events are not 8 bytes or whose
    ``eventTSOverflow`` is negative, or an address outside ``sensor_size`` ``(W, H)``.
    """
    buf = Path(path).read_bytes()
    packets = _polarity_packets(buf, _body_start(buf, path), path)
    events = _decode_polarity(*_gather_polarity(buf, packets))
    check_addresses(events, sensor_size, path)
    return sorted_by_time(events)


def _body_start(buf: bytes, path: str | os.PathLike) -> int:
    """Offset of the first byte after the ``#!END-HEADER`` line."""
    pos = 0
    while buf.startswith(b"#", pos):
        eol = buf.find(b"\n", pos)
        if eol < 0:
            break
        if buf[pos:eol].rstrip(b"\r") == _END_HEADER:
            return eol + 1
        pos = eol + 1
    raise ValueError(f"{os.fspath(path)}: no '#!END-HEADER' line: not an AEDAT 3.1 file")


def _polarity_packets(buf: bytes, pos: int, path: str | os.PathLike) -> np.ndarray:
    """``[body offset, eventCapacity, eventTSOverflow]`` of each polarity packet, walking
    packet headers from ``pos`` to the end of the file."""
    name, end = os.fspath(path), len(buf)
    packets = []
    while pos < end:
        if pos + _PACKET_HEADER.size > end:
            raise ValueError(
                f"{name}: truncated packet at byte {pos}: {end - pos} bytes left, "
                f"a packet header needs {_PACKET_HEADER.size}"
            )
        kind, _, size, ts_offset, overflow, capacity, _, _ = _PACKET_HEADER.unpack_from(buf, pos)
        body = pos + _PACKET_HEADER.size
        if size < 0 or capacity < 0:
            raise ValueError(
                f"{name}: corrupt packet at byte {pos}: eventSize {size}, eventCapacity {capacity}"
            )
        if body + capacity * size > end:
            raise ValueError(
                f"{name}: truncated packet at byte {pos}: eventCapacity {capacity} x eventSize "
                f"{size} = {capacity * size} bytes announced, {end - body} left in the file"
            )
        if kind == _POLARITY_EVENT:
            if size != 8 or ts_offset != 4:
                raise ValueError(
                    f"{name}: polarity packet at byte {pos} has eventSize {size} and "
                    f"eventTSOffset {ts_offset}; AEDAT 3.1 polarity events are 8 bytes "
                    "with the timestamp at byte 4"
                )
            if overflow < 0:
                raise ValueError(
                    f"{name}: polarity packet at byte {pos} has a negative eventTSOverflow "
                    f"{overflow}"
                )
            packets.append((body, capacity, overflow))
        pos = body + capacity * size
    return np.array(packets, dtype=np.int64).reshape(-1, 3)


def _gather_polarity(buf: bytes, packets: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Words ``[data, timestamp]`` (``(n, 2)`` uint32) of all polarity packets in file order,
    and the ``eventTSOverflow`` of each event's packet (``None`` when all are 0)."""
    words = [np.frombuffer(buf, "<u4", 2 * int(n), int(at)) for at, n, _ in packets]
    words = np.concatenate(words).reshape(-1, 2) if words else np.empty((0, 2), "<u4")
    if not packets[:, 2].any():
        return words, None
    return words, np.repeat(packets[:, 2], packets[:, 1])


def _decode_polarity(words: np.ndarray, overflow: np.ndarray | None) -> np.ndarray:
    """Valid events of ``words`` (bit fields in ``read_aedat31``) as ``EVENT_DTYPE``."""
    valid = (words[:, 0] & 1).astype(bool)
    if not valid.all():
        words = words[valid]
        overflow = None if overflow is None else overflow[valid]
    data = words[:, 0]
    events = np.empty(len(words), dtype=EVENT_DTYPE)
    field = np.empty(len(words), dtype=np.uint32)
    events["x"] = np.right_shift(data, 17, out=field)
    events["y"] = np.bitwise_and(np.right_shift(data, 2, out=field), 0x7FFF, out=field)
    events["p"] = np.bitwise_and(np.right_shift(data, 1, out=field), 1, out=field)
    events["t"] = words[:, 1]
    if overflow is not None:
        events["t"] |= overflow << 31
    return events


def check_addresses(
    events: np.ndarray, sensor_size: Sequence[int], path: str | os.PathLike
) -> None:
    for field, limit in zip("xy", sensor_size[:2], strict=True):
        if len(events) and int(events[field].max()) >= limit:
            raise ValueError(
                f"{os.fspath(path)}: {field} = {int(events[field].max())} lies outside the "
                f"{sensor_size[0]}x{sensor_size[1]} sensor"
            )


def sorted_by_time(events: np.ndarray) -> np.ndarray:
    t = events["t"]
    if np.any(t[1:] < t[:-1]):
        return events[np.argsort(t, kind="stable")]
    return events
