"""list / show / remove: the registry as an inventory of models on disk."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.errors import UnsafePathError, UsageError
from imageworks.registry import find_entry

if TYPE_CHECKING:
    from imageworks.registry import ModelEntry, Registry, RegistryStore

BACKENDS = ("vllm", "ollama", "lmstudio")


@dataclass(frozen=True)
class ListedModel:
    """One row of `list`: the fields it shows, read from the merged layers without building a typed
    entry per model (validating 10,000 entries would cost more than the whole command may take; the
    layers were validated when written or loaded)."""

    name: str
    format: str | None
    quantization: str | None
    location: str | None
    path: str | None
    size_bytes: int | None
    installed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "quantization": self.quantization,
            "location": self.location,
            "path": self.path,
            "size_bytes": self.size_bytes,
            "installed": self.installed,
        }


def is_installed(entry: ModelEntry) -> bool:
    return _exists(entry.path)


def _exists(path: str | None) -> bool:
    return bool(path) and os.path.exists(os.path.expanduser(path or ""))


def list_models(
    registry: Registry,
    *,
    format: str | None = None,
    location: str | None = None,
    backend: str | None = None,
) -> list[ListedModel]:
    if backend and backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint=f"use one of: {', '.join(BACKENDS)}")
    wanted_format = format.lower() if format else None
    out = []
    merged = registry.merged_layer_dicts()
    for name in sorted(merged):
        entry = merged[name]
        if wanted_format and str(entry.get("format") or "").lower() != wanted_format:
            continue
        if location and (entry.get("location") or "") != location:
            continue
        if backend and backend not in (entry.get("serve") or {}):
            continue
        path = entry.get("path")
        out.append(
            ListedModel(
                name=name,
                format=entry.get("format"),
                quantization=entry.get("quantization"),
                location=entry.get("location"),
                path=path,
                size_bytes=entry.get("size_bytes"),
                installed=_exists(path),
            )
        )
    return out


@dataclass
class ShownModel:
    entry: ModelEntry
    origins: dict[str, str]
    installed: bool

    def fields(self) -> list[tuple[str, Any, str]]:
        """(field, value, origin) for every field worth showing: set ones, and any the curated layer
        sets even to an empty value. Files and serve hints are shown on their own."""
        data = self.entry.model_dump(mode="json")
        rows = []
        for key in sorted(data):
            if key in {"name", "serve", "files"}:
                continue
            value = data[key]
            if value in (None, [], {}, False) and self.origins.get(key) != "curated":
                continue
            rows.append((key, value, self.origins.get(key, "default")))
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry.model_dump(mode="json"),
            "origins": self.origins,
            "installed": self.installed,
        }


def show_model(registry: Registry, name: str) -> ShownModel:
    entry = find_entry(registry, name)
    return ShownModel(entry, registry.origins(entry.name), is_installed(entry))


@dataclass
class RemovePlan:
    """What `remove` will do, computed before anything is touched (STYLE.md #9)."""

    name: str
    in_discovered: bool
    curated: bool
    delete_path: Path | None = None
    delete_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def plan_remove(registry: Registry, name: str, *, delete_files: bool, roots: Sequence[Path]) -> RemovePlan:
    entry = find_entry(registry, name)
    plan = RemovePlan(entry.name, entry.name in registry.discovered, registry.is_curated(entry.name))
    if plan.curated:
        plan.notes.append(
            f"{entry.name} is defined in the curated layer (model_registry.curated.json): edit that file by hand;"
            " it was not changed"
        )
    if delete_files:
        if not entry.path:
            plan.notes.append("the entry records no path: no files to delete")
        else:
            path = Path(entry.path).expanduser()
            _check_deletable(path, roots)
            if path.exists():
                plan.delete_path = path
                plan.delete_bytes = _folder_size(path)
            else:
                plan.notes.append(f"{path} does not exist: nothing to delete")
    return plan


def _check_deletable(path: Path, roots: Sequence[Path]) -> None:
    """A registry path is untrusted: only delete inside a known model root, never a root itself."""
    resolved = path.resolve()
    for root in roots:
        root_resolved = root.expanduser().resolve()
        if resolved != root_resolved and resolved.is_relative_to(root_resolved):
            return
    raise UnsafePathError(
        f"refusing to delete {path}: it is not inside a configured model location",
        hint="delete it by hand, or add its root to imageworks.toml [locations]",
    )


def execute_remove(
    store: RegistryStore,
    plan: RemovePlan,
    command: Sequence[str],
    *,
    roots: Sequence[Path] = (),
    backup: bool = True,
) -> bool:
    """Drop the discovered entry (if any) and delete files when planned. Returns whether the registry
    changed."""
    changed = False
    if plan.in_discovered:
        with store.transaction(command, backup=backup) as registry:
            changed = registry.remove(plan.name)
    if plan.delete_path is not None:
        if plan.delete_path.is_dir() and not plan.delete_path.is_symlink():
            shutil.rmtree(plan.delete_path)
        else:
            plan.delete_path.unlink()
        _prune_empty_parents(plan.delete_path.parent, roots)
    return changed


def _prune_empty_parents(folder: Path, roots: Sequence[Path]) -> None:
    """Remove the owner folders left empty (`<root>/<owner>/`), never a root itself."""
    stops = {root.expanduser().resolve() for root in roots}
    current = folder.resolve()
    while current not in stops and any(current.is_relative_to(root) for root in stops):
        try:
            current.rmdir()  # only succeeds when empty
        except OSError:
            return
        current = current.parent
