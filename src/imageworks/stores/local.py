"""A download whose bytes this machine already holds (issue 9.4, 11).

Downloading a model that is registered elsewhere (say `--location windows_lmstudio` for a model in
`linux_wsl`) takes each file from the registered copy, never from the network: a hardlink when both
folders are on one filesystem, else a local copy whose SHA-256 is checked while it is written. Never a
symlink: the Windows side of WSL cannot follow one. The entry gains a copy; nothing becomes untracked.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from imageworks.stores.copies import copies_of, copy_file
from imageworks.units import plural

if TYPE_CHECKING:
    from imageworks.plan import DownloadPlan, PlannedFile
    from imageworks.registry import ModelEntry, Registry, RegistryStore

HARDLINK = "hardlink"
COPY = "copy"
_TEMP_SUFFIX = ".imageworks-local"
_CHUNK = 1 << 20


@dataclass
class _Source:
    path: Path
    sha256: str | None
    size: int
    trusted: bool  # the entry was verified and the file's size and mtime are as recorded


@dataclass
class LocalTake:
    """What was (or, in a dry run, would be) taken from copies on this machine."""

    taken: list[tuple[str, Path, str]] = field(default_factory=list)  # (file, source, hardlink|copy)
    notes: list[str] = field(default_factory=list)

    @property
    def method(self) -> str | None:
        methods = {m for _, _, m in self.taken}
        return COPY if COPY in methods else (HARDLINK if methods else None)


def _sources(registry: Registry, plan: DownloadPlan) -> tuple[dict[str, _Source], dict[str, list[_Source]]]:
    """Registered files on disk by SHA-256, and by relative path (for small files the plan knows only by
    git blob id) within entries of the same repo. Files in the plan's own folder are not sources. Only
    files the plan wants are stat'ed (a registry of thousands of models costs no disk access)."""
    by_sha: dict[str, _Source] = {}
    by_path: dict[str, list[_Source]] = {}
    target = plan.folder.absolute()
    same_repo = (plan.repo_id or "").lower()
    wanted_sha = {f.sha256 for f in plan.to_fetch if f.sha256}
    wanted_path = {f.path for f in plan.to_fetch if not f.sha256}
    for name, raw in registry.merged_raw().items():
        # Filter on the stored dicts; only a candidate is validated (a 10k registry stays cheap).
        repo_match = (
            bool(same_repo) and str((raw.get("source") or {}).get("repo_id") or "").lower() == same_repo
        )
        raw_files = [f for f in raw.get("files") or () if isinstance(f, dict)]
        if not repo_match and not any(f.get("sha256") in wanted_sha for f in raw_files):
            continue
        entry = registry.get(name)
        if entry is None:
            continue
        records = {f.path: f for f in entry.files}
        for view in copies_of(entry):
            if view.path.absolute() == target:
                continue
            for rel, disk, _size, *_ in view.files:
                record = records.get(rel)
                if record is None or not (record.sha256 in wanted_sha or (repo_match and rel in wanted_path)):
                    continue
                source = _check(disk, record.size, record.mtime_ns if view.index == 0 else None, entry)
                if source is None:
                    continue
                source.sha256 = record.sha256
                if record.sha256 and record.sha256 not in by_sha:
                    by_sha[record.sha256] = source
                if repo_match:
                    by_path.setdefault(rel, []).append(source)
    return by_sha, by_path


def _check(disk: Path, size: int, mtime_ns: int | None, entry: ModelEntry) -> _Source | None:
    try:
        st = disk.stat()
    except OSError:
        return None
    if st.st_size != size:
        return None
    trusted = entry.verified_at is not None and (mtime_ns is None or mtime_ns == st.st_mtime_ns)
    return _Source(disk, None, size, trusted)


def take_local(plan: DownloadPlan, registry: Registry, *, dry_run: bool = False) -> LocalTake:
    """Fill the plan's missing files from registered copies on this machine; the files taken are marked
    present (verified) in the plan, so the engine fetches only the rest."""
    result = LocalTake()
    wanted = [f for f in plan.to_fetch if f.size is not None]
    if not wanted:
        return result
    by_sha, by_path = _sources(registry, plan)
    picks: list[tuple[PlannedFile, _Source]] = []
    for item in wanted:
        source = by_sha.get(item.sha256) if item.sha256 else None
        if source is None and item.git_sha1:
            source = next((s for s in by_path.get(item.path, ()) if s.size == item.size), None)
        if source is not None:
            picks.append((item, source))
    if not picks:
        return result
    for item, source in picks:
        if dry_run:
            result.taken.append((item.path, source.path, _how(source.path, item.dest)))
            continue
        method = _materialise(item, source)
        if method is not None:
            result.taken.append((item.path, source.path, method))
    if result.taken:
        result.notes.append(_summary(result, plan, dry_run))
    return result


def _how(source: Path, dest: Path) -> str:
    parent = dest.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        return HARDLINK if os.stat(source).st_dev == os.stat(parent).st_dev else COPY
    except OSError:
        return COPY


def _materialise(item: PlannedFile, source: _Source) -> str | None:
    """Hardlink (same filesystem, the source verified) or copy while hashing; atomic rename into place.
    Returns the method, or None when the source turned out not to hold the expected bytes."""
    item.dest.parent.mkdir(parents=True, exist_ok=True)
    # An HF snapshot file is a symlink to its blob: link the bytes, never the symlink.
    source = _Source(Path(os.path.realpath(source.path)), source.sha256, source.size, source.trusted)
    temp = item.dest.with_name(f".{item.dest.name}{_TEMP_SUFFIX}")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    method = _how(source.path, item.dest)
    if method == HARDLINK and source.trusted and item.sha256 and source.sha256 == item.sha256:
        try:
            os.link(source.path, temp)
        except OSError as exc:
            if exc.errno not in {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP}:
                raise
            method = COPY
    if not temp.exists():
        ok = (
            _copy_verified(source.path, temp, item)
            if method == COPY
            else _link_verified(source.path, temp, item)
        )
        if not ok:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            return None
    os.replace(temp, item.dest)
    _discard_partials(item.dest)
    item.present = True
    item.local_sha256 = item.sha256 or source.sha256
    item.partial_bytes = 0
    return method


