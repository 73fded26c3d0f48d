"""The native engine: multi-connection ranged HTTP download in Python threads.

Written by hand because no library combines what we need: several Range connections per file with
work stealing at the tail, a SHA-256 computed while the bytes arrive out of order, and resume across
runs from a record of which ranges are on disk (httpx downloads one stream; huggingface_hub resumes
only from a contiguous prefix and hashes after the fact; aria2c is a separate program, see aria2.py).

Shape of one file's download:
- the file is cut into pieces handed out in order, so the completed contiguous prefix grows at the
  full download rate and the hasher thread (base.PrefixHasher) trails it closely;
- a connection that runs out of pieces steals the back half of the largest piece still in flight,
  so the last percent is fetched by every connection at once instead of one slow one;
- each connection retries its own range with backoff (drops, stalls, 5xx, 429 + Retry-After);
- the file's thread saves the done ranges to the sidecar JSON every couple of seconds, feeds the
  hasher, and verifies + renames at the end.

Threads are fine here: socket reads, pwrite, pread and hashlib all release the GIL.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from imageworks.errors import ImageworksError, IntegrityError, TransferError
from imageworks.hub import check_scheme, forward_headers, locate
from imageworks.transfer.aria2_control import read_control
from imageworks.transfer.base import (
    Events,
    FileJob,
    FileResult,
    MiB,
    PartialPaths,
    PrefixHasher,
    ProgressSink,
    ResumeState,
    backoff_delay,
    check_and_commit,
    check_partial_paths,
    covered,
    disk_error,
    existing_result,
    load_state,
    merge_ranges,
    missing_ranges,
    open_private,
    prefix_end,
    run_file_tasks,
    save_state,
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

log = logging.getLogger("imageworks.transfer.native")

SINGLE_STREAM_BELOW = 4 * MiB  # smaller files: one request, splitting costs more than it gains
MIN_PIECE = 1 * MiB
MAX_PIECE = 16 * MiB
STATE_SAVE_INTERVAL = 1.0
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


class NativeEngine:
    name = "native"

    def __init__(
        self,
        *,
        connections: int = 16,
        max_files: int = 4,
        single_stream: bool = False,
        stall_timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 1.0,
        verify: bool = True,
        note: str = "",
    ) -> None:
        self.connections = max(1, connections)
        self.max_files = max(1, max_files)
        self.single_stream = single_stream
        self.stall_timeout = stall_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.verify = verify
        self.note = note

    def client(self) -> httpx.Client:
        """The HTTP client of one fetch: redirects followed (httpx drops Authorization on a redirect
        to another host), reads that wait longer than the stall timeout fail."""
        import httpx

        return httpx.Client(
            follow_redirects=True,
            timeout=httpx.Timeout(self.stall_timeout, connect=self.stall_timeout, pool=None),
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=self.connections * self.max_files
            ),
            headers={"User-Agent": "imageworks"},
        )

    def fetch(
        self,
        jobs: Sequence[FileJob],
        progress: ProgressSink,
        *,
        cancel: threading.Event | None = None,
    ) -> list[FileResult]:
        stop = threading.Event()
        events: Events = collections.deque()
        client = self.client()
        tasks = [_FileTask(self, job, client, stop, events) for job in jobs]
        try:
            return run_file_tasks(tasks, events, progress, max_files=self.max_files, stop=stop, cancel=cancel)
        finally:
            client.close()


class _FileTask:
    def __init__(
        self,
        engine: NativeEngine,
        job: FileJob,
        client: httpx.Client,
        stop: threading.Event,
        events: Events,
    ) -> None:
        self.engine = engine
        self.job = job
        self.client = client
        self.stop = stop
        self.events = events
        self.paths = PartialPaths.for_dest(job.dest)
        self.result: FileResult | None = None
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.refresh_lock = threading.Lock()
        self.failed: BaseException | None = None
        self.sockets: set[socket.socket] = set()
        self.on_disk_bytes = 0  # for progress: bytes of this file on disk, resumed + fetched
        self._reset()

    def _reset(self) -> None:
        self.url = self.job.url
        self.headers: dict[str, str] = {**self.job.headers, "Accept-Encoding": "identity"}
        self.total: int | None = self.job.size
        self.sched: Scheduler | None = None
        self.ranges_ok: bool | None = None
        self.probe_done = threading.Event()
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.already = 0
        self.fetched = 0
        self.hasher: PrefixHasher | None = None

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

    # -- the file's own thread ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.result = self._run()
            self._emit("done", self.result)
        except BaseException as exc:
            self.error = exc

    def _run(self) -> FileResult:
        existing = existing_result(self.job, verify=self.engine.verify)
        if existing is not None:
            self._emit("started", (existing.size, existing.size))
            self.on_disk_bytes = existing.size
            return existing
        try:
            self.job.dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(self.job, exc, 0) from exc
        check_partial_paths(self.paths)
        for attempt in range(2):
            try:
                return self._download()
            except _Changed as exc:
                self.paths.discard()
                self._reset()
                self.failed = None
                if attempt:
                    raise TransferError(
                        f"{self.job.name}: the server changed the file while we were downloading it ({exc})",
                        hint="run the command again later",
                    ) from exc
                self._emit(
                    "message", f"{self.job.name}: the file changed on the server ({exc}); starting afresh"
                )
        raise AssertionError("unreachable")

    def _resume_state(self) -> ResumeState | None:
        state = load_state(self.paths, self.job)
        if state is None and self.paths.control.exists() and self.paths.temp.exists():
            # aria2c left this partial file: its control file says which pieces are written.
            info = read_control(self.paths.control)
            if info is not None and (self.job.size is None or info.total == self.job.size):
                on_disk = self.paths.temp.stat().st_size
                done = [(a, min(b, on_disk)) for a, b in merge_ranges(info.done) if a < on_disk]
                state = ResumeState(size=info.total, done=done, sha256=self.job.sha256)
        if state is None:
            self.paths.discard()
        return state

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

    def _download(self) -> FileResult:
        self._target()
        state = self._resume_state()
        done: list[tuple[int, int]] = []
        if state is not None:
            self.total = state.size
            done = state.done
            self.etag, self.last_modified = state.etag, state.last_modified
        self.already = covered(done)
        try:
            fd = open_private(self.paths.temp, os.O_WRONLY | os.O_CREAT)
            os.close(fd)
            if state is not None:
                save_state(self.paths, self._state(done))
                self.paths.control.unlink(missing_ok=True)
        except OSError as exc:
            raise disk_error(self.job, exc, self.already) from exc

        if self.total is not None:
            self._make_scheduler(missing_ranges(done, self.total), done)
        if self.total is not None and self.sched is not None and self.sched.complete():
            self._started()
            return self._finish()

        workers = [self._spawn_worker()]
        while not self.probe_done.wait(TICK):
            if not workers[0].is_alive():
                break
        if self.ranges_ok and self.sched is not None:
            n = self._connections()
            workers += [self._spawn_worker() for _ in range(n - 1)]

        saved = self._watch(workers)
        if self.failed is not None or self.stop.is_set():
            if self.hasher is not None:
                self.hasher.close(abort=True)
            if isinstance(self.failed, IntegrityError):
                self.paths.discard()
            elif not isinstance(self.failed, _Changed):
                self._save(saved)  # keep what is on disk for the next run
            if self.failed is not None:
                raise self.failed
            raise _Halted()
        return self._finish()

    def _watch(self, workers: list[threading.Thread]) -> list[tuple[int, int]] | None:
        """Until the connections end: feed the hasher, police their speed, save the resume record."""
        last_save = time.monotonic()
        # Written now, while there is surely room for it: on a full disk it is rewritten in place.
        saved: list[tuple[int, int]] | None = self._save(None)
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(TICK / len(workers))
            self._feed_hasher()
            self._replace_slow()
            if time.monotonic() - last_save >= STATE_SAVE_INTERVAL and self.sched is not None:
                last_save = time.monotonic()
                saved = self._save(saved)
        return saved

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

    def _state(self, done: list[tuple[int, int]]) -> ResumeState:
        assert self.total is not None
        return ResumeState(
            size=self.total,
            done=done,
            etag=self.etag,
            last_modified=self.last_modified,
            sha256=self.job.sha256,
        )

    def _save(self, saved: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        # Small files are not worth a resume record: they are fetched again whole.
        if self.sched is None or self.total is None or self.total < SINGLE_STREAM_BELOW:
            return saved
        with self.lock:
            done = self.sched.on_disk()
        if done == saved:
            return saved
        try:
            save_state(self.paths, self._state(done))
        except OSError as exc:  # a full disk also refuses the small state file: the last one stays valid
            log.warning("%s: cannot save resume state: %s", self.job.name, exc)
            return saved
        return done

    def _started(self) -> None:
        assert self.sched is not None
        with self.lock:
            on_disk = covered(self.sched.on_disk())
        self.already = on_disk
        self.on_disk_bytes = on_disk
        self._emit("started", (self.total, on_disk))
        self.hasher = PrefixHasher(
            self.paths.temp, self.total, want_git=bool(self.job.git_sha1), digest=self.engine.verify
        )

    def _feed_hasher(self) -> None:
        if self.hasher is not None and self.sched is not None:
            with self.lock:
                prefix = prefix_end(self.sched.on_disk())
            self.hasher.advance_to(prefix)

    def _finish(self) -> FileResult:
        assert self.sched is not None
        with self.lock:
            on_disk = self.sched.on_disk()
        size = self.total if self.total is not None else (on_disk[-1][1] if on_disk else 0)
        if size and prefix_end(on_disk) != size:
            raise TransferError(f"{self.job.name}: download ended with bytes missing")
        sha256, sha1 = "", None
        if self.hasher is not None:
            sha256, sha1 = self.hasher.finish(size)
        try:
            size = check_and_commit(self.job, self.paths, sha256, sha1, verify=self.engine.verify)
        except IntegrityError:
            raise
        except OSError as exc:
            raise disk_error(self.job, exc, size) from exc
        return FileResult(
            self.job, sha256, size, bytes_fetched=self.fetched, resumed_from=self.already, skipped=False
        )

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
            if self.job.size is not None and total != self.job.size:
                raise IntegrityError(
                    f"{self.job.name}: size mismatch (expected {self.job.size}, the server has {total})",
                    path=str(self.job.dest),
                    expected=str(self.job.size),
                    actual=str(total),
                )
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


__all__ = ["NativeEngine"]
