"""Removal that knows what is shared (issue 9.1, 11).

`remove NAME [--copy WHERE] [--delete-files]` deletes only the files of that entry's copy. A file another
entry (or another copy) lists stays, and so does a file on another tool's shelf unless that copy is named.
Bytes freed count what the disk gets back: zero for a file whose other hardlinked name stays. Folders go
only once nothing is left in them. The plan is computed first and executed separately (STYLE.md #9)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.errors import UnsafePathError, UsageError
from imageworks.registry import find_entry
from imageworks.stores.copies import CopyView, copies_of, file_identity, find_copy, with_identities

if TYPE_CHECKING:
    from imageworks.registry import ModelEntry, Registry, RegistryStore

# Left by our own downloads beside a file: removed with it.
_OUR_SIDECARS = (".imageworks-partial", ".imageworks-partial.json", ".imageworks-partial.aria2")


@dataclass(frozen=True)
class FileAction:
    path: Path
    size: int
    freed: int = 0  # bytes the disk gets back (0 for a hardlink whose other name stays)
    reason: str = ""  # why a file is kept

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "freed": self.freed, "reason": self.reason or None}


@dataclass
class RemovePlan:
    """What `remove` will do, computed before anything is touched."""

    name: str
    in_discovered: bool
    curated: bool
    copy: str | None = None  # the copy removed (None: the whole entry)
    delete: list[FileAction] = field(default_factory=list)
    keep: list[FileAction] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # removed after the files, when left empty
    notes: list[str] = field(default_factory=list)
    updated: ModelEntry | None = None  # the entry with one copy fewer (None: drop the entry)
    server_deletes: list[tuple[str, str]] = field(default_factory=list)  # (Ollama server, model name)

    @property
    def delete_bytes(self) -> int:
        return sum(a.freed for a in self.delete)

    @property
    def delete_path(self) -> Path | None:
        """The folder removed with the files, if any (the old single-folder contract)."""
        return self.folders[0] if self.folders else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "copy": self.copy,
            "curated": self.curated,
            "delete": [a.as_dict() for a in self.delete],
            "keep": [a.as_dict() for a in self.keep],
            "folders": [str(f) for f in self.folders],
            "bytes_freed": self.delete_bytes,
            "ollama_server_deletes": [name for _, name in self.server_deletes],
            "notes": self.notes,
        }


def _abs(path: Path) -> str:
    """A path with its folder resolved but not the file itself: an HF snapshot symlink is its own name."""
    try:
        return str(path.parent.resolve() / path.name)
    except OSError:
        return str(path.absolute())


def _claims(registry: Registry, skip: tuple[str, int | None]) -> dict[str, str]:
    """Every file path some entry's copy lists (and the blob an HF snapshot symlink points to) -> who
    lists it, except the copy being removed (`skip` = entry name, copy index; None = all its copies).
    Read from the merged layers untyped: removing one model must not validate a 10,000-entry registry."""
    claims: dict[str, str] = {}
    for name, raw in registry.merged_raw().items():
        for index, folder, paths, tool in _raw_copies(raw):
            if name == skip[0] and (skip[1] is None or index == skip[1]):
                continue
            who = name if index == 0 else f"{name} ({tool} copy)"
            for rel in paths:
                disk = folder / rel
                claims.setdefault(_abs(disk), who)
                if tool == "hf-cache" and disk.is_symlink():
                    with contextlib.suppress(OSError):
                        claims.setdefault(str(disk.resolve()), who)
    return claims


def _raw_copies(raw: dict[str, Any]) -> list[tuple[int, Path, list[str], str]]:
    """(copy index, folder, file paths in it, tool) of an entry as stored, the primary first (index 0)."""
    out: list[tuple[int, Path, list[str], str]] = []
    path = raw.get("path")
    files = [f.get("path") for f in raw.get("files") or () if isinstance(f, dict)]
    if isinstance(path, str) and path:
        folder = Path(path).expanduser()
        if folder.is_file():
            folder = folder.parent
        out.append(
            (0, folder, [p for p in files if isinstance(p, str)], str(raw.get("tool") or "imageworks"))
        )
    for index, copy in enumerate(raw.get("copies") or (), 1):
        if not isinstance(copy, dict) or not isinstance(copy.get("path"), str):
            continue
        paths = [f.get("at") or f.get("path") for f in copy.get("files") or () if isinstance(f, dict)]
        tool = str(copy.get("tool") or "imageworks")
        out.append((index, Path(copy["path"]), [p for p in paths if isinstance(p, str)], tool))
    return out


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    resolved = path.resolve()
    for root in roots:
        root_resolved = root.expanduser().resolve()
        if resolved != root_resolved and resolved.is_relative_to(root_resolved):
            return True
    return False


def _check_deletable(path: Path, roots: Sequence[Path]) -> None:
    """A registry path is untrusted: only delete inside a known model root, never a root itself."""
    if not _inside(path, roots):
        raise UnsafePathError(
            f"refusing to delete {path}: it is not inside a configured model location",
            hint="delete it by hand, or add its root to imageworks.toml [locations]",
        )


def plan_remove(
    registry: Registry,
    reference: str,
    *,
    delete_files: bool,
    roots: Sequence[Path],
    copy: str | None = None,
) -> RemovePlan:
    entry = find_entry(registry, reference)
    plan = RemovePlan(entry.name, entry.name in registry.discovered, registry.is_curated(entry.name))
    views = copies_of(entry)
    if copy is not None:
        chosen = find_copy(entry, copy)
        plan.copy = f"{chosen.index} ({chosen.tool}, {chosen.path})"
        targets = [chosen]
        if len(views) > 1:
            plan.updated = _without(entry, chosen)
    elif delete_files:
        # Files on another tool's shelf are never deleted unless that copy is named; those copies stay
        # registered (the entry keeps them), so nothing on disk becomes untracked.
        targets = [v for v in views if v.tool == "imageworks" or v.made]
        kept = [v for v in views if v not in targets]
        if views and len(kept) == len(views):
            raise UsageError(
                f"every copy of {entry.name} is on another tool's shelf: nothing of ours to delete",
                hint=f"name the copy to delete with --copy ({', '.join(sorted({v.tool for v in kept}))}),"
                " or drop --delete-files to remove only the registry entry",
            )
        for view in kept:
            plan.notes.append(
                f"kept the {view.tool} copy in {view.path}: another tool's shelf"
                f" (name it with --copy {view.tool} to delete it)"
            )
        if kept:
            plan.updated = _keep_only(entry, {str(v.path) for v in kept})
    else:
        targets = views
    if plan.curated and plan.updated is None:
        plan.notes.append(
            f"{entry.name} is defined in the curated layer (model_registry.curated.json): edit that file by hand;"
            " it was not changed"
        )
    if delete_files:
        claims = _claims(registry, (entry.name, targets[0].index if copy is not None else None))
        for view in targets:
            _plan_copy(plan, entry, view, claims, roots, named=copy is not None)
        _count_freed(plan)
    return plan


def _keep_only(entry: ModelEntry, keep: set[str]) -> ModelEntry:
    """`entry` with only the copies whose folders are in `keep` (the first becomes the primary)."""
    while True:
        drop = next((v for v in copies_of(entry) if str(v.path) not in keep), None)
        if drop is None:
            return entry
        entry = _without(entry, drop)


def _without(entry: ModelEntry, chosen: CopyView) -> ModelEntry:
    """`entry` without one copy; removing the primary promotes the first other copy."""
    if chosen.index > 0:
        rest = [c for i, c in enumerate(entry.copies, 1) if i != chosen.index]
        return entry.model_copy(update={"copies": rest})
    first, rest = entry.copies[0], entry.copies[1:]
    by_path = {f.path: f for f in first.files}
    files = [
        r.model_copy(update={"dev": by_path[r.path].dev, "inode": by_path[r.path].inode})
        for r in entry.files
        if r.path in by_path
    ]
    if any(f.at for f in first.files):
        # A shelf that names files otherwise (Ollama blobs): the entry's paths are the shelf's.
        files = [r.model_copy(update={"path": by_path[r.path].at or r.path}) for r in files]
    return entry.model_copy(
        update={
            "path": first.path,
            "location": first.location,
            "tool": None if first.tool == "imageworks" else first.tool,
            "files": with_identities(files, Path(first.path)),
            "copies": rest,
        }
    )


def _plan_copy(
    plan: RemovePlan,
    entry: ModelEntry,
    view: CopyView,
    claims: dict[str, str],
    roots: Sequence[Path],
    *,
    named: bool,
) -> None:
    meta = view.metadata.get("ollama") or {}
    if view.tool == "ollama" and meta.get("server") and meta.get("name"):
        # Made through the server's API: the server deletes it (and the blobs no other model uses).
        plan.server_deletes.append((str(meta["server"]), str(meta["name"])))
        plan.notes.append(f"the Ollama server at {meta['server']} will be asked to delete {meta['name']}")
        return
    allowed = [*roots, *_shelves(view.tool)]
    if view.made and view.tool == "imageworks":
        allowed.append(view.path.parent)  # a folder `link --to PATH` made
    if not view.files:
        # An entry that records no files (written by hand or an old version): its folder is all it has.
        if view.path.exists():
            _check_deletable(view.path, allowed)
            total = _tree_size(view.path)
            plan.delete.append(FileAction(view.path, total, total))
            plan.folders.append(view.path)
        else:
            plan.notes.append(f"{view.path} does not exist: nothing to delete")
        return
    _check_deletable(view.path if view.path.is_dir() else view.path.parent, allowed)
    start = len(plan.delete)
    _plan_files(plan, view, claims)
    # A path from the registry is untrusted: whatever would leave the copy's root or shelf stays.
    planned, plan.delete = plan.delete[start:], plan.delete[:start]
    for action in planned:
        if _inside(action.path, allowed):
            plan.delete.append(action)
        else:
            plan.keep.append(
                FileAction(action.path, action.size, reason="outside the copy's shelf: not deleted")
            )
    if view.tool == "ollama":
        _plan_ollama(plan, view, claims)
        return  # Ollama's blobs folder is shared by every model: never pruned
    if view.tool == "hf-cache":
        _plan_hf_refs(plan, view)
    folder = view.path
    if folder.is_dir() and folder not in plan.folders:
        plan.folders.append(folder)


def _shelves(tool: str) -> list[Path]:
    """Where `tool` keeps its models now (the roots a copy on its shelf may be deleted under)."""
    from imageworks.stores import shelves

    if tool == "hf-cache":
        return [shelves.hf_cache()]
    if tool == "ollama":
        return shelves.ollama_models()
    if tool == "lmstudio":
        return [shelves.lmstudio_models()]
    if tool == "llama.cpp":
        return [shelves.llama_cache()]
    return []


def _plan_files(plan: RemovePlan, view: CopyView, claims: dict[str, str]) -> None:
    for _rel, disk, size, *_ in view.files:
        key = _abs(disk)
        if key in claims:
            plan.keep.append(FileAction(disk, size or 0, reason=f"listed by {claims[key]}"))
            continue
        if not disk.exists() and not disk.is_symlink():
            continue
        plan.delete.append(FileAction(disk, _size(disk)))
        if disk.is_symlink() and view.tool == "hf-cache":
            blob = disk.resolve()
            if str(blob) not in claims and not _other_links(view.path, blob, {d for _, d, *_ in view.files}):
                plan.delete.append(FileAction(blob, _size(blob)))
    for made in view.made:
        target = Path(os.path.normpath(view.path / made))
        if _abs(target) not in claims and target.exists() and all(a.path != target for a in plan.delete):
            plan.delete.append(FileAction(target, _size(target)))


def _plan_hf_refs(plan: RemovePlan, view: CopyView) -> None:
    """A snapshot left empty takes the refs naming its commit with it (as huggingface_hub's
    `delete_revisions` does): a ref to a missing snapshot makes `scan_cache_dir` report the repo corrupted."""
    going = {a.path for a in plan.delete}
    for folder, _dirs, files in os.walk(view.path):
        if any(Path(folder) / name not in going for name in files):
            return
    refs = view.path.parent.parent / "refs"
    for folder, _dirs, files in os.walk(refs):
        for name in files:
            ref = Path(folder) / name
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if ref.read_text(encoding="ascii").strip() == view.path.name and ref not in going:
                    plan.delete.append(FileAction(ref, _size(ref)))


def _plan_ollama(plan: RemovePlan, view: CopyView, claims: dict[str, str]) -> None:
    """As `ollama rm` does: the manifest goes, and each blob only when no other manifest lists it."""
    import json

    meta = view.metadata.get("ollama") or {}
    models = view.path.parent
    manifest = models / str(meta.get("manifest", ""))
    if not meta.get("manifest") or not manifest.is_file() or not _inside(manifest, [models / "manifests"]):
        return
    used: set[str] = set()
    for other in (models / "manifests").glob("*/*/*/*"):
        if other == manifest or not other.is_file():
            continue
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(other.read_text(encoding="utf-8"))
            for layer in [doc.get("config") or {}, *(doc.get("layers") or [])]:
                used.add(str(layer.get("digest", "")).replace(":", "-", 1))
    kept = []
    for action in plan.delete:
        if action.path.parent == view.path and action.path.name in used:
            plan.keep.append(FileAction(action.path, action.size, reason="used by another Ollama manifest"))
        else:
            kept.append(action)
    plan.delete = kept
    for name in meta.get("blobs", ()):
        blob = view.path / name
        if "/" in name or name in {"", ".", ".."}:
            continue
        listed = any(a.path == blob for a in plan.delete) or any(a.path == blob for a in plan.keep)
        if not listed and blob.exists() and name not in used and _abs(blob) not in claims:
            plan.delete.append(FileAction(blob, _size(blob)))
    if not any(_abs(a.path) == _abs(manifest) for a in plan.delete):  # a copy made by `link` lists it
        plan.delete.append(FileAction(manifest, _size(manifest)))


def _other_links(snapshot: Path, blob: Path, ours: set[Path]) -> bool:
    """Whether another file in the repo's snapshots (one we are not deleting) points to `blob`."""
    snapshots = snapshot.parent
    for folder, _dirs, files in os.walk(snapshots):
        for name in files:
            path = Path(folder) / name
            if path in ours or not path.is_symlink():
                continue
            with contextlib.suppress(OSError):
                if path.resolve() == blob:
                    return True
    return False


