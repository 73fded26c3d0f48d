"""scan: bring the models found under a folder tree into the registry.

Layout (relative to the location root that holds the scanned folder, or to `--base` itself when it lies
outside every configured location):

  <owner>/<repo>/...           an HF repo as `download` lays it out: provider hf, repo id owner/repo
  <owner>/<repo>@<rev>/...     the same at revision <rev> (the folder name's part after the last '@')
  <publisher>/<model-folder>/  LM Studio's layout under its root: the same two levels, so the same rule
  <folder>/<weights>           weight files one level down (or in --base itself): provider local,
                               named local/<parent>/<folder>

Everything below an `<owner>/<repo>` folder belongs to that model (GGUF quants in subfolders, split parts).
Hidden files and folders (`.git`, `.cache`, `.<name>.imageworks-partial` downloads in progress) are not
part of any model.

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
`<name>-<8 hex>` suffix of `entries.record_entry`.

Placeholders are skipped unless `include_testing` (the entries then carry `testing: true`):
  - a layout component (owner or repo, revision stripped) matching one of PLACEHOLDER_PATTERNS
    (case-insensitive shell patterns): test*, *-test, *-testing, demo*, dummy*, example*, tmp*,
    *placeholder*, tiny-random-*
  - a model folder with no weight files, or an empty one.

Problems never stop the scan: symlink loops, dangling symlinks, unreadable folders, names that are not
valid UTF-8, unusable (truncated, corrupt) weight files, folders with a download in progress (hidden
`*.imageworks-partial` files) and Hugging Face cache folders (`models--*`) are reported as skips with a
reason; files a model folder holds that cannot be used (a symlink loop inside it) are notes on its entry.

The library computes typed results; `imageworks.cli.scan_cmd` renders them (STYLE.md #1, #2).
"""

from __future__ import annotations

import fnmatch
import os
import stat as statmod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from imageworks.entries import disambiguated, folder_variants
from imageworks.errors import UsageError
from imageworks.hashing import aggregate_sha256
from imageworks.naming import entry_identity, path_key
from imageworks.registry.schema import FileRecord, ModelEntry, Source

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.inspect.types import ModelInspection
    from imageworks.registry.store import Registry, RegistryStore

PLACEHOLDER_PATTERNS: tuple[str, ...] = (
    "test*",
    "*-test",
    "*-testing",
    "demo*",
    "dummy*",
    "example*",
    "tmp*",
    "*placeholder*",
    "tiny-random-*",
)

# Hidden files a download in progress leaves beside its target (transfer.base.PartialPaths, aria2, hf).
_PARTIAL_SUFFIXES = (
    ".imageworks-partial",
    ".imageworks-partial.json",
    ".imageworks-partial.aria2",
    ".incomplete",
)

# Folders that are never model folders of their own: Hugging Face's cache layout stores blobs under
# content hashes, so its names say nothing about the model (use `hf cache scan` for it).
_HF_CACHE_PREFIXES = ("models--", "datasets--", "spaces--")


def placeholder_pattern(name: str) -> str | None:
    """The first placeholder pattern `name` matches, or None."""
    low = name.lower()
    for pattern in PLACEHOLDER_PATTERNS:
        if fnmatch.fnmatchcase(low, pattern):
            return pattern
    return None


# ---------------------------------------------------------------------------------------------------
# Walking the tree


@dataclass(frozen=True)
class FileStat:
    """One regular file of a model folder: POSIX path relative to the folder, size, mtime."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class ModelFolder:
    """A folder that holds (or, by its place in the layout, should hold) one model."""

    path: Path  # absolute, as reached from the base (symlinks kept, so the user's layout shows)
    layout: tuple[str, ...]  # components below the layout root, e.g. ("Qwen", "Qwen2-7B@dev")
    files: list[FileStat]
    partial_files: int = 0  # hidden downloads in progress
    problem: str | None = None  # set when the folder cannot be read completely
    notes: list[str] = field(default_factory=list)


@dataclass
class FolderListing:
    files: list[FileStat]
    partial_files: int
    problem: str | None
    notes: list[str]


def _describe_os_error(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _printable(path: Path | str) -> str | None:
    """None when a name cannot be stored as UTF-8 JSON (undecodable bytes from the filesystem)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


