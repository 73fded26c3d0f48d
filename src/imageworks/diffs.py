"""Field-level diffs between two registry-layer entries, as `scan --update-existing` and
`normalize-formats` print them (`field: old -> new`, nested dicts named key by key)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any

    def render(self) -> str:
        before, after = _short(self.old), _short(self.new)
        if before == after:
            # The change lies past the cut: a diff whose two sides read the same says nothing.
            before, after = _full(self.old), _full(self.new)
        return f"{self.field}: {before} -> {after}"

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "old": self.old, "new": self.new}


def _short(value: Any) -> str:
    text = _full(value)
    if isinstance(value, (list, dict)) and len(text) > 80:
        return text[:77] + "..."
    return text


def _full(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def diff_fields(old: dict[str, Any], new: dict[str, Any], fields: Iterable[str]) -> list[FieldChange]:
    """Field-level changes between two layer dicts; `files` is summarised (drift lists the detail) and
    metadata is compared key by key."""
    changes: list[FieldChange] = []
    for name in fields:
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if name == "files":
            # Only the counts: per-file detail is the drift report's job (normalize --rebuild).
            summary = (_files_summary(before), _files_summary(after))
            if summary[0] != summary[1]:
                changes.append(FieldChange("files", *summary))
        else:
            _diff_nested(name, before, after, changes)
    return changes


def _diff_nested(field: str, before: Any, after: Any, changes: list[FieldChange]) -> None:
    """Dicts (metadata, serve, source) are compared key by key, so the line names what moved (e.g.
    `serve.vllm.command`) instead of two JSON blobs that differ past the cut."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys()):
            if before.get(key) != after.get(key):
                _diff_nested(f"{field}.{key}", before.get(key), after.get(key), changes)
    else:
        changes.append(FieldChange(field, before, after))


def _files_summary(files: Any) -> str:
    if not files:
        return "0 files"
    hashed = sum(1 for f in files if f.get("sha256"))
    return f"{len(files)} files, {hashed} hashed"
