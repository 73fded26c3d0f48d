"""The connections of one file in the native engine (see native.py for the shape of a download).

Each connection takes a piece from the file's `Scheduler`, asks for it with a Range request, checks
the answer (the first one, the probe, also tells the size, whether ranges work and the ETag), writes
the bytes with pwrite and retries its own range with backoff. The file's thread polices their speed
(`_replace_slow`) and re-resolves a signed URL that expired (`_refresh`), once for all of them.
`_FileTask` in native.py is a `Connections`; the state both sides share is declared here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from imageworks.errors import ImageworksError, TransferError
from imageworks.hub import check_scheme, forward_headers, locate
from imageworks.transfer.base import (
    Events,
    FileJob,
    MiB,
    PartialPaths,
    backoff_delay,
    check_server_size,
    covered,
    disk_error,
    merge_ranges,
    missing_ranges,
    open_private,
)
from imageworks.transfer.segments import (
    Scheduler,
    Segment,
    describe,
    parse_content_range,
    pwrite_all,
    retry_after,
    socket_of,
    strong_etag,
)

if TYPE_CHECKING:
    import httpx

    from imageworks.transfer.native import NativeEngine

log = logging.getLogger("imageworks.transfer.native")

SINGLE_STREAM_BELOW = 4 * MiB  # smaller files: one request, splitting costs more than it gains
MIN_PIECE = 1 * MiB
MAX_PIECE = 16 * MiB
TICK = 0.05

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# The minimum-speed rule (as aria2's --lowest-speed-limit): over each stall-timeout window, a
# connection slower than this, or than 1/SLOW_FACTOR of the median of the others, is replaced (its
# range is asked for again on a new connection). Without it a server trickling 1 byte/s never
# trips the read timeout and the download never ends.
LOWEST_SPEED = 512.0
SLOW_FACTOR = 20.0


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Changed(Exception):
    """The server's file is not the one our partial bytes came from: start this file afresh."""


class _Halted(Exception):
    """Cancelled, or another connection of this file failed."""


