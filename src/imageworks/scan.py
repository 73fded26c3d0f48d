"""scan: bring the models found under a folder tree into the registry.

The folders and files a scan looks at are found by `imageworks.walk` (its docstring has the layout);
entries are built and refreshed by `imageworks.entries`, and diffs rendered by `imageworks.diffs`, all
shared with `normalize-formats`.

One entry per GGUF quant: a folder holding several quants yields one entry per quant, named
`<owner>/<repo>:<quant>` and holding that quant's files (all split parts) plus the files every variant
shares (mmproj projectors, config, tokenizer, README). This is the entry `download --quant Q` records for
the same repo, so downloading one quant and scanning the folder later gives one entry, and another quant
of the same repo is its own entry. Non-GGUF weights in the same folder (safetensors beside GGUF files)
form one more entry without a quant suffix, holding those weights plus the shared non-projector files.
The split is `imageworks.entries.split_variants`, the one `download` records with. An existing entry
that already holds several quants of the folder (as `download --quant A,B` recorded them before it too
recorded one entry per quant) keeps them together: the quants it covers are matched to it as one
candidate.

Matching an existing entry: the same identity (provider + repo id in any case + revision + GGUF quant,
as `imageworks.entries.find_existing`), else the same folder with the same quant or an overlap in the
weight files recorded. A local entry (no repo id) is matched by its folder only. A match in another
folder that still exists is a second copy (reported, not merged); one whose folder is gone was moved
(`update_existing` records the new folder). A name taken by a different model gets the
`<name>-<8 hex>` suffix of `entries.record_entry`. The lookups are `imageworks.entries.EntryIndex`.

Digests on refresh (`entries.carry_digests`): a file record whose SHA-256 came from the Hub or
`--sha256` is kept whatever the disk now holds (a note says the file moved: `verify` checks it); one
computed from disk is kept while the file's size and mtime hold (`hashing.trusted_digest`).

Which entries a folder yields, and which folders are placeholders, is `imageworks.candidates`.

Problems never stop the scan: symlink loops, dangling symlinks, unreadable folders, names that are not
valid UTF-8, unusable (truncated, corrupt, hostile) weight files, folders with a download in progress
(hidden `*.imageworks-partial` files, named in the reason; a resume record left beside a completed file
is only a note) and Hugging Face cache folders (`models--*`) are reported as skips with a reason; files a
model folder holds that cannot be used (a symlink loop inside it) are notes on its entry.

The walk, the inspection and any hashing happen outside the registry lock; under it the plan is made
again and each folder to record is checked once more (`record_scan`), so a folder another command
deleted meanwhile is not brought back.

The library computes typed results; `imageworks.cli.scan_cmd` renders them (STYLE.md #1, #2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from imageworks.candidates import Candidate, candidates_for_folder, merge_candidates
from imageworks.diffs import FieldChange, diff_fields
from imageworks.entries import (
    AUTHORITATIVE,
    EntryIndex,
    digest_source,
    disambiguated,
    hashed_on_disk,
    refresh_entry,
)
from imageworks.errors import ImageworksError
from imageworks.hashing import aggregate_sha256, trusted_digest
from imageworks.naming import path_key
from imageworks.registry.schema import ModelEntry
from imageworks.walk import FileStat, Skip, find_model_folders, resolved_path

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.registry.store import Registry, RegistryStore

REFRESHED_FIELDS = (
    "format",
    "quantization",
    "files",
    "size_bytes",
    "aggregate_sha256",
    "capabilities",
    "serve",
    "metadata",
    "family",
    "path",
    "location",
)


# ---------------------------------------------------------------------------------------------------
# Plan and apply

Action = Literal["add", "update", "unchanged"]


@dataclass
class ScanItem:
    action: Action
    name: str
    path: str
    format: str | None
    quantization: str | None
    entry: ModelEntry  # what is (or would be) stored in the discovered layer
    changes: list[FieldChange] = field(default_factory=list)
    testing: bool = False
    notes: list[str] = field(default_factory=list)
    candidate: Candidate | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "name": self.name,
            "path": self.path,
            "format": self.format,
            "quantization": self.quantization,
            "testing": self.testing,
            "changes": [c.as_dict() for c in self.changes],
            "notes": self.notes,
        }


@dataclass
class ScanPlan:
    items: list[ScanItem]
    skipped: list[Skip]
    candidates: list[Candidate] = field(default_factory=list)  # as planned (after any merge)

    @property
    def writes(self) -> list[ScanItem]:
        return [i for i in self.items if i.action != "unchanged"]


def plan_scan(
    registry: Registry,
    candidates: Sequence[Candidate],
    skipped: Sequence[Skip] = (),
    *,
    update_existing: bool,
    want_digests: bool = False,
) -> ScanPlan:
    """Match each candidate against the registry: add it, refresh the entry it matches, or leave it.
    With `want_digests` (scan --hash), a refreshed entry that lacks digests is an update even when
    nothing else changed, so the hashing step fills them in."""
    index = EntryIndex(registry.entries())
    plan = ScanPlan([], list(skipped), _fold_into_existing(candidates, index))
    planned: dict[str, str] = {}  # entry name -> folder, for the candidates of this scan
    for cand in plan.candidates:
        existing = index.match(cand.entry, cand.weight_files)
        if existing is None:
            _plan_new(plan, index, cand)
        elif existing.name in planned:
            where = planned[existing.name]
            plan.skipped.append(
                Skip(cand.entry.path or "", f"same model as {where} (found earlier in this scan)")
            )
        else:
            planned[existing.name] = cand.entry.path or ""
            _plan_existing(plan, registry, cand, existing, update_existing, want_digests)
    return plan


def _plan_new(plan: ScanPlan, index: EntryIndex, cand: Candidate) -> None:
    entry = cand.entry
    taken = index.by_name.get(entry.name)
    if taken is not None:
        # Another model has this name (two local folders with the same last two components): a suffix
        # from what identifies this one, so it gets the same name next time.
        entry = cand.entry = disambiguated(entry)
        if entry.name in index.by_name:
            why = f"name {entry.name} is taken by another entry (path {taken.path or '-'})"
            plan.skipped.append(Skip(entry.path or "", why))
            return
    plan.items.append(_item("add", entry, cand))
    index.add(entry)


def _plan_existing(
    plan: ScanPlan,
    registry: Registry,
    cand: Candidate,
    existing: ModelEntry,
    update_existing: bool,
    want_digests: bool,
) -> None:
    entry = cand.entry
    same_folder = path_key(existing.path) == path_key(entry.path)
    if not same_folder and existing.path and Path(existing.path).expanduser().exists():
        why = f"another copy of {existing.name} (registered at {existing.path})"
        plan.skipped.append(Skip(entry.path or "", why))
        return
    notes = list(cand.notes)
    if not same_folder:
        notes.append(
            f"registered at {existing.path or '-'}, which no longer exists"
            + ("" if update_existing else "; --update-existing records this folder")
        )
    if not update_existing:
        plan.items.append(_item("unchanged", existing, cand, notes=notes))
        return
    base = registry.discovered_entry(existing.name)
    if base is None:  # only in curated: tools write the discovered layer under the same name
        base = entry.model_copy(update={"name": existing.name})
    stats = {f.path: f for f in cand.folder.files}
    refreshed = refresh_entry(base, entry, stats)
    notes += _changed_since_published(refreshed, stats)
    old_raw = registry.discovered.get(existing.name, {})
    new_raw = refreshed.to_layer_dict()
    needs_digests = want_digests and any(f.sha256 is None for f in refreshed.files)
    if old_raw == new_raw and not needs_digests:
        plan.items.append(_item("unchanged", existing, cand, notes=notes))
        return
    changes = diff_fields(old_raw, new_raw, REFRESHED_FIELDS)
    if needs_digests:
        notes.append("SHA-256 of files without one to be recorded")
    plan.items.append(_item("update", refreshed, cand, changes=changes, notes=notes))


def _changed_since_published(entry: ModelEntry, stats: dict[str, FileStat]) -> list[str]:
    """Files whose digest came from the Hub (or --sha256) and that moved on disk since: the record stays
    (a scan never adopts the disk's bytes over a published digest); say so, and how to check."""
    out = []
    for record in entry.files:
        stat = stats.get(record.path)
        if stat is None or digest_source(entry, record) not in AUTHORITATIVE:
            continue
        if record.size != stat.size or (
            record.mtime_ns is not None and trusted_digest(record, stat.size, stat.mtime_ns) is None
        ):
            out.append(
                f"{record.path} changed on disk since its digest was recorded from the"
                f" {'Hub' if digest_source(entry, record) == 'hub' else 'URL'}: the record is kept;"
                f" `imageworks-loader verify {entry.name}` checks it"
            )
    return out


def _fold_into_existing(candidates: Sequence[Candidate], index: EntryIndex) -> list[Candidate]:
    """An existing entry defines its own grouping: when it holds several variants of one folder (a
    download of two quants recorded as one entry), the candidates it covers become one candidate for
    it, instead of a second entry per quant."""
    owners: dict[tuple[str, str], list[int]] = {}
    for position, cand in enumerate(candidates):
        existing = index.match(cand.entry, cand.weight_files)
        if existing is not None:
            owners.setdefault((existing.name, str(cand.folder.path)), []).append(position)
    shared = {positions[0]: positions for positions in owners.values() if len(positions) > 1}
    if not shared:
        return list(candidates)
    folded = {p for positions in shared.values() for p in positions}
    out: list[Candidate] = []
    for position, cand in enumerate(candidates):
        if position in shared:
            out.append(merge_candidates([candidates[p] for p in shared[position]]))
        elif position not in folded:
            out.append(cand)
    return out


def _item(
    action: Action,
    entry: ModelEntry,
    cand: Candidate,
    *,
    changes: list[FieldChange] | None = None,
    notes: list[str] | None = None,
) -> ScanItem:
    return ScanItem(
        action=action,
        name=entry.name,
        path=entry.path or str(cand.folder.path),
        format=entry.format,
        quantization=entry.quantization,
        entry=entry,
        changes=changes or [],
        testing=entry.testing,
        notes=[n for n in (notes if notes is not None else cand.notes) if n],
        candidate=cand,
    )


def apply_scan(registry: Registry, plan: ScanPlan) -> None:
    for item in plan.writes:
        registry.put(item.entry)


# ---------------------------------------------------------------------------------------------------
# Hashing


@dataclass
class HashStats:
    files: int = 0
    bytes: int = 0


def hash_items(items: Sequence[ScanItem], stats_out: HashStats) -> list[Skip]:
    """Record a SHA-256 (with the size and mtime it was taken at) for every file the planned entries hold
    without one. The digests go into the candidates, so planning again (under the lock) keeps them. A file
    that vanished or cannot be read turns its candidate into a skip."""
    from imageworks.hashing import FileDigest, hash_files

    wanted: dict[Path, int] = {}
    for item in items:
        assert item.candidate is not None
        stats = {f.path: f for f in item.candidate.folder.files}
        for record in item.entry.files:
            if record.sha256 is None:
                wanted[Path(item.path) / record.path] = stats[record.path].size
    paths = list(wanted)
    digests: dict[Path, FileDigest] = {
        d.path: d for d in hash_files(paths, sizes=[wanted[p] for p in paths]) if d.ok
    }
    skips: list[Skip] = []
    for item in items:
        cand = item.candidate
        assert cand is not None
        known = {r.path: r for r in item.entry.files if r.sha256}
        files = []
        missing = None
        for record in cand.entry.files:
            path = Path(item.path) / record.path
            if record.path in known:
                record = known[record.path]
            elif path in digests:
                digest = digests[path]
                assert digest.sha256 is not None
                record = hashed_on_disk(record, digest.sha256, digest.size, digest.mtime_ns)
                stats_out.files += 1
                stats_out.bytes += digest.size or 0
            elif record.sha256 is None:
                missing = record.path
            files.append(record)
        if missing is not None:
            cand.rejected = f"cannot hash {missing}: the file vanished or cannot be read"
            skips.append(Skip(item.path, cand.rejected))
            continue
        cand.entry = cand.entry.model_copy(
            update={
                "files": files,
                "size_bytes": sum(f.size for f in files),
                "aggregate_sha256": aggregate_sha256((f.path, f.sha256) for f in files),
            }
        )
    return skips


# ---------------------------------------------------------------------------------------------------
# The operation


@dataclass
class ScanResult:
    base: str
    location: str
    dry_run: bool
    items: list[ScanItem]
    skipped: list[Skip]
    hashed_files: int = 0
    hashed_bytes: int = 0

    def _of(self, action: Action) -> list[ScanItem]:
        return [i for i in self.items if i.action == action]

    @property
    def added(self) -> list[ScanItem]:
        return self._of("add")

    @property
    def updated(self) -> list[ScanItem]:
        return self._of("update")

    @property
    def unchanged(self) -> list[ScanItem]:
        return self._of("unchanged")

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "location": self.location,
            "dry_run": self.dry_run,
            "summary": {
                "added": len(self.added),
                "updated": len(self.updated),
                "unchanged": len(self.unchanged),
                "skipped": len(self.skipped),
            },
            "added": [i.as_dict() for i in self.added],
            "updated": [i.as_dict() for i in self.updated],
            "unchanged": [i.as_dict() for i in self.unchanged],
            "skipped": [s.as_dict() for s in self.skipped],
            "hashed_files": self.hashed_files,
            "hashed_bytes": self.hashed_bytes,
        }


