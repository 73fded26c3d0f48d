"""The store's layout and the model manifest.

    PREFIX/blobs/sha256/AB/ABCDEF...      every file once, by content (object metadata: sha256)
    PREFIX/models/NAME.json               one manifest per model, written after its blobs
    PREFIX/files/OWNER/REPO/COMMIT/PATH   optional (`push --layout files`): files by path, for tools that
                                          read the store directly (vLLM's Run:ai streamer, rclone mount)

A manifest comes from the network: it is validated before use and its paths are untrusted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imageworks.errors import ImageworksError, UnsafePathError

if TYPE_CHECKING:
    from imageworks.registry import ModelEntry

MANIFEST_SCHEMA = "imageworks.model-manifest"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ImageworksError, ValueError):
    """A manifest in the store that is not one we can trust."""


def blob_key(sha256: str) -> str:
    return f"blobs/sha256/{sha256[:2]}/{sha256}"


def manifest_key(name: str) -> str:
    check_name(name)
    return f"models/{name}.json"


def check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in {"", ".", ".."} for p in parts) or "\\" in name:
        raise UnsafePathError(f"model name {name!r} cannot be an object key")
    if "\x00" in name or any(ord(c) < 32 for c in name):
        raise UnsafePathError(f"model name {name!r} has control characters")
    return name


def check_relative(path: str) -> str:
    """A file path from a manifest: relative, POSIX, no '..', no drive letter, no NUL."""
    if (
        not path
        or "\x00" in path
        or "\\" in path
        or path.startswith("/")
        or re.match(r"^[A-Za-z]:", path)
        or any(part in {"", ".", ".."} for part in path.split("/"))
    ):
        raise UnsafePathError(f"refusing unsafe path {path!r} from a manifest")
    return path


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass
class Manifest:
    name: str
    files: list[ManifestFile]
    source: dict[str, Any] = field(default_factory=dict)
    format: str | None = None
    quantization: str | None = None
    aggregate_sha256: str | None = None
    pushed_at: str | None = None
    layouts: list[str] = field(default_factory=lambda: ["blobs"])

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": MANIFEST_SCHEMA,
            "version": MANIFEST_VERSION,
            "name": self.name,
            "source": self.source,
            "format": self.format,
            "quantization": self.quantization,
            "size_bytes": self.size_bytes,
            "aggregate_sha256": self.aggregate_sha256,
            "pushed_at": self.pushed_at,
            "layouts": self.layouts,
            "files": [f.as_dict() for f in self.files],
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_entry(cls, entry: ModelEntry, *, pushed_at: str, layouts: list[str]) -> Manifest:
        files = [ManifestFile(f.path, f.size, f.sha256 or "") for f in entry.files]
        source = {k: v for k, v in entry.source.model_dump(mode="json").items() if v is not None}
        return cls(
            name=entry.name,
            files=sorted(files, key=lambda f: f.path),
            source=source,
            format=entry.format,
            quantization=entry.quantization,
            aggregate_sha256=entry.aggregate_sha256,
            pushed_at=pushed_at,
            layouts=layouts,
        )

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{where}: not a JSON manifest ({exc})") from None
        if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA:
            raise ManifestError(f"{where}: not an imageworks model manifest")
        version = doc.get("version")
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise ManifestError(
                f"{where}: manifest version {version!r} is newer than this imageworks understands",
                hint="upgrade imageworks (uv sync)",
            )
        raw_files = doc.get("files")
        if not isinstance(raw_files, list) or not raw_files:
            raise ManifestError(f"{where}: the manifest lists no files")
        files: list[ManifestFile] = []
        seen: set[str] = set()
        for item in raw_files:
            if not isinstance(item, dict):
                raise ManifestError(f"{where}: a file record is not an object")
            path, size, digest = item.get("path"), item.get("size"), item.get("sha256")
            if not isinstance(path, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ManifestError(f"{where}: bad file record {item!r}")
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise ManifestError(f"{where}: {path!r} has no valid sha256")
            check_relative(path)
            if path in seen:
                raise ManifestError(f"{where}: {path!r} is listed twice")
            seen.add(path)
            files.append(ManifestFile(path, size, digest))
        name = doc.get("name")
        if not isinstance(name, str):
            raise ManifestError(f"{where}: the manifest has no name")
        check_name(name)
        source = doc.get("source") if isinstance(doc.get("source"), dict) else {}
        layouts = doc.get("layouts")
        return cls(
            name=name,
            files=files,
            source={k: v for k, v in (source or {}).items() if isinstance(v, str)},
            format=doc.get("format") if isinstance(doc.get("format"), str) else None,
            quantization=doc.get("quantization") if isinstance(doc.get("quantization"), str) else None,
            aggregate_sha256=doc.get("aggregate_sha256")
            if isinstance(doc.get("aggregate_sha256"), str)
            else None,
            pushed_at=doc.get("pushed_at") if isinstance(doc.get("pushed_at"), str) else None,
            layouts=[x for x in layouts if isinstance(x, str)] if isinstance(layouts, list) else ["blobs"],
        )


def files_key(source: dict[str, Any], path: str) -> str | None:
    """`files/OWNER/REPO/COMMIT/PATH` for a Hub model with a known commit, else None."""
    repo, commit = source.get("repo_id"), source.get("commit")
    if not repo or not commit or repo.count("/") != 1:
        return None
    owner, name = repo.split("/")
    for part in (owner, name, commit):
        check_relative(part)
    return f"files/{owner}/{name}/{commit}/{check_relative(path)}"
