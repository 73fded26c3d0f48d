"""What of a download is already on disk: the plan, computed before any byte moves, that `--dry-run`
prints and `download` executes. Which files of the repo to take is decided before, from the listing
alone (`imageworks.select`); here each chosen file gets its destination (refused when it would leave the
model folder), and what is on disk is checked: verified files are not fetched again, partial ones resume.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageworks.errors import InsufficientSpace, TransferError
from imageworks.hashing import hash_file, trusted_digest
from imageworks.locations import Location, safe_join
from imageworks.units import human_size, plural

# Bytes a file name needs beside its own for our temporary names (`.<name>.imageworks-partial.json.tmp`).
PARTIAL_ROOM = 30

# ------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class KnownFile:
    """What a previous download recorded about a file: enough to trust it without re-hashing."""

    size: int
    sha256: str | None
    mtime_ns: int | None
    commit: str | None = None  # the commit whose listing the file was verified against when recorded


@dataclass
class PlannedFile:
    path: str  # inside the model folder (POSIX)
    size: int | None
    sha256: str | None  # expected (LFS digest, or --sha256 for a direct URL)
    git_sha1: str | None  # expected git blob id of a small file
    dest: Path
    role: str
    present: bool = False  # on disk and verified: nothing to fetch
    local_sha256: str | None = None  # the digest of what is on disk, when known
    partial_bytes: int = 0  # bytes of an interrupted download on disk, kept for resuming
    stale: bool = False  # on disk, but not the expected bytes (changed since recorded): fetched again
    engine: str | None = None  # which engine fetches it: "pool" (small files), "aria2" or "native"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "git_sha1": self.git_sha1,
            "dest": str(self.dest),
            "role": self.role,
            "present": self.present,
            "partial_bytes": self.partial_bytes,
            "stale": self.stale,
            "engine": self.engine,
        }


@dataclass
class DownloadPlan:
    reference: str
    provider: str  # "hf" | "url"
    repo_id: str | None
    revision: str | None
    commit: str | None
    url: str | None
    location: Location
    folder: Path
    format: str | None
    quants: list[str]
    files: list[PlannedFile]
    notes: list[str] = field(default_factory=list)
    available_quants: list[str] = field(default_factory=list)
    free_bytes: int | None = None

    @property
    def bytes_total(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def to_fetch(self) -> list[PlannedFile]:
        return [f for f in self.files if not f.present]

    @property
    def stale(self) -> list[PlannedFile]:
        return [f for f in self.files if f.stale]

    @property
    def bytes_present(self) -> int:
        return sum(f.size or 0 for f in self.files if f.present)

    @property
    def bytes_remaining(self) -> int:
        return sum(max(0, (f.size or 0) - f.partial_bytes) for f in self.to_fetch)

    @property
    def enough_space(self) -> bool:
        return self.free_bytes is None or self.free_bytes >= self.bytes_remaining

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "provider": self.provider,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "url": self.url,
            "location": self.location.name,
            "folder": str(self.folder),
            "format": self.format,
            "quants": self.quants,
            "available_quants": self.available_quants,
            "files": [f.as_dict() for f in self.files],
            "bytes_total": self.bytes_total,
            "bytes_present": self.bytes_present,
            "bytes_remaining": self.bytes_remaining,
            "free_bytes": self.free_bytes,
            "enough_space": self.enough_space,
            "notes": list(self.notes),
        }


def destination(folder: Path, path: str) -> Path:
    """Where a server path lands: refused (UnsafePathError) when it would leave the model folder."""
    return safe_join(folder, path)


def _allocated(path: Path) -> int:
    try:
        st = path.stat()
    except OSError:
        return 0
    # Partial files are sparse while segments are in flight: count what is really on disk.
    blocks = getattr(st, "st_blocks", None)
    return st.st_size if blocks is None else min(st.st_size, blocks * 512)


def _trusted(planned: PlannedFile, known: KnownFile | None, st: os.stat_result, commit: str | None) -> bool:
    """Whether the record of a file on disk can stand for hashing it: the file is as it was recorded
    (size and mtime), and what was recorded is what we expect now."""
    if trusted_digest(known, st.st_size, st.st_mtime_ns) is None:
        return False
    assert known is not None
    if planned.sha256:
        return known.sha256 == planned.sha256
    if planned.git_sha1:
        # A small file: the record holds its SHA-256, the listing its git blob id; the record was verified
        # against the listing of the commit it names.
        return commit is not None and known.commit == commit
    return True  # a direct URL without a published digest: the record is all there is


def check_present(planned: PlannedFile, known: KnownFile | None, commit: str | None = None) -> None:
    """Fill `present`/`local_sha256`/`stale`/`partial_bytes` from the disk. A file recorded by an earlier
    download, unchanged since (size and mtime) and recorded for what we expect, is trusted without reading
    it, which keeps an up-to-date re-run fast; anything else on disk is hashed and compared with the
    expected digest (for a direct URL without --sha256: with the digest recorded last time). A file that
    does not match is `stale`: fetched again."""
    dest = planned.dest
    try:
        st = dest.stat()
    except OSError:
        st = None
    if st is not None and dest.is_file():
        if planned.size is not None and st.st_size != planned.size:
            planned.stale = True
        elif _trusted(planned, known, st, commit):
            assert known is not None
            planned.present, planned.local_sha256 = True, known.sha256
            return
        else:
            _hash_and_compare(planned, known, st)
            if planned.present:
                return
    from imageworks.transfer.base import PartialPaths

    planned.partial_bytes = min(planned.size or 0, _allocated(PartialPaths.for_dest(dest).temp))


def _hash_and_compare(planned: PlannedFile, known: KnownFile | None, st: os.stat_result) -> None:
    """Hash the file on disk and compare with what is expected: `present` or `stale`. A file with nothing
    to compare against is neither (the engine decides what to do with it)."""
    expected = planned.sha256 or (known.sha256 if known is not None and not planned.git_sha1 else None)
    if not (expected or planned.git_sha1):
        return
    on_disk = hash_file(planned.dest, git_blob=planned.git_sha1 is not None).checked()
    sha256, sha1 = on_disk.sha256, on_disk.git_sha1
    if (expected is None or sha256 == expected) and (planned.git_sha1 is None or sha1 == planned.git_sha1):
        planned.present, planned.local_sha256 = True, sha256
    else:
        planned.stale = True


def _name_max(folder: Path) -> int:
    probe = folder
    while probe.parent != probe and not _exists(probe):
        probe = probe.parent
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # ENAMETOOLONG and the like: not a folder we can use
        return False


def check_name_lengths(folder: Path, paths: Iterable[str]) -> None:
    """Names the filesystem cannot hold fail the plan up front, each named, instead of an OSError
    (ENAMETOOLONG) in the middle of the download. A file's name needs room for our temporary name."""
    limit = _name_max(folder)
    if any(len(os.fsencode(part)) > limit for part in folder.parts):
        raise TransferError(
            f"the folder {folder} has a name too long for its filesystem",
            hint="choose a --location on a filesystem with longer names",
        )
    too_long = []
    for path in paths:
        parts = path.split("/")
        for i, part in enumerate(parts):
            room = limit - (PARTIAL_ROOM if i == len(parts) - 1 else 0)
            if len(os.fsencode(part)) > room:
                too_long.append(f"{path} ({len(os.fsencode(part))} bytes in {part[:24]}...; at most {room})")
                break
    if too_long:
        raise TransferError(
            f"{plural(len(too_long), 'file name')} too long for the filesystem at {folder}: {'; '.join(too_long)}",
            hint="leave them out with --exclude GLOB, or choose a --location on a filesystem with longer names",
        )


