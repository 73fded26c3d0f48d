"""Digests shared by download, verify, scan and normalize.

`hash_files` is the fast path for whole models. SHA-256 is a strict chain over the bytes of one file,
so a single file can never be split across cores; the speed comes from hashing several files at once
(hashlib and file reads both release the GIL, so plain threads run on separate cores) and from keeping
the per-chunk Python work negligible: one reusable buffer per thread, `readinto` instead of `read`
(no new bytes object per chunk), large chunks, and the kernel told the access is sequential so it
reads ahead further.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# 4 MiB: large enough that the per-chunk Python overhead vanishes and the kernel's readahead stays
# busy on a cold cache; small enough that a buffer per thread costs nothing. Measured flat between
# 256 KiB and 16 MiB on a warm cache (benchmarks/verify.py).
READ_CHUNK = 4 * 1024 * 1024
MAX_DEFAULT_JOBS = 4

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes just hashed. May be called from worker threads."""


class _Digest(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...


class Recorded(Protocol):
    """What a registry records about a file when it hashes it (`FileRecord`, the download plan's record)."""

    @property
    def size(self) -> int | None: ...
    @property
    def mtime_ns(self) -> int | None: ...
    @property
    def sha256(self) -> str | None: ...


def trusted_digest(recorded: Recorded | None, size: int, mtime_ns: int) -> str | None:
    """The one rule for skipping a re-hash: the recorded SHA-256 still holds when the file's size and
    mtime are exactly those it had when it was hashed. None when the file must be read again (nothing
    recorded, no digest or no mtime recorded, or either moved). An edit in place that restores the mtime
    is not seen: `verify` (full) and `normalize-formats --rebuild --full` read every byte."""
    if recorded is None or not recorded.sha256 or recorded.mtime_ns is None:
        return None
    if recorded.size != size or recorded.mtime_ns != mtime_ns:
        return None
    return recorded.sha256


class _Cancelled(Exception):
    """Raised inside a worker when the caller gave up (Ctrl-C): stop reading at the next chunk."""


def aggregate_sha256(files: Iterable[tuple[str, str | None]]) -> str | None:
    """One digest for a whole model: SHA-256 over `"<sha256>  <path>\\n"` lines sorted by path (the
    `sha256sum` line format, so it can be recomputed by hand). None when any file lacks a digest."""
    lines = []
    for path, digest in sorted(files):
        if not digest:
            return None
        lines.append(f"{digest}  {path}\n")
    if not lines:
        return None
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def git_blob_sha1_header(size: int) -> bytes:
    """Git hashes a blob as sha1(b"blob <size>\\0" + data): how the Hub identifies small files."""
    return b"blob %d\x00" % size


def git_blob_sha1_file(path: Path, chunk: int = READ_CHUNK) -> str:
    """The git blob id of a file on disk (what the Hub lists as the `oid` of a non-LFS file)."""
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        digest = hashlib.sha1(git_blob_sha1_header(size), usedforsecurity=False)
        _feed(handle, digest, bytearray(chunk), None)
    return digest.hexdigest()


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask, not the host's core count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_jobs() -> int:
    """Threads for hashing: one per usable core, at most MAX_DEFAULT_JOBS because beyond that the disk,
    not the CPU, is the limit."""
    return max(1, min(MAX_DEFAULT_JOBS, usable_cores()))


@dataclass(frozen=True)
class FileDigest:
    """The SHA-256 of one file, with the size and mtime it had when it was opened (what `verify --quick`
    compares later). `error` is set instead of `sha256` when the file could not be read."""

    path: Path
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    error: str | None = None
    git_sha1: str | None = None  # the git blob id, when asked for (`git_blob=True`)
    errno: int | None = None

    @property
    def ok(self) -> bool:
        return self.sha256 is not None

    def checked(self) -> FileDigest:
        """This digest, or the OSError that prevented it (for callers that stop on an unreadable file)."""
        if self.sha256 is None:
            raise OSError(self.errno or 0, self.error or "cannot read", str(self.path))
        return self


class _Tee:
    """Feeds the same bytes to several digests (SHA-256 and the git blob SHA-1 in one read)."""

    def __init__(self, *digests: _Digest) -> None:
        self._digests = digests

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        for digest in self._digests:
            digest.update(data)


def _feed(
    handle: io.FileIO,
    digest: _Digest,
    buffer: bytearray,
    progress: ProgressCallback | None,
    cancel: threading.Event | None = None,
) -> int:
    view = memoryview(buffer)
    total = 0
    while n := handle.readinto(buffer):
        digest.update(view[:n])
        total += n
        if progress is not None:
            progress(n)
        if cancel is not None and cancel.is_set():
            raise _Cancelled
    return total


def _advise_sequential(fd: int) -> None:
    # Doubles the kernel's readahead window for this file: matters on a cold cache, free otherwise.
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)


def hash_file(
    path: Path,
    *,
    buffer: bytearray | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    git_blob: bool = False,
) -> FileDigest:
    """SHA-256 of one file (and its git blob SHA-1 with `git_blob`, in the same read). OS errors
    (missing, unreadable, a folder) come back in `error`, so one bad file does not stop a whole model's
    check; `.checked()` raises them instead. The one function that hashes a file on disk."""
    path = Path(path)
    buffer = buffer if buffer is not None else bytearray(READ_CHUNK)
    sha1 = None
    try:
        with open(path, "rb", buffering=0) as handle:
            st = os.fstat(handle.fileno())
            _advise_sequential(handle.fileno())
            digest = hashlib.sha256()
            sink: _Digest = digest
            if git_blob:
                sha1 = hashlib.sha1(git_blob_sha1_header(st.st_size), usedforsecurity=False)
                sink = _Tee(digest, sha1)
            _feed(handle, sink, buffer, progress, cancel)
    except OSError as exc:
        return FileDigest(path, None, None, None, error=exc.strerror or str(exc), errno=exc.errno)
    return FileDigest(
        path, digest.hexdigest(), st.st_size, st.st_mtime_ns, git_sha1=sha1.hexdigest() if sha1 else None
    )