@dataclass(frozen=True)
class ScanOptions:
    location: str = "path"
    layout_roots: tuple[Path, ...] = ()
    include_testing: bool = False
    update_existing: bool = False
    hash: bool = False
    dry_run: bool = False
    backup: bool = True


def discover(base: Path, options: ScanOptions) -> tuple[Path, list[Candidate], list[Skip]]:
    """Walk and inspect: every candidate entry under `base` and every skip (read-only, no registry)."""
    discovery = find_model_folders(base, layout_roots=options.layout_roots)
    candidates: list[Candidate] = []
    skips = list(discovery.skipped)
    for folder in discovery.folders:
        try:
            found, skipped = candidates_for_folder(
                folder, location=options.location, include_testing=options.include_testing
            )
        except (ImageworksError, OSError, ValueError, RecursionError) as exc:
            # The inspection turns hostile or broken files into per-file errors; this is the backstop
            # that keeps one folder nobody foresaw from costing the whole tree its scan.
            reason = str(exc) if isinstance(exc, ImageworksError) else f"{type(exc).__name__}: {exc}"
            found, skipped = [], [Skip(str(folder.path), f"cannot inspect: {reason}"[:300])]
        candidates.extend(found)
        skips.extend(skipped)
    return discovery.base, candidates, skips