def _digests(path: Path, out: Path | None) -> tuple[str, str, int]:
    """(sha256, git blob sha1, size) of `path`, written to `out` on the way when given."""
    size = path.stat().st_size
    sha = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\x00" % size, usedforsecurity=False)
    with open(path, "rb", buffering=0) as src, open(out, "xb") if out else contextlib.nullcontext() as dst:
        while chunk := src.read(_CHUNK):
            sha.update(chunk)
            blob.update(chunk)
            if dst is not None:
                dst.write(chunk)
        if dst is not None:
            dst.flush()
            os.fsync(dst.fileno())
    with contextlib.suppress(OSError):
        st = path.stat()
        if out is not None:
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.chmod(out, st.st_mode & 0o777)
    return sha.hexdigest(), blob.hexdigest(), size


def _matches(item: PlannedFile, sha: str, blob: str, size: int) -> bool:
    if item.size is not None and size != item.size:
        return False
    if item.sha256:
        return sha == item.sha256
    return bool(item.git_sha1) and blob == item.git_sha1


def _copy_verified(source: Path, temp: Path, item: PlannedFile) -> bool:
    sha, blob, size = _digests(source, temp)
    item.local_sha256 = sha
    return _matches(item, sha, blob, size)


def _link_verified(source: Path, temp: Path, item: PlannedFile) -> bool:
    """A source not vouched for by a verify (or a small file known by git id): hash it, then link."""
    sha, blob, size = _digests(source, None)
    if not _matches(item, sha, blob, size):
        return False
    try:
        os.link(source, temp)
    except OSError:
        return _copy_verified(source, temp, item)
    return True


def _discard_partials(dest: Path) -> None:
    from imageworks.transfer import PartialPaths

    PartialPaths.for_dest(dest).discard()


def _summary(result: LocalTake, plan: DownloadPlan, dry_run: bool) -> str:
    sources = sorted({str(_copy_folder(rel, source)) for rel, source, _ in result.taken})
    hardlinked = sum(1 for *_, m in result.taken if m == HARDLINK)
    copied = len(result.taken) - hardlinked
    verb = "would take" if dry_run else "took"
    parts = []
    if hardlinked:
        parts.append(f"{hardlinked} hardlinked (same filesystem)")
    if copied:
        parts.append(f"{copied} copied and verified (another filesystem: no hardlink possible)")
    rest = len(plan.to_fetch) if not dry_run else len(plan.to_fetch) - len(result.taken)
    tail = "nothing fetched from the network" if rest == 0 else f"{plural(rest, 'file')} still to fetch"
    copies = "the copy" if len(sources) == 1 else "the copies"
    taken = plural(len(result.taken), "file")
    return f"{verb} {taken} from {copies} in {', '.join(sources)}: {', '.join(parts)}; {tail}"


def _copy_folder(rel: str, source: Path) -> Path:
    """The folder of the copy a file was taken from (`source` minus the file's path inside it)."""
    depth = len(Path(rel).parts)
    if source.as_posix().endswith("/" + rel) and depth < len(source.parts):
        return source.parents[depth - 1]
    return source.parent


def _same_model(entry: ModelEntry, plan: DownloadPlan) -> bool:
    if plan.repo_id:
        return (entry.source.repo_id or "").lower() == plan.repo_id.lower()
    return bool(plan.url) and entry.source.url == plan.url


def record_local_copies(
    store: RegistryStore, plan: DownloadPlan, take: LocalTake, *, command: object, backup: bool = True
) -> None:
    """Record the plan's folder as a copy (made by hardlink or copy) on each entry whose files it now
    holds, before the download records its entries: the method survives the merge (`carry_copies`)."""
    from imageworks.clock import utc_now
    from imageworks.registry.schema import Copy
    from imageworks.stores.copies import add_copy

    if not take.taken or take.method is None:
        return
    by_path = {f.path: f for f in plan.files if f.present}
    with store.transaction(command, backup=backup) as registry:  # type: ignore[arg-type]
        for entry in registry.entries():
            if not entry.files or not entry.path:
                continue
            if not _same_model(entry, plan):
                continue
            if not all(
                f.path in by_path and (by_path[f.path].local_sha256 in (None, f.sha256)) for f in entry.files
            ):
                continue
            files = [copy_file(f.path, plan.folder / f.path, plan.folder) for f in entry.files]
            copy = Copy(
                path=str(plan.folder),
                tool="imageworks",
                method=take.method,  # type: ignore[arg-type]
                location=plan.location.name,
                files=files,
                created_at=utc_now(),
            )
            updated, changed = add_copy(entry, copy)
            if changed and entry.name in registry.discovered:
                registry.put(updated)


def take_local_copies(
    plan: DownloadPlan, store: RegistryStore, *, dry_run: bool, command: object, backup: bool = True
) -> LocalTake:
    """The downloader's one hook: fill what this machine holds, say so in the plan's notes, record the copy."""
    take = take_local(plan, store.load(), dry_run=dry_run)
    plan.notes.extend(take.notes)
    if not dry_run:
        record_local_copies(store, plan, take, command=command, backup=backup)
    return take