def _safe_str(path: Path | str) -> str:
    """A path for messages: undecodable bytes shown as \\xNN instead of breaking the output."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def list_model_files(folder: Path, *, recursive: bool = True) -> FolderListing:
    """Every regular file below `folder`, by the rules `inspect_folder` lists a folder with (so the two
    agree on what a model holds): hidden names skipped, symlinked files followed, symlinked subfolders
    not followed (noted, and called a loop when they point back up), at most MAX_DEPTH levels. A
    subfolder that cannot be read makes the listing incomplete: the caller reports it rather than record
    part of a model."""
    from imageworks.inspect.folder import MAX_DEPTH

    files: list[FileStat] = []
    notes: list[str] = []
    partial = 0
    try:
        top = os.stat(folder)
    except OSError as exc:
        return FolderListing([], 0, f"cannot read {_safe_str(folder)}: {_describe_os_error(exc)}", [])
    stack: list[tuple[Path, str, int, frozenset[tuple[int, int]]]] = [
        (folder, "", 0, frozenset({(top.st_dev, top.st_ino)}))
    ]
    while stack:
        current, prefix, depth, ancestors = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            return FolderListing(
                files, partial, f"cannot read {_safe_str(current)}: {_describe_os_error(exc)}", notes
            )
        for entry in entries:
            rel = prefix + entry.name
            if entry.name.startswith("."):
                if entry.name.endswith(_PARTIAL_SUFFIXES):
                    partial += 1
                continue
            if _printable(rel) is None:
                return FolderListing(
                    files, partial, f"name is not valid UTF-8: {_safe_str(current / entry.name)}", notes
                )
            try:
                st = entry.stat()  # follows symlinks
            except OSError as exc:
                notes.append(f"ignored {rel}: {_link_problem(entry, exc)}")
                continue
            if statmod.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if entry.is_symlink():
                    why = (
                        "symlink loop (points back to a parent folder)"
                        if key in ancestors
                        else "symlinked folder (not followed)"
                    )
                    notes.append(f"ignored {rel}: {why}")
                elif recursive and depth + 1 < MAX_DEPTH:
                    stack.append((Path(entry.path), rel + "/", depth + 1, ancestors | {key}))
            elif statmod.S_ISREG(st.st_mode):
                files.append(FileStat(rel, st.st_size, st.st_mtime_ns))
    files.sort(key=lambda f: f.path)
    return FolderListing(files, partial, None, notes)


def _link_problem(entry: os.DirEntry[str], exc: OSError) -> str:
    if entry.is_symlink():
        import errno

        if exc.errno == errno.ELOOP:
            return "symlink loop"
        try:
            target = os.readlink(entry.path)
        except OSError:
            target = "?"
        return f"dangling symlink (-> {_safe_str(target)})"
    return _describe_os_error(exc)


def _is_weight(name: str) -> bool:
    from imageworks.inspect import classify_weight_file

    return classify_weight_file(name) is not None


@dataclass
class Discovery:
    """The model folders found under a base, and what was skipped on the way. `layout_root` is the
    location root the layout is read from (None when the base lies outside every location: then the
    base itself is the root)."""

    base: Path
    layout_root: Path | None
    folders: list[ModelFolder]
    skipped: list[Skip]


def find_model_folders(base: Path, *, layout_roots: Sequence[Path] = ()) -> Discovery:
    """Walk `base` for model folders (see the module docstring for the layout)."""
    base = Path(base).expanduser().absolute()
    try:
        st = os.stat(base)
    except OSError as exc:
        raise UsageError(
            f"cannot scan {base}: {_describe_os_error(exc)}", hint="give an existing folder with --base"
        ) from None
    if not statmod.S_ISDIR(st.st_mode):
        raise UsageError(f"cannot scan {base}: not a folder", hint="give a folder with --base")

    layout_root, base_parts = _layout_root_for(base, layout_roots)
    discovery = Discovery(base, layout_root, [], [])
    # Loose weights in a location root belong to no model; in any other base, they are its model.
    is_location_root = layout_root is not None and not base_parts
    _walk(discovery, base, base_parts, frozenset({(st.st_dev, st.st_ino)}), is_location_root)
    discovery.folders.sort(key=lambda f: str(f.path))
    return discovery


def _layout_root_for(base: Path, layout_roots: Sequence[Path]) -> tuple[Path | None, tuple[str, ...]]:
    """The configured root holding `base` (the deepest one), and `base`'s components below it."""
    best: tuple[Path, tuple[str, ...]] | None = None
    for root in layout_roots:
        root = Path(root).expanduser().absolute()
        for candidate_base, candidate_root in ((base, root), (_resolved(base), _resolved(root))):
            try:
                parts = candidate_base.relative_to(candidate_root).parts
            except ValueError:
                continue
            if best is None or len(parts) < len(best[1]):
                best = (root, parts)
            break
    return best if best is not None else (None, ())


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path


