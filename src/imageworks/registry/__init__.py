"""The layered model registry (curated over discovered, merged view, change log)."""

from imageworks.registry.lookup import find_entry, find_entries
from imageworks.registry.schema import SCHEMA_VERSION, FileRecord, ModelEntry, Source
from imageworks.registry.store import Registry, RegistryStore

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
