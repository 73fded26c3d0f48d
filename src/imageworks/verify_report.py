"""What verify reports: the status words of a file and of a model, and the typed results (a
`VerifyReport` per model, a `VerifyRun` per command) that the CLI renders as a table or as `--json`.
Split from verify.py, which plans, hashes and records; verify_hub.py fills in the remote check."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# File statuses.
F_OK = "ok"
F_CHANGED = "changed"  # same size, different SHA-256
F_SIZE = "size differs"  # truncated, grown, or replaced by another file
F_MISSING = "missing"
F_EXTRA = "extra"
F_UNREADABLE = "unreadable"
F_NO_DIGEST = "no digest"
F_RECORDED = "recorded"  # --record stored the digest it just computed
F_MTIME = "mtime differs"  # --quick: same size, different mtime; the content is unknown
F_UNSAFE = "unsafe path"
F_REMOTE = "remote mismatch"  # recorded digest or size differs from the Hub's for the recorded commit
F_NOT_ON_HUB = "not on hub"

# Model statuses, most serious first: a model's headline is the first that applies.
CHANGED = "changed"
MISSING = "missing"
EXTRA = "extra"
REMOTE_MISMATCH = "remote mismatch"
INCONSISTENT = "registry inconsistent"  # recorded aggregate_sha256 disagrees with the recorded files
REMOTE_ERROR = "remote unavailable"
NO_DIGESTS = "no digests"
NOT_INSTALLED = "not installed"
RECORDED = "recorded"
OK = "ok"
SKIPPED = "skipped"
SEVERITY = [CHANGED, MISSING, EXTRA, REMOTE_MISMATCH, INCONSISTENT, REMOTE_ERROR, NO_DIGESTS, NOT_INSTALLED]
FILE_PROBLEM = {
    F_CHANGED: CHANGED,
    F_SIZE: CHANGED,
    F_MTIME: CHANGED,
    F_UNREADABLE: CHANGED,
    F_UNSAFE: CHANGED,
    F_MISSING: MISSING,
    F_EXTRA: EXTRA,
    F_NO_DIGEST: NO_DIGESTS,
    F_REMOTE: REMOTE_MISMATCH,
    F_NOT_ON_HUB: REMOTE_MISMATCH,
}


@dataclass
class FileCheck:
    path: str
    status: str
    expected_size: int | None = None
    actual_size: int | None = None
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    remote_sha256: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyReport:
    name: str
    path: str | None
    mode: Literal["full", "quick"]
    status: str = OK
    problems: list[str] = field(default_factory=list)
    files: list[FileCheck] = field(default_factory=list)
    hashed_bytes: int = 0
    # Wall time of the hashing step this model's files were part of (shared by every model of a run:
    # all files go through one pool).
    hash_seconds: float = 0.0
    remote: str | None = None  # None: not asked; else "ok", "skipped: …", "mismatch", "error: …"
    verified_at: str | None = None  # set when this run recorded it
    recorded_digests: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in {OK, RECORDED, SKIPPED}

    @property
    def problem_files(self) -> list[FileCheck]:
        return [f for f in self.files if f.status not in {F_OK, F_RECORDED}]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "mode": self.mode,
            "status": self.status,
            "ok": self.ok,
            "problems": self.problems,
            "files": [f.as_dict() for f in self.files],
            "hashed_bytes": self.hashed_bytes,
            "hash_seconds": round(self.hash_seconds, 3),
            "remote": self.remote,
            "verified_at": self.verified_at,
            "recorded_digests": self.recorded_digests,
            "notes": self.notes,
        }


@dataclass
class VerifyRun:
    """The result of one verify command: a report per model and the whole run's figures."""

    reports: list[VerifyReport]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    @property
    def hashed_bytes(self) -> int:
        return sum(r.hashed_bytes for r in self.reports)

    def as_dict(self) -> dict[str, Any]:
        return {
            "models": [r.as_dict() for r in self.reports],
            "hashed_bytes": self.hashed_bytes,
            "seconds": round(self.seconds, 3),
        }
