"""The steps of one model's update (see `imageworks.update`): plan, fetch into the staging folder, keep
the old revision, switch the verified files in, record. Each step leaves a state the next run of `update`
resumes from."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.errors import UsageError
from imageworks.outdated import METADATA_ONLY, ModelStatus, NewFile

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.hub import HubClient
    from imageworks.plan import PlannedFile
    from imageworks.registry import Registry
    from imageworks.registry.schema import Copy, FileRecord, ModelEntry
    from imageworks.transfer import Engine, ProgressSink
    from imageworks.update import UpdatedModel

STAGE_PREFIX = ".imageworks-update-"


@dataclass
class Item:
    new: NewFile
    dest: Path  # the file's place in the model folder
    staged: Path  # where a changed or new file is fetched to
    action: str  # "reuse" | "in place" | "staged" | "fetch"
    sha256: str | None = None  # of the new bytes, once known
    partial_bytes: int = 0


@dataclass
class Work:
    status: ModelStatus
    entry: ModelEntry
    folder: Path
    stage: Path
    items: list[Item]
    result: UpdatedModel
    old_folder: Path | None = None


# ------------------------------------------------------------------------------------------ planning


def foreign_store(entry: ModelEntry) -> str | None:
    """The other tool whose store holds this entry's files (we never write those), or None."""
    tool = getattr(entry, "tool", None)
    if tool in ("hf-cache", "ollama", "llama.cpp"):
        return {"hf-cache": "the Hugging Face cache", "ollama": "Ollama's store"}.get(tool, f"{tool}'s store")
    parts = Path(entry.path or "").parts
    if "snapshots" in parts and any(p.startswith("models--") for p in parts):
        return "the Hugging Face cache"
    if ".ollama" in parts or (entry.location or "").lower() == "ollama":
        return "Ollama's store"
    return None


def _planned(item_new: NewFile, dest: Path) -> PlannedFile:
    from imageworks.plan import PlannedFile

    listed = item_new.listed
    return PlannedFile(
        listed.path, listed.size, listed.sha256, None if listed.lfs else listed.git_sha1, dest, item_new.role
    )


def _still_old(dest: Path, record: FileRecord | None) -> bool:
    """Whether `dest` is untouched since the entry recorded it (so it cannot hold the new bytes)."""
    if record is None or record.mtime_ns is None:
        return False
    try:
        st = dest.stat()
    except OSError:
        return False
    return st.st_size == record.size and st.st_mtime_ns == record.mtime_ns


