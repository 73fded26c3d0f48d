"""Resolve what a user typed to one registry entry: exact name, alias, HF repo id (any case), the
repo part of a name, or a unique substring. The same rule serves every command that takes NAME."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imageworks.errors import AmbiguousName, ModelNotFound

if TYPE_CHECKING:
    from imageworks.registry.schema import ModelEntry
    from imageworks.registry.store import Registry


def find_entries(registry: Registry, reference: str) -> list[ModelEntry]:
    """All entries the reference could mean, by the first rule that matches anything."""
    entries = registry.entries()
    ref = reference.strip()
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


def find_entry(registry: Registry, reference: str) -> ModelEntry:
    if not reference.strip():
        raise ModelNotFound("empty model name", hint="run `imageworks-download list` to see the names")
    matches = find_entries(registry, reference)
    if not matches:
        raise ModelNotFound(
            f"no model matches {reference!r}", hint="run `imageworks-download list` to see the names"
        )
    if len(matches) > 1:
        names = [e.name for e in matches]
        raise AmbiguousName(
            f"{reference!r} matches {len(names)} models",
            names,
            hint="give the full name",
        )
    return matches[0]
