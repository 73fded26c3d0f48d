"""Fetch one blob from the store to a file: parallel ranged GETs, SHA-256 while it streams, resume.

Written by hand on top of boto3's `get_object` because s3transfer's `download_file` can neither resume
nor hash as it goes (it writes a temp name and starts over on any failure). The shape is the one our
download engines use:

  `.NAME.imageworks-partial`          the file being written, full size from the start (sparse)
  `.NAME.imageworks-partial.s3.json`  which byte ranges are in it (key, size, sha256, ranges)

A range is recorded only after its bytes were handed to the kernel, so a kill -9 never claims bytes
that are not in the file. The completed prefix is hashed while later ranges are still arriving (read
back from the page cache), the digest is compared, and only then is the file renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from imageworks.durable import atomic_write_text, fsync_dir
from imageworks.errors import IntegrityError, TransferError
from imageworks.remote.client import S3Client, s3_errors
from imageworks.remote.config import Remote
from imageworks.transfer.base import PARTIAL_SUFFIX, merge_ranges, missing_ranges, prefix_end

STATE_SUFFIX = ".s3.json"
READ_BLOCK = 1024 * 1024
HASH_BLOCK = 4 * 1024 * 1024
CHUNK_ATTEMPTS = 3
RECORD_EVERY = 2 * 1024 * 1024  # bytes of one range between two saves of the record

ProgressFn = Callable[[int], None]


class Cancelled(Exception):
    """The pull was interrupted (Ctrl-C): workers stop at their next block."""


@dataclass(frozen=True)
class BlobJob:
    key: str
    size: int
    sha256: str
    dest: Path
    label: str


@dataclass
class FetchOutcome:
    job: BlobJob
    bytes_fetched: int = 0
    resumed_from: int = 0
    skipped: bool = False  # already on disk with the right digest


def partial_paths(dest: Path) -> tuple[Path, Path]:
    temp = dest.with_name(f".{dest.name}{PARTIAL_SUFFIX}")
    return temp, temp.with_name(temp.name + STATE_SUFFIX)


def discard_partial(dest: Path) -> None:
    for path in partial_paths(dest):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _Partial:
    """The partial file and its record of completed ranges."""

    def __init__(self, job: BlobJob) -> None:
        self.job = job
        self.temp, self.state = partial_paths(job.dest)
        self.done: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def open(self) -> int:
        """Open for writing, resuming what the record vouches for; else start over."""
        recorded = self._load()
        if recorded is not None and self.temp.is_file() and self.temp.stat().st_size == self.job.size:
            self.done = recorded
        else:
            self.done = []
            with contextlib.suppress(FileNotFoundError):
                self.state.unlink()
        fd = os.open(self.temp, os.O_RDWR | os.O_CREAT, 0o644)
        if not self.done:
            os.ftruncate(fd, 0)
        os.ftruncate(fd, self.job.size)
        return fd

    def _load(self) -> list[tuple[int, int]] | None:
        try:
            doc = json.loads(self.state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or (doc.get("key"), doc.get("size"), doc.get("sha256")) != (
            self.job.key,
            self.job.size,
            self.job.sha256,
        ):
            return None
        ranges = doc.get("done")
        if not isinstance(ranges, list):
            return None
        out = []
        for item in ranges:
            if (
                isinstance(item, list)
                and len(item) == 2
                and all(isinstance(x, int) for x in item)
                and 0 <= item[0] <= item[1] <= self.job.size
            ):
                out.append((item[0], item[1]))
        return merge_ranges(out)

    def add(self, start: int, end: int) -> None:
        with self.lock:
            self.done = merge_ranges([*self.done, (start, end)])
            doc = {"key": self.job.key, "size": self.job.size, "sha256": self.job.sha256, "done": self.done}
            # No fsync per range: a kill -9 keeps the page cache; a power loss is caught by the digest.
            tmp = self.state.with_name(self.state.name + ".tmp")
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            os.replace(tmp, self.state)

    def prefix(self) -> int:
        with self.lock:
            return prefix_end(self.done)


def _get_range(
    client: S3Client,
    remote: Remote,
    part: _Partial,
    fd: int,
    span: tuple[int, int],
    progress: ProgressFn,
    cancel: threading.Event,
) -> int:
    """GET bytes [start, end) into the file; retried from where a broken stream stopped."""
    from botocore.exceptions import BotoCoreError

    start, end = span
    pos = start
    for attempt in range(CHUNK_ATTEMPTS):
        if cancel.is_set():
            raise Cancelled()
        try:
            with s3_errors(remote, f"reading {part.job.label}"):
                answer = client.get_object(
                    Bucket=remote.bucket, Key=part.job.key, Range=f"bytes={pos}-{end - 1}"
                )
            if answer.get("ContentLength") != end - pos:
                raise TransferError(
                    f"{part.job.label}: the store answered {answer.get('ContentLength')} bytes for a "
                    f"{end - pos}-byte range (has the object changed size?)"
                )
            body = answer["Body"]
            recorded = pos
            try:
                while pos < end and not cancel.is_set():
                    data = body.read(min(READ_BLOCK, end - pos))
                    if not data:
                        break
                    view = memoryview(data)
                    while view:
                        written = os.pwrite(fd, view, pos)
                        view = view[written:]
                        pos += written
                    progress(len(data))
                    if pos - recorded >= RECORD_EVERY:
                        part.add(recorded, pos)  # a kill -9 now keeps what this range got so far
                        recorded = pos
            finally:
                body.close()
                if pos > recorded:  # also when the stream broke: those bytes are in the file
                    part.add(recorded, pos)
            if pos == end:
                return end - start
        except (BotoCoreError, ConnectionError, TimeoutError) as exc:
            if attempt == CHUNK_ATTEMPTS - 1:
                raise TransferError(
                    f"{part.job.label}: reading from the store failed {CHUNK_ATTEMPTS} times ({exc})",
                    hint="run the same pull again: it resumes",
                ) from None
    if cancel.is_set():
        raise Cancelled()
    raise TransferError(f"{part.job.label}: the stream ended early {CHUNK_ATTEMPTS} times")


class _Hasher:
    """SHA-256 of the file's completed prefix, read back from the page cache as it grows."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = hashlib.sha256()
        self.buffer = bytearray(HASH_BLOCK)  # reused: no allocation (and page faults) per block
        self.hashed = 0

    def upto(self, end: int) -> None:
        """Hash up to `end` and hand those bytes to the disk: the kernel would otherwise hold them dirty
        and the fsync before the rename would cost seconds on a large file. DONTNEED starts writeback
        without waiting and drops the pages once clean (we will not read them again), as the download
        engines do."""
        began = start = self.hashed
        view = memoryview(self.buffer)
        while start < end:
            got = os.preadv(self.fd, [view[: min(len(self.buffer), end - start)]], start)
            if not got:
                raise TransferError("the partial file is shorter than its record")
            self.digest.update(view[:got])
            start += got
        self.hashed = start
        if start > began and hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.fd, began, start - began, os.POSIX_FADV_DONTNEED)


