"""Read aria2c's `.aria2` control file (format documented in aria2c(1), "CONTROL FILE"), so that
either engine can resume what the other left: the native engine takes the completed pieces as its
done ranges, and the aria2 engine reports how much was already on disk."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

_BLOCK = 16 * 1024  # aria2's block length inside an in-flight piece


@dataclass(frozen=True)
class ControlInfo:
    total: int
    piece_length: int
    done: list[tuple[int, int]]


def _bits(bitfield: bytes, count: int) -> list[bool]:
    return [bool(bitfield[i // 8] & (0x80 >> (i % 8))) for i in range(count)]


def read_control(path: Path) -> ControlInfo | None:
    """The byte ranges a control file marks as written, or None when it is absent or unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        return _parse(data)
    except (struct.error, ValueError, IndexError):
        return None


def _parse(data: bytes) -> ControlInfo | None:
    (version,) = struct.unpack_from(">H", data, 0)
    # Version 0 used host byte order; every aria2 since 1.5 writes version 1 (big-endian).
    if version != 1:
        return None
    pos = 6
    (hash_len,) = struct.unpack_from(">I", data, pos)
    pos += 4 + hash_len
    piece_length, total, _upload, bitfield_len = struct.unpack_from(">IQQI", data, pos)
    pos += 24
    if piece_length <= 0:
        return None
    pieces = (total + piece_length - 1) // piece_length
    bitfield = data[pos : pos + bitfield_len]
    if len(bitfield) * 8 < pieces:
        return None
    pos += bitfield_len
    done = []
    for index, complete in enumerate(_bits(bitfield, pieces)):
        if complete:
            done.append((index * piece_length, min((index + 1) * piece_length, total)))
    (in_flight,) = struct.unpack_from(">I", data, pos)
    pos += 4
    for _ in range(in_flight):
        index, length, block_bitfield_len = struct.unpack_from(">III", data, pos)
        pos += 12
        block_bitfield = data[pos : pos + block_bitfield_len]
        pos += block_bitfield_len
        start = index * piece_length
        blocks = (length + _BLOCK - 1) // _BLOCK
        for b, complete in enumerate(_bits(block_bitfield, min(blocks, len(block_bitfield) * 8))):
            if complete:
                done.append((start + b * _BLOCK, min(start + (b + 1) * _BLOCK, start + length, total)))
    return ControlInfo(total=total, piece_length=piece_length, done=done)


ARIA2_PIECE = 1024 * 1024  # aria2c's default --piece-length, which the aria2 engine keeps


def write_control(
    path: Path, total: int, done: list[tuple[int, int]], piece_length: int = ARIA2_PIECE
) -> int:
    """Write a control file (version 1, no info hash, no pieces in flight) marking as complete every
    piece that `done` covers whole; returns the bytes it marks. aria2c truncates its own control file
    when the disk fills up, so the aria2 engine rebuilds one from its own record to resume every piece
    already on disk rather than only the contiguous prefix."""
    pieces = (total + piece_length - 1) // piece_length
    bitfield = bytearray((pieces + 7) // 8)
    marked = 0
    cursor = 0
    ranges = sorted(done)
    for index in range(pieces):
        start, end = index * piece_length, min((index + 1) * piece_length, total)
        while cursor < len(ranges) and ranges[cursor][1] < end:
            cursor += 1
        if cursor < len(ranges) and ranges[cursor][0] <= start and ranges[cursor][1] >= end:
            bitfield[index // 8] |= 0x80 >> (index % 8)
            marked += end - start
    data = (
        struct.pack(">H", 1)
        + b"\0\0\0\0"  # extension flags
        + struct.pack(">I", 0)  # no info hash (not BitTorrent)
        + struct.pack(">IQQI", piece_length, total, 0, len(bitfield))
        + bytes(bitfield)
        + struct.pack(">I", 0)  # no pieces in flight
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "xb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return marked
