"""LM Studio's models folder as a shelf: `MODELS/PUBLISHER/MODEL/` holding GGUF files (one entry per
quant, mmproj projectors attached, as `download` makes them) or an MLX folder (one entry). LM Studio
lists exactly two folder levels; PUBLISHER/MODEL is the Hub repo it was downloaded from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from imageworks.stores.importing import Found, ImportResult, weight_digests

if TYPE_CHECKING:
    from imageworks.registry import Registry


def _files(folder: Path) -> list:  # list[FileRecord]
    from imageworks.registry.schema import FileRecord

    records = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".") and ".imageworks-" not in f):
            path = Path(current) / name
            try:
                st = path.stat()
            except OSError:
                continue
            records.append(
                FileRecord(
                    path=path.relative_to(folder).as_posix(), size=st.st_size, mtime_ns=st.st_mtime_ns,
                    dev=st.st_dev, inode=st.st_ino,
                )
            )  # fmt: skip
    return records


def find(models: Path, registry: Registry | None = None) -> tuple[list[Found], ImportResult]:
    from imageworks.entries import build_entry, folder_variants
    from imageworks.registry.schema import Source

    result = ImportResult("lmstudio", models)
    found: list[Found] = []
    if not models.is_dir():
        result.notes.append(f"{models} does not exist: nothing to import")
        return found, result
    for publisher in sorted(p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for folder in sorted(p for p in publisher.iterdir() if p.is_dir() and not p.name.startswith(".")):
            records = _files(folder)
            if not records:
                continue
            by_path = {r.path: r for r in records}
            source = Source(provider="hf", repo_id=f"{publisher.name}/{folder.name}")
            for variant, inspection in folder_variants(folder, list(by_path)):
                if not variant.weight_files:
                    continue
                entry = build_entry(
                    folder, source=source, location=None, files=[by_path[p] for p in variant.files],
                    inspection=inspection,
                ).model_copy(update={"tool": "lmstudio"})  # fmt: skip
                found.append(Found(entry, weight_digests(entry)))
    if not found:
        result.notes.append(f"{models} holds no GGUF or MLX models")
    return found, result


def link_folder(
    entry, folder: Path, *, tool: Literal["imageworks", "lmstudio"] = "imageworks"
):  # (ModelEntry, Path) -> Placed
    """Every file of the entry at the same relative path in `folder`: hardlinks, or verified copies on
    another filesystem."""
    from imageworks.clock import utc_now
    from imageworks.locations import safe_join
    from imageworks.registry.schema import Copy
    from imageworks.stores.linking import Placed, copy_files_at, source_files
    from imageworks.stores.placing import COPY, place

    methods, where = [], {}
    files = source_files(entry)
    _refuse_other_files(folder, [(safe_join(folder, rel), disk) for rel, disk, _size, _sha in files])
    for rel, disk, _size, sha in files:
        target = safe_join(folder, rel)
        methods.append(place(disk, target, sha256=sha))
        where[rel] = target
    method: Literal["copy", "link"] = "copy" if COPY in methods else "link"
    notes = [f"{folder} is on another filesystem: copied and verified"] if method == "copy" else []
    copy = Copy(
        path=str(folder), tool=tool, method=method, files=copy_files_at(entry, folder, where),
        made=sorted(where), created_at=utc_now(),
    )  # fmt: skip
    return Placed(copy, methods, notes)


def _refuse_other_files(folder: Path, pairs: list[tuple[Path, Path]]) -> None:
    """A file already in `folder` under one of the names, with other bytes (another model's config.json,
    the user's own file), is never replaced: checked for all before anything is placed."""
    import filecmp

    from imageworks.errors import UsageError

    for target, source in pairs:
        if target.is_file() and not filecmp.cmp(source, target, shallow=False):
            raise UsageError(
                f"{target} already exists with other contents; nothing was linked into {folder}",
                hint="link into a folder of its own (e.g. --to FOLDER/OWNER/REPO), or move that file away",
            )


def link(entry):  # (ModelEntry) -> Placed
    """`MODELS/PUBLISHER/REPO/FILE` in LM Studio's models folder (MLX: every file of the folder)."""
    from imageworks.locations import safe_component
    from imageworks.stores import shelves

    owner, _, repo = (entry.source.repo_id or "").partition("/")
    if not (owner and repo):
        owner, repo = "imageworks", entry.name.replace("/", "-").replace(":", "-")
    folder = shelves.lmstudio_models() / safe_component(owner) / safe_component(repo)
    return link_folder(entry, folder, tool="lmstudio")
