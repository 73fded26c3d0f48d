"""Hashing a verify's files while the command is still starting up.

The files to hash are known only once the registry is loaded, and loading it means importing and
running pydantic: ~0.1 s of one core, during which the other core idles and no byte is hashed. So the
CLI first reads the merged registry file as plain JSON, guesses which files the plan will hash (the
recorded files of the entries named exactly, or of every entry for --all, that are on disk at their
recorded size) and starts hashing them (`hashing.HashAhead`) before it imports the rest. The real plan
is made as always; the guess only saves work, and `HashAhead.take` hands over a digest only for the
same file, unchanged since it was opened.

Only stdlib and `hashing` are imported here: this module is on the path it is meant to shorten.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from imageworks.hashing import HashAhead

MERGED = "model_registry.json"  # as registry.store names it (not imported: that module loads pydantic)
# Beyond this the merged file takes longer to parse than the head start is worth (a --all over
# thousands of entries is dominated by hashing anyway, and the real load parses the layers again).
MAX_GUESS_BYTES = 2 * 1024 * 1024


def safe_relative(relative: str) -> PurePosixPath | None:
    """A file path from the registry is untrusted: it must stay inside the model folder. Symlinks are
    followed on purpose (verify only reads, and HF-cache style folders are symlinks to blobs)."""
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        return None
    pure = PurePosixPath(relative)
    if any(part in {"", ".", ".."} for part in relative.split("/")) or (
        len(relative) > 1 and relative[1] == ":"
    ):
        return None
    return pure


def entry_folder(recorded: str | None) -> tuple[Path | None, bool]:
    """(folder an entry's file paths are relative to, whether its `path` names a single file)."""
    if not recorded:
        return None, False
    path = Path(recorded).expanduser()
    if path.is_file():
        return path.parent, True
    return path, False


def start(registry_dir: Path, names: Sequence[str] | None, *, jobs: int | None) -> HashAhead | None:
    """Start hashing what `verify NAMES` (None: --all) will most likely hash; None when there is
    nothing to guess (no merged file, too large, unreadable, or no exact names)."""
    targets = guess(registry_dir, names)
    return HashAhead(targets, jobs=jobs) if targets else None


def guess(registry_dir: Path, names: Sequence[str] | None) -> list[tuple[Path, int]]:
    """(file, size) of every recorded file with a digest, of the entries named exactly (or all), that
    is a regular file of the recorded size now."""
    try:
        with open(registry_dir / MERGED, "rb") as handle:
            data = handle.read(MAX_GUESS_BYTES + 1)
        if len(data) > MAX_GUESS_BYTES:
            return []
        models = json.loads(data).get("models")
    except (OSError, ValueError, RecursionError, AttributeError):
        return []
    if not isinstance(models, dict):
        return []
    chosen = list(models.values()) if names is None else [models.get(n) for n in names]
    targets: dict[Path, int] = {}
    for raw in chosen:
        if isinstance(raw, dict):
            targets.update(_entry_targets(raw))
    return list(targets.items())


def _entry_targets(raw: dict[str, Any]) -> dict[Path, int]:
    path, files = raw.get("path"), raw.get("files")
    if not isinstance(path, str) or not isinstance(files, list):
        return {}
    folder, _ = entry_folder(path)
    if folder is None:
        return {}
    found: dict[Path, int] = {}
    for record in files:
        if not isinstance(record, dict) or not record.get("sha256"):
            continue
        relative, size = record.get("path"), record.get("size")
        safe = safe_relative(relative) if isinstance(relative, str) else None
        if safe is None or not isinstance(size, int):
            continue
        full = folder.joinpath(*safe.parts)
        try:
            st = os.stat(full)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == size:
            found[full] = size
    return found