def scan(
    store: RegistryStore, base: Path, options: ScanOptions, command: Sequence[str] | str | None = None
) -> ScanResult:
    """Scan `base` and merge what it holds into the registry. The walk, the inspection and any hashing
    happen before the registry lock is taken; the matching is planned again under the lock (another
    command may have written meanwhile), and everything is written in one transaction: one backup, one
    change-log line, and no write at all when nothing changed."""
    base, candidates, skips = discover(base, options)
    return record_scan(store, base, candidates, skips, options, command)


def record_scan(
    store: RegistryStore,
    base: Path,
    candidates: Sequence[Candidate],
    skips: Sequence[Skip],
    options: ScanOptions,
    command: Sequence[str] | str | None = None,
) -> ScanResult:
    """Plan what `discover` found against the registry, hash if asked, and write. Under the lock, each
    entry about to be written is checked against the disk once more: another command (`remove
    --delete-files`) may have deleted its folder since the walk, and recording it would bring back what
    was just removed."""
    update = options.update_existing
    plan = plan_scan(store.load(), candidates, skips, update_existing=update, want_digests=options.hash)
    hashed = HashStats()
    if options.hash and not options.dry_run and plan.writes:
        skips = [*skips, *hash_items(plan.writes, hashed)]
        candidates = [c for c in plan.candidates if c.rejected is None]
        plan = plan_scan(store.load(), candidates, skips, update_existing=update)
    if not options.dry_run and plan.writes:
        with store.transaction(command, backup=options.backup) as registry:
            plan = plan_scan(registry, candidates, skips, update_existing=update)
            vanished = _vanished(plan.writes)
            if vanished:
                candidates = [c for c in plan.candidates if c.rejected is None]
                plan = plan_scan(registry, candidates, [*skips, *vanished], update_existing=update)
            apply_scan(registry, plan)
    return ScanResult(
        base=str(base),
        location=options.location,
        dry_run=options.dry_run,
        items=plan.items,
        skipped=sorted(plan.skipped, key=lambda skip: (skip.path, skip.reason)),
        hashed_files=hashed.files,
        hashed_bytes=hashed.bytes,
    )