def _count_freed(plan: RemovePlan) -> None:
    """Bytes freed per inode: only when every name of the inode goes."""
    names: Counter[tuple[int, int]] = Counter()
    idents = {}
    for action in plan.delete:
        if action.path.is_symlink() or action.path.is_dir():
            continue
        ident = file_identity(action.path)
        if ident:
            idents[action.path] = ident
            names[(ident[0], ident[1])] += 1
    counted: set[tuple[int, int]] = set()
    out = []
    for action in plan.delete:
        ident = idents.get(action.path)
        freed = action.freed
        if ident is not None:
            key = (ident[0], ident[1])
            nlink = os.stat(action.path).st_nlink
            freed = ident[2] if (names[key] >= nlink and key not in counted) else 0
            counted.add(key)
            if freed == 0 and names[key] < nlink:
                plan.notes.append(f"{action.path.name}: another hardlink to it stays (0 bytes freed)")
        elif action.path.is_symlink():
            freed = 0
        out.append(FileAction(action.path, action.size, freed, action.reason))
    plan.delete = out


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size if path.is_symlink() else path.stat().st_size
    except OSError:
        return 0


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def execute_remove(
    store: RegistryStore,
    plan: RemovePlan,
    command: Sequence[str],
    *,
    roots: Sequence[Path] = (),
    backup: bool = True,
) -> bool:
    """Update the registry first (a crash after it leaves untracked bytes, never a registry that lists
    deleted files as present), then delete the planned files and the folders they leave empty."""
    for server, name in plan.server_deletes:
        _ollama_delete(server, name)
    changed = False
    if plan.updated is not None or plan.in_discovered:
        with store.transaction(command, backup=backup) as registry:
            if plan.updated is not None:
                registry.put(plan.updated)
                changed = True
            else:
                changed = registry.remove(plan.name)
    for action in plan.delete:
        if action.path.is_dir() and not action.path.is_symlink():
            shutil.rmtree(action.path)
            continue
        with contextlib.suppress(FileNotFoundError):
            action.path.unlink()
        for suffix in _OUR_SIDECARS:
            with contextlib.suppress(OSError):
                action.path.with_name(f".{action.path.name}{suffix}").unlink()
    for folder in plan.folders:
        _prune_empty(folder)
        _prune_empty_parents(folder.parent, roots)
    return changed


