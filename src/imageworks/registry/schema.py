"""The registry's entry schema and the on-disk layer format.

A layer file is `{"schema_version": N, "models": {NAME: ENTRY, ...}}`. Entries are keyed by name so
JSON Patches in the change log read `/models/<name>/...` and a git diff shows one model per hunk.
Curated entries are partial (any subset of fields); unknown keys survive untouched (`extra="allow"`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from imageworks.errors import RegistryError

SCHEMA_VERSION = 1
Provider = Literal["hf", "url", "local", "ollama"]
# The copies model (stores): which tool's shelf a copy sits on, and how the copy came to be.
Tool = Literal["imageworks", "hf-cache", "ollama", "lmstudio", "llama.cpp"]
CopyMethod = Literal["download", "hardlink", "copy", "import", "link"]


class _Model(BaseModel):
    # defer_build: building the validators costs ~100 ms, paid on first use rather than at import so
    # `--help` and commands on an empty registry stay instant.
    model_config = ConfigDict(extra="allow", defer_build=True)


class Source(_Model):
    provider: Provider = "local"
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    url: str | None = None


class FileRecord(_Model):
    path: str
    size: int
    sha256: str | None = None
    # Size and mtime when the file was last hashed: `verify --quick` and `normalize-formats --rebuild`
    # compare these instead of hashing again.
    mtime_ns: int | None = None
    # Device and inode of the primary copy's file (stores): hardlinks are known without re-reading.
    dev: int | None = None
    inode: int | None = None


class CopyFile(_Model):
    """One file of an extra copy. `path` is the entry's file (as in `ModelEntry.files`); `at` is where it
    sits inside the copy's folder when the tool names it otherwise (Ollama's `blobs/sha256-HEX`)."""

    path: str
    at: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    dev: int | None = None
    inode: int | None = None


class Copy(_Model):
    """Another folder holding (some of) the entry's files: a second location or a tool's shelf.
    `made`: paths (relative to `path`) imageworks created for this copy and may delete with it."""

    path: str
    tool: Tool = "imageworks"
    method: CopyMethod = "download"
    location: str | None = None
    files: list[CopyFile] = Field(default_factory=list)
    made: list[str] = Field(default_factory=list)
    created_at: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelEntry(_Model):
    name: str
    display_name: str | None = None
    family: str | None = None
    source: Source = Field(default_factory=Source)
    format: str | None = None
    quantization: str | None = None
    location: str | None = None
    path: str | None = None
    files: list[FileRecord] = Field(default_factory=list)
    size_bytes: int | None = None
    aggregate_sha256: str | None = None
    downloaded_at: str | None = None
    verified_at: str | None = None
    aliases: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    serve: dict[str, dict[str, Any]] = Field(default_factory=dict)
    deprecated: bool = False
    testing: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    # The tool owning the primary copy (`path`): None is imageworks' own root. `copies`: the others.
    tool: Tool | None = None
    copies: list[Copy] = Field(default_factory=list)

    def to_layer_dict(self) -> dict[str, Any]:
        """The entry as stored in a layer (the name is the key, so it is not repeated). The stores
        fields are written only when set, so registries without copies keep their bytes."""
        data = self.model_dump(mode="json", exclude={"name"})
        if data.get("tool") is None:
            data.pop("tool", None)
        if not data.get("copies"):
            data.pop("copies", None)
        for record in data.get("files", ()):
            for key in ("dev", "inode"):
                if record.get(key) is None:
                    record.pop(key, None)
        return data

    @property
    def repo_id(self) -> str | None:
        return self.source.repo_id


# Validating a layer's entries through one TypeAdapter is several times faster than one
# model_validate call per entry: 10k entries must load, merge and save in well under a second.
@functools.cache
def _entries_adapter() -> TypeAdapter[dict[str, ModelEntry]]:
    return TypeAdapter(dict[str, ModelEntry])


def validate_entries(raw: dict[str, dict[str, Any]], origin: str) -> dict[str, ModelEntry]:
    """Validate entries (name injected from the key). Errors name the entry and the field."""
    try:
        if not raw:
            return {}
        return _entries_adapter().validate_python(
            {name: {**entry, "name": name} for name, entry in raw.items()}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        entry_name = loc[0] if loc else "?"
        field_path = ".".join(loc[1:]) or "(entry)"
        raise RegistryError(
            f"{origin}: entry {entry_name!r}, field {field_path}: {first['msg']}",
            hint="fix the value in that file (see README: registry schema)",
        ) from None


def _reject_duplicates(path: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise RegistryError(
                    f"{path}: duplicate key {key!r}", hint="each model name may appear once per layer"
                )
            seen[key] = value
        return seen

    return hook


# Limits on a layer a person (or a hostile checkout) wrote: deeper nesting or a longer number than any
# entry needs would otherwise surface as RecursionError/ValueError, or fail later when the merged view
# is written (orjson refuses nesting past 255 and integers past 64 bits).
MAX_DEPTH = 64
_INT_RANGE = (-(2**63), 2**64 - 1)


def _repair_hint(path: Path, line: int | None = None, column: int | None = None) -> str:
    """How to fix a broken layer. The curated file is the user's, under git, and never copied to
    backups/ (tools never write it); the tool-written layers are."""
    where = f" at line {line}, column {column}" if line is not None else ""
    if path.name == "model_registry.curated.json":
        return (
            f"edit {path.name}{where} by hand; `git diff {path.name}` shows what changed since the last"
            f" commit and `git checkout -- {path.name}` restores it"
        )
    return f"fix the file by hand{where}, or copy the newest good copy back from {path.parent / 'backups'}/"


def parse_layer_text(text: str, path: Path) -> dict[str, dict[str, Any]]:
    """Parse one layer file into raw entries keyed by name, migrating older schema versions.

    Raw dicts, not models: a curated entry is partial and its unknown keys and explicit nulls must
    survive the merge exactly as written."""
    try:
        doc = json.loads(text, object_pairs_hook=_reject_duplicates(str(path)))
    except json.JSONDecodeError as exc:
        raise RegistryError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            hint=_repair_hint(path, exc.lineno, exc.colno),
        ) from None
    except RecursionError:
        raise RegistryError(
            f"{path}: JSON nested too deeply (more than {MAX_DEPTH} levels)", hint=_repair_hint(path)
        ) from None
    except ValueError as exc:  # an integer past Python's digit limit
        raise RegistryError(f"{path}: a number is too long: {exc}", hint=_repair_hint(path)) from None
    _check_limits(doc, path)
    return _migrate(doc, path)


def _check_limits(doc: Any, path: Path) -> None:
    """Depth and integer range (the layer is untrusted input: a hand edit, a merge gone wrong)."""
    from imageworks.untrusted_json import limit_violation

    problem = limit_violation(doc, max_depth=MAX_DEPTH, int_range=_INT_RANGE)
    if problem is None:
        return
    kind, value = problem
    if kind == "depth":
        message = f"JSON nested too deeply (more than {MAX_DEPTH} levels)"
    else:
        message = f"the number {str(value)[:20]}… ({len(str(abs(value)))} digits) is out of range"
    raise RegistryError(f"{path}: {message}", hint=_repair_hint(path))


def _migrate(doc: Any, path: Path) -> dict[str, dict[str, Any]]:
    # Version 0 (before layering): a bare list of entries, each carrying its own "name".
    if isinstance(doc, list):
        doc = {"schema_version": 0, "models": doc}
    if not isinstance(doc, dict):
        raise RegistryError(f"{path}: expected a JSON object with schema_version and models")
    version = doc.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise RegistryError(f"{path}: schema_version must be an integer")
    if version > SCHEMA_VERSION:
        raise RegistryError(
            f"{path}: schema_version {version} is newer than this imageworks understands ({SCHEMA_VERSION})",
            hint="upgrade imageworks (uv sync) before touching this registry",
        )
    models = doc.get("models", {})
    if version == 0 and isinstance(models, list):
        converted: dict[str, Any] = {}
        for index, item in enumerate(models):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise RegistryError(f"{path}: models[{index}] has no string 'name'")
            name = item["name"]
            if name in converted:
                raise RegistryError(f"{path}: duplicate model name {name!r}")
            converted[name] = {k: v for k, v in item.items() if k != "name"}
        models = converted
    if not isinstance(models, dict):
        raise RegistryError(f"{path}: 'models' must be an object keyed by model name")
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise RegistryError(f"{path}: entry {name!r} must be an object")
        if not name or name != name.strip():
            raise RegistryError(f"{path}: invalid model name {name!r}")
    return models


def dump_layer(models: dict[str, dict[str, Any]]) -> bytes:
    """Deterministic UTF-8 text: sorted keys everywhere, 2-space indent, final newline, so a no-op write
    changes no byte and git diffs show only real changes. orjson because the stdlib encoder falls back
    to pure Python when indenting (~100x slower on a 10k-entry registry)."""
    import orjson

    doc = {"schema_version": SCHEMA_VERSION, "models": models}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def parse_trusted_layer(data: bytes, path: Path) -> dict[str, dict[str, Any]]:
    """Fast path for a file this tool wrote itself (its fingerprint matches): no duplicate-key hook."""
    import orjson

    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return parse_layer_text(data.decode("utf-8"), path)
    return _migrate(doc, path)