def _walk(
    discovery: Discovery,
    folder: Path,
    parts: tuple[str, ...],
    ancestors: frozenset[tuple[int, int]],
    is_location_root: bool,
) -> None:
    if len(parts) >= 2:
        _add_model_folder(discovery, folder, parts, recursive=True)
        return
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        discovery.skipped.append(Skip(_safe_str(folder), f"unreadable folder: {_describe_os_error(exc)}"))
        return
    visible = [e for e in entries if not e.name.startswith(".")]
    if not visible:
        if parts:  # an empty owner folder; an empty base is simply nothing to scan
            discovery.skipped.append(Skip(_safe_str(folder), "empty folder"))
        return

    loose_weights = [e.name for e in visible if _entry_is_file(e) and _is_weight(e.name)]
    if loose_weights:
        if is_location_root:
            for name in loose_weights:
                discovery.skipped.append(
                    Skip(
                        _safe_str(folder / name),
                        "weight file directly in the location root: move it into <owner>/<repo>/",
                    )
                )
        else:
            # Weights right here: a model folder of its own (its subfolders are still looked at, since
            # this level may also be an owner folder).
            _add_model_folder(discovery, folder, parts, recursive=False)

    for entry in visible:
        path = folder / entry.name
        if _printable(path) is None:
            discovery.skipped.append(Skip(_safe_str(path), "name is not valid UTF-8"))
            continue
        try:
            st = entry.stat()
        except OSError as exc:
            if entry.is_symlink():
                discovery.skipped.append(Skip(str(path), _link_problem(entry, exc)))
            else:
                discovery.skipped.append(Skip(str(path), f"unreadable: {_describe_os_error(exc)}"))
            continue
        if not statmod.S_ISDIR(st.st_mode):
            continue
        if entry.name.startswith(_HF_CACHE_PREFIXES):
            discovery.skipped.append(
                Skip(str(path), "Hugging Face cache folder (content-addressed): not a model folder")
            )
            continue
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            discovery.skipped.append(Skip(str(path), "symlink loop (points back to a parent folder)"))
            continue
        _walk(discovery, path, (*parts, entry.name), ancestors | {key}, False)


def _entry_is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _add_model_folder(discovery: Discovery, folder: Path, parts: tuple[str, ...], *, recursive: bool) -> None:
    listing = list_model_files(folder, recursive=recursive)
    discovery.folders.append(
        ModelFolder(
            path=folder,
            layout=parts,
            files=listing.files,
            partial_files=listing.partial_files,
            problem=listing.problem,
            notes=listing.notes,
        )
    )


