"""The contract shared by every download engine: jobs in, verified files out.

An engine receives `FileJob`s whose URL is final (the caller resolved the Hub ref and decides which
host gets the token), downloads each to a temporary name beside its destination, hashes the bytes
while they arrive, and renames into place only once size and digests match. Everything on disk
that an interrupted run leaves behind is named after the destination with a leading dot, so it is
recognisably ours and the next run resumes from it:

    <dir>/.<name>.imageworks-partial         the bytes (sparse while segments are in flight)
    <dir>/.<name>.imageworks-partial.json    native engine: which byte ranges are on disk
    <dir>/.<name>.imageworks-partial.aria2   aria2 engine: aria2c's own control file
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from imageworks.durable import fsync_dir
from imageworks.errors import IntegrityError, TransferError

if TYPE_CHECKING:
    import httpx

    from imageworks.hub import ResolvedUrl

from imageworks.hashing import hash_file
from imageworks.transfer.digests import Digests, PrefixHasher
from imageworks.transfer.partial import (
    ARIA2_CONTROL_SUFFIX,
    PARTIAL_SUFFIX,
    STATE_SUFFIX,
    PartialPaths,
    ResumeState,
    check_partial_paths,
    covered,
    load_state,
    merge_ranges,
    missing_ranges,
    open_private,
    prefix_end,
    save_state,
    unsafe_partial,
)

log = logging.getLogger("imageworks.transfer")

# Re-exported: the engines import the whole contract from here.
__all__ = [
    "ARIA2_CONTROL_SUFFIX",
    "PARTIAL_SUFFIX",
    "STATE_SUFFIX",
    "Digests",
    "Engine",
    "FileJob",
    "FileResult",
    "NullProgress",
    "PartialPaths",
    "PrefixHasher",
    "ProgressSink",
    "ResumeState",
    "backoff_delay",
    "check_and_commit",
    "check_partial",
    "check_partial_paths",
    "commit",
    "commit_many",
    "covered",
    "disk_error",
    "existing_result",
    "load_state",
    "merge_ranges",
    "missing_ranges",
    "open_private",
    "prefix_end",
    "run_file_tasks",
    "save_state",
    "unsafe_partial",
]

MiB = 1024 * 1024


@dataclass(frozen=True)
class FileJob:
    """One file to fetch. `url` is what we GET (a Hub URL, a CDN URL, a direct URL: redirects are
    followed, and Authorization is never forwarded to another host). `headers` go with every request
    for this file; the caller adds Authorization only when the URL is on the Hub host.

    `resolve` (Hub files) gives the URL to fetch from afresh: the engine calls it when the file starts,
    so resolving overlaps the transfer of other files, and again whenever the CDN refuses a signed URL
    (they expire after about an hour), then goes on from the bytes on disk. `root` is the model folder:
    an existing destination that is a symlink counts as present only if it resolves inside it.
    `refetch` (--force): an existing destination is never taken as done; it stays until verified bytes
    are renamed over it."""

    url: str
    dest: Path
    size: int | None
    sha256: str | None = None
    git_sha1: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    label: str = ""
    resolve: Callable[[], ResolvedUrl] | None = field(default=None, compare=False)
    root: Path | None = None
    refetch: bool = False

    @property
    def name(self) -> str:
        return self.label or self.dest.name


@dataclass(frozen=True)
class FileResult:
    job: FileJob
    sha256: str  # of the bytes now at job.dest ("" only when an engine was built with verify=False)
    size: int
    bytes_fetched: int  # over the network during this run
    resumed_from: int  # bytes already on disk from an earlier run
    skipped: bool  # the destination was already complete and verified: no network at all


class ProgressSink(Protocol):
    """Engines call these from the thread that called `fetch()`, never from worker threads, so a sink
    (a rich Progress, a line printer) needs no locking."""

    def file_started(self, job: FileJob, total: int | None, already: int) -> None: ...
    def advance(self, job: FileJob, n: int) -> None: ...
    def file_done(self, job: FileJob, result: FileResult) -> None: ...
    def message(self, text: str) -> None: ...


class NullProgress:
    def file_started(self, job: FileJob, total: int | None, already: int) -> None:
        pass

    def advance(self, job: FileJob, n: int) -> None:
        pass

    def file_done(self, job: FileJob, result: FileResult) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class Engine(Protocol):
    name: str
    note: str  # why this engine was chosen, for the CLI to print

    def fetch(
        self,
        jobs: Sequence[FileJob],
        progress: ProgressSink,
        *,
        cancel: threading.Event | None = None,
    ) -> list[FileResult]: ...


def backoff_delay(base: float, failures: int, retry_after: float | None = None) -> float:
    """The engines' one retry wait: exponential from `base` with jitter (so connections that failed
    together do not come back together), at least the server's Retry-After."""
    wait = base * 2 ** max(0, failures - 1) * random.uniform(0.5, 1.5)
    return max(wait, retry_after) if retry_after is not None else wait


