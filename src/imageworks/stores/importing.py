"""Recording what another tool's shelf holds, in place, as copies owned by that tool.

Each shelf module finds its models as entries whose primary is the tool's folder (`Found`); this module
records them in one transaction: a model the registry already knows (same identity, same folder, or the
same weights by SHA-256) gains a copy, anything else becomes a new entry. Importing writes nothing in the
tool's folders, and importing twice changes nothing."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.clock import utc_now
from imageworks.entries import disambiguated, merge_entry, same_content
from imageworks.naming import entry_identity, path_key
from imageworks.stores.copies import add_copy

if TYPE_CHECKING:
    from imageworks.registry import ModelEntry, Registry, RegistryStore
    from imageworks.registry.schema import CopyFile

_WEIGHTS = re.compile(r"\.(gguf|safetensors|bin|pt|pth|onnx)$", re.IGNORECASE)


@dataclass
class Found:
    """One model on a tool's shelf: `entry` has the tool's folder as its primary (`tool` set) and its
    files with their sizes, SHA-256 where the tool names files by it, and dev/inode."""

    entry: ModelEntry
    weights: frozenset[str] = frozenset()  # SHA-256 of the weight files, when known
    aliases: dict[str, str] = field(default_factory=dict)  # path in the repo -> file in the shelf folder
    per_model_folder: bool = True  # False where one folder holds every model (Ollama blobs, llama.cpp)


@dataclass
class ImportResult:
    tool: str
    shelf: Path
    added: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)  # existing entries that gained this copy
    unchanged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    bytes_hashed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "shelf": str(self.shelf),
            "added": self.added,
            "copies": self.copies,
            "unchanged": self.unchanged,
            "notes": self.notes,
            "files": self.files,
            "bytes": self.bytes,
            "bytes_hashed": self.bytes_hashed,
        }


def weight_digests(entry: ModelEntry) -> frozenset[str]:
    for tool in ("ollama",):
        recorded = (entry.metadata.get(tool) or {}).get("weights")
        if recorded:
            return frozenset(recorded)
    return frozenset(f.sha256 for f in entry.files if f.sha256 and _WEIGHTS.search(f.path.rsplit("/", 1)[-1]))


class _Index:
    """The registry's entries by identity, folder + variant and weights, built once (an import of 1,000
    repos must not compare every pair)."""

    def __init__(self, registry: Registry) -> None:
        self.by_ident: dict[tuple[str, str, str, str], ModelEntry] = {}
        self.by_path: dict[tuple[str, str], ModelEntry] = {}
        self.by_weights: dict[frozenset[str], ModelEntry] = {}
        for entry in registry.entries():
            self.add(entry)

    def add(self, entry: ModelEntry) -> None:
        ident = entry_identity(entry)
        self.by_ident.setdefault(ident, entry)
        key = path_key(entry.path)
        if key:
            self.by_path.setdefault((key, ident[3]), entry)
        for copy in entry.copies:
            self.by_path.setdefault((path_key(copy.path) or copy.path, ident[3]), entry)
        weights = weight_digests(entry)
        if weights:
            self.by_weights.setdefault(weights, entry)

    def match(self, found: Found) -> ModelEntry | None:
        ident = entry_identity(found.entry)
        return (
            self.by_ident.get(ident)
            or (
                self.by_path.get((path_key(found.entry.path) or "", ident[3]))
                if found.per_model_folder
                else None
            )
            or (self.by_weights.get(found.weights) if found.weights else None)
        )


def _copy_files(existing: ModelEntry, item: Found) -> list[CopyFile]:
    """The existing entry's files as they sit on the shelf: by the same path, else by the same SHA-256."""
    from imageworks.registry.schema import CopyFile

    found = item.entry
    by_path = {f.path: f for f in found.files}
    by_path.update({repo: by_path[disk] for repo, disk in item.aliases.items() if disk in by_path})
    by_sha = {f.sha256: f for f in found.files if f.sha256}
    out = []
    for record in existing.files:
        hit = by_path.get(record.path) or (by_sha.get(record.sha256) if record.sha256 else None)
        if hit is None:
            continue
        if record.sha256 and hit.sha256 and record.sha256 != hit.sha256:
            continue  # same name, other bytes: not a copy of this file
        out.append(
            CopyFile(
                path=record.path,
                at=None if hit.path == record.path else hit.path,
                size=hit.size,
                mtime_ns=hit.mtime_ns,
                dev=hit.dev,
                inode=hit.inode,
            )
        )
    return out