def free_space(folder: Path) -> int | None:
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return None
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def check_space(plan: DownloadPlan) -> None:
    if not plan.enough_space:
        assert plan.free_bytes is not None
        raise InsufficientSpace(
            f"not enough free space in {plan.folder}: {human_size(plan.bytes_remaining)} to fetch,"
            f" {human_size(plan.free_bytes)} free",
            hint="free some space or choose another --location",
        )


def build_plan(
    *,
    reference: str,
    provider: str,
    location: Location,
    folder: Path,
    files: Iterable[tuple[str, int | None, str | None, str | None, str]],
    known: Mapping[str, KnownFile] | None = None,
    format: str | None = None,
    quants: Sequence[str] = (),
    available_quants: Sequence[str] = (),
    notes: Sequence[str] = (),
    repo_id: str | None = None,
    revision: str | None = None,
    commit: str | None = None,
    url: str | None = None,
    check_disk: bool = True,
) -> DownloadPlan:
    """`files` are (path, size, sha256, git_sha1, role). Every path is checked against the folder
    (UnsafePathError) before anything else, so a hostile listing fails the whole plan."""
    known = known or {}
    rows = list(files)
    check_name_lengths(folder, (row[0] for row in rows))
    planned = [
        PlannedFile(path, size, sha256, git_sha1, destination(folder, path), role)
        for path, size, sha256, git_sha1, role in rows
    ]
    if check_disk:
        for item in planned:
            check_present(item, known.get(item.path), commit)
    return DownloadPlan(
        reference=reference,
        provider=provider,
        repo_id=repo_id,
        revision=revision,
        commit=commit,
        url=url,
        location=location,
        folder=folder,
        format=format,
        quants=list(quants),
        files=planned,
        notes=list(notes),
        available_quants=list(available_quants),
        free_bytes=free_space(folder),
    )


def known_files(records: Iterable[Any], commit: str | None = None) -> dict[str, KnownFile]:
    """KnownFile per relative path, from registry FileRecords (path, size, sha256, mtime_ns) of an entry
    recorded from `commit`."""
    return {r.path: KnownFile(r.size, r.sha256, r.mtime_ns, commit) for r in records}
