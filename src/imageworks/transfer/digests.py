"""Hashing while downloading: SHA-256 (and the git blob SHA-1 of small files), of a file written
out of order, trailing the completed prefix as it grows (`PrefixHasher`)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from imageworks.hashing import git_blob_sha1_header
from imageworks.transfer.partial import open_private

log = logging.getLogger("imageworks.transfer")

HASH_CHUNK = 8 * 1024 * 1024
WRITEBACK_CHUNK = 64 * 1024 * 1024

# ---------------------------------------------------------------------------------------------------
# Hashing


class Digests:
    """SHA-256 always, git blob SHA-1 when the job expects one (the header needs the size up front)."""

    def __init__(self, size: int | None, want_git: bool) -> None:
        self.sha256 = hashlib.sha256()
        self.sha1 = None
        if want_git and size is not None:
            self.sha1 = hashlib.sha1(usedforsecurity=False)
            self.sha1.update(git_blob_sha1_header(size))

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.sha1 is not None:
            self.sha1.update(data)


class PrefixHasher:
    """Hashes a file while it is being written out of order: a thread reads back (from the page
    cache, where the bytes were just written) the completed contiguous prefix as it grows, so when
    the last byte lands only the unhashed tail is left. hashlib and pread release the GIL, so this
    runs beside the download threads without slowing them."""

    def __init__(self, path: Path, size: int | None, *, want_git: bool, digest: bool = True) -> None:
        self._path = path
        self._digest = digest  # False: only the early writeback (benchmarks without verification)
        self._digests = Digests(size, want_git)
        self._target = 0
        self.hashed = 0
        self._cond = threading.Condition()
        self._closed = False
        self._aborted = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"hash {path.name}", daemon=True)
        self._thread.start()

    def advance_to(self, n: int) -> None:
        with self._cond:
            if n > self._target:
                self._target = n
                self._cond.notify()

    def _run(self) -> None:
        fd = None
        flushed = 0
        # One buffer for the whole file: a fresh 8 MB bytes per read ends up retained by the
        # allocator's per-thread arenas and shows as tens of MB of RSS.
        buffer = memoryview(bytearray(HASH_CHUNK if self._digest else 0))
        try:
            fd = open_private(self._path, os.O_RDONLY)
            while True:
                with self._cond:
                    while self._target <= self.hashed and not self._closed:
                        self._cond.wait()
                    if self._target <= self.hashed or self._aborted:
                        return
                    target = self._target
                while self.hashed < target and not self._aborted:
                    want = min(HASH_CHUNK, target - self.hashed)
                    if not self._digest:
                        self.hashed += want
                        if self.hashed - flushed >= WRITEBACK_CHUNK:
                            flushed = self._start_writeback(fd, flushed)
                        continue
                    view = buffer[:want]
                    got = os.preadv(fd, [view], self.hashed)
                    if got != want:
                        raise OSError(errno.EIO, f"short read at {self.hashed} while hashing {self._path}")
                    self._digests.update(view)
                    self.hashed += want
                    if self.hashed - flushed >= WRITEBACK_CHUNK:
                        flushed = self._start_writeback(fd, flushed)
        except BaseException as exc:  # re-raised by finish(); a dead hasher must not hang the download
            self._error = exc
        finally:
            if fd is not None:
                os.close(fd)

    def _start_writeback(self, fd: int, flushed: int) -> int:
        """Hand the hashed prefix to the disk now rather than all at once in the fsync before the
        rename (the kernel would otherwise hold up to ~10% of RAM dirty, and that fsync would cost
        seconds at the end of a large file). On Linux, DONTNEED starts writeback of dirty pages
        without waiting, and drops them from the cache once clean: we will not read them again."""
        if hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, flushed, self.hashed - flushed, os.POSIX_FADV_DONTNEED)
        return self.hashed

    def finish(self, size: int) -> tuple[str, str | None]:
        """Hash up to `size` bytes and return (sha256, git sha1 or None)."""
        began, behind = time.perf_counter(), size - self.hashed
        self.advance_to(size)
        self.close()
        log.debug(
            "%s: %d bytes left to hash at the end, %.3f s",
            self._path.name,
            behind,
            time.perf_counter() - began,
        )
        if self._error is not None:
            raise self._error
        if self.hashed != size:
            raise OSError(errno.EIO, f"hashed {self.hashed} of {size} bytes of {self._path}")
        if not self._digest:
            return "", None
        sha1 = self._digests.sha1.hexdigest() if self._digests.sha1 else None
        return self._digests.sha256.hexdigest(), sha1

    def close(self, *, abort: bool = False) -> None:
        with self._cond:
            self._closed = True
            self._aborted = abort
            self._cond.notify()
        self._thread.join()