# ---------------------------------------------------------------------------------------------------
# From a folder to registry entries


@dataclass
class Candidate:
    """One entry a scanned folder yields, before it is matched against the registry."""

    entry: ModelEntry
    folder: ModelFolder
    weight_files: frozenset[str]
    notes: list[str] = field(default_factory=list)
    rejected: str | None = None  # set when a later step (hashing) finds the candidate unusable


def layout_source(parts: tuple[str, ...]) -> tuple[str, str | None, str | None]:
    """(provider, repo_id, revision) that a folder's place in the layout implies."""
    if len(parts) == 2:
        owner, repo = parts
        revision: str | None = None
        if "@" in repo:
            repo, _, revision = repo.rpartition("@")
            revision = revision or None
        if owner and repo:
            return "hf", f"{owner}/{repo}", revision
    return "local", None, None


def _placeholder_reason(folder: ModelFolder) -> str | None:
    """Why a folder looks like a placeholder by name: its owner or repo name (revision stripped), or the
    folder's own name outside the <owner>/<repo> layout."""
    names = [part.rpartition("@")[0] if "@" in part else part for part in folder.layout[-2:]]
    for name in names or [folder.path.name]:
        pattern = placeholder_pattern(name)
        if pattern:
            return f"placeholder name {name!r} (pattern {pattern})"
    return None


def candidates_for_folder(
    folder: ModelFolder, *, location: str, include_testing: bool
) -> tuple[list[Candidate], list[Skip]]:
    """Inspect one model folder and build its entries (see the module docstring for the rules)."""
    from imageworks.inspect import inspect_folder

    where = str(folder.path)
    if folder.problem:
        return [], [Skip(where, folder.problem)]
    if folder.partial_files:
        # `download` records the model when it finishes; recording it now would list part of it.
        return [], [
            Skip(
                where,
                f"a download is in progress or was interrupted ({folder.partial_files} partial file(s)):"
                " run the download again to finish it, or delete the hidden *.imageworks-partial files",
            )
        ]
    testing_reason = _placeholder_reason(folder)
    weights = [f.path for f in folder.files if _is_weight(f.path)]
    if testing_reason is None and not folder.files:
        testing_reason = "empty folder"
    elif testing_reason is None and not weights:
        testing_reason = "no weight files"
    if testing_reason and not include_testing:
        return [], [Skip(where, testing_reason)]
    testing = testing_reason is not None
    by_path = {f.path: f for f in folder.files}

    all_files = [f.path for f in folder.files]
    inspection = inspect_folder(folder.path, files=all_files)
    if not weights:
        entry = build_entry(folder, inspection, all_files, by_path, location=location, testing=testing)
        return [Candidate(entry, folder, frozenset(), [testing_reason or "", *folder.notes])], []
    variants = folder_variants(folder.path, all_files, inspection)
    candidates: list[Candidate] = []
    skips: list[Skip] = []
    for variant, insp in variants:
        unusable = [(p, e) for p, e in insp.errors if p in variant.files]
        label = where if len(variants) == 1 else f"{where} [{insp.quantization or insp.format}]"
        if unusable:
            path, error = unusable[0]
            more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
            skips.append(Skip(label, f"unusable weight file {path}: {error}{more}"))
            continue
        if insp.format == "unknown" and not include_testing:
            skips.append(Skip(label, f"cannot tell the weight format: {insp.reason or 'no usable header'}"))
            continue
        entry = build_entry(folder, insp, list(variant.files), by_path, location=location, testing=testing)
        notes = _folder_notes(folder, insp.problems)
        candidates.append(Candidate(entry, folder, variant.weight_files, notes))
    return candidates, skips


def _folder_notes(folder: ModelFolder, problems: Sequence[str]) -> list[str]:
    """What the listing ignored plus what the inspection could not use, each file said once."""
    noted = {n.removeprefix("ignored ").split(":", 1)[0] for n in folder.notes}
    return [*folder.notes, *(p for p in problems if p.split(":", 1)[0] not in noted)]


