"""The small-file engine: one keep-alive HTTP connection pool, several requests in flight.

A repo of 1,500 tokenizer/config shards is dominated by per-file costs: a HEAD before each GET, a
new connection per file, or a whole aria2c download (RPC round trips) per file. Here each file is
one GET on a connection kept alive from the pool (no HEAD: the listing already gave the size and
the git blob id or SHA-256), streamed to its temporary name while both digests are computed, then
verified and renamed like every other download. No resume records: a small file that was cut off
is fetched again whole.

The token: the first GET goes to the Hub URL with it; httpx drops Authorization on a redirect to
another host (the CDN). A signed URL that expired (401/403 off the Hub) is resolved again through
the job's resolver.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from imageworks.errors import ImageworksError, TransferError
from imageworks.hub import check_scheme, same_origin
from imageworks.transfer.base import (
    Digests,
    Events,
    FileJob,
    FileResult,
    MiB,
    PartialPaths,
    ProgressSink,
    backoff_delay,
    check_partial,
    check_partial_paths,
    commit_many,
    disk_error,
    existing_result,
    http_client,
    open_private,
    run_file_tasks,
)
from imageworks.transfer.segments import socket_of

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("imageworks.transfer.pool")

# Files below this go through the pool (non-LFS files always do). Measured on loopback with a
# 20 MB/s-per-connection cap (benchmarks/download.py): below ~4 MiB one stream is as fast as a
# segmented download once aria2c's per-file RPC and connection set-up are counted; above it, several
# connections per file win.
SMALL_FILE = 4 * MiB
WORKERS = 16  # requests in flight: latency, not bandwidth, bounds a stream of small files
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_small(size: int | None, *, lfs: bool) -> bool:
    """Whether a file goes through the pool: every non-LFS file, and LFS files below SMALL_FILE."""
    return (not lfs and size is not None) or (size is not None and size < SMALL_FILE)


class PoolEngine:
    name = "pool"

    def __init__(
        self,
        *,
        workers: int = WORKERS,
        stall_timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 1.0,
        verify: bool = True,
        note: str = "keep-alive pool",
    ) -> None:
        self.workers = max(1, workers)
        self.stall_timeout = stall_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.verify = verify
        self.note = note

    def fetch(
        self,
        jobs: Sequence[FileJob],
        progress: ProgressSink,
        *,
        cancel: threading.Event | None = None,
    ) -> list[FileResult]:

        stop = threading.Event()
        events: Events = collections.deque()
        with http_client(
            stall_timeout=self.stall_timeout, max_connections=self.workers, keepalive=self.workers
        ) as client:
            tasks = [_SmallTask(self, job, client, stop, events) for job in jobs]
            try:
                return run_file_tasks(
                    tasks, events, progress, max_files=self.workers, stop=stop, cancel=cancel
                )
            finally:
                # Verified files are renamed into place together (even when another file failed).
                verified = [t for t in tasks if t.result is not None and not t.result.skipped]
                try:
                    commit_many([(t.paths.temp, t.job.dest) for t in verified])
                except OSError as exc:
                    raise disk_error(verified[0].job, exc, 0) from exc


class _SmallTask:
    def __init__(
        self, engine: PoolEngine, job: FileJob, client: httpx.Client, stop: threading.Event, events: Events
    ) -> None:
        self.engine = engine
        self.job = job
        self.client = client
        self.stop = stop
        self.events = events
        self.paths = PartialPaths.for_dest(job.dest)
        self.result: FileResult | None = None
        self.error: BaseException | None = None
        self.on_disk_bytes = 0
        self._sock: socket.socket | None = None  # the connection of the GET in flight
        self._sock_lock = threading.Lock()

    def interrupt(self) -> None:
        """Wake a read blocked on a slow link now: a "small" file is still seconds of waiting at a few
        KB/s, and Ctrl-C used to wait for it (the read then fails and the stop flag ends the task)."""
        with self._sock_lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _track(self, sock: socket.socket | None) -> None:
        with self._sock_lock:
            self._sock = sock
        if sock is not None and self.stop.is_set():
            self.interrupt()  # stopped while the request was being sent

    def run(self) -> None:
        try:
            self.result = self._run()
            self.events.append(("done", self, self.result))
        except BaseException as exc:
            self.error = exc

    def _run(self) -> FileResult:
        import httpx

        existing = existing_result(self.job, verify=self.engine.verify)
        if existing is not None:
            self.events.append(("started", self, (existing.size, existing.size)))
            self.on_disk_bytes = existing.size
            return existing
        try:
            self.job.dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(self.job, exc, 0) from exc
        check_partial_paths(self.paths)
        url, headers = self.job.url, dict(self.job.headers)
        check_scheme(url, self.job.name)
        started = False
        failures = 0
        while True:
            if self.stop.is_set():
                raise TransferError(f"{self.job.name}: cancelled")
            try:
                with self.client.stream("GET", url, headers=headers) as response:
                    self._track(socket_of(response))
                    status = response.status_code
                    refused_off_hub = status in (401, 403) and not same_origin(str(response.url), url)
                    if refused_off_hub and self.job.resolve is not None:
                        target = self.job.resolve()  # an expired signed URL: ask the Hub again
                        url, headers = target.url, dict(target.headers)
                        raise _Retry(f"HTTP {status} from {urlsplit(str(response.url)).hostname}")
                    if status in RETRYABLE_STATUS:
                        raise _Retry(f"HTTP {status}", response.headers.get("Retry-After"))
                    if status != 200:
                        if self.job.resolve is not None and same_origin(str(response.url), url):
                            self.job.resolve()  # the Hub's refusal as our error (gated, not found...)
                        raise TransferError(
                            f"{self.job.name}: HTTP {status} from {urlsplit(str(response.url)).hostname}",
                            hint="check the URL and your access to it",
                        )
                    if not started:
                        self.events.append(("started", self, (self.job.size, 0)))
                        started = True
                    return self._save(response)
            except httpx.UnsupportedProtocol as exc:
                raise TransferError(
                    f"{self.job.name}: a redirect led to an unsupported URL scheme ({exc})",
                    hint="only http:// and https:// are downloaded; the server is misconfigured",
                ) from exc
            except (_Retry, httpx.TransportError) as exc:
                failures += 1
                self.on_disk_bytes = 0
                if failures > self.engine.retries:
                    raise TransferError(
                        f"{self.job.name}: download failed after {self.engine.retries} retries: {exc}",
                        hint="check the network and run the same command again",
                    ) from exc
                after = exc.retry_after if isinstance(exc, _Retry) else None
                wait = backoff_delay(self.engine.backoff, failures, after)
                log.info("%s: %s; retrying in %.1f s", self.job.name, exc, wait)
                if self.stop.wait(wait):
                    raise TransferError(f"{self.job.name}: cancelled") from exc
            finally:
                self._track(None)

    def _save(self, response: httpx.Response) -> FileResult:
        """Stream the body to the temporary name, hashing as it goes; verify and rename."""
        job = self.job
        digests = Digests(job.size, bool(job.git_sha1)) if self.engine.verify else None
        size = 0
        try:
            fd = open_private(self.paths.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "wb") as handle:
                for chunk in response.iter_raw(1024 * 1024):
                    if self.stop.is_set():
                        raise TransferError(f"{job.name}: cancelled")
                    size += len(chunk)
                    if job.size is not None and size > job.size:
                        break  # longer than listed: the size check below names it
                    handle.write(chunk)
                    if digests is not None:
                        digests.update(chunk)
                    self.on_disk_bytes = size
                handle.flush()
                os.fdatasync(handle.fileno())  # before the rename (`commit_many`)
        except ImageworksError:
            with contextlib.suppress(FileNotFoundError):
                self.paths.temp.unlink()
            raise
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                self.paths.temp.unlink()
            raise disk_error(job, exc, 0) from exc
        if job.size is not None and size < job.size:
            raise _Retry(f"connection closed after {size} of {job.size} bytes")
        sha256 = digests.sha256.hexdigest() if digests is not None else ""
        sha1 = digests.sha1.hexdigest() if digests is not None and digests.sha1 else None
        try:
            # Renamed into place by the engine, with the others (`commit_many`).
            final = check_partial(job, self.paths, sha256, sha1, verify=self.engine.verify)
        except OSError as exc:
            raise disk_error(job, exc, 0) from exc
        return FileResult(job, sha256, final, bytes_fetched=final, resumed_from=0, skipped=False)


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.retry_after: float | None = None
        if retry_after and retry_after.strip().isdigit():
            self.retry_after = min(600.0, float(retry_after))


__all__ = ["SMALL_FILE", "PoolEngine", "is_small"]
