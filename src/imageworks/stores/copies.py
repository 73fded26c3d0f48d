"""The copies of an entry as one list: the primary (`path` + `location`, which other code relies on)
first, then `entry.copies`. Every copy knows the tool that owns its folder and, for each file, its
device and inode, so shared bytes (hardlinks) are known without reading a byte."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.units import human_size

if TYPE_CHECKING:
    from imageworks.registry.schema import Copy, CopyFile, FileRecord, ModelEntry

PRIMARY = "primary"


@dataclass(frozen=True)
class CopyView:
    """One copy of an entry, the primary or an extra one, in one shape."""

    index: int  # 0 = primary, n = entry.copies[n - 1]
    path: Path
    tool: str
    method: str
    location: str | None
    files: tuple[
        tuple[str, Path, int | None, int | None, int | None], ...
    ]  # (entry path, disk path, size, dev, inode)
    made: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)  # the tool's own bookkeeping (Ollama manifest)

    @property
    def label(self) -> str:
        return PRIMARY if self.index == 0 else f"{self.tool}:{self.path}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "copy": self.index,
            "primary": self.index == 0,
            "path": str(self.path),
            "tool": self.tool,
            "method": self.method,
            "location": self.location,
            "files": [
                {"path": rel, "at": str(disk), "size": size, "dev": dev, "inode": ino}
                for rel, disk, size, dev, ino in self.files
            ],
        }


def model_root(entry: ModelEntry) -> Path | None:
    """The folder an entry's file paths are relative to (a `path` naming one file means its folder)."""
    if not entry.path:
        return None
    path = Path(entry.path).expanduser()
    if path.is_file():
        return path.parent
    return path


def copies_of(entry: ModelEntry) -> list[CopyView]:
    out: list[CopyView] = []
    root = model_root(entry)
    if root is not None:
        out.append(
            CopyView(
                0,
                root,
                entry.tool or "imageworks",
                "download" if entry.source.provider in {"hf", "url"} and entry.tool is None else "import",
                entry.location,
                tuple((f.path, root / f.path, f.size, f.dev, f.inode) for f in entry.files),
                metadata=entry.metadata,
            )
        )
    sizes = {f.path: f.size for f in entry.files}
    for number, copy in enumerate(entry.copies, 1):
        base = Path(copy.path)
        out.append(
            CopyView(
                number,
                base,
                copy.tool,
                copy.method,
                copy.location,
                tuple(
                    (
                        f.path,
                        base / (f.at or f.path),
                        f.size if f.size is not None else sizes.get(f.path),
                        f.dev,
                        f.inode,
                    )
                    for f in copy.files
                ),
                tuple(copy.made),
                copy.metadata,
            )
        )
    return out


