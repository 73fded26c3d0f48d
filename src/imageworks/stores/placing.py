"""Putting one file on a shelf without copying: a hardlink on the same filesystem, else a copy verified
while it is written (never a symlink across tools: the Windows side of WSL cannot follow one). Both go to a
temporary name beside the target and are renamed over it, so a crash leaves no half file."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path

from imageworks.errors import IntegrityError

HARDLINK = "hardlink"
COPY = "copy"
SAME = "present"  # the target already is this file (same inode) or holds the same bytes
_TEMP = ".imageworks-link"
_CHUNK = 1 << 20


def same_filesystem(source: Path, target_dir: Path) -> bool:
    parent = target_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        return os.stat(source).st_dev == os.stat(parent).st_dev
    except OSError:
        return False


def place(source: Path, target: Path, *, sha256: str | None) -> str:
    """Make `target` hold `source`'s bytes. Returns HARDLINK, COPY or SAME. A symlinked source (an HF
    snapshot) is resolved first: the link must name the bytes, not the symlink."""
    source = Path(os.path.realpath(source))
    try:
        if target.exists() and os.path.samefile(source, target):
            return SAME
    except OSError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}{_TEMP}")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    method = COPY
    if same_filesystem(source, target.parent):
        try:
            os.link(source, temp)
            method = HARDLINK
        except OSError as exc:
            if exc.errno not in {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP}:
                raise
    if method == COPY:
        digest = copy_hashing(source, temp)
        if sha256 and digest != sha256:
            temp.unlink()
            raise IntegrityError(
                f"{source} does not hold the recorded bytes (SHA-256 {digest}, recorded {sha256})",
                path=str(source), expected=sha256, actual=digest,
                hint=f"run `imageworks-loader verify` on the model; nothing was placed at {target}",
            )  # fmt: skip
    os.replace(temp, target)
    return method


def copy_hashing(source: Path, dest: Path) -> str:
    """Copy `source` to a new file `dest`, returning the SHA-256 of what was written; mode and mtime kept."""
    digest = hashlib.sha256()
    with open(source, "rb", buffering=0) as src, open(dest, "xb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    st = os.stat(source)
    os.chmod(dest, st.st_mode & 0o777)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    return digest.hexdigest()
