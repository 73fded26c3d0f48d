"""`dedupe`: identical files held by several inodes become hardlinks to one verified file.

Plan first (pairs and bytes freed, from the recorded SHA-256 and a stat of every file: nothing is read),
then, per pair, at the moment of linking: both files hashed (each candidate once in a run), a file changed
since it was hashed is skipped, the link made beside the target and renamed over it (atomic). Never across
filesystems (a hardlink cannot cross them), never between files of different owner or mode (one inode has
one of each), never a file a download is writing (a `.imageworks-partial` sibling or the model's download
lock held)."""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.stores.copies import copies_of

if TYPE_CHECKING:
    from imageworks.registry import Registry, RegistryStore

PARTIAL = ".imageworks-partial"


@dataclass(frozen=True)
class _File:
    path: Path  # the real file (an HF snapshot symlink resolved to its blob)
    dev: int
    ino: int
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int
    nlink: int
    sha256: str | None  # recorded
    folder: Path  # the copy's folder (for the download lock)


@dataclass
class Pair:
    keep: Path
    replace: Path
    size: int
    sha256: str | None
    status: str = "planned"  # planned | linked | skipped
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "keep": str(self.keep),
            "replace": str(self.replace),
            "size": self.size,
            "sha256": self.sha256,
            "status": self.status,
            "reason": self.reason or None,
        }


@dataclass
class DedupePlan:
    pairs: list[Pair] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bytes_hashed: int = 0
    files_hashed: int = 0
    # SHA-256 by (dev, inode, size, mtime) of files read while planning: linking reuses them.
    digests: dict[tuple[int, int, int, int], str] = field(default_factory=dict)

    @property
    def bytes_planned(self) -> int:
        return sum(p.size for p in self.pairs)

    @property
    def bytes_freed(self) -> int:
        return sum(p.size for p in self.pairs if p.status == "linked")

    def as_dict(self) -> dict[str, Any]:
        return {
            "pairs": [p.as_dict() for p in self.pairs],
            "bytes_planned": self.bytes_planned,
            "bytes_freed": self.bytes_freed,
            "bytes_hashed": self.bytes_hashed,
            "files_hashed": self.files_hashed,
            "notes": self.notes,
        }


def _files(registry: Registry) -> list[_File]:
    out: dict[tuple[int, int, str], _File] = {}
    for entry in registry.entries():
        digests = {f.path: f.sha256 for f in entry.files}
        for view in copies_of(entry):
            for rel, disk, *_ in view.files:
                real = Path(os.path.realpath(disk))
                try:
                    st = os.stat(real)
                except OSError:
                    continue
                if not st.st_size or not real.is_file():
                    continue
                key = (st.st_dev, st.st_ino, str(real))
                if key in out:
                    continue
                out[key] = _File(
                    real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid,
                    st.st_nlink, digests.get(rel), view.path,
                )  # fmt: skip
    return list(out.values())


def plan_dedupe(registry: Registry) -> DedupePlan:
    """Pairs from recorded digests: same filesystem, same size, same SHA-256, different inode. A file with
    no recorded digest but a same-size partner is hashed now (once: linking reuses the digest), so it is
    paired with the files it really equals, not with the first group of its size."""
    plan = DedupePlan()
    groups: dict[tuple[int, int], list[_File]] = defaultdict(list)
    for item in _files(registry):
        groups[(item.dev, item.size)].append(item)
    for (_dev, _size), items in sorted(groups.items()):
        inodes: dict[int, _File] = {}
        for item in items:  # one name per inode: one whose entry recorded a digest, when any did
            if item.ino not in inodes or (inodes[item.ino].sha256 is None and item.sha256):
                inodes[item.ino] = item
        if len(inodes) < 2:
            continue
        by_digest: dict[str | None, list[_File]] = defaultdict(list)
        for item in inodes.values():
            by_digest[item.sha256 or _hashed_now(plan, item)].append(item)
        by_digest.pop(None, None)  # unreadable, or changed while it was read: not linked this run
        for digest, same in by_digest.items():
            _pair_up(plan, same, digest)
    return plan


def _hashed_now(plan: DedupePlan, item: _File) -> str | None:
    """The SHA-256 of a file the registry records no digest for (None: unreadable or changed meanwhile)."""
    from imageworks.hashing import sha256_file

    key = (item.dev, item.ino, item.size, item.mtime_ns)
    if key not in plan.digests:
        try:
            digest = sha256_file(item.path)
        except OSError:
            return None
        plan.bytes_hashed += item.size
        plan.files_hashed += 1
        if _stat_key(item.path) != key:
            return None
        plan.digests[key] = digest
    return plan.digests[key]


