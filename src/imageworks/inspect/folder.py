"""Inspect a model folder on disk, reading configs and weight headers only."""

from __future__ import annotations

import os
from pathlib import Path

from imageworks.inspect.config import MAX_SMALL_FILE
from imageworks.inspect.gguf import inspect_gguf_source
from imageworks.inspect.repo import analyse
from imageworks.inspect.safetensors import inspect_safetensors_source
from imageworks.inspect.source import FileSource
from imageworks.inspect.types import FileInspection, ModelInspection
from imageworks.listing import RepoFile

MAX_DEPTH = 6  # <repo>/onnx/..., diffusers <repo>/unet/...; deeper trees are not one model


class _FolderAccess:
    def __init__(self, root: Path, problems: list[str]) -> None:
        self.root = root
        self.problems = problems
        self.bytes_read = 0

    def small(self, path: str) -> bytes | None:
        try:
            with open(self.root / path, "rb") as f:
                data = f.read(MAX_SMALL_FILE + 1)
        except OSError as exc:
            self.problems.append(f"{path}: unreadable ({exc.strerror or exc})")
            return None
        self.bytes_read += len(data)
        return data

    def prefix(self, path: str, n: int) -> bytes | None:
        try:
            with open(self.root / path, "rb") as f:
                data = f.read(n)
        except OSError:
            return None
        self.bytes_read += len(data)
        return data

    def _header(self, f: RepoFile, kind: str) -> FileInspection:
        try:
            src = FileSource(self.root / f.path)
        except OSError as exc:
            return FileInspection(
                path=f.path, size=f.size, format="unknown", error=f"unreadable: {exc.strerror or exc}"
            )
        with src:
            result = (
                inspect_gguf_source(src, f.path)
                if kind == "gguf"
                else inspect_safetensors_source(src, f.path)
            )
        self.bytes_read += result.bytes_read
        return result

    def gguf(self, f: RepoFile) -> FileInspection:
        return self._header(f, "gguf")

    def safetensors(self, f: RepoFile) -> FileInspection:
        return self._header(f, "safetensors")


def list_folder(root: Path, problems: list[str]) -> list[RepoFile]:
    """Every non-hidden file under `root` (relative POSIX paths), without following directory symlinks
    (a symlink loop cannot trap us) and skipping .git/.cache (huggingface_hub's local-dir metadata)."""
    out: list[RepoFile] = []

    def onerror(exc: OSError) -> None:
        problems.append(f"{exc.filename}: unreadable ({exc.strerror or exc})")

    root_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        depth = len(Path(dirpath).parts) - root_depth
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and depth < MAX_DEPTH)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError as exc:
                problems.append(f"{os.path.relpath(full, root)}: unreadable ({exc.strerror or exc})")
                continue
            out.append(RepoFile(Path(os.path.relpath(full, root)).as_posix(), st.st_size))
    return out


def inspect_folder(path: str | os.PathLike[str], *, files: list[str] | None = None) -> ModelInspection:
    """Inspect the model in folder `path` from its configs and weight headers (never the tensor data).

    `files` restricts the *weights* considered to these relative paths (one quant of a folder holding
    several); config, tokenizer and chat-template files at the folder root are read either way.
    """
    root = Path(path)
    problems: list[str] = []
    if not root.is_dir():
        return ModelInspection(format="unknown", reason=f"not a folder: {root}")
    listing = list_folder(root, problems)
    if files is not None:
        from imageworks.inspect.formats import classify_weight_file

        wanted = {Path(f).as_posix() for f in files}
        missing = sorted(wanted - {f.path for f in listing})
        problems += [f"{m}: listed but not in the folder" for m in missing]
        listing = [f for f in listing if f.path in wanted or classify_weight_file(f.path) is None]
    access = _FolderAccess(root, problems)
    result = analyse(listing, access, name_hint=root.name)
    result.problems = problems + [p for p in result.problems if p not in problems]
    return result