def _size_on_disk(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _plan_item(new: NewFile, folder: Path, stage: Path) -> Item:
    """Reuse an unchanged file (still there), find the new bytes already in place or staged by an
    interrupted run, or fetch them."""
    from imageworks.plan import check_present, destination

    dest = destination(folder, new.listed.path)
    staged = destination(stage, new.listed.path)
    if new.unchanged and _size_on_disk(dest) == new.listed.size:
        assert new.record is not None
        return Item(new, dest, staged, "reuse", sha256=new.record.sha256)
    if not _still_old(dest, new.record):
        in_place = _planned(new, dest)
        check_present(in_place, None)
        if in_place.present:
            return Item(new, dest, staged, "in place", sha256=in_place.local_sha256)
    staging = _planned(new, staged)
    check_present(staging, None)
    if staging.present:
        return Item(new, dest, staged, "staged", sha256=staging.local_sha256)
    return Item(new, dest, staged, "fetch", partial_bytes=staging.partial_bytes)


def plan_model(status: ModelStatus, result: UpdatedModel) -> Work:
    entry = status.entry
    assert entry is not None and entry.path and status.new_commit
    folder = Path(entry.path)
    stage = folder / f"{STAGE_PREFIX}{status.new_commit[:12]}"
    items = [_plan_item(new, folder, stage) for new in status.new_files]
    fetch = [i for i in items if i.action == "fetch"]
    result.bytes_to_fetch = sum(max(0, i.new.listed.size - i.partial_bytes) for i in fetch)
    result.files_reused = sum(1 for i in items if i.action == "reuse")
    return Work(status, entry, folder, stage, items, result)


# ------------------------------------------------------------------------------------------ executing


def fetch(work: Work, hub: HubClient, engine: Engine, progress: ProgressSink) -> None:
    from imageworks.transfer import FileJob

    fetch = [i for i in work.items if i.action == "fetch"]
    if not fetch:
        return
    repo_id, commit = work.status.repo_id, work.status.new_commit
    assert repo_id and commit
    jobs = []
    for item in fetch:
        item.staged.parent.mkdir(parents=True, exist_ok=True)
        listed = item.new.listed
        # As a download does: the engine resolves each file when it starts, and again if the CDN
        # refuses an expired signed URL.
        jobs.append(
            FileJob(
                url=hub.file_url(repo_id, commit, listed.path),
                dest=item.staged,
                size=listed.size,
                sha256=listed.sha256,
                git_sha1=None if listed.lfs else listed.git_sha1,
                headers=hub.auth_headers(),
                label=listed.path,
                resolve=hub.resolver(repo_id, commit, listed.path),
                root=work.stage,
            )
        )
    by_path = {i.new.listed.path: i for i in fetch}
    for done in engine.fetch(jobs, progress):
        by_path[done.job.label].sha256 = done.sha256
        work.result.bytes_fetched += done.bytes_fetched
        work.result.bytes_resumed += 0 if done.skipped else done.resumed_from
        work.result.files_fetched += 0 if done.skipped else 1


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        # A filesystem without hardlinks (some network shares): a copy keeps the old revision usable.
        shutil.copy2(source, target)


def keep_old(work: Work) -> None:
    """Hardlink the old files into `<folder>@<old commit12>`, built under a hidden name and renamed once
    complete, so a re-run after a crash knows an existing folder is whole."""
    from imageworks.durable import fsync_dir
    from imageworks.locations import safe_join

    old_commit = (work.entry.source.commit or "unknown")[:12]
    final = work.folder.with_name(f"{work.folder.name}@{old_commit}")
    work.old_folder = final
    if final.exists():
        return
    replaced = [r.path for r in work.entry.files if not _still_old(safe_join(work.folder, r.path), r)]
    if replaced:
        raise UsageError(
            f"cannot keep the previous revision of {work.entry.name}: {replaced[0]} is no longer the recorded file",
            hint="an earlier update was interrupted after replacing it; run `update` without --keep-old",
        )
    building = work.folder.with_name(f".{final.name}.imageworks-partial")
    shutil.rmtree(building, ignore_errors=True)
    for record in work.entry.files:
        _link_or_copy(safe_join(work.folder, record.path), safe_join(building, record.path))
    os.replace(building, final)
    fsync_dir(final.parent)


def _shared_elsewhere(registry: Registry, entry: ModelEntry, path: str) -> bool:
    from imageworks.naming import path_key

    key = path_key(entry.path)
    return any(
        other.name != entry.name and path_key(other.path) == key and any(f.path == path for f in other.files)
        for other in registry.entries()
    )


def switch(work: Work, registry: Registry) -> None:
    """Move the verified new files into place, then delete what left the selection."""
    from imageworks.durable import fsync_dir
    from imageworks.locations import safe_join

    folders: set[Path] = set()
    for item in work.items:
        if item.action in ("staged", "fetch"):
            item.dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item.staged, item.dest)
            folders.add(item.dest.parent)
    for folder in folders:
        fsync_dir(folder)
    for record in work.status.removed:
        if _shared_elsewhere(registry, work.entry, record.path):
            continue
        target = safe_join(work.folder, record.path)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        for parent in target.parents:  # folders the file leaves empty (onnx/, original/)
            if parent == work.folder or not parent.is_relative_to(work.folder):
                break
            with contextlib.suppress(OSError):
                parent.rmdir()


def _linked_elsewhere(work: Work) -> int:
    """Changed files that have another name on disk that no refreshed copy accounts for (a link made by
    hand or by another tool): that name keeps the old bytes."""
    count = 0
    for item in work.items:
        if item.action == "reuse" or item.new.record is None:
            continue
        path = item.new.record.path
        ours = sum(1 for c in work.entry.copies if refreshable(c) and any(f.path == path for f in c.files))
        with contextlib.suppress(OSError):
            if _still_old(item.dest, item.new.record) and item.dest.stat().st_nlink > 1 + ours:
                count += 1
    return count


def _records(work: Work) -> list[FileRecord]:
    from imageworks.registry.schema import FileRecord

    out = []
    for item in work.items:
        if item.action == "reuse":
            assert item.new.record is not None
            out.append(item.new.record.model_copy(update={"path": item.new.listed.path}))
            continue
        st = item.dest.stat()
        out.append(
            FileRecord(
                path=item.new.listed.path, size=st.st_size, sha256=item.sha256, mtime_ns=st.st_mtime_ns
            )
        )
    return out


# ------------------------------------------------------------------------------------------ recording


def _new_entry(work: Work, now: str) -> ModelEntry:
    from imageworks.entries import build_entry, renamed
    from imageworks.registry.schema import Source

    source = Source.model_validate(
        {**work.entry.source.model_dump(), "repo_id": work.status.repo_id, "commit": work.status.new_commit}
    )
    built = build_entry(
        work.folder,
        source=source,
        location=work.entry.location,
        files=_records(work),
        downloaded_at=now,
        verified_at=now,
    )
    return renamed(built, work.entry.name)


def _old_entry(work: Work) -> ModelEntry:
    from imageworks.entries import renamed
    from imageworks.registry.schema import Source

    assert work.old_folder is not None
    commit = work.entry.source.commit
    source = Source.model_validate({**work.entry.source.model_dump(), "revision": commit})
    kept = work.entry.model_copy(update={"path": str(work.old_folder), "source": source, "copies": []})
    return renamed(kept, f"{work.entry.name}@{(commit or 'unknown')[:12]}")