def _pair_up(plan: DedupePlan, items: list[_File], digest: str | None) -> None:
    if len(items) < 2:
        return
    # Keep the inode with the most names (fewest links to make), then the first path.
    ordered = sorted(items, key=lambda f: (-f.nlink, str(f.path)))
    keep = ordered[0]
    for other in ordered[1:]:
        plan.pairs.append(Pair(keep.path, other.path, other.size, digest))


def _busy(path: Path) -> str | None:
    """Why `path` may be open for writing by a download in progress, if it may."""
    folder = path.parent
    with contextlib.suppress(OSError):
        if any(PARTIAL in name for name in os.listdir(folder)):
            return "a download is writing in this folder (partial file beside it)"
    from imageworks.model_lock import is_held

    for candidate in (folder, *folder.parents[:3]):
        if is_held(candidate):
            return "a download of this model is in progress (its lock is held)"
    return None


def _stat_key(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def execute_dedupe(plan: DedupePlan) -> DedupePlan:
    from imageworks.hashing import sha256_file

    digests = plan.digests  # each candidate hashed once in a run, planning included

    def digest_of(path: Path) -> tuple[str, tuple[int, int, int, int]] | None:
        key = _stat_key(path)
        if key is None:
            return None
        if key not in digests:  # each candidate hashed once in a run
            digests[key] = sha256_file(path)
            plan.bytes_hashed += key[2]
            plan.files_hashed += 1
            if _stat_key(path) != key:  # changed while we read it
                digests.pop(key)
                return None
        return digests[key], key

    for pair in plan.pairs:
        busy = _busy(pair.replace) or _busy(pair.keep)
        if busy:
            pair.status, pair.reason = "skipped", busy
            continue
        keep, other = digest_of(pair.keep), digest_of(pair.replace)
        if keep is None or other is None:
            pair.status, pair.reason = "skipped", "a file changed or vanished while it was checked"
            continue
        if keep[0] != other[0] or (pair.sha256 and keep[0] != pair.sha256):
            pair.status, pair.reason = (
                "skipped",
                "the bytes differ from the recorded SHA-256 (changed since hashed)",
            )
            continue
        if keep[1][0] != other[1][0]:
            pair.status, pair.reason = "skipped", "different filesystems"
            continue
        if keep[1][1] == other[1][1]:
            pair.status, pair.reason = "linked", "already one inode"
            continue
        st_keep, st_other = os.stat(pair.keep), os.stat(pair.replace)
        if (st_keep.st_mode, st_keep.st_uid, st_keep.st_gid) != (
            st_other.st_mode,
            st_other.st_uid,
            st_other.st_gid,
        ):
            pair.status, pair.reason = "skipped", "different owner or mode (one inode has one of each)"
            continue
        temp = pair.replace.with_name(f".{pair.replace.name}.imageworks-dedupe")
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        os.link(pair.keep, temp)
        if _stat_key(pair.replace) != other[1] or _stat_key(pair.keep) != keep[1]:
            temp.unlink()
            pair.status, pair.reason = "skipped", "a file changed while it was linked"
            continue
        os.replace(temp, pair.replace)
        pair.status = "linked"
    return plan


def record_identities(store: RegistryStore, command: object, *, backup: bool = True) -> None:
    """Refresh the dev/inode the registry records for every file (after links changed them)."""
    from imageworks.stores.copies import file_identity

    with store.transaction(command, backup=backup) as registry:  # type: ignore[arg-type]
        for entry in registry.entries():
            if entry.name not in registry.discovered:
                continue
            views = copies_of(entry)
            files = list(entry.files)
            changed = False
            if views and views[0].index == 0:
                for i, record in enumerate(files):
                    ident = file_identity(views[0].path / record.path)
                    if ident and (record.dev, record.inode) != ident[:2]:
                        files[i] = record.model_copy(update={"dev": ident[0], "inode": ident[1]})
                        changed = True
            copies = []
            for copy in entry.copies:
                new_files = []
                for f in copy.files:
                    ident = file_identity(Path(copy.path) / (f.at or f.path))
                    if ident and (f.dev, f.inode) != ident[:2]:
                        f = f.model_copy(update={"dev": ident[0], "inode": ident[1]})
                        changed = True
                    new_files.append(f)
                copies.append(copy.model_copy(update={"files": new_files}))
            if changed:
                registry.put(entry.model_copy(update={"files": files, "copies": copies}))