def sha256_file(path: Path, chunk: int = READ_CHUNK) -> str:
    """SHA-256 of one file; raises OSError like `open` does."""
    with open(path, "rb", buffering=0) as handle:
        _advise_sequential(handle.fileno())
        digest = hashlib.sha256()
        _feed(handle, digest, bytearray(chunk), None)
    return digest.hexdigest()


class HashAhead:
    """Files hashed in the background before the caller has planned its work.

    `verify` starts one from a cheap guess at its files (the merged registry read as plain JSON) before
    importing and validating the rest: on two cores that start-up is ~15% of verifying a 2 GB model, and
    it then runs beside the hashing instead of before it. `hash_files` takes a digest from here only for
    a file whose size and mtime are still those it had when it was opened; a guess that was wrong costs
    the work, never a wrong answer."""

    def __init__(self, targets: Sequence[tuple[Path, int]], *, jobs: int | None = None) -> None:
        self.started = time.perf_counter()  # when hashing began, for a rate that is true
        self.used = False  # whether any digest was taken
        self._cancel = threading.Event()

        local = threading.local()

        def work(path: Path) -> FileDigest:
            buffer = getattr(local, "buffer", None)
            if buffer is None:
                buffer = local.buffer = bytearray(READ_CHUNK)
            try:
                return hash_file(path, buffer=buffer, cancel=self._cancel)
            finally:
                self._finished.append(time.perf_counter())

        workers = max(1, min(jobs or default_jobs(), len(targets)))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imageworks-hash-ahead")
        self._finished: list[float] = []  # when each file was done (list.append is thread-safe)
        self._futures = {
            path: self._pool.submit(work, path) for path, _ in sorted(targets, key=lambda t: -t[1])
        }
        self._all = list(self._futures.values())

    def seconds_before(self, moment: float) -> float:
        """How long it was hashing before `moment` (for a true rate: a small model is hashed ahead in
        milliseconds, long before the command needs the digests)."""
        busy = any(not f.done() for f in self._all) or not self._finished
        end = moment if busy else min(moment, max(self._finished))
        return max(0.0, end - self.started)

    def take(self, path: Path) -> FileDigest | None:
        """The digest hashed ahead for `path` (waiting for it), or None: not guessed, failed, cancelled,
        or the file changed since it was opened."""
        future = self._futures.pop(Path(path), None)
        if future is None:
            return None
        try:
            digest = future.result()
        except (_Cancelled, CancelledError):
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not digest.ok or (digest.size, digest.mtime_ns) != (st.st_size, st.st_mtime_ns):
            return None
        self.used = True
        return digest

    def cancel(self) -> None:
        """Stop hashing at the next chunk (Ctrl-C: a `take` waiting for a file then gets None)."""
        self._cancel.set()

    def close(self) -> None:
        """Stop what nobody took (at the next chunk) and wait for the threads."""
        self.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


def hash_files(
    paths: Sequence[Path],
    *,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
    sizes: Sequence[int] | None = None,
    ahead: HashAhead | None = None,
) -> list[FileDigest]:
    """SHA-256 of several files, `jobs` at a time on threads. Results are in the order of `paths`.

    Files are started largest first (sizes from `sizes` when the caller already has them, else from
    stat), so one big file does not begin last and leave the other cores idle at the end. A file
    `ahead` already hashed is taken from it."""
    paths = [Path(p) for p in paths]
    if not paths:
        return []
    jobs = default_jobs() if jobs is None else max(1, jobs)
    if sizes is None:
        sizes = [_size_or_zero(p) for p in paths]
    order = sorted(range(len(paths)), key=lambda i: sizes[i], reverse=True)
    results: list[FileDigest | None] = [None] * len(paths)

    def one(index: int, buffer: bytearray, cancel: threading.Event | None = None) -> FileDigest:
        taken = ahead.take(paths[index]) if ahead is not None else None
        if taken is not None:
            if progress is not None:
                progress(taken.size or 0)
            return taken
        return hash_file(paths[index], buffer=buffer, progress=progress, cancel=cancel)

    if jobs == 1 or len(paths) == 1:
        buffer = bytearray(READ_CHUNK)
        for index in order:
            results[index] = one(index, buffer)
    else:
        local = threading.local()
        cancel = threading.Event()

        def work(index: int) -> None:
            if cancel.is_set():
                return
            buffer = getattr(local, "buffer", None)
            if buffer is None:
                buffer = local.buffer = bytearray(READ_CHUNK)
            results[index] = one(index, buffer, cancel)

        pool = ThreadPoolExecutor(max_workers=min(jobs, len(paths)), thread_name_prefix="imageworks-hash")
        try:
            # list() re-raises the first exception from a worker (a bug in a progress callback, say).
            list(pool.map(work, order))
        except BaseException:
            # Ctrl-C lands here in the main thread: without this the pool would finish every file
            # (minutes for a big model) before the interrupt got through. A worker waiting for a file
            # hashed ahead is released by cancelling that too.
            cancel.set()
            if ahead is not None:
                ahead.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    missing = [paths[i] for i, r in enumerate(results) if r is None]
    if missing:  # only reachable if a worker returned early without a cancel, i.e. a bug
        raise RuntimeError(f"hash_files produced no result for {missing[0]}")
    return [r for r in results if r is not None]


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