def _refresh(registry: Registry, existing: ModelEntry, entry: ModelEntry, result: ImportResult) -> None:
    """The shelf folder already is the entry's primary: a re-import, or the tool's folder is one of our
    locations (LM Studio's). A digest already recorded is never replaced by none."""
    previous = registry.discovered_entry(existing.name)
    if previous is None or previous.tool != entry.tool:
        result.unchanged.append(existing.name)
        return
    known = {f.path: f.sha256 for f in previous.files if f.sha256}
    files = [f if f.sha256 else f.model_copy(update={"sha256": known.get(f.path)}) for f in entry.files]
    from imageworks.hashing import aggregate_sha256

    aggregate = aggregate_sha256((f.path, f.sha256) for f in files)
    merged = merge_entry(previous, entry.model_copy(update={"files": files, "aggregate_sha256": aggregate}))
    if same_content(merged, previous):
        result.unchanged.append(existing.name)
    else:
        registry.put(merged)
        result.added.append(existing.name)


def _add_shelf_copy(registry: Registry, existing: ModelEntry, item: Found, result: ImportResult) -> None:
    """`existing` gains the shelf's copy (owned by the tool, made by import)."""
    from imageworks.registry.schema import Copy

    entry = item.entry
    copy = Copy(
        path=entry.path or "",
        tool=entry.tool or "imageworks",
        method="import",
        files=_copy_files(existing, item),
        created_at=utc_now(),
        metadata={
            k: v for k, v in entry.metadata.items() if k in {"ollama", "lmstudio", "llama.cpp", "hf_cache"}
        },
    )
    if not copy.files:
        result.notes.append(f"{entry.name}: matches {existing.name} but shares no file with it; skipped")
        return
    updated, changed = add_copy(existing, copy)
    if not changed:
        result.unchanged.append(existing.name)
        return
    registry.put(updated)
    result.copies.append(existing.name)


def record_found(
    store: RegistryStore,
    found: Sequence[Found],
    result: ImportResult,
    *,
    command: Sequence[str] | str | None = None,
    backup: bool = True,
) -> ImportResult:
    with store.transaction(command, backup=backup) as registry:
        _record_into(registry, found, result)
    return result


def _record_into(registry: Registry, found: Sequence[Found], result: ImportResult) -> None:
    index = _Index(registry)
    for item in found:
        entry = item.entry
        result.files += len(entry.files)
        result.bytes += sum(f.size for f in entry.files)
        existing = index.match(item)
        if existing is None:
            if registry.get(entry.name) is not None:
                entry = disambiguated(entry)
            registry.put(entry)
            index.add(entry)
            result.added.append(entry.name)
            continue
        same = path_key(existing.path) == path_key(entry.path)
        if same and entry_identity(existing) == entry_identity(entry):
            _refresh(registry, existing, entry, result)
            continue
        _add_shelf_copy(registry, existing, item, result)


MODULES = {"hf-cache": "hf_cache", "ollama": "ollama", "lmstudio": "lmstudio", "llama.cpp": "llamacpp"}


def shelves_for(tool: str, path: Path | None) -> list[Path]:
    from imageworks.stores import shelves

    if path is not None:
        return [path.expanduser().absolute()]
    if tool == "ollama":
        return shelves.ollama_models()
    return [shelves.default_shelf(tool)]


def import_shelf(
    tool: str,
    store: RegistryStore,
    path: Path | None = None,
    *,
    command: Sequence[str] | str | None = None,
    backup: bool = True,
) -> list[ImportResult]:
    """Register what `tool` holds (in `path`, else where the tool keeps it) as copies owned by the tool."""
    import importlib

    from imageworks.errors import UsageError

    if tool not in MODULES:
        raise UsageError(f"unknown tool {tool!r}", hint=f"use one of: {', '.join(MODULES)}")
    if path is not None and not path.expanduser().is_dir():
        raise UsageError(
            f"{path} is not a folder", hint=f"give the folder {tool} keeps its models in, or no PATH"
        )
    module = importlib.import_module(f"imageworks.stores.{MODULES[tool]}")
    results = []
    registry = store.load()
    for shelf in shelves_for(tool, path):
        found, result = module.find(shelf, registry)
        results.append(
            record_found(store, found, result, command=command, backup=backup) if found else result
        )
    return results


def preview_shelf(tool: str, store: RegistryStore, path: Path) -> ImportResult:
    """What `import` would record from `path`, recording nothing (`scan --dry-run` of a tool's shelf)."""
    import importlib

    module = importlib.import_module(f"imageworks.stores.{MODULES[tool]}")
    registry = store.load()
    found, result = module.find(path, registry)
    _record_into(registry, found, result)  # the same steps as `import`, on a copy that is never saved
    return result
