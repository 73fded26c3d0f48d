"""`link NAME --to hf-cache|ollama|lmstudio|PATH`: put a registered model on another tool's shelf without
copying, record the result as a copy (with what was made, so `remove` can take it back), idempotently."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.errors import UsageError
from imageworks.registry import find_entry
from imageworks.stores.copies import add_copy, copy_file, model_root

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.registry import ModelEntry, RegistryStore
    from imageworks.registry.schema import Copy

TARGETS = ("hf-cache", "ollama", "lmstudio")


@dataclass
class LinkResult:
    name: str
    target: str
    path: str
    method: str  # hardlink | copy | server | present
    files: int = 0
    notes: list[str] = field(default_factory=list)
    recorded: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "path": self.path,
            "method": self.method,
            "files": self.files,
            "notes": self.notes,
            "recorded": self.recorded,
        }


@dataclass
class Placed:
    """What a shelf module made for one entry: the copy to record and how the bytes got there."""

    copy: Copy
    methods: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        ms = set(self.methods)
        if "server" in ms:
            return "server"
        if "copy" in ms:
            return "copy"
        if "hardlink" in ms:
            return "hardlink"
        return "present"


def source_files(entry: ModelEntry) -> list[tuple[str, Path, int, str | None]]:
    """(path in the model, file on disk, size, sha256) of the primary copy, which must be complete."""
    root = model_root(entry)
    if root is None or not entry.files:
        raise UsageError(f"{entry.name} records no files on disk to link", hint="download or scan it first")
    out = []
    for record in entry.files:
        disk = root / record.path
        if not disk.is_file():
            raise UsageError(
                f"{entry.name}: {disk} is missing", hint=f"run `imageworks-loader verify {entry.name}`"
            )
        out.append((record.path, disk, record.size, record.sha256))
    return out


def link_model(
    store: RegistryStore,
    reference: str,
    targets: Sequence[str],
    *,
    config: Config | None = None,
    command: Sequence[str] | str | None = None,
    backup: bool = True,
) -> list[LinkResult]:
    from imageworks.stores import hf_cache, lmstudio, ollama

    if not targets:
        raise UsageError("link needs at least one --to", hint="--to hf-cache, ollama, lmstudio or a folder")
    entry = find_entry(store.load(), reference)
    results = []
    for target in targets:
        if target == "hf-cache":
            placed = hf_cache.link(entry)
        elif target == "ollama":
            placed = ollama.link(entry)
        elif target == "lmstudio":
            placed = lmstudio.link(entry)
        elif "/" in target or "\\" in target or target.startswith(("~", ".")):
            placed = lmstudio.link_folder(entry, Path(target).expanduser().absolute())
        else:
            raise UsageError(
                f"unknown --to {target!r}", hint="use hf-cache, ollama, lmstudio or a folder path"
            )
        result = LinkResult(
            entry.name, target, placed.copy.path, placed.method, len(placed.copy.files), placed.notes
        )
        with store.transaction(command, backup=backup) as registry:
            current = registry.get(entry.name)
            if current is None:
                raise UsageError(f"{entry.name} left the registry while linking")
            updated, changed = add_copy(current, placed.copy)
            if changed:
                registry.put(updated)
                result.recorded = True
        results.append(result)
    return results


def copy_files_at(entry: ModelEntry, base: Path, where: dict[str, Path]) -> list:
    """CopyFile records for the files placed at `where[path]` (inside `base`)."""
    return [copy_file(rel, where[rel], base) for rel in sorted(where) if rel in {f.path for f in entry.files}]