def _fetch_missing(
    client: S3Client,
    remote: Remote,
    part: _Partial,
    fd: int,
    pool: ThreadPoolExecutor,
    report: ProgressFn,
    stop: threading.Event,
    hasher: _Hasher,
) -> int:
    """GET every range the partial file lacks, hashing the prefix while later ranges arrive."""
    pieces = [
        (s, min(s + remote.chunk_size, e))
        for s, e in missing_ranges(part.done, part.job.size)
        for s in range(s, e, remote.chunk_size)
    ]
    pending: set[Future[int]] = {
        pool.submit(_get_range, client, remote, part, fd, span, report, stop) for span in pieces
    }
    fetched = 0
    try:
        while pending:
            finished, pending = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
            for future in finished:
                fetched += future.result()
            hasher.upto(part.prefix())
    except BaseException:
        for future in pending:
            future.cancel()
        wait(pending)
        raise
    return fetched


def fetch_blob(
    client: S3Client,
    remote: Remote,
    job: BlobJob,
    pool: ThreadPoolExecutor,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> FetchOutcome:
    """Fetch `job` into its destination using `pool` for the ranged GETs (shared by every file of a
    pull, so the number of requests in flight stays `remote.concurrency`)."""
    report = progress or (lambda n: None)
    part = _Partial(job)
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    fd = part.open()
    outcome = FetchOutcome(job, resumed_from=sum(e - s for s, e in part.done))
    report(outcome.resumed_from)
    try:
        hasher = _Hasher(fd)
        stop = cancel or threading.Event()
        outcome.bytes_fetched = _fetch_missing(client, remote, part, fd, pool, report, stop, hasher)
        hasher.upto(job.size)
        actual = hasher.digest.hexdigest()
        if actual != job.sha256:
            os.close(fd)
            fd = -1
            discard_partial(job.dest)
            raise IntegrityError(
                f"{job.label}: sha256 mismatch (expected {job.sha256}, got {actual}); the store's object is "
                "corrupt, nothing was recorded",
                path=str(job.dest),
                expected=job.sha256,
                actual=actual,
                hint="run `imageworks-loader verify --remote-store REMOTE --deep`, then push the model again",
            )
        os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)
    os.replace(part.temp, job.dest)
    with contextlib.suppress(FileNotFoundError):
        part.state.unlink()
    fsync_dir(job.dest.parent)
    return outcome


def copy_verified(source: Path, job: BlobJob) -> FetchOutcome:
    """A second file with the same digest in one pull: copied from the first, not fetched again."""
    import shutil

    temp, _ = partial_paths(job.dest)
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, temp)
    os.replace(temp, job.dest)
    fsync_dir(job.dest.parent)
    return FetchOutcome(job, skipped=True)


def write_empty(job: BlobJob) -> FetchOutcome:
    if job.sha256 != hashlib.sha256(b"").hexdigest():
        raise IntegrityError(f"{job.label}: a 0-byte file cannot have sha256 {job.sha256}")
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(job.dest, b"")
    return FetchOutcome(job)
