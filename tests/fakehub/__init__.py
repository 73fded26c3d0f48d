"""A local fake Hugging Face Hub (API, resolve, CDN) for tests and benchmarks. See server.FakeHub."""

from .faults import Fault, FaultKind, TokenBucket
from .model import (
    DEFAULT_LFS_PATTERNS,
    DEFAULT_LFS_THRESHOLD,
    Blob,
    Commit,
    HubFile,
    Repo,
    git_blob_sha1,
    lfs_pointer,
)
from .server import FakeHub, RecordedRequest

__all__ = [
    "DEFAULT_LFS_PATTERNS",
    "DEFAULT_LFS_THRESHOLD",
    "Blob",
    "Commit",
    "FakeHub",
    "Fault",
    "FaultKind",
    "HubFile",
    "RecordedRequest",
    "Repo",
    "TokenBucket",
    "git_blob_sha1",
    "lfs_pointer",
]