def _ollama_delete(server: str, name: str) -> None:
    import httpx

    from imageworks.errors import TransferError

    try:
        response = httpx.request("DELETE", f"{server}/api/delete", json={"model": name}, timeout=30.0)
    except httpx.HTTPError as exc:
        raise TransferError(
            f"the Ollama server at {server} did not answer ({type(exc).__name__}): nothing was removed",
            hint="start Ollama (or set OLLAMA_HOST) and run the same command again",
        ) from None
    if response.status_code not in (200, 404):  # 404: already deleted there
        raise TransferError(f"the Ollama server refused to delete {name}: HTTP {response.status_code}")


def _prune_empty(folder: Path) -> None:
    """Remove `folder` and its subfolders when they hold no file (bottom up); anything left stays."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for sub, _dirs, _files in sorted(os.walk(folder), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):
            Path(sub).rmdir()


def _prune_empty_parents(folder: Path, roots: Sequence[Path]) -> None:
    """Remove the owner folders left empty (`<root>/<owner>/`), never a root itself."""
    stops = {root.expanduser().resolve() for root in roots}
    current = folder.resolve()
    while current not in stops and any(current.is_relative_to(root) for root in stops):
        try:
            current.rmdir()  # only succeeds when empty
        except OSError:
            return
        current = current.parent
