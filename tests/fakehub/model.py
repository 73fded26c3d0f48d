"""What the fake Hub stores: repos, commits, files and their content, hashed the way the Hub hashes them.

A file's tree oid is the git blob SHA-1 of what git stores: the content itself for a small file, the LFS
pointer text for an LFS file (whose content is then identified by its SHA-256, as on the Hub).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

FileContent = bytes | bytearray | Path
Gated = Literal[False, "manual", "auto"]

# The Hub refuses files over 10 MB outside LFS; smaller files follow the repo's .gitattributes patterns.
DEFAULT_LFS_THRESHOLD = 10 * 1024 * 1024
# huggingface_hub's default .gitattributes, plus *.gguf which GGUF repos add themselves.
DEFAULT_LFS_PATTERNS: tuple[str, ...] = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar",
    "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*", "*.gguf",
)  # fmt: skip

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_HASH_CHUNK = 8 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def gitattributes_text(patterns: tuple[str, ...] | list[str]) -> bytes:
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in patterns).encode()


_hash_cache: dict[tuple[str, int, int], tuple[str, str | None]] = {}
_hash_cache_lock = threading.Lock()


def _hash_path(path: Path, want_sha1: bool) -> tuple[str, str | None]:
    """SHA-256 (and git blob SHA-1 if asked) of a file on disk, cached because benchmarks reuse 1 GiB files."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_cache_lock:
        cached = _hash_cache.get(key)
    if cached is not None and (cached[1] is not None or not want_sha1):
        return cached
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % st.st_size) if want_sha1 else None
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
    result = (sha256.hexdigest(), sha1.hexdigest() if sha1 is not None else None)
    with _hash_cache_lock:
        _hash_cache[key] = result
    return result


@dataclass(frozen=True)
class Blob:
    """File content: bytes in memory, or a file on disk that is never loaded whole."""

    content: bytes | Path
    size: int
    sha256: str

    def read(self, start: int, stop: int) -> bytes:
        if isinstance(self.content, bytes):
            return self.content[start:stop]
        fd = os.open(self.content, os.O_RDONLY)
        try:
            return os.pread(fd, stop - start, start)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class HubFile:
    """One file of one commit, with the metadata the Hub reports for it."""

    path: str
    size: int
    sha256: str
    oid: str  # git blob sha1 in the tree: of the content, or of the LFS pointer
    lfs: bool
    pointer_size: int | None
    blob: Blob = field(repr=False, compare=False)

    @property
    def etag(self) -> str:
        """What huggingface_hub keys its cache on: sha256 for LFS files, git sha1 otherwise."""
        return self.sha256 if self.lfs else self.oid


def make_file(
    path: str,
    content: FileContent,
    *,
    lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
    lfs_patterns: tuple[str, ...] | list[str] = DEFAULT_LFS_PATTERNS,
) -> HubFile:
    name = path.rsplit("/", 1)[-1]
    if isinstance(content, Path):
        size = content.stat().st_size
        lfs = size >= lfs_threshold or _matches_lfs(path, name, lfs_patterns)
        sha256, sha1 = _hash_path(content, want_sha1=not lfs)
        blob = Blob(content.resolve(), size, sha256)
    elif isinstance(content, bytes | bytearray):
        data = bytes(content)
        size = len(data)
        lfs = size >= lfs_threshold or _matches_lfs(path, name, lfs_patterns)
        sha256 = hashlib.sha256(data).hexdigest()
        sha1 = git_blob_sha1(data)
        blob = Blob(data, size, sha256)
    else:
        raise TypeError(f"content of {path!r} must be bytes or a Path, not {type(content).__name__}")
    if lfs:
        pointer = lfs_pointer(sha256, size)
        return HubFile(path, size, sha256, git_blob_sha1(pointer), True, len(pointer), blob)
    assert sha1 is not None
    return HubFile(path, size, sha256, sha1, False, None, blob)


def _matches_lfs(path: str, name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(path, p.replace("**/", "")) for p in patterns
    )


@dataclass(frozen=True)
class Commit:
    sha: str
    files: Mapping[str, HubFile]
    parent: str | None
    date: datetime
    title: str


@dataclass
class Repo:
    id: str  # canonical case
    gated: Gated
    private: bool
    created: datetime
    object_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name (main, feature/x, refs/pr/1) -> sha
    tags: dict[str, str] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)  # users granted access to a gated or private repo
    default_branch: str = "main"

    @property
    def key(self) -> str:
        return self.id.lower()

    @property
    def owner(self) -> str:
        return self.id.split("/", 1)[0]

    def resolve(self, revision: str) -> Commit | None:
        """A branch, tag, refs/heads/X, refs/tags/X, refs/pr/N or full commit sha -> commit."""
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and revision.startswith("refs/heads/"):
            sha = self.branches.get(revision.removeprefix("refs/heads/"))
        if sha is None and revision.startswith("refs/tags/"):
            sha = self.tags.get(revision.removeprefix("refs/tags/"))
        if sha is None and _COMMIT_RE.fullmatch(revision):
            sha = revision
        return self.commits.get(sha) if sha else None

    def can_read(self, user: str | None) -> bool:
        return user is not None and (user.lower() == self.owner.lower() or user in self.allowed)

    def last_change(self, commit: Commit, path: str) -> Commit:
        """The oldest ancestor from which `path` (a file, or a folder prefix) is unchanged."""
        current = commit
        signature = _path_signature(commit, path)
        while current.parent is not None:
            parent = self.commits[current.parent]
            if _path_signature(parent, path) != signature:
                break
            current = parent
        return current


def _path_signature(commit: Commit, path: str) -> tuple[tuple[str, str], ...]:
    prefix = path + "/"
    return tuple(sorted((p, f.oid) for p, f in commit.files.items() if p == path or p.startswith(prefix)))


def commit_sha(repo_id: str, parent: str | None, files: Mapping[str, HubFile], serial: int) -> str:
    listing = "\n".join(f"{p}\0{f.oid}" for p, f in sorted(files.items()))
    return hashlib.sha1(f"commit {repo_id}\n{parent}\n{serial}\n{listing}".encode()).hexdigest()


def commit_date(serial: int) -> datetime:
    # Deterministic, increasing dates keep test output stable across runs.
    return _EPOCH + timedelta(minutes=serial)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def folder_oid(commit: Commit, folder: str) -> str:
    listing = "\n".join(f"{p}\0{oid}" for p, oid in _path_signature(commit, folder))
    return hashlib.sha1(f"tree {folder}\n{listing}".encode()).hexdigest()


def is_plain_relative(path: str) -> bool:
    """Whether a path is a normal relative path; hostile ones ('../x', '/abs') are still listed verbatim."""
    parts = path.split("/")
    return all(p not in ("", ".", "..") for p in parts)


def folders_of(files: Mapping[str, HubFile]) -> set[str]:
    """Every folder that holds a file, for the tree listing (hostile paths contribute none)."""
    folders: set[str] = set()
    for path in files:
        if not is_plain_relative(path):
            continue
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join(parts[:i]))
    return folders