# ---------------------------------------------------------------------------------------------------
# The two ends of every file: already there? and verify + rename.


def http_client(*, stall_timeout: float, max_connections: int | None, keepalive: int) -> httpx.Client:
    """The HTTP client of one fetch, for the native engine and the small-file pool alike: redirects
    followed (httpx drops Authorization on a redirect to another host), a read that waits longer than
    the stall timeout fails, bytes as stored (no gzip), the process's one TLS context."""
    import httpx

    from imageworks.hub import tls_context

    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(stall_timeout, connect=stall_timeout, pool=None),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=keepalive),
        headers={"User-Agent": "imageworks", "Accept-Encoding": "identity"},
        verify=tls_context(),
    )


def existing_result(job: FileJob, *, verify: bool = True) -> FileResult | None:
    """A FileResult when `job.dest` already holds the expected file (no network needed), else None.
    Without any expectation (no size, no digest) an existing destination is accepted: engines only
    create it by renaming a complete download."""
    if job.refetch:
        return None
    try:
        st = job.dest.stat()
    except FileNotFoundError:
        return None
    if not job.dest.is_file() or (job.size is not None and st.st_size != job.size):
        return None
    if job.dest.is_symlink() and not _inside(job.dest, job.root):
        return None  # fetched afresh: the rename then replaces the link itself, not its target
    sha256 = ""
    if verify:
        on_disk = hash_file(job.dest, git_blob=bool(job.git_sha1)).checked()
        sha256, sha1 = on_disk.sha256 or "", on_disk.git_sha1
        if job.sha256 and sha256 != job.sha256.lower():
            return None
        if job.git_sha1 and sha1 != job.git_sha1.lower():
            return None
    # A crash between the rename and the cleanup leaves partial files behind: they are stale now.
    PartialPaths.for_dest(job.dest).discard()
    return FileResult(job, sha256, st.st_size, bytes_fetched=0, resumed_from=st.st_size, skipped=True)


def _inside(link: Path, root: Path | None) -> bool:
    if root is None:
        return False
    try:
        return link.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def check_and_commit(
    job: FileJob, paths: PartialPaths, sha256: str, sha1: str | None, *, verify: bool = True
) -> int:
    """Verify the finished temp file against the job and rename it into place; returns its size.

    On a mismatch everything partial is discarded (the bytes are wrong, resuming from them would only
    reproduce the error) and IntegrityError names the file and both digests."""
    size = check_partial(job, paths, sha256, sha1, verify=verify)
    commit(paths.temp, job.dest)
    for path in (paths.state, paths.control):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return size


