"""llama.cpp's own cache (`LLAMA_CACHE`) in its older flat layout, as a shelf:
  <cache>/OWNER_REPO_FILE.gguf          the file (`/` in the repo path also becomes `_`)
  <cache>/OWNER_REPO_FILE.gguf.etag     the ETag the Hub answered: the SHA-256 of an LFS file
  <cache>/manifest=OWNER=REPO=TAG.json  the Hub's manifest for `-hf OWNER/REPO:TAG` (ggufFile, mmprojFile)
Newer llama.cpp writes the Hugging Face cache instead (`import hf-cache`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from imageworks.stores.importing import Found, ImportResult

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

if TYPE_CHECKING:
    from imageworks.registry import Registry


def flat_name(repo_id: str, path: str) -> str:
    return f"{repo_id.replace('/', '_')}_{path.replace('/', '_')}"


def _etag(file: Path) -> str | None:
    try:
        value = file.with_name(file.name + ".etag").read_text(encoding="ascii").strip().strip('"')
    except (OSError, UnicodeDecodeError):
        return None
    value = value.removeprefix("W/").strip('"')
    return value if _SHA256.match(value) else None


def find(cache: Path, registry: Registry | None = None) -> tuple[list[Found], ImportResult]:
    from imageworks.entries import build_entry
    from imageworks.inspect import inspect_folder
    from imageworks.registry.schema import FileRecord, Source

    result = ImportResult("llama.cpp", cache)
    found: list[Found] = []
    if not cache.is_dir():
        result.notes.append(f"{cache} does not exist: nothing to import")
        return found, result
    for manifest in sorted(cache.glob("manifest=*.json")):
        parts = manifest.name.removeprefix("manifest=").removesuffix(".json").split("=")
        if len(parts) != 3:
            continue
        owner, repo, tag = parts
        repo_id = f"{owner}/{repo}"
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            result.notes.append(f"{manifest.name}: unreadable; skipped")
            continue
        wanted = [
            data.get(key, {}).get("rfilename")
            for key in ("ggufFile", "mmprojFile")
            if isinstance(data, dict) and isinstance(data.get(key), dict)
        ]
        records, aliases, weights = [], {}, set()
        for rfilename in [w for w in wanted if isinstance(w, str)]:
            disk = cache / flat_name(repo_id, rfilename)
            try:
                st = disk.stat()
            except OSError:
                result.notes.append(f"{repo_id}:{tag}: {disk.name} is missing; skipped")
                continue
            sha = _etag(disk)
            records.append(
                FileRecord(
                    path=disk.name, size=st.st_size, sha256=sha, mtime_ns=st.st_mtime_ns,
                    dev=st.st_dev, inode=st.st_ino,
                )
            )  # fmt: skip
            aliases[rfilename] = disk.name
            if sha:
                weights.add(sha)
        if not records:
            continue
        inspection = inspect_folder(cache, files=[r.path for r in records])
        source = Source(provider="hf", repo_id=repo_id)
        entry = build_entry(cache, source=source, location=None, files=records, inspection=inspection)
        entry = entry.model_copy(
            update={"tool": "llama.cpp", "metadata": {**entry.metadata, "llama.cpp": {"tag": tag}}}
        )
        found.append(Found(entry, frozenset(weights), aliases, per_model_folder=False))
    return found, result