def _refresh_siblings(
    registry: Registry, work: Work, statuses: dict[str, ModelStatus], skip: set[str]
) -> None:
    """Other entries of the same folder (the other GGUF quants) share files with this one: give them the
    records of the files just replaced, and the new commit when those were all their changes."""
    from imageworks.hashing import aggregate_sha256
    from imageworks.naming import path_key

    new_records = {r.path: r for r in _records(work)}
    switched = {i.new.listed.path for i in work.items if i.action != "reuse"}
    gone = {r.path for r in work.status.removed}
    key = path_key(work.folder)
    for other in registry.entries():
        if other.name in skip or path_key(other.path) != key:
            continue
        previous = registry.discovered_entry(other.name)
        if previous is None:
            continue
        files = [new_records[f.path] if f.path in switched else f for f in previous.files]
        update: dict[str, Any] = {
            "files": files,
            "size_bytes": sum(f.size for f in files),
            "aggregate_sha256": aggregate_sha256((f.path, f.sha256) for f in files),
        }
        status = statuses.get(other.name)
        if (
            status is not None
            and status.state == METADATA_ONLY
            and status.new_commit == work.status.new_commit
            and {c.path for c in status.changes} <= switched | gone
        ):
            update["source"] = previous.source.model_copy(update={"commit": status.new_commit})
        if files != previous.files or "source" in update:
            registry.put(previous.model_copy(update=update))


def refreshable(copy: Copy) -> bool:
    """A copy that is a plain folder of the model's files that imageworks placed (a second location, LM
    Studio's shelf): it can be brought to the new files. Other tools' stores and imported shelves cannot."""
    return copy.tool in ("imageworks", "lmstudio") and copy.method != "import"


def refresh_copies(work: Work, entry: ModelEntry) -> list[Copy]:
    """Give each refreshable copy the files of the updated `entry` (hardlinks on one filesystem, else
    verified copies, each renamed into place) and drop from it the files that left the selection and that
    imageworks made there. Returns the copies to record."""
    from imageworks.locations import safe_join
    from imageworks.stores.lmstudio import link_folder

    placed = []
    for copy in work.entry.copies:
        if not refreshable(copy):
            continue
        folder = Path(copy.path)
        made = link_folder(entry, folder, tool="lmstudio" if copy.tool == "lmstudio" else "imageworks").copy
        for record in work.status.removed:
            if record.path in copy.made:
                with contextlib.suppress(FileNotFoundError):
                    safe_join(folder, record.path).unlink()
        made = made.model_copy(
            update={"made": sorted(set(made.made) | (set(copy.made) - {r.path for r in work.status.removed}))}
        )
        placed.append(made)
        work.result.copies_updated.append(copy.path)
    return placed


def _summary(works: Sequence[Work]) -> str:
    parts = []
    for work in works:
        changed = ", ".join(f"{c.change} {c.path}" for c in work.status.changes) or "no file"
        parts.append(
            f"{work.entry.name}: {str(work.status.commit)[:12]} -> {str(work.status.new_commit)[:12]} ({changed})"
        )
    return "; ".join(parts)


def record(
    works: Sequence[Work],
    statuses: dict[str, ModelStatus],
    *,
    config: Config,
    command: Sequence[str] | str | None,
    backup: bool,
) -> None:
    from imageworks.entries import merge_entry, utc_now
    from imageworks.registry import RegistryStore
    from imageworks.stores.copies import add_copy

    now = utc_now()
    entries = [(work, _new_entry(work, now)) for work in works]
    refreshed = {work.entry.name: refresh_copies(work, entry) for work, entry in entries}
    argv = command if isinstance(command, str) else " ".join(command or ["imageworks.update"])
    line = f"{argv} | {_summary(works)}"
    with RegistryStore(config.registry_path).transaction(line, backup=backup) as registry:
        for work, entry in entries:
            previous = registry.discovered_entry(work.entry.name)
            stored = merge_entry(previous, entry) if previous is not None else entry
            for copy in refreshed[work.entry.name]:
                stored, _ = add_copy(stored, copy)
            registry.put(stored)
            if work.old_folder is not None:
                registry.put(_old_entry(work))
                work.result.kept_as = f"{work.entry.name}@{(work.entry.source.commit or 'unknown')[:12]}"
        updated = {work.entry.name for work in works}
        for work in works:
            _refresh_siblings(registry, work, statuses, updated)


def stale_copies(work: Work, registry: Registry, updating: set[str]) -> list[str]:
    """Other places that still hold the old commit after this update, for the report."""
    out = []
    repo = (work.status.repo_id or "").lower()
    for other in registry.entries():
        if other.name in updating or other.name == work.entry.name:
            continue
        src = other.source
        same_model = (other.format, other.quantization) == (work.entry.format, work.entry.quantization)
        if same_model and (src.repo_id or "").lower() == repo and src.commit == work.status.commit:
            out.append(f"{other.name} at {other.path}")
    # Copies in another tool's store (HF cache, Ollama, an imported shelf) are not rewritten: old bytes.
    for copy in work.entry.copies:
        if not refreshable(copy):
            out.append(f"copy at {copy.path} ({copy.tool}, {copy.method})")
    linked = _linked_elsewhere(work)
    if linked:
        out.append(f"{linked} changed file(s) hardlinked elsewhere keep the old bytes there")
    return out
