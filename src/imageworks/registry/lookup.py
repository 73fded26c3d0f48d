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
    """All entries the NAME the user typed could mean, by the first rule that matches anything.

    Matched on the merged layers as stored; only the matches are validated into typed entries (a
    registry of 10,000 models must not validate them all to find one)."""
    raw = registry.merged_raw()
    names = sorted(raw)
    ref = name.strip()
    low = ref.lower()
    repo_ref = low.removeprefix("hf://")

    def aliases(n: str) -> list[str]:
        value = raw[n].get("aliases")
        return [a for a in value if isinstance(a, str)] if isinstance(value, list) else []

    def repo_id(n: str) -> str:
        source = raw[n].get("source")
        value = source.get("repo_id") if isinstance(source, dict) else None
        return value.lower() if isinstance(value, str) else ""

    rules = (
        lambda n: n == ref,
        lambda n: n.lower() == low,
        lambda n: any(alias.lower() == low for alias in aliases(n)),
        lambda n: repo_id(n) == repo_ref,
        # "tiny-llama" means owner/tiny-llama before it means owner/tiny-llama-gguf:q4_k_m
        lambda n: n.lower().partition("/")[2] == low,
        lambda n: low in n.lower(),
    )
    for rule in rules:
        matches = [n for n in names if rule(n)]
        if matches:
            entries = [registry.get(n) for n in matches]
            return [e for e in entries if e is not None]
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