def build_entry(
    folder: ModelFolder,
    inspection: ModelInspection,
    files: Sequence[str],
    stats: dict[str, FileStat],
    *,
    location: str,
    testing: bool,
) -> ModelEntry:
    """The entry for `files` of `folder`, built by `imageworks.entries` (the builder `download` uses), so
    a scanned folder gets the name and serve hints that downloading the same repo gives."""
    from imageworks.entries import build_entry as build_shared

    provider, repo_id, revision = layout_source(folder.layout)
    source = Source(provider=provider, repo_id=repo_id, revision=revision)  # type: ignore[arg-type]
    records = [FileRecord(path=p, size=stats[p].size) for p in files]
    entry = build_shared(folder.path, source=source, location=location, files=records, inspection=inspection)
    return entry.model_copy(update={"testing": True}) if testing else entry


# ---------------------------------------------------------------------------------------------------
# Matching against the registry


class EntryIndex:
    """Identity and path lookups over a registry snapshot, built once per scan (not per folder)."""

    def __init__(self, entries: Iterable[ModelEntry]) -> None:
        self.by_name: dict[str, ModelEntry] = {}
        self.by_identity: dict[tuple[str, str, str, str], str] = {}
        self.by_path: dict[str, list[str]] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: ModelEntry) -> None:
        self.by_name[entry.name] = entry
        ident = entry_identity(entry)
        if ident[1]:
            self.by_identity.setdefault(ident, entry.name)
        key = path_key(entry.path)
        if key:
            self.by_path.setdefault(key, []).append(entry.name)

    def match(self, candidate: Candidate) -> ModelEntry | None:
        """The existing entry for the same model, by the rule of `imageworks.entries.find_existing`
        (same identity, else same folder and same variant), widened to "same folder and an overlap in
        the weight files recorded" so an entry whose quant label was decided differently (from a file
        name, by an older version) is still recognised by its files."""
        entry = candidate.entry
        ident = entry_identity(entry)
        # A local entry has no repo id or URL: its identity is only its folder (naming.identity would
        # make every local model of one variant "the same").
        name = self.by_identity.get(ident) if ident[1] else None
        if name is not None:
            return self.by_name[name]
        key = path_key(entry.path)
        same_folder = [self.by_name[n] for n in self.by_path.get(key or "", [])]
        for other in same_folder:
            if entry_identity(other)[3] == ident[3]:
                return other
        for other in same_folder:
            if candidate.weight_files & {f.path for f in other.files}:
                return other
        return None


# ---------------------------------------------------------------------------------------------------
# Diffs shared with normalize-formats


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any

    def render(self) -> str:
        before, after = _short(self.old), _short(self.new)
        if before == after:
            # The change lies past the cut: a diff whose two sides read the same says nothing.
            before, after = _full(self.old), _full(self.new)
        return f"{self.field}: {before} -> {after}"

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "old": self.old, "new": self.new}


def _short(value: Any) -> str:
    text = _full(value)
    if isinstance(value, (list, dict)) and len(text) > 80:
        return text[:77] + "..."
    return text


