"""Curated-over-discovered merge. Pure functions over raw layer dicts."""

from __future__ import annotations

import copy
from typing import Any

Origin = str  # "curated", "discovered" or "curated+discovered"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Override wins field by field; nested objects merge recursively; a `null` in the override means
    "no override" (so a curated file can list a key without clobbering it); lists replace."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            result.setdefault(key, None)
            continue
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def merge_layers(
    discovered: dict[str, dict[str, Any]], curated: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for name in discovered.keys() | curated.keys():
        if name in curated and name in discovered:
            merged[name] = deep_merge(discovered[name], curated[name])
        elif name in curated:
            merged[name] = copy.deepcopy(curated[name])
        else:
            # Discovered entries are tool-written and already canonical: no copy needed for reads.
            merged[name] = discovered[name]
    return merged


def field_origins(
    name: str, discovered: dict[str, dict[str, Any]], curated: dict[str, dict[str, Any]]
) -> dict[str, Origin]:
    """Which layer each top-level field of the merged entry came from (for `show`)."""
    origins: dict[str, Origin] = {}
    disc = discovered.get(name, {})
    cur = {k: v for k, v in curated.get(name, {}).items() if v is not None}
    for key in disc.keys() | cur.keys():
        if key in cur and key in disc and isinstance(cur[key], dict) and isinstance(disc[key], dict):
            origins[key] = "curated+discovered"
        elif key in cur:
            origins[key] = "curated"
        else:
            origins[key] = "discovered"
    return origins