def check_partial(
    job: FileJob, paths: PartialPaths, sha256: str, sha1: str | None, *, verify: bool = True
) -> int:
    """The verification half of `check_and_commit`: size and digests, or IntegrityError."""
    size = paths.temp.stat().st_size
    if job.size is not None and size != job.size:
        _integrity_failure(job, paths, "size", str(job.size), str(size))
    if verify:
        bad = _mismatch(job, sha256, sha1)
        if bad:
            # The streaming hash read bytes while others were being written; before condemning a
            # multi-GB file, confirm from disk that the bytes really are wrong.
            log.warning("%s: %s mismatch while streaming, re-hashing from disk", job.name, bad[0])
            on_disk = hash_file(paths.temp, git_blob=bool(job.git_sha1)).checked()
            sha256, sha1 = on_disk.sha256 or "", on_disk.git_sha1
            bad = _mismatch(job, sha256, sha1)
            if bad:
                _integrity_failure(job, paths, *bad)
    return size


def check_server_size(job: FileJob, total: int) -> None:
    """The size the server announces against the listed one, before any byte is kept (both engines)."""
    if job.size is not None and total != job.size:
        raise IntegrityError(
            f"{job.name}: size mismatch (expected {job.size}, the server has {total})",
            path=str(job.dest),
            expected=str(job.size),
            actual=str(total),
        )


def _mismatch(job: FileJob, sha256: str, sha1: str | None) -> tuple[str, str, str] | None:
    if job.sha256 and sha256 != job.sha256.lower():
        return ("sha256", job.sha256.lower(), sha256)
    if job.git_sha1 and sha1 != job.git_sha1.lower():
        return ("git sha1", job.git_sha1.lower(), sha1 or "")
    return None


def _integrity_failure(job: FileJob, paths: PartialPaths, what: str, expected: str, actual: str) -> None:
    paths.discard()
    raise IntegrityError(
        f"{job.name}: {what} mismatch (expected {expected}, got {actual}); the download was discarded",
        path=str(job.dest),
        expected=expected,
        actual=actual,
        hint="run the command again to download it afresh; if it fails again the source is corrupt",
    )


def commit(temp: Path, dest: Path) -> None:
    """Durable rename: the bytes reach the disk before the name does, so a crash leaves either the
    old state or the complete file, never a complete-looking name over missing data."""
    began = time.perf_counter()
    fd = open_private(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, dest)
    fsync_dir(dest.parent)
    log.debug("%s: fsync + rename took %.3f s", dest.name, time.perf_counter() - began)


def commit_many(pairs: Sequence[tuple[Path, Path]]) -> None:
    """`commit` for many small files whose bytes the caller already flushed (fdatasync in its worker
    threads, where ext4 groups them into few journal commits: ~0.2 s for 1,500 files, against ~4.5 ms
    per file for fsync + rename + fsync of the folder one by one): the renames, then one fsync per
    folder. The same guarantee: every file's bytes reach the disk before its name does."""
    began = time.perf_counter()
    for temp, dest in pairs:
        os.replace(temp, dest)
    for folder in {dest.parent for _, dest in pairs}:
        fsync_dir(folder)
    log.debug("%d files: renames took %.3f s", len(pairs), time.perf_counter() - began)


