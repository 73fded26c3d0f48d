"""The layered model registry (curated over discovered, merged view, change log).

Exports resolve lazily: pydantic costs ~150 ms to import, and commands that find no registry files
(or only print help) should not pay for it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imageworks.registry.lookup import find_entries, find_entry
    from imageworks.registry.schema import SCHEMA_VERSION, FileRecord, ModelEntry, Source
    from imageworks.registry.store import Registry, RegistryStore

_EXPORTS = {
    "SCHEMA_VERSION": "imageworks.registry.schema",
    "FileRecord": "imageworks.registry.schema",
    "ModelEntry": "imageworks.registry.schema",
    "Source": "imageworks.registry.schema",
    "Registry": "imageworks.registry.store",
    "RegistryStore": "imageworks.registry.store",
    "find_entries": "imageworks.registry.lookup",
    "find_entry": "imageworks.registry.lookup",
}

__all__ = [
    "SCHEMA_VERSION",
    "FileRecord",
    "ModelEntry",
    "Registry",
    "RegistryStore",
    "Source",
    "find_entries",
    "find_entry",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'imageworks.registry' has no attribute {name!r}")
