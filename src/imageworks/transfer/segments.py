"""The native engine's pieces: which bytes each connection fetches (`Scheduler`, work stealing at
the tail), and the small HTTP helpers its connections share."""

from __future__ import annotations

import collections
import contextlib
import email.utils
import errno
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imageworks.transfer.base import MiB, merge_ranges

if TYPE_CHECKING:
    import httpx

MIN_STEAL = 1 * MiB  # a piece is split for an idle connection only if both halves are at least this
MAX_RETRY_AFTER = 600.0


@dataclass
class Segment:
    start: int
    end: int | None  # None: until the server closes (single stream of unknown length)
    claimed: int = 0  # bytes up to here belong to this connection (beyond it may be stolen)
    written: int = 0  # bytes up to here are in the file
    sock: socket.socket | None = None  # the connection fetching it now
    mark: tuple[float, int] = (0.0, 0)  # (time, written) when its speed was last measured

    def __post_init__(self) -> None:
        self.claimed = self.written = self.start

    def remaining(self) -> int:
        return 0 if self.end is None else self.end - self.claimed


class Scheduler:
    """Which bytes each connection fetches next. Callers hold the task's lock."""

    def __init__(self, total: int | None, missing: list[tuple[int, int]], piece: int) -> None:
        self.total = total
        self.piece = piece
        self.missing = collections.deque(missing)
        self.active: list[Segment] = []
        self.done: list[tuple[int, int]] = []

    def take(self) -> Segment | None:
        if self.missing:
            start, end = self.missing[0]
            cut = min(end, start + self.piece)
            if cut == end:
                self.missing.popleft()
            else:
                self.missing[0] = (cut, end)
            seg = Segment(start, cut)
        else:
            victim = max(self.active, key=Segment.remaining, default=None)
            if victim is None or victim.end is None or victim.remaining() < 2 * MIN_STEAL:
                return None
            mid = victim.claimed + victim.remaining() // 2
            seg = Segment(mid, victim.end)
            victim.end = mid
        self.active.append(seg)
        return seg

    def finished(self, seg: Segment) -> None:
        self.active.remove(seg)
        self.done.append((seg.start, seg.written))
        self.done = merge_ranges(self.done)

    def give_back(self, seg: Segment) -> None:
        """A connection gives up on its segment (halting): keep what it wrote, free the rest."""
        with contextlib.suppress(ValueError):
            self.active.remove(seg)
        self.done = merge_ranges([*self.done, (seg.start, seg.written)])
        if seg.end is not None and seg.written < seg.end:
            self.missing.appendleft((seg.written, seg.end))

    def on_disk(self) -> list[tuple[int, int]]:
        return merge_ranges([*self.done, *((s.start, s.written) for s in self.active)])

    def complete(self) -> bool:
        return not self.missing and not self.active


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    # "bytes 0-99/1234" or "bytes 0-99/*"
    if not value or not value.startswith("bytes "):
        return None
    try:
        span, _, total = value[6:].partition("/")
        first, _, last = span.partition("-")
        return int(first), int(last), None if total.strip() == "*" else int(total)
    except ValueError:
        return None


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, when.timestamp() - time.time()))


def strong_etag(etag: str | None) -> str | None:
    return etag if etag and not etag.startswith("W/") else None


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        if n <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing")
        data = data[n:]
        offset += n


def socket_of(response: httpx.Response) -> socket.socket | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    try:
        sock = stream.get_extra_info("socket")
    except Exception:  # an exotic transport without the socket: cancellation waits for the timeout
        return None
    return sock if isinstance(sock, socket.socket) else None


def describe(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.ReadTimeout):
        return "connection stalled (no data), restarting its range"
    if isinstance(exc, httpx.TimeoutException):
        return "connection timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection dropped mid-transfer"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})"
    return str(exc) or type(exc).__name__