def _full(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def diff_fields(old: dict[str, Any], new: dict[str, Any], fields: Iterable[str]) -> list[FieldChange]:
    """Field-level changes between two layer dicts; `files` is summarised (drift lists the detail) and
    metadata is compared key by key."""
    changes: list[FieldChange] = []
    for name in fields:
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if name == "files":
            # Only the counts: per-file detail is the drift report's job (normalize --rebuild).
            summary = (_files_summary(before), _files_summary(after))
            if summary[0] != summary[1]:
                changes.append(FieldChange("files", *summary))
        else:
            _diff_nested(name, before, after, changes)
    return changes


def _diff_nested(field: str, before: Any, after: Any, changes: list[FieldChange]) -> None:
    """Dicts (metadata, serve, source) are compared key by key, so the line names what moved (e.g.
    `serve.vllm.command`) instead of two JSON blobs that differ past the cut."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys()):
            if before.get(key) != after.get(key):
                _diff_nested(f"{field}.{key}", before.get(key), after.get(key), changes)
    else:
        changes.append(FieldChange(field, before, after))


def _files_summary(files: Any) -> str:
    if not files:
        return "0 files"
    hashed = sum(1 for f in files if f.get("sha256"))
    return f"{len(files)} files, {hashed} hashed"


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


def _carry_digests(
    records: Sequence[FileRecord], old: Sequence[FileRecord], stats: dict[str, FileStat]
) -> list[FileRecord]:
    """Keep a recorded SHA-256 when the file's size and mtime are still what they were when it was
    hashed; anything else is recorded without a digest (verify/--hash/--rebuild compute it)."""
    known = {f.path: f for f in old}
    out = []
    for record in records:
        prev = known.get(record.path)
        stat = stats.get(record.path)
        if (
            record.sha256 is None
            and prev is not None
            and prev.sha256
            and stat is not None
            and prev.size == stat.size
            and prev.mtime_ns == stat.mtime_ns
        ):
            record = record.model_copy(update={"sha256": prev.sha256, "mtime_ns": prev.mtime_ns})
        out.append(record)
    return out


def refresh_entry(base: ModelEntry, fresh: ModelEntry, stats: dict[str, FileStat]) -> ModelEntry:
    """`base` (the discovered layer's entry) updated with the facts from disk in `fresh` (format,
    quantisation, files, size, capabilities, serve hints, inspection metadata) by the merge `download`
    uses. What was recorded about where the model came from stays: a folder name knows less than the
    download did (commit, canonical case). Digests whose files are unchanged are kept."""
    from imageworks.entries import merge_entry

    fresh = fresh.model_copy(update={"files": _carry_digests(fresh.files, base.files, stats)})
    fresh = fresh.model_copy(
        update={"aggregate_sha256": aggregate_sha256((f.path, f.sha256) for f in fresh.files)}
    )
    merged = merge_entry(base, fresh)
    moved = path_key(base.path) != path_key(fresh.path)
    return merged.model_copy(
        update={
            "source": base.source,
            "path": fresh.path if moved or not base.path else base.path,
            "location": fresh.location if moved or not base.location else base.location,
        }
    )


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
    items: list[ScanItem] = []
    skips = list(skipped)
    planned: dict[str, str] = {}  # entry name -> folder, for the candidates of this scan
    candidates = _fold_into_existing(candidates, index)
    for cand in candidates:
        entry = cand.entry
        stats = {f.path: f for f in cand.folder.files}
        existing = index.match(cand)
        if existing is None:
            taken = index.by_name.get(entry.name)
            if taken is not None:
                # Another model has this name (two local folders with the same last two components):
                # a suffix from what identifies this one, so it gets the same name next time.
                entry = disambiguated(entry)
                cand.entry = entry
                if entry.name in index.by_name:
                    skips.append(
                        Skip(
                            entry.path or "",
                            f"name {entry.name} is taken by another entry (path {taken.path or '-'})",
                        )
                    )
                    continue
            items.append(_item("add", entry, cand))
            index.add(entry)
            planned[entry.name] = entry.path or ""
            continue
        if existing.name in planned:
            skips.append(
                Skip(entry.path or "", f"same model as {planned[existing.name]} (found earlier in this scan)")
            )
            continue
        planned[existing.name] = entry.path or ""
        same_folder = path_key(existing.path) == path_key(entry.path)
        if not same_folder and existing.path and Path(existing.path).expanduser().exists():
            skips.append(
                Skip(entry.path or "", f"another copy of {existing.name} (registered at {existing.path})")
            )
            continue
        notes = list(cand.notes)
        if not same_folder:
            notes.append(
                f"registered at {existing.path or '-'}, which no longer exists"
                + ("" if update_existing else "; --update-existing records this folder")
            )
        if not update_existing:
            items.append(_item("unchanged", existing, cand, notes=notes))
            continue
        base = registry.discovered_entry(existing.name)
        if base is None:  # only in curated: tools write the discovered layer under the same name
            base = entry.model_copy(update={"name": existing.name})
        refreshed = refresh_entry(base, entry, stats)
        old_raw = registry.discovered.get(existing.name, {})
        new_raw = refreshed.to_layer_dict()
        needs_digests = want_digests and any(f.sha256 is None for f in refreshed.files)
        if old_raw == new_raw and not needs_digests:
            items.append(_item("unchanged", existing, cand, notes=notes))
            continue
        changes = diff_fields(old_raw, new_raw, REFRESHED_FIELDS)
        if needs_digests:
            notes.append("SHA-256 of files without one to be recorded")
        items.append(_item("update", refreshed, cand, changes=changes, notes=notes))
    return ScanPlan(items, skips, candidates)


def _fold_into_existing(candidates: Sequence[Candidate], index: EntryIndex) -> list[Candidate]:
    """An existing entry defines its own grouping: when it holds several variants of one folder (a
    download of two quants recorded as one entry), the candidates it covers become one candidate for
    it, instead of a second entry per quant."""
    owners: dict[tuple[str, str], list[int]] = {}
    for position, cand in enumerate(candidates):
        existing = index.match(cand)
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


def merge_candidates(cands: Sequence[Candidate]) -> Candidate:
    """One candidate holding the files of several variants of the same folder."""
    from imageworks.inspect import inspect_folder

    folder = cands[0].folder
    files = sorted({r.path for c in cands for r in c.entry.files})
    stats = {f.path: f for f in folder.files}
    inspection = inspect_folder(folder.path, files=files)
    entry = build_entry(
        folder,
        inspection,
        files,
        stats,
        location=cands[0].entry.location or "path",
        testing=any(c.entry.testing for c in cands),
    )
    hashed = {r.path: r for c in cands for r in c.entry.files if r.sha256}
    records = [hashed.get(r.path, r) for r in entry.files]
    entry = entry.model_copy(
        update={"files": records, "aggregate_sha256": aggregate_sha256((r.path, r.sha256) for r in records)}
    )
    notes = list(dict.fromkeys(n for c in cands for n in c.notes))
    return Candidate(entry, folder, frozenset().union(*(c.weight_files for c in cands)), notes)


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
    from imageworks.hashing import FileDigest, aggregate_sha256, hash_files

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
                prev = known[record.path]
                record = record.model_copy(update={"sha256": prev.sha256, "mtime_ns": prev.mtime_ns})
            elif path in digests:
                digest = digests[path]
                record = record.model_copy(
                    update={"sha256": digest.sha256, "size": digest.size, "mtime_ns": digest.mtime_ns}
                )
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
        found, skipped = candidates_for_folder(
            folder, location=options.location, include_testing=options.include_testing
        )
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
    plan = plan_scan(
        store.load(), candidates, skips, update_existing=options.update_existing, want_digests=options.hash
    )
    hashed = HashStats()
    if options.hash and not options.dry_run and plan.writes:
        skips = [*skips, *hash_items(plan.writes, hashed)]
        candidates = [c for c in plan.candidates if c.rejected is None]
        plan = plan_scan(store.load(), candidates, skips, update_existing=options.update_existing)
    if not options.dry_run and plan.writes:
        with store.transaction(command, backup=options.backup) as registry:
            plan = plan_scan(registry, candidates, skips, update_existing=options.update_existing)
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
        for b, r in ((base, root), (_resolved(base), _resolved(root))):
            if b == r or b.is_relative_to(r):
                depth = len(b.relative_to(r).parts)
                if best is None or depth < best[0]:
                    best = (depth, name)
                break
    return base, (best[1] if best else "path")