def _vanished(items: Sequence[ScanItem]) -> list[Skip]:
    """The planned writes whose folder or files are gone from the disk since the walk (their candidates
    are marked rejected)."""
    skips = []
    for item in items:
        folder = Path(item.path)
        missing = next((f.path for f in item.entry.files if not (folder / f.path).is_file()), None)
        if missing is None and folder.is_dir():
            continue
        what = "the folder" if not folder.is_dir() else missing
        reason = f"{what} vanished during the scan (removed by another command?): not recorded"
        if item.candidate is not None:
            item.candidate.rejected = reason
        skips.append(Skip(item.path, reason))
    return skips


def resolve_scan_target(config: Config, base: Path | None, location: str | None) -> tuple[Path, str]:
    """The folder to scan and the location name its entries record: `--location NAME` alone scans that
    location's root; `--base DIR` alone records the configured location whose root holds DIR (else
    "path"); neither scans the linux_wsl root."""
    from imageworks.locations import resolve_location

    if location is not None:
        loc = resolve_location(config, location)
        return (Path(base).expanduser().absolute() if base is not None else loc.root), loc.name
    if base is None:
        return config.location_root("linux_wsl"), "linux_wsl"
    base = Path(base).expanduser().absolute()
    best: tuple[int, str] | None = None
    for name in config.locations:
        root = config.location_root(name).expanduser().absolute()
        for b, r in ((base, root), (resolved_path(base), resolved_path(root))):
            if b == r or b.is_relative_to(r):
                depth = len(b.relative_to(r).parts)
                if best is None or depth < best[0]:
                    best = (depth, name)
                break
    return base, (best[1] if best else "path")
