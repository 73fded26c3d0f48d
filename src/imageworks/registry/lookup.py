"""Resolve the NAME a user typed to one registry entry: exact name, alias, HF repo id (any case), the
repo part of a name, or a unique substring. The same rule serves every command that takes NAME.
(NAME is always a registry entry's name; what `download` takes is a *reference* to a Hub repo or URL.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imageworks.errors import AmbiguousName, ModelNotFound

if TYPE_CHECKING:
    from imageworks.registry.schema import ModelEntry
    from imageworks.registry.store import Registry


def find_entries(registry: Registry, name: str) -> list[ModelEntry]:
    """All entries the NAME the user typed could mean, by the first rule that matches anything."""
    entries = registry.entries()
    ref = name.strip()
    low = ref.lower()
    rules = (
        lambda e: e.name == ref,
        lambda e: e.name.lower() == low,
        lambda e: any(alias.lower() == low for alias in e.aliases),
        lambda e: (e.source.repo_id or "").lower() == low.removeprefix("hf://"),
        # "tiny-llama" means owner/tiny-llama before it means owner/tiny-llama-gguf:q4_k_m
        lambda e: e.name.lower().partition("/")[2] == low,
        lambda e: low in e.name.lower(),
    )
    for rule in rules:
        matches = [e for e in entries if rule(e)]
        if matches:
            return matches
    return []


def find_entry(registry: Registry, name: str) -> ModelEntry:
    if not name.strip():
        raise ModelNotFound("empty model name", hint="run `imageworks-download list` to see the names")
    matches = find_entries(registry, name)
    if not matches:
        raise ModelNotFound(
            f"no model matches {name!r}", hint="run `imageworks-download list` to see the names"
        )
    if len(matches) > 1:
        names = [e.name for e in matches]
        raise AmbiguousName(
            f"{name!r} matches {len(names)} models",
            names,
            hint="give the full name",
        )
    return matches[0]