class Connections:
    """The connection side of one file's download (mixed into native._FileTask)."""

    engine: NativeEngine
    job: FileJob
    client: httpx.Client
    stop: threading.Event
    events: Events
    paths: PartialPaths
    lock: threading.Lock
    refresh_lock: threading.Lock
    failed: BaseException | None
    sockets: set[socket.socket]
    on_disk_bytes: int
    url: str
    headers: dict[str, str]
    total: int | None
    sched: Scheduler | None
    ranges_ok: bool | None
    probe_done: threading.Event
    etag: str | None
    last_modified: str | None
    already: int
    fetched: int

    def _started(self) -> None:
        """The size is known and the bytes on disk counted: start the hasher (the file task's)."""
        raise NotImplementedError

    # -- called from other threads ------------------------------------------------------------------

    def interrupt(self) -> None:
        """Wake connections blocked in a read so they notice the stop flag now, not after a timeout."""
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _halted(self) -> bool:
        return self.stop.is_set() or self.failed is not None

    def _emit(self, kind: str, payload: Any) -> None:
        self.events.append((kind, self, payload))

    # -- where the file is fetched from, how it is cut into pieces ------------------------------------

    def _target(self, *, walk: bool = False) -> None:
        """Where this file is fetched from now: the job's resolver (a Hub file: the Hub is asked), else
        the job's URL (redirects then followed by httpx, which drops the token off the Hub's host;
        `walk`: followed here, once, so that the connections do not each go back to it)."""
        if self.job.resolve is not None:
            target = self.job.resolve()
            url, headers = target.url, dict(target.headers)
        else:
            url, headers = self.job.url, dict(self.job.headers)
            if walk:
                with contextlib.suppress(TransferError):
                    found = locate(url, headers, timeout=self.engine.stall_timeout, what=self.job.name)
                    url, headers = found.url, dict(found.headers)
        check_scheme(url, self.job.name)
        with self.lock:
            self.url, self.headers = url, {**headers, "Accept-Encoding": "identity"}

    def _refresh(self, refused: str) -> None:
        """The server refused `refused` (401/403: a signed CDN URL that expired): resolve it again, once
        for all connections (the first to get here asks, the others take its answer)."""
        with self.refresh_lock:
            if self.url == refused:
                log.info(
                    "%s: %s refused us; resolving the file again", self.job.name, urlsplit(refused).hostname
                )
                self._target(walk=True)

    def _connections(self) -> int:
        if self.engine.single_stream or self.total is None or self.total < SINGLE_STREAM_BELOW:
            return 1
        return self.engine.connections

    def _make_scheduler(self, missing: list[tuple[int, int]], done: list[tuple[int, int]]) -> None:
        total = self.total
        if total is None:
            piece = 1 << 62
        elif self._connections() == 1:
            piece = max(total, 1)
        else:
            piece = min(MAX_PIECE, max(MIN_PIECE, total // (self._connections() * 4)))
        self.sched = Scheduler(total, missing, piece)
        self.sched.done = merge_ranges(done)

    # -- connections ----------------------------------------------------------------------------------

    def _spawn_worker(self) -> threading.Thread:
        thread = threading.Thread(target=self._worker, name=f"get {self.job.name}", daemon=True)
        thread.start()
        return thread

    def _fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.failed is None:
                self.failed = exc
        self.probe_done.set()
        self.interrupt()

    def _worker(self) -> None:
        import httpx

        try:
            fd = open_private(self.paths.temp, os.O_WRONLY)
        except OSError as exc:
            self._fail(disk_error(self.job, exc, self.already))
            return
        try:
            while not self._halted():
                with self.lock:
                    # No scheduler yet: the size is unknown, the first request asks for it all.
                    seg = Segment(0, None) if self.sched is None else self.sched.take()
                if seg is None:
                    return
                try:
                    self._fetch_segment(fd, seg)
                except _Halted:
                    with self.lock:
                        if self.sched is not None:
                            self.sched.give_back(seg)
                    return
                with self.lock:
                    assert self.sched is not None
                    self.sched.finished(seg)
        except (ImageworksError, _Changed) as exc:
            self._fail(exc)
        except httpx.HTTPError as exc:  # not worth retrying: too many redirects, a malformed URL...
            self._fail(TransferError(f"{self.job.name}: {exc}", hint="check the URL"))
        except OSError as exc:
            self._fail(disk_error(self.job, exc, covered(self.sched.on_disk()) if self.sched else 0))
        except BaseException as exc:  # a bug must fail the file, not hang it
            log.exception("%s: connection crashed", self.job.name)
            self._fail(TransferError(f"{self.job.name}: internal error: {exc!r}"))
        finally:
            os.close(fd)
            self.probe_done.set()

    def _fetch_segment(self, fd: int, seg: Segment) -> None:
        """Bring seg.written up to seg.end, retrying this range alone on transient failures."""
        import httpx

        failures = 0
        while True:
            if self._halted():
                raise _Halted()
            before = seg.written
            try:
                self._stream(fd, seg)
                if seg.end is not None and seg.written < seg.end:
                    raise _Retry("connection closed early")
                return
            except (_Retry, httpx.TransportError) as exc:
                if self._halted():
                    raise _Halted() from exc
                if isinstance(exc, httpx.UnsupportedProtocol):  # a redirect to file://, ftp://...
                    raise TransferError(
                        f"{self.job.name}: a redirect led to an unsupported URL scheme ({exc})",
                        hint="only http:// and https:// are downloaded; the server is misconfigured",
                    ) from exc
                if seg.written > before:
                    failures = 0
                failures += 1
                if failures > self.engine.retries:
                    raise TransferError(
                        f"{self.job.name}: download failed after {self.engine.retries} retries: {describe(exc)}",
                        hint="check the network and run the same command again to resume",
                    ) from exc
                wait = backoff_delay(
                    self.engine.backoff, failures, exc.retry_after if isinstance(exc, _Retry) else None
                )
                text = f"{self.job.name}: {describe(exc)}; retrying in {wait:.1f}s"
                log.info("%s", text)
                if isinstance(exc, httpx.ReadTimeout | _Retry):
                    self._emit("message", text)
                if self.stop.wait(wait) or self.failed is not None:
                    raise _Halted() from exc

    def _request_headers(self, seg: Segment, headers: dict[str, str]) -> dict[str, str]:
        if self.ranges_ok is not False:
            last = "" if seg.end is None else str(seg.end - 1)
            headers["Range"] = f"bytes={seg.written}-{last}"
            # Only a strong ETag is safe for If-Range (RFC 9110 13.1.5); without one the size check
            # and the final digest catch a file that changed between runs.
            etag = strong_etag(self.etag)
            if etag:
                headers["If-Range"] = etag
        return headers

    def _stream(self, fd: int, seg: Segment) -> None:
        with self.lock:
            url, headers = self.url, dict(self.headers)
        headers = self._request_headers(seg, headers)
        with self.client.stream("GET", url, headers=headers) as response:
            sock = socket_of(response)
            with self.lock:
                seg.sock, seg.mark = sock, (time.monotonic(), seg.written)
                if sock is not None:
                    self.sockets.add(sock)
            try:
                self._check_response(response, seg, headers, url)
                self._copy(response.iter_raw(), fd, seg)
            finally:
                with self.lock:
                    seg.sock = None
                    if sock is not None:
                        self.sockets.discard(sock)

    def _replace_slow(self) -> None:
        """The minimum-speed rule (see LOWEST_SPEED): measure each connection over a window of the
        stall timeout; one far below the floor or the others is cut, and its range retried."""
        window = max(self.engine.stall_timeout, 0.5)
        now = time.monotonic()
        with self.lock:
            if self.sched is None:
                return
            measured = [
                (seg, (seg.written - seg.mark[1]) / (now - seg.mark[0]))
                for seg in self.sched.active
                if seg.sock is not None and now - seg.mark[0] >= window
            ]
            for seg, _ in measured:
                seg.mark = (now, seg.written)
        for seg, speed in measured:
            others = sorted(v for s, v in measured if s is not seg)
            median = others[len(others) // 2] if others else 0.0
            if speed < LOWEST_SPEED or (median and speed < median / SLOW_FACTOR):
                text = f"{self.job.name}: a connection at {speed:.0f} B/s is replaced"
                log.info("%s", text)
                self._emit("message", text)
                sock = seg.sock
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def _check_response(
        self, response: httpx.Response, seg: Segment, headers: dict[str, str], url: str
    ) -> None:
        status = response.status_code
        if status in RETRYABLE_STATUS or 500 <= status < 600:
            raise _Retry(f"HTTP {status}", retry_after(response.headers.get("Retry-After")))
        if status in (401, 403) and (self.job.resolve is not None or str(response.url) != self.job.url):
            # A signed CDN URL can expire during a long download ("Request has expired"): resolve the
            # file again and go on from the bytes on disk (one resolve shared by all connections).
            self._refresh(url)
            raise _Retry(
                f"HTTP {status} from {urlsplit(str(response.url)).hostname}; resolved the file again"
            )
        if status == 416:
            raise _Changed("range not satisfiable")
        if status not in (200, 206):
            raise TransferError(
                f"{self.job.name}: HTTP {status} from {urlsplit(str(response.url)).hostname}",
                hint="check the URL and your access to it",
            )
        first = not self.probe_done.is_set()
        if status == 206:
            parsed = parse_content_range(response.headers.get("Content-Range"))
            if parsed is None or parsed[0] != seg.written:
                raise _Changed(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
            total = parsed[2]
        else:  # 200: whatever we asked for, this body is the whole file from byte 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            if "Range" in headers:
                if not first:
                    raise _Changed("the server answered a range request with the whole file")
                if "If-Range" in headers:
                    raise _Changed("its ETag no longer matches")
                if self.already:
                    self._emit("message", f"{self.job.name}: the server cannot resume; starting from zero")
                self._restart_single(seg)
            elif seg.written:
                self._rewind(seg)
        if not first:
            if total is not None and self.total is not None and total != self.total:
                raise _Changed(f"size changed from {self.total} to {total}")
            self._adopt_final_url(response, url)
            return
        self._on_probe(response, seg, status == 206, total, url)

    def _adopt_final_url(self, response: httpx.Response, requested: str) -> None:
        """Later requests go straight to where a redirect led (one Hub round trip per file, not per
        piece), without the token if that is another host (httpx already dropped it for the
        redirected request itself)."""
        final = str(response.url)
        if final == requested:
            return
        with self.lock:
            if self.url == requested:
                self.url, self.headers = final, forward_headers(self.headers, requested, final)

    def _on_probe(
        self, response: httpx.Response, seg: Segment, ranged: bool, total: int | None, url: str
    ) -> None:
        etag = response.headers.get("ETag")
        if self.already and self.etag and etag and etag != self.etag:
            raise _Changed("ETag changed")
        if self.total is not None and total is not None and total != self.total:
            check_server_size(self.job, total)
            raise _Changed(f"size changed from {self.total} to {total}")
        self.etag = etag or self.etag
        self.last_modified = response.headers.get("Last-Modified") or self.last_modified
        self._adopt_final_url(response, url)
        with self.lock:
            self.ranges_ok = ranged
            if self.total is None:
                self.total = total
            if self.sched is None:
                self._make_scheduler([], [])
                assert self.sched is not None
                self.sched.active.append(seg)
                if total is not None:
                    seg.end = total
                    if ranged and self._connections() > 1:
                        seg.end = min(total, self.sched.piece)
                        self.sched.missing.extend(missing_ranges([(0, seg.end)], total))
        self._started()
        self.probe_done.set()

    def _restart_single(self, seg: Segment) -> None:
        with self.lock:
            os.truncate(self.paths.temp, 0)
            self.already = 0
            self.ranges_ok = False
            total = self.total
            if self.sched is not None:
                self.sched = Scheduler(total, [], max(total or 0, 1))
                self.sched.active.append(seg)
            seg.start = seg.claimed = seg.written = 0
            seg.end = total

    def _rewind(self, seg: Segment) -> None:
        """A single stream without Range support dropped: the retry starts over from byte 0."""
        with self.lock:
            os.truncate(self.paths.temp, 0)
            self.on_disk_bytes -= seg.written - seg.start
            seg.start = seg.claimed = seg.written = 0

    def _copy(self, chunks: Any, fd: int, seg: Segment) -> None:
        for chunk in chunks:
            if self._halted():
                raise _Halted()
            with self.lock:
                take = len(chunk) if seg.end is None else min(len(chunk), seg.end - seg.claimed)
                offset = seg.claimed
                seg.claimed += take
            if take:
                pwrite_all(fd, memoryview(chunk)[:take], offset)
                with self.lock:
                    seg.written = offset + take
                    self.fetched += take
                    self.on_disk_bytes += take
            if seg.end is not None and seg.claimed >= seg.end:
                return  # the rest of this response belongs to a connection that stole it
