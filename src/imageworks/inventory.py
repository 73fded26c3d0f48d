"""list / show / remove: the registry as an inventory of models on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imageworks.errors import UsageError
from imageworks.registry import find_entry

if TYPE_CHECKING:
    from imageworks.registry import ModelEntry, Registry

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
    copies: tuple[str, ...] = ()  # stores: where each copy is, the primary first

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "quantization": self.quantization,
            "location": self.location,
            "path": self.path,
            "size_bytes": self.size_bytes,
            "installed": self.installed,
            "copies": list(self.copies),
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
    from imageworks.stores.copies import places_raw

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
                copies=tuple(places_raw(entry)),
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
            if key in {"name", "serve", "files", "copies"}:  # copies: shown by stores.copies
                continue
            value = data[key]
            if value in (None, [], {}, False) and self.origins.get(key) != "curated":
                continue
            rows.append((key, value, self.origins.get(key, "default")))
        return rows

    def as_dict(self) -> dict[str, Any]:
        from imageworks.stores.copies import copies_of

        return {
            "entry": self.entry.model_dump(mode="json"),
            "origins": self.origins,
            "installed": self.installed,
            "copies": [v.as_dict() for v in copies_of(self.entry)],  # stores: each copy with its files
        }


def show_model(registry: Registry, name: str) -> ShownModel:
    entry = find_entry(registry, name)
    return ShownModel(entry, registry.origins(entry.name), is_installed(entry))


# Removal lives with the copies model (stores): it must know which files other entries and tools share.
from imageworks.stores.remove import RemovePlan, execute_remove, plan_remove  # noqa: E402, F401
