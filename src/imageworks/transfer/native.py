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
This module holds the engine and the file's thread; the connections are in native_connections.py.

Threads are fine here: socket reads, pwrite, pread and hashlib all release the GIL.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from imageworks.errors import IntegrityError, TransferError
from imageworks.transfer.aria2_control import read_control
from imageworks.transfer.base import (
    Events,
    FileJob,
    FileResult,
    PartialPaths,
    PrefixHasher,
    ProgressSink,
    ResumeState,
    check_and_commit,
    check_partial_paths,
    covered,
    disk_error,
    existing_result,
    http_client,
    load_state,
    merge_ranges,
    missing_ranges,
    open_private,
    prefix_end,
    run_file_tasks,
    save_state,
)
from imageworks.transfer.native_connections import (
    SINGLE_STREAM_BELOW,
    TICK,
    Connections,
    _Changed,
    _Halted,
)
from imageworks.transfer.segments import Scheduler

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("imageworks.transfer.native")

STATE_SAVE_INTERVAL = 1.0


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
        return http_client(
            stall_timeout=self.stall_timeout,
            max_connections=None,
            keepalive=self.connections * self.max_files,
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


class _FileTask(Connections):
    """One file's download: resume, probe, connections, hashing, verify and rename."""

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


__all__ = ["NativeEngine"]
