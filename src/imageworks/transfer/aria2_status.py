"""Reading aria2c's answers: the tellStatus fields we ask for, its piece bitfield (which bytes are on
disk, and the contiguous prefix the hasher may read), and its exit codes (aria2c(1) EXIT STATUS) as
our errors. Pure functions, beside aria2_control.py (the control file) and aria2_rpc.py (the process)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from imageworks.errors import TransferError

STATUS_KEYS = [
    "status",
    "totalLength",
    "completedLength",
    "downloadSpeed",
    "bitfield",
    "numPieces",
    "pieceLength",
    "errorCode",
    "errorMessage",
]
# aria2c(1) EXIT STATUS. Transient ones are retried by re-adding the download (it resumes).
RETRYABLE = {"1", "2", "5", "6", "7", "19", "22", "29"}
_NOT_FOUND = {"3", "4"}
_DISK_FULL = "9"
_AUTH = "24"
_DISK = {"14", "15", "16", "17", "18"}
RESUME_IMPOSSIBLE = {"8", "10"}


def next_poll(status: dict[str, str], interval: float) -> float:
    """Seconds until the next tellStatus: `interval`, or sooner when the download should end before
    then at its current speed (the end is then seen within ~10 ms, not up to a whole interval later:
    on a fast link that interval was 5% of a whole download)."""
    speed = int(status.get("downloadSpeed", "0") or 0)
    left = int(status.get("totalLength", "0") or 0) - int(status.get("completedLength", "0") or 0)
    if speed <= 0 or left <= 0:
        return interval
    return max(0.01, min(interval, left / speed))


def bitfield_ranges(bitfield: str, piece: int, total: int) -> list[tuple[int, int]]:
    """The byte ranges on disk, from tellStatus's `bitfield` (hex, one bit per piece, high bit first)."""
    ranges: list[tuple[int, int]] = []
    for i, char in enumerate(bitfield):
        nibble = int(char, 16)
        for j, bit in enumerate((8, 4, 2, 1)):
            if nibble & bit:
                start = (i * 4 + j) * piece
                if start >= total:
                    return ranges
                end = min(total, start + piece)
                if ranges and ranges[-1][1] == start:
                    ranges[-1] = (ranges[-1][0], end)
                else:
                    ranges.append((start, end))
    return ranges


def prefix_pieces(bitfield: str) -> int:
    """How many pieces from the start of the file are all on disk (what the hasher may read)."""
    count = 0
    for char in bitfield:
        nibble = int(char, 16)
        if nibble == 0xF:
            count += 4
            continue
        for bit in (8, 4, 2, 1):
            if not nibble & bit:
                return count
            count += 1
    return count


def error_for(
    code: str, message: str, *, name: str, host: str, folder: Path, kept: Callable[[], int]
) -> TransferError | None:
    """The error to raise for aria2c's errorCode, or None when it is worth retrying. `kept`: the
    bytes kept for resuming (asked only when the disk is full)."""
    if code in RETRYABLE:
        return None
    if code in _NOT_FOUND:
        return TransferError(f"{name}: not found at {host} ({message})")
    if code == _AUTH:
        return TransferError(
            f"{name}: {host} refused our credentials ({message})",
            hint="check your token (HF_TOKEN or `hf auth login`) and that you accepted the licence",
        )
    if code == _DISK_FULL:
        return TransferError(
            f"{name}: disk full writing {folder} ({kept()} bytes kept for resuming)",
            hint="free some space (or choose another --location) and run the same command again to resume",
        )
    if code in _DISK:
        return TransferError(
            f"{name}: cannot write {folder}: {message}",
            hint="check the folder's permissions and free space, then run the same command again",
        )
    return TransferError(f"{name}: aria2c error {code}: {message}")
