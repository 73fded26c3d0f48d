"""`du`: what every copy of every model costs on disk.

  logical     the bytes each copy's files claim (what the model needs, once per copy)
  physical    what the disk holds: each inode counted once (a hardlink costs nothing more)
  shared      logical - physical: bytes saved by hardlinks
  duplicated  the same SHA-256 held by several inodes (every extra inode's size)
  reclaimable what `dedupe` would free: duplicates on one filesystem (hardlinks cannot cross them)
Files are only stat'ed, never read."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imageworks.stores.copies import copies_of, place

if TYPE_CHECKING:
    from imageworks.registry import Registry

BY = ("model", "location", "tool")


@dataclass
class UsageRow:
    key: str
    logical: int = 0
    physical: int = 0
    duplicated: int = 0
    reclaimable: int = 0
    files: int = 0
    missing: int = 0
    copies: int = 0

    @property
    def shared(self) -> int:
        return self.logical - self.physical

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "logical": self.logical,
            "physical": self.physical,
            "shared": self.shared,
            "duplicated": self.duplicated,
            "reclaimable": self.reclaimable,
            "files": self.files,
            "missing": self.missing,
            "copies": self.copies,
        }


@dataclass
class UsageReport:
    by: str
    rows: list[UsageRow]
    total: UsageRow
    filesystems: dict[int, UsageRow] = field(default_factory=dict)
    mounts: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "rows": [r.as_dict() for r in self.rows],
            "total": self.total.as_dict(),
            "filesystems": [
                {**row.as_dict(), "device": dev, "example": self.mounts.get(dev)}
                for dev, row in sorted(self.filesystems.items())
            ],
        }


def disk_usage(registry: Registry, by: str = "model") -> UsageReport:
    from imageworks.errors import UsageError

    if by not in BY:
        raise UsageError(f"--by {by!r}", hint=f"use one of: {', '.join(BY)}")
    rows: dict[str, UsageRow] = {}
    total = UsageRow("total")
    filesystems: dict[int, UsageRow] = {}
    mounts: dict[int, str] = {}
    seen_row: dict[str, set[tuple[int, int]]] = defaultdict(set)
    seen_all: set[tuple[int, int]] = set()
    by_sha: dict[tuple[str, int], dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    sizes: dict[tuple[int, int], int] = {}
    owner_of: dict[tuple[int, int], list[str]] = defaultdict(list)
    for entry in registry.entries():
        digests = {f.path: f.sha256 for f in entry.files}
        for view in copies_of(entry):
            key = entry.name if by == "model" else (place(view) if by == "location" else view.tool)
            row = rows.setdefault(key, UsageRow(key))
            row.copies += 1
            total.copies += 1
            for rel, disk, *_ in view.files:
                try:
                    st = os.stat(disk)
                except OSError:
                    row.missing += 1
                    total.missing += 1
                    continue
                inode = (st.st_dev, st.st_ino)
                fs = filesystems.setdefault(st.st_dev, UsageRow(f"device {st.st_dev}"))
                mounts.setdefault(st.st_dev, str(view.path))
                for target in (row, total, fs):
                    target.logical += st.st_size
                    target.files += 1
                if inode not in seen_row[key]:
                    seen_row[key].add(inode)
                    row.physical += st.st_size
                if inode not in seen_all:
                    seen_all.add(inode)
                    total.physical += st.st_size
                    fs.physical += st.st_size
                sizes[inode] = st.st_size
                owner_of[inode].append(key)
                sha = digests.get(rel)
                if sha and st.st_size:
                    by_sha[(sha, st.st_size)][st.st_dev].add(st.st_ino)
    _count_duplicates(by_sha, owner_of, rows, total, filesystems)
    ordered = sorted(rows.values(), key=lambda r: (-r.physical, r.key))
    return UsageReport(by, ordered, total, filesystems, mounts)


def _count_duplicates(
    by_sha: dict[tuple[str, int], dict[int, set[int]]],
    owner_of: dict[tuple[int, int], list[str]],
    rows: dict[str, UsageRow],
    total: UsageRow,
    filesystems: dict[int, UsageRow],
) -> None:
    """Every inode beyond the first holding a SHA-256 is duplicated; on one filesystem, reclaimable."""
    for (_sha, size), per_dev in by_sha.items():
        inodes = [(dev, ino) for dev, inos in per_dev.items() for ino in sorted(inos)]
        if len(inodes) < 2:
            continue
        extra = (len(inodes) - 1) * size
        total.duplicated += extra
        for dev, inos in per_dev.items():
            if len(inos) > 1:
                freed = (len(inos) - 1) * size
                total.reclaimable += freed
                filesystems[dev].reclaimable += freed
                filesystems[dev].duplicated += freed
        for dev, ino in inodes[1:]:
            for key in set(owner_of[(dev, ino)]):
                rows[key].duplicated += size
                if len(per_dev[dev]) > 1:
                    rows[key].reclaimable += size