def disk_error(job: FileJob, exc: OSError, kept: int) -> TransferError:
    """A write failure as the user should read it. Partial state is kept: after freeing space, the
    same command resumes."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return TransferError(
            f"{job.name}: disk full writing {job.dest.parent} ({kept} bytes kept for resuming)",
            hint="free some space (or choose another --location) and run the same command again to resume",
        )
    return TransferError(
        f"{job.name}: cannot write {job.dest.parent}: {exc.strerror or exc}",
        hint="check the folder's permissions and free space, then run the same command again",
    )


# ---------------------------------------------------------------------------------------------------
# Running file tasks: both engines run one thread per file (up to max_files) and report through a
# queue that the calling thread drains into the ProgressSink.

TICK = 0.05
HALT_TIMEOUT = 15.0  # the longest a stop waits for file threads to leave their state on disk
Events = deque[tuple[str, Any, Any]]  # (kind, task, payload); deque append/popleft are thread-safe


class FileTask(Protocol):
    job: FileJob
    on_disk_bytes: int  # bytes of this file on disk (resumed + fetched): progress is its growth
    result: FileResult | None
    error: BaseException | None

    def run(self) -> None: ...
    def interrupt(self) -> None: ...


def wait_threads(threads: Sequence[threading.Thread], timeout: float) -> bool:
    """Wait up to `timeout` for the threads to end; True once none is alive.

    It joins a live thread, which returns the moment that thread ends, so the end of a download is
    seen at once rather than at the next tick. And it holds no lock the threads need: a Ctrl-C landing
    in a Condition wait shared with them once left its lock taken, and the next join hung for good."""
    alive = [t for t in threads if t.is_alive()]
    if alive:
        alive[-1].join(timeout)
    return not any(t.is_alive() for t in threads)


def run_file_tasks(
    tasks: Sequence[FileTask],
    events: Events,
    progress: ProgressSink,
    *,
    max_files: int,
    stop: threading.Event,
    cancel: threading.Event | None,
    on_stop: Callable[[], None] | None = None,
) -> list[FileResult]:
    """Run tasks (each does one file end to end) on up to max_files threads; returns results in job
    order, or raises the first failure in job order once every file has finished or failed (so one
    bad file does not throw away the others' progress). `cancel` or KeyboardInterrupt stop all tasks,
    leaving resumable state on disk."""
    cancel = cancel or threading.Event()
    queue = deque(tasks)
    queue_lock = threading.Lock()

    def runner() -> None:
        while not stop.is_set():
            with queue_lock:
                if not queue:
                    return
                task = queue.popleft()
            task.run()

    def halt() -> None:
        stop.set()
        if on_stop is not None:
            on_stop()
        for task in tasks:
            task.interrupt()
        join_all(runners, HALT_TIMEOUT)

    runners = [
        threading.Thread(target=runner, name=f"file runner {i}", daemon=True)
        for i in range(min(max_files, len(tasks)))
    ]
    pump = _Pump(progress, tasks, events)
    try:
        for thread in runners:
            thread.start()
        while True:
            pump.run()
            if wait_threads(runners, TICK):
                break
            if cancel.is_set():
                halt()
                break
        pump.run()
    except BaseException:  # KeyboardInterrupt above all: leave resumable state, then re-raise
        halt()
        raise
    if stop.is_set():
        raise TransferError(
            "download cancelled; the bytes fetched so far are kept",
            hint="run the same command again to resume",
        )
    for task in tasks:
        if task.error is not None:
            raise task.error
    return [task.result for task in tasks if task.result is not None]


def join_all(threads: Sequence[threading.Thread], timeout: float) -> None:
    """Join the threads, `timeout` seconds at most in all (a stop never hangs on a stuck one)."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


class _Pump:
    """Forwards what the file threads report to the sink, on the calling thread."""

    def __init__(self, sink: ProgressSink, tasks: Sequence[FileTask], events: Events) -> None:
        self.sink = sink
        self.tasks = tasks
        self.events = events
        self.reported: dict[int, int] = {}
        self.active: dict[int, FileTask] = {}

    def _flush(self, task: FileTask) -> None:
        key = id(task)
        if key in self.reported:
            now = task.on_disk_bytes
            if now > self.reported[key]:
                self.sink.advance(task.job, now - self.reported[key])
                self.reported[key] = now

    def run(self) -> None:
        while self.events:
            kind, task, payload = self.events.popleft()
            if kind == "started":
                total, already = payload
                self.reported[id(task)] = already
                self.active[id(task)] = task
                self.sink.file_started(task.job, total, already)
            elif kind == "done":
                self._flush(task)
                self.active.pop(id(task), None)
                self.sink.file_done(task.job, payload)
            else:
                self.sink.message(payload)
        # Only files in flight: with 1,500 small files, walking them all 20 times a second costs.
        for task in list(self.active.values()):
            self._flush(task)
