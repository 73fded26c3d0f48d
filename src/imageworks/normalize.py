"""normalize-formats: keep the discovered registry layer true to the disk.

`plan_normalize` reads the disk and returns a plan (what each entry would become, with a readable diff);
nothing is written until `apply_normalize` executes it (STYLE.md #9), so a dry run is the plan alone.

- Every discovered entry's format and quantisation are recomputed from the files it records, with the
  shared inspection rules (serve hints follow, since they depend on both).
- `rebuild` also recomputes files, sizes and SHA-256 from the folder (the entry's own variant when the
  folder holds several GGUF quants: see `imageworks.entries.split_variants`), and reports drift per entry: changed, added and
  missing files. A file whose size and mtime are what was recorded when it was last hashed keeps its
  digest without being read again, unless `full`.
- `prune_missing` removes discovered entries whose folder no longer exists; entries that have a curated
  part are reported for a hand edit and left alone (tools never write the curated layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from imageworks.diffs import FieldChange, diff_fields
from imageworks.entries import (
    AUTHORITATIVE,
    digest_source,
    entry_for_folder,
    hashed_on_disk,
    refresh_entry,
    split_variants,
)
from imageworks.hashing import trusted_digest
from imageworks.naming import path_key
from imageworks.registry.schema import FileRecord, ModelEntry, validate_entries
from imageworks.walk import FileStat, ModelFolder, list_model_files

if TYPE_CHECKING:
    from imageworks.hashing import FileDigest
    from imageworks.inspect.types import ModelInspection
    from imageworks.registry.store import Registry, RegistryStore

Action = Literal["update", "unchanged", "drift", "prune", "missing", "curated-missing", "skipped"]

_FORMAT_FIELDS = ("format", "quantization", "serve")
_REBUILD_FIELDS = (
    "format",
    "quantization",
    "files",
    "size_bytes",
    "aggregate_sha256",
    "capabilities",
    "family",
    "serve",
    "metadata",
)


@dataclass(frozen=True)
class FileDrift:
    """How the files on disk differ from the files recorded."""

    changed: list[str] = field(default_factory=list)  # same path, other size or content
    added: list[str] = field(default_factory=list)  # on disk, not recorded
    missing: list[str] = field(default_factory=list)  # recorded, not on disk

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.missing)

    def as_dict(self) -> dict[str, list[str]]:
        return {"changed": self.changed, "added": self.added, "missing": self.missing}


@dataclass
class EntryPlan:
    name: str
    path: str | None
    action: Action
    changes: list[FieldChange] = field(default_factory=list)
    drift: FileDrift | None = None
    notes: list[str] = field(default_factory=list)
    mismatches: list[DigestMismatch] = field(default_factory=list)  # files that differ from a Hub digest
    entry: ModelEntry | None = field(default=None, repr=False)  # the new discovered entry ("update")
    before: dict[str, Any] | None = field(default=None, repr=False)  # the discovered entry planned against

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "action": self.action,
            "changes": [c.as_dict() for c in self.changes],
            "drift": self.drift.as_dict() if self.drift is not None else None,
            "mismatches": [m.as_dict() for m in self.mismatches],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class DigestMismatch:
    """A file whose bytes on disk no longer match the digest recorded from the Hub (or `--sha256`): drift
    to report, as `verify` reports `changed`, never a digest to adopt."""

    path: str
    expected: str  # the recorded digest, which stays
    actual: str | None  # what the disk holds now (None: the size alone differs and it was not read)
    source: str  # "hub" or "url"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "expected": self.expected, "actual": self.actual, "source": self.source}


@dataclass
class NormalizePlan:
    entries: list[EntryPlan]
    rebuild: bool
    full: bool
    prune_missing: bool
    hashed_files: int = 0
    hashed_bytes: int = 0
    reused_digests: int = 0  # files whose size+mtime matched the record: not read

    def of(self, action: Action) -> list[EntryPlan]:
        return [e for e in self.entries if e.action == action]

    @property
    def writes(self) -> list[EntryPlan]:
        return [e for e in self.entries if e.action in ("update", "prune")]

    def summary(self) -> dict[str, int]:
        actions = ("update", "unchanged", "drift", "prune", "missing", "curated-missing", "skipped")
        counts = {a: 0 for a in actions}
        for entry in self.entries:
            counts[entry.action] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "rebuild": self.rebuild,
            "full": self.full,
            "prune_missing": self.prune_missing,
            "summary": self.summary(),
            "hashed_files": self.hashed_files,
            "hashed_bytes": self.hashed_bytes,
            "reused_digests": self.reused_digests,
            "entries": [e.as_dict() for e in self.entries if e.action != "unchanged"],
        }


@dataclass
class NormalizeResult:
    plan: NormalizePlan
    applied: bool
    written: list[str] = field(default_factory=list)  # entries updated or pruned
    conflicts: list[str] = field(default_factory=list)  # changed by another command meanwhile: not touched

    @property
    def mismatches(self) -> list[tuple[str, DigestMismatch]]:
        return [(e.name, m) for e in self.plan.entries for m in e.mismatches]

    @property
    def ok(self) -> bool:
        """False when something needs the user: a file differs from its Hub digest, or an entry changed
        meanwhile was not written."""
        return not self.conflicts and not self.mismatches

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.plan.as_dict(),
            "applied": self.applied,
            "written": self.written,
            "conflicts": self.conflicts,
        }


# ---------------------------------------------------------------------------------------------------
# Planning


@dataclass
class _Work:
    """An entry whose folder exists, between inspection and hashing."""

    plan: EntryPlan
    base: ModelEntry
    fresh: ModelEntry
    stats: dict[str, FileStat]
    to_hash: list[str] = field(default_factory=list)


def plan_normalize(
    registry: Registry,
    *,
    rebuild: bool = False,
    full: bool = False,
    prune_missing: bool = False,
    location_roots: Mapping[str, Path] | None = None,
) -> NormalizePlan:
    """What normalize-formats would change, entry by entry. Reads headers (and, with `rebuild`, hashes
    what changed); writes nothing.

    `location_roots` (name -> root folder) guards pruning: an entry whose location's root is itself
    missing (a drive not mounted, a Windows folder seen from WSL) is reported, never pruned."""
    discovered = validate_entries(registry.discovered, "discovered layer") if registry.discovered else {}
    roots = dict(location_roots or {})
    folder_files: dict[str | None, list[tuple[str, set[str]]]] = {}
    if rebuild:  # which entries share a folder (one per GGUF quant), to tell their files apart
        for other in registry.entries():
            folder_files.setdefault(path_key(other.path), []).append(
                (other.name, {f.path for f in other.files})
            )
    plan = NormalizePlan([], rebuild, full, prune_missing)
    work: list[_Work] = []
    for name in sorted(discovered.keys() | registry.curated.keys()):
        entry = discovered.get(name)
        merged = registry.get(name)
        path = (merged.path if merged else None) or (entry.path if entry else None)
        if entry is None:
            # Curated-only: nothing of it is ours to recompute; a missing folder is still worth saying.
            if prune_missing and path and not Path(path).expanduser().exists():
                plan.entries.append(
                    EntryPlan(name, path, "curated-missing", notes=[_curated_note(name, path)])
                )
            continue
        before = registry.discovered[name]
        skipped = _unusable_path(registry, name, entry, path, before, roots, prune_missing)
        if skipped is not None:
            plan.entries.append(skipped)
            continue
        assert path is not None
        others = set().union(
            *(files for other, files in folder_files.get(path_key(path), []) if other != name)
        )
        item = _inspect_entry(
            name, entry, Path(path).expanduser(), rebuild=rebuild, full=full, before=before, others=others
        )
        if isinstance(item, _Work):
            work.append(item)
            plan.entries.append(item.plan)
        else:
            plan.entries.append(item)

    if rebuild:
        _hash_work(work, plan)
    for job in work:
        _finish(job, rebuild=rebuild)
    return plan


def _unusable_path(
    registry: Registry,
    name: str,
    entry: ModelEntry,
    path: str | None,
    before: dict[str, Any],
    roots: Mapping[str, Path],
    prune_missing: bool,
) -> EntryPlan | None:
    """The plan for an entry whose recorded path is not a folder to read (none, missing, a file), or
    None when it is one."""
    if not path:
        return EntryPlan(name, None, "skipped", notes=["no path recorded"], before=before)
    folder = Path(path).expanduser()
    if folder.is_dir():
        return None
    if folder.exists():
        note = "the recorded path is a file, not a model folder: not normalised"
        return EntryPlan(name, path, "skipped", notes=[note], before=before)
    root = roots.get(entry.location or "")
    if root is not None and not Path(root).expanduser().is_dir():
        note = f"{path} is unreachable: the {entry.location} root {root} is missing (not mounted?)"
        return EntryPlan(name, path, "missing", notes=[note + "; not pruned"])
    if not prune_missing:
        note = f"{path} does not exist; --prune-missing removes the entry"
        return EntryPlan(name, path, "missing", notes=[note])
    if registry.is_curated(name):
        return EntryPlan(name, path, "curated-missing", notes=[_curated_note(name, path)])
    return EntryPlan(name, path, "prune", notes=[f"{path} does not exist"], before=before)


def _curated_note(name: str, path: str) -> str:
    return (
        f"{path} does not exist, but {name} is defined in the curated layer "
        "(model_registry.curated.json): edit that file by hand; it was not changed"
    )


def _inspect_entry(
    name: str,
    entry: ModelEntry,
    folder: Path,
    *,
    rebuild: bool,
    full: bool,
    before: dict[str, Any],
    others: set[str],
) -> _Work | EntryPlan:
    plan = EntryPlan(name, str(folder), "unchanged", before=before)
    if rebuild:
        listing = list_model_files(folder)
        if listing.problem:
            return EntryPlan(name, str(folder), "skipped", notes=[listing.problem], before=before)
        plan.notes.extend(listing.notes)
        stats = {f.path: f for f in listing.files}
        files, inspection = _entry_variant(entry, folder, [f.path for f in listing.files], others)
    else:
        stats, inspection = _recorded_files(entry, folder, plan)
        files = list(stats)

    if inspection.format == "unknown":
        plan.notes.append(
            f"cannot tell the format from disk ({inspection.reason or 'no usable header'}): kept"
        )
    for path, error in inspection.errors:
        if path in files:
            plan.notes.append(f"unusable weight file {path}: {error}")
    folder_view = ModelFolder(folder, (), list(stats.values()))
    fresh = entry_for_folder(
        folder_view, inspection, files, stats, location=entry.location or "path", testing=entry.testing
    )
    if inspection.format == "unknown":
        fresh = fresh.model_copy(update={"format": entry.format, "quantization": entry.quantization})
    item = _Work(plan, entry, fresh.model_copy(update={"path": entry.path}), stats)
    if rebuild:
        _choose_files_to_hash(item, full=full)
    return item


def _recorded_files(
    entry: ModelEntry, folder: Path, plan: EntryPlan
) -> tuple[dict[str, FileStat], ModelInspection]:
    """Without --rebuild: the files the entry records that are still there (the whole folder when it
    records none), and their inspection."""
    from imageworks.inspect import inspect_folder

    stats: dict[str, FileStat] = {}
    recorded = [f.path for f in entry.files]
    for rel in recorded:
        try:
            st = (folder / rel).stat()
        except OSError:
            continue
        stats[rel] = FileStat(rel, st.st_size, st.st_mtime_ns)
    if not recorded:  # nothing recorded: judge the folder as a whole
        stats = {f.path: f for f in list_model_files(folder).files}
    gone = [p for p in recorded if p not in stats]
    if gone:
        plan.notes.append(
            f"{len(gone)} recorded file(s) missing ({', '.join(gone[:3])}); --rebuild records the drift"
        )
    return stats, inspect_folder(folder, files=list(stats))


def _choose_files_to_hash(item: _Work, *, full: bool) -> None:
    """A file whose recorded digest still holds (`hashing.trusted_digest`) keeps its record unread,
    unless `full`; every other file is hashed."""
    old = {f.path: f for f in item.base.files}
    records = []
    for record in item.fresh.files:
        prev = old.get(record.path)
        stat = item.stats[record.path]
        if not full and prev is not None and trusted_digest(prev, stat.size, stat.mtime_ns):
            record = prev
        else:
            item.to_hash.append(record.path)
        records.append(record)
    item.fresh = item.fresh.model_copy(update={"files": records})


def _entry_variant(
    entry: ModelEntry, folder: Path, all_files: list[str], others: set[str]
) -> tuple[list[str], ModelInspection]:
    """The files of `folder` that make up this entry. A folder may hold several GGUF quants, each its own
    entry: the entry keeps the variants whose weights it recorded (several when a download recorded them
    as one entry). When none of those is left, it takes an unclaimed variant of its quantisation, or,
    alone in its folder, whatever weights are there now (replaced in place); else only the shared files
    remain, and the drift shows its weights missing. `others` are the files other entries of the same
    folder recorded."""
    from imageworks.inspect import inspect_folder

    inspection = inspect_folder(folder, files=all_files)
    variants = split_variants(inspection, all_files)
    recorded = {f.path for f in entry.files}
    mine = [v for v in variants if v.weight_files & recorded]
    if len(variants) == 1 and (mine or not others or not recorded):
        return list(variants[0].files), inspection
    if mine:
        files = sorted({f for v in mine for f in v.files})
        return files, inspection if files == all_files else inspect_folder(folder, files=files)
    for variant in variants:
        if variant.weight_files & others:
            continue
        insp = inspect_folder(folder, files=list(variant.files))
        if (insp.quantization or "").lower() == (entry.quantization or "").lower():
            return list(variant.files), insp
    if not recorded:
        return all_files, inspection
    weights = {f for v in variants for f in v.weight_files}
    shared = [f for f in all_files if f not in weights]
    return shared, inspect_folder(folder, files=shared)


def _hash_work(work: Sequence[_Work], plan: NormalizePlan) -> None:
    from imageworks.hashing import hash_files

    jobs = [(item, rel, Path(item.plan.path or "") / rel) for item in work for rel in item.to_hash]
    sizes = [item.stats[rel].size for item, rel, _ in jobs]
    digests = hash_files([p for _, _, p in jobs], sizes=sizes)
    by_item: dict[int, dict[str, FileDigest]] = {}
    for (item, rel, _), digest in zip(jobs, digests, strict=True):
        by_item.setdefault(id(item), {})[rel] = digest
        if digest.ok:
            plan.hashed_files += 1
            plan.hashed_bytes += digest.size or 0
    plan.reused_digests = sum(len(item.fresh.files) - len(item.to_hash) for item in work)
    for item in work:
        done = by_item.get(id(item), {})
        old = {f.path: f for f in item.base.files}
        records: list[FileRecord] = []
        for record in item.fresh.files:
            found = done.get(record.path)
            if found is not None and not found.ok:
                item.plan.notes.append(f"cannot hash {record.path}: {found.error}")
            elif found is not None:
                assert found.sha256 is not None
                record = _hashed(item, record, old.get(record.path), found)
            records.append(record)
        item.fresh = item.fresh.model_copy(update={"files": records})


def _hashed(item: _Work, record: FileRecord, prev: FileRecord | None, found: FileDigest) -> FileRecord:
    """The record for a file just hashed. A digest from the Hub (or `--sha256`) is never replaced from
    disk: a mismatch is drift, reported with both digests, and the recorded one stays. A digest that
    came from disk is refreshed, and the plan says so."""
    assert found.sha256 is not None
    source = digest_source(item.base, prev) if prev is not None else None
    if prev is not None and prev.sha256 and source in AUTHORITATIVE:
        if found.sha256 != prev.sha256:
            item.plan.mismatches.append(DigestMismatch(record.path, prev.sha256, found.sha256, source or ""))
            return prev
        # The bytes are what was published: remember the size and mtime they were checked at.
        return prev.model_copy(update={"size": found.size, "mtime_ns": found.mtime_ns})
    if prev is not None and prev.sha256 and prev.sha256 != found.sha256:
        item.plan.notes.append(
            f"SHA-256 of {record.path} recomputed from disk: {prev.sha256} -> {found.sha256}"
            " (the old one was computed from disk too)"
        )
    return hashed_on_disk(record, found.sha256, found.size, found.mtime_ns)


def _drift(old: Sequence[FileRecord], new: Sequence[FileRecord]) -> FileDrift:
    before = {f.path: f for f in old}
    after = {f.path: f for f in new}
    changed = []
    for path in sorted(before.keys() & after.keys()):
        a, b = before[path], after[path]
        if a.size != b.size or (a.sha256 and b.sha256 and a.sha256 != b.sha256):
            changed.append(path)
    return FileDrift(
        changed=changed,
        added=sorted(after.keys() - before.keys()),
        missing=sorted(before.keys() - after.keys()),
    )


def _finish(item: _Work, *, rebuild: bool) -> None:
    plan = item.plan
    if rebuild:
        new = refresh_entry(item.base, item.fresh, item.stats)
        drift = _drift(item.base.files, new.files)
        if _hub_files_missing(item, drift.missing):
            plan.drift, plan.action = drift, "drift"  # the record stays: only the disk is wrong
            return
        mismatched = [m.path for m in plan.mismatches if m.path not in drift.changed]
        plan.drift = FileDrift(sorted([*drift.changed, *mismatched]), drift.added, drift.missing)
        fields: tuple[str, ...] = _REBUILD_FIELDS
    else:
        new = _with_format(item.base, item.fresh)
        fields = _FORMAT_FIELDS
    old_raw = plan.before or {}
    new_raw = new.to_layer_dict()
    if old_raw == new_raw:
        if plan.mismatches:
            plan.action = "drift"  # nothing to write: the recorded digests stay, the disk is what differs
        return
    plan.action = "update"
    plan.entry = new
    plan.changes = diff_fields(old_raw, new_raw, fields)
    if not plan.changes and not plan.drift:
        plan.notes.append("recorded sizes/mtimes refreshed (contents unchanged)")
    _name_note(plan, new)


def _hub_files_missing(item: _Work, missing: Sequence[str]) -> bool:
    """Files recorded with a digest from the Hub (or --sha256) that are gone from disk: drift to report, as
    `verify` reports `missing`, never a reason to drop their records (and digests) from the entry."""
    old = {f.path: f for f in item.base.files}
    gone = [old[p] for p in missing if p in old and digest_source(item.base, old[p]) in AUTHORITATIVE]
    for record in gone:
        item.plan.mismatches.append(
            DigestMismatch(record.path, record.sha256 or "", None, digest_source(item.base, record) or "")
        )
    if gone:
        item.plan.notes.append(
            f"{len(gone)} file(s) recorded from the Hub or --sha256 are missing on disk: the entry keeps its"
            " record; download it again (--force) or remove it"
        )
    return bool(gone)


def _with_format(base: ModelEntry, fresh: ModelEntry) -> ModelEntry:
    """Only format and quantisation from disk (and the serve hints that depend on them)."""
    from imageworks.naming import serve_hints

    if (base.format, base.quantization) == (fresh.format, fresh.quantization):
        return base
    serve = serve_hints(
        name=base.name,
        format=fresh.format,
        quantization=fresh.quantization,
        path=base.path,
        files=[f.path for f in base.files],
        context_length=base.metadata.get("context_length"),
        location=base.location,
    )
    return base.model_copy(
        update={"format": fresh.format, "quantization": fresh.quantization, "serve": serve}
    )


def _name_note(plan: EntryPlan, entry: ModelEntry) -> None:
    """Names are never rewritten (they are how people and the change log refer to a model), but a quant
    suffix that now contradicts the files is worth a hand rename."""
    _, sep, suffix = entry.name.rpartition(":")
    if sep and entry.format == "gguf" and entry.quantization and suffix.lower() != entry.quantization.lower():
        plan.notes.append(
            f"the name says {suffix} but the files hold {entry.quantization}: "
            "rename by hand if you want them to agree"
        )


# ---------------------------------------------------------------------------------------------------
# Executing


def apply_normalize(
    store: RegistryStore,
    plan: NormalizePlan,
    command: Sequence[str] | str | None = None,
    *,
    backup: bool = True,
) -> NormalizeResult:
    """Write the plan through the registry: one transaction, one backup, one change-log line. An entry
    that another command changed since the plan was made is left alone and reported."""
    result = NormalizeResult(plan, applied=True)
    if not plan.writes:
        return result
    with store.transaction(command, backup=backup) as registry:
        for item in plan.writes:
            if registry.discovered.get(item.name) != item.before:
                result.conflicts.append(item.name)
                continue
            if item.action == "prune":
                registry.remove(item.name)
            elif item.entry is not None:
                registry.put(item.entry)
            result.written.append(item.name)
    return result


def normalize(
    store: RegistryStore,
    *,
    apply: bool = False,
    rebuild: bool = False,
    full: bool = False,
    prune_missing: bool = False,
    backup: bool = True,
    command: Sequence[str] | str | None = None,
    location_roots: Mapping[str, Path] | None = None,
) -> NormalizeResult:
    plan = plan_normalize(
        store.load(), rebuild=rebuild, full=full, prune_missing=prune_missing, location_roots=location_roots
    )
    if not apply:
        return NormalizeResult(plan, applied=False)
    return apply_normalize(store, plan, command, backup=backup)