def find_copy(entry: ModelEntry, where: str) -> CopyView:
    """The copy `where` names: `primary`, its number, its tool, its location or its folder."""
    from imageworks.errors import UsageError

    views = copies_of(entry)
    rules = (
        lambda v: where == PRIMARY and v.index == 0,
        lambda v: where.isdigit() and v.index == int(where),
        lambda v: _same_path(v.path, where),
        lambda v: v.location == where,
        lambda v: v.tool == where,
    )
    for rule in rules:
        matches = [v for v in views if rule(v)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UsageError(
                f"{where!r} names {len(matches)} copies of {entry.name}",
                hint="name the copy by its folder or number (see `show NAME`)",
            )
    names = ", ".join(f"{v.index} ({v.tool}, {v.path})" for v in views) or "none"
    raise UsageError(f"{entry.name} has no copy {where!r}", hint=f"its copies: {names}")


def _same_path(path: Path, text: str) -> bool:
    try:
        return path.resolve() == Path(text).expanduser().resolve()
    except OSError:
        return False


def file_identity(path: Path) -> tuple[int, int, int, int] | None:
    """(dev, inode, size, mtime_ns) of a file, following symlinks (the HF cache's snapshots are links)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def copy_file(rel: str, disk: Path, base: Path) -> CopyFile:
    """A `CopyFile` for the file `rel` of an entry found at `disk` inside the copy folder `base`."""
    from imageworks.registry.schema import CopyFile

    at = disk.relative_to(base).as_posix()
    ident = file_identity(disk)
    dev, ino, size, mtime = ident if ident else (None, None, None, None)
    return CopyFile(path=rel, at=None if at == rel else at, size=size, mtime_ns=mtime, dev=dev, inode=ino)


def with_identities(files: list[FileRecord], root: Path) -> list[FileRecord]:
    """`files` with the dev/inode of the primary copy filled in from a stat (no byte is read)."""
    out = []
    for record in files:
        ident = file_identity(root / record.path)
        if ident is None:
            out.append(record)
        else:
            out.append(record.model_copy(update={"dev": ident[0], "inode": ident[1]}))
    return out


def add_copy(entry: ModelEntry, copy: Copy) -> tuple[ModelEntry, bool]:
    """`entry` with `copy` added (or replacing the copy of the same folder). Returns (entry, changed)."""
    key = _key(copy.path)
    if entry.path and _key(entry.path) == key:
        return entry, False  # the primary already is that folder
    kept = [c for c in entry.copies if _key(c.path) != key]
    old = next((c for c in entry.copies if _key(c.path) == key), None)
    if old is not None and old.method != "import" and copy.method == "import":
        return entry, False  # what `link` or a download made stays recorded as such
    if old is not None:
        copy = copy.model_copy(
            update={"made": sorted({*old.made, *copy.made}), "created_at": old.created_at or copy.created_at}
        )
        if old.model_dump(exclude={"created_at"}) == copy.model_dump(exclude={"created_at"}):
            return entry, False
    return entry.model_copy(update={"copies": [*kept, copy]}), True


def _key(path: str | Path) -> str:
    from imageworks.naming import path_key

    return path_key(path) or str(path)


def carry_copies(previous: ModelEntry, data: dict[str, Any]) -> None:
    """Called when `data` (a re-download or a re-scan) updates `previous`: its copies survive. When `data`
    is another folder while the primary still holds all its files, the primary stays and the new folder
    becomes a copy; when the primary is gone or partial, the new folder takes its place (and what is left
    of the old one stays recorded as a copy). No folder silently drops out of the registry."""
    copies = [c.model_dump() for c in previous.copies]
    new_path = data.get("path")
    same_folder = bool(previous.path and new_path and _key(previous.path) == _key(new_path))
    if previous.tool is not None and data.get("tool") is None and same_folder:
        data["tool"] = previous.tool
    if previous.path and new_path and not same_folder:
        old_root, new_root = model_root(previous), Path(new_path)
        old_there = [f for f in previous.files if old_root is not None and (old_root / f.path).exists()]
        earlier = next((c for c in copies if _key(c["path"]) == _key(new_path)), None)
        copies = [c for c in copies if _key(c["path"]) != _key(new_path)]
        if old_root is not None and previous.files and len(old_there) == len(previous.files):
            new_files = [copy_file(f["path"], new_root / f["path"], new_root) for f in data.get("files", ())]
            old_inodes = {(f.dev, f.inode) for f in with_identities(list(previous.files), old_root)}
            linked = any((f.dev, f.inode) in old_inodes for f in new_files)
            method = earlier["method"] if earlier else ("hardlink" if linked else "download")
            copies.append(
                {
                    "path": str(new_root),
                    "tool": "imageworks",
                    "method": method,
                    "location": data.get("location"),
                    "files": [f.model_dump() for f in new_files],
                    "made": earlier["made"] if earlier else [],
                    "created_at": earlier.get("created_at") if earlier else data.get("downloaded_at"),
                }
            )
            data["files"] = (
                [r.model_dump() for r in with_identities(previous.files, old_root)]
                if {f.path for f in previous.files} == {f["path"] for f in data.get("files", ())}
                else data["files"]
            )
            for key in ("path", "location", "serve", "tool"):
                data[key] = getattr(previous, key)
        elif old_root is not None and old_there:
            copies.append(
                {
                    "path": str(old_root),
                    "tool": previous.tool or "imageworks",
                    "method": "download" if previous.tool is None else "import",
                    "location": previous.location,
                    "files": [copy_file(f.path, old_root / f.path, old_root).model_dump() for f in old_there],
                }
            )
    if copies:
        data["copies"] = copies


def iter_files(entry: ModelEntry) -> Iterator[tuple[CopyView, str, Path]]:
    for view in copies_of(entry):
        for rel, disk, *_ in view.files:
            yield view, rel, disk


def place(view: CopyView) -> str:
    """Where a copy is, in a word: its location name, else the tool whose shelf it is on, else its folder."""
    if view.tool != "imageworks":
        return view.tool
    return view.location if view.location not in (None, "path") else str(view.path)


def places(entry: ModelEntry) -> list[str]:
    """Where each copy of `entry` is (for `list`): the primary first."""
    copies = [{"tool": c.tool, "location": c.location, "path": c.path} for c in entry.copies]
    return places_raw({"tool": entry.tool, "location": entry.location, "copies": copies})


def places_raw(data: Mapping[str, Any]) -> list[str]:
    """`places` for an entry as stored in a layer (a dict): `list` reads 10k entries without models."""
    first = data.get("tool") or data.get("location") or "-"
    out = [str(first)]
    for copy in data.get("copies") or ():
        tool = copy.get("tool") or "imageworks"
        location = copy.get("location")
        out.append(
            str(
                tool
                if tool != "imageworks"
                else (location if location not in (None, "path") else copy.get("path"))
            )
        )
    return out


def render_copies(out: Any, entry: ModelEntry) -> None:
    """`show`'s copies section: each copy with its folder, owning tool, how it was made, and files."""
    views = copies_of(entry)
    if len(views) < 2 and (not views or views[0].tool == "imageworks"):
        return
    out.print(f"[bold]copies[/bold] ({len(views)})")
    for view in views:
        kind = "primary" if view.index == 0 else f"copy {view.index}"
        out.print(
            f"  {kind}: {view.path}  [dim]({view.tool}, {view.method}"
            f"{', ' + view.location if view.location else ''})[/dim]"
        )
        for rel, disk, size, _dev, inode in view.files[:50]:
            where = "" if disk == view.path / rel else f" -> {disk.relative_to(view.path)}"
            out.print(
                f"    {rel}{where}  {human_size(size)}" + (f"  inode {inode}" if inode else ""), markup=False
            )


def copy_claims(raw: Mapping[str, Any]) -> Iterator[tuple[Path, list[str]]]:
    """(folder, files in it) for each extra copy of an entry as stored in a layer (a dict: `verify` reads
    the merged layers untyped), with the tool's own files that belong to the copy (an Ollama manifest's
    config and template blobs), so `verify` does not call them extra."""
    for copy in raw.get("copies") or ():
        if not isinstance(copy, dict) or not isinstance(copy.get("path"), str):
            continue
        paths = [f.get("at") or f.get("path") for f in copy.get("files") or () if isinstance(f, dict)]
        paths += list(((copy.get("metadata") or {}).get("ollama") or {}).get("blobs", ()))
        yield Path(copy["path"]), [p for p in paths if isinstance(p, str)]
