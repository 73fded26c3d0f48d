"""What an interrupted download leaves on disk, and how it is read back: the partial file's names,
opened only as regular files and never through a symlink (`open_private`), the byte ranges on disk
and the native engine's resume record (`ResumeState`, written so that it survives a full disk)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imageworks.errors import TransferError

if TYPE_CHECKING:
    from imageworks.transfer.base import FileJob

log = logging.getLogger("imageworks.transfer")

PARTIAL_SUFFIX = ".imageworks-partial"
STATE_SUFFIX = ".json"
ARIA2_CONTROL_SUFFIX = ".aria2"
STATE_FORMAT = "imageworks-partial"
STATE_VERSION = 1

# ---------------------------------------------------------------------------------------------------
# Partial files


@dataclass(frozen=True)
class PartialPaths:
    temp: Path
    state: Path
    control: Path

    @classmethod
    def for_dest(cls, dest: Path) -> PartialPaths:
        temp = dest.with_name(f".{dest.name}{PARTIAL_SUFFIX}")
        return cls(
            temp=temp,
            state=temp.with_name(temp.name + STATE_SUFFIX),
            control=temp.with_name(temp.name + ARIA2_CONTROL_SUFFIX),
        )

    def discard(self) -> None:
        for path in (self.temp, self.state, self.control, self.state.with_name(self.state.name + ".tmp")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def open_private(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open for our partial, state and control files: never through a symlink (O_NOFOLLOW), and
    never anything but a regular file (a FIFO or device planted there is refused, not opened)."""
    try:
        # O_NONBLOCK: a FIFO planted there must not block the open (no effect on a regular file).
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise unsafe_partial(path, "a symlink") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise unsafe_partial(path, "not a regular file")
    return fd


def unsafe_partial(path: Path, what: str) -> TransferError:
    return TransferError(
        f"{path} is {what}; refusing to write through it",
        hint="something other than imageworks put it there: remove it, then run the same command again",
    )


def check_partial_paths(paths: PartialPaths) -> None:
    """Refuse partial-file names that are symlinks or other non-regular files (before aria2c, which
    would follow them, is pointed at them)."""
    for path in (paths.temp, paths.state, paths.control):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise unsafe_partial(path, "a symlink")
        if not stat.S_ISREG(st.st_mode):
            raise unsafe_partial(path, "not a regular file")


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping, non-adjacent half-open ranges."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def missing_ranges(done: Sequence[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    out = []
    cursor = 0
    for start, end in merge_ranges(done):
        if start > cursor:
            out.append((cursor, min(start, total)))
        cursor = max(cursor, end)
    if cursor < total:
        out.append((cursor, total))
    return [r for r in out if r[1] > r[0]]


def prefix_end(done: Sequence[tuple[int, int]]) -> int:
    merged = merge_ranges(done)
    return merged[0][1] if merged and merged[0][0] == 0 else 0


def covered(done: Sequence[tuple[int, int]]) -> int:
    return sum(end - start for start, end in merge_ranges(done))


@dataclass
class ResumeState:
    """What the native engine knows about a partial file. Only ranges whose bytes were handed to the
    kernel are recorded, so a SIGKILL never claims bytes that are not in the file; a power loss can
    (we do not fsync per save, that would stall slow disks), and the final digest check catches it."""

    size: int
    done: list[tuple[int, int]]
    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "size": self.size,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "sha256": self.sha256,
            "done": [list(r) for r in merge_ranges(self.done)],
        }


STATE_PAD = 4096


def save_state(paths: PartialPaths, state: ResumeState) -> None:
    """Atomic replace; padded to a few KB so that, when the disk is full (the very moment we most
    need a current record), the existing file can still be rewritten in place without new blocks."""
    text = json.dumps(state.to_json())
    data = (text + " " * max(0, STATE_PAD - len(text) - 1) + "\n").encode("utf-8")
    tmp = paths.state.with_name(paths.state.name + ".tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a symlink planted there goes, not what it points to
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as handle:
            handle.write(data)
        os.replace(tmp, paths.state)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not paths.state.exists():
            raise
        if paths.state.stat().st_size < len(data):
            raise
        # Not atomic, but a torn write only makes the record unreadable, and then the next run
        # starts this file afresh: never wrong, at worst slower.
        with os.fdopen(open_private(paths.state, os.O_WRONLY), "r+b") as handle:
            handle.write(data)


def load_state(paths: PartialPaths, job: FileJob) -> ResumeState | None:
    """The resume record for `job`, or None when there is nothing trustworthy to resume from (absent,
    unreadable, from a newer version, for another size or digest, or describing bytes the temp file
    does not have)."""
    try:
        with os.fdopen(open_private(paths.state, os.O_RDONLY), "rb") as handle:
            raw = json.loads(handle.read(1024 * 1024))
        if raw.get("format") != STATE_FORMAT or raw.get("version") != STATE_VERSION:
            return None
        state = ResumeState(
            size=int(raw["size"]),
            done=merge_ranges((int(a), int(b)) for a, b in raw["done"]),
            etag=raw.get("etag"),
            last_modified=raw.get("last_modified"),
            sha256=raw.get("sha256"),
        )
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    if job.size is not None and state.size != job.size:
        return None
    if job.sha256 and state.sha256 and state.sha256.lower() != job.sha256.lower():
        return None
    try:
        on_disk = paths.temp.lstat().st_size
    except FileNotFoundError:
        return None
    if state.done and state.done[-1][1] > on_disk:
        return None
    state.done = [(a, min(b, state.size)) for a, b in state.done if a < state.size]
    return state
