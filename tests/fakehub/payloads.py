"""The JSON the Hub API answers with (model info, tree entries), built from the fake Hub's model."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from .model import Commit, HubFile, Repo, folder_oid, iso


def is_hostile(path: str) -> bool:
    return path.startswith("/") or ".." in path.split("/") or "\\" in path or ":" in path


def content_type(name: str) -> str:
    if name.endswith((".json", ".md", ".txt", ".jinja", ".py", ".yaml", ".yml")) or name.startswith("."):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def model_info_json(repo: Repo, commit: Commit, *, blobs: bool) -> dict[str, Any]:
    files = commit.files
    siblings = []
    for path in sorted(files):
        entry = files[path]
        sibling: dict[str, Any] = {"rfilename": path}
        if blobs:
            sibling["blobId"] = entry.oid
            sibling["size"] = entry.size
            if entry.lfs:
                sibling["lfs"] = {
                    "sha256": entry.sha256,
                    "size": entry.size,
                    "pointerSize": entry.pointer_size,
                }
        siblings.append(sibling)
    names = [p.rsplit("/", 1)[-1] for p in files]
    config = json_file(files.get("config.json"))
    tags: list[str] = []
    library = None
    if any(n.endswith(".safetensors") for n in names):
        tags.append("safetensors")
    if any(n.endswith(".gguf") for n in names):
        tags.append("gguf")
        library = "gguf"
    if any(n.endswith(".bin") for n in names):
        tags.append("pytorch")
    if any(n.endswith(".onnx") for n in names):
        tags.append("onnx")
    if config is not None:
        library = "transformers"
        tags.insert(0, "transformers")
        if isinstance(config.get("model_type"), str):
            tags.append(config["model_type"])
    tags.append("region:us")
    info: dict[str, Any] = {
        "_id": repo.object_id,
        "id": repo.id,
        "modelId": repo.id,
        "author": repo.owner,
        "sha": commit.sha,
        "lastModified": iso(commit.date),
        "createdAt": iso(repo.created),
        "private": repo.private,
        "gated": repo.gated,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": tags,
        "siblings": siblings,
        "spaces": [],
        "usedStorage": sum(f.size for f in files.values()),
    }
    if library:
        info["library_name"] = library
    if config is not None:
        info["config"] = {
            k: config[k] for k in ("architectures", "model_type", "quantization_config") if k in config
        }
    safetensors = safetensors_params(files)
    if safetensors:
        info["safetensors"] = safetensors
    return info


def json_file(entry: HubFile | None) -> dict[str, Any] | None:
    if entry is None or entry.size > 1024 * 1024:
        return None
    try:
        value = json.loads(entry.blob.read(0, entry.size))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def safetensors_params(files: Mapping[str, HubFile]) -> dict[str, Any] | None:
    """The `safetensors` block of model_info: parameter counts per dtype, read from the file headers."""
    per_dtype: dict[str, int] = {}
    for path, entry in files.items():
        if not path.endswith(".safetensors") or entry.size < 8:
            continue
        (length,) = struct.unpack("<Q", entry.blob.read(0, 8))
        if length > min(entry.size - 8, 25_000_000):
            return None
        try:
            header = json.loads(entry.blob.read(8, 8 + length))
        except ValueError:
            return None
        for name, tensor in header.items():
            if name == "__metadata__" or not isinstance(tensor, dict):
                continue
            count = 1
            for dim in tensor.get("shape", []):
                count *= int(dim)
            per_dtype[tensor.get("dtype", "?")] = per_dtype.get(tensor.get("dtype", "?"), 0) + count
    if not per_dtype:
        return None
    return {"parameters": per_dtype, "total": sum(per_dtype.values())}


def entry_json(repo: Repo, commit: Commit, kind: str, path: str, expand: bool) -> dict[str, Any]:
    if kind == "directory":
        out: dict[str, Any] = {"type": "directory", "oid": folder_oid(commit, path), "size": 0, "path": path}
    else:
        entry = commit.files[path]
        out = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
        if entry.lfs:
            out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    if expand:
        last = repo.last_change(commit, path)
        out["lastCommit"] = {"id": last.sha, "title": last.title, "date": iso(last.date)}
        if kind == "file":
            out["securityFileStatus"] = {
                "status": "safe",
                "avScan": {"virusFound": False, "virusNames": None},
                "pickleImportScan": None,
            }
    return out
