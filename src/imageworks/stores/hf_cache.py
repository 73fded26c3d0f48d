"""The Hugging Face cache as a shelf: import what it holds in place, link our models into it.

Layout (huggingface_hub `file_download.py`, `utils/_cache_manager.py`):
  <cache>/models--OWNER--NAME/refs/REVISION          the commit, written without a trailing newline
  <cache>/models--OWNER--NAME/snapshots/COMMIT/PATH  a relative symlink to ../../blobs/ETAG (or, where
                                                     symlinks are unsupported, the file itself)
  <cache>/models--OWNER--NAME/blobs/ETAG             the bytes; ETAG is the SHA-256 of an LFS file, the git
                                                     blob SHA-1 of a small one; `ETAG.incomplete` while downloading
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from imageworks.stores.importing import Found, ImportResult, weight_digests

if TYPE_CHECKING:
    from imageworks.registry import ModelEntry, Registry

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
REPO_PREFIX = "models--"
SEPARATOR = "--"


def repo_folder(repo_id: str) -> str:
    return REPO_PREFIX + repo_id.replace("/", SEPARATOR)


def _read_refs(refs: Path) -> dict[str, str]:
    """REVISION -> commit; a ref file with or without a trailing newline, nested refs (refs/pr/1)."""
    out: dict[str, str] = {}
    if not refs.is_dir():
        return out
    for folder, _dirs, files in os.walk(refs):
        for name in files:
            path = Path(folder) / name
            try:
                commit = path.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                continue
            if re.fullmatch(r"[0-9a-f]{40}", commit):
                out[path.relative_to(refs).as_posix()] = commit
    return out


_SHA1 = re.compile(r"^[0-9a-f]{40}$")
SMALL_FILE_LIMIT = 10 * 1024 * 1024  # the Hub keeps files above this in LFS (named by SHA-256)


def _small_file_sha256(
    blob: Path, git_sha1: str, result: ImportResult, memo: dict[Path, str | None]
) -> str | None:
    """A small file's blob is named by its git blob id: hash it once (a few KB of config or tokenizer) to
    know its SHA-256, and check it against its name on the way."""

    if blob in memo:
        return memo[blob]
    memo[blob] = _hash_small(blob, git_sha1, result)
    return memo[blob]


def _hash_small(blob: Path, git_sha1: str, result: ImportResult) -> str | None:
    import hashlib

    data = blob.read_bytes()
    result.bytes_hashed += len(data)
    if hashlib.sha1(b"blob %d\x00" % len(data) + data, usedforsecurity=False).hexdigest() != git_sha1:
        result.notes.append(f"{blob}: content does not match its git blob id; recorded without a digest")
        return None
    return hashlib.sha256(data).hexdigest()


def _snapshot_files(
    snapshot: Path, result: ImportResult, memo: dict[Path, str | None]
) -> list:  # list[FileRecord]
    from imageworks.registry.schema import FileRecord

    notes = result.notes

    records = []
    for folder, dirs, files in os.walk(snapshot):
        # Hidden files (.gitattributes) are the repo's, not the model's: download and scan skip them too.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(folder) / name
            rel = path.relative_to(snapshot).as_posix()
            sha = None
            try:
                if path.is_symlink():
                    target = Path(os.path.realpath(path))
                    st = os.stat(target)
                    # A blob named by its SHA-256 need not be re-hashed to be registered.
                    sha = target.name if _SHA256.match(target.name) else None
                    if sha is None and _SHA1.match(target.name) and st.st_size <= SMALL_FILE_LIMIT:
                        sha = _small_file_sha256(target, target.name, result, memo)
                else:
                    st = os.stat(path)  # a copy instead of a symlink (Windows without symlink rights)
            except OSError:
                notes.append(f"{snapshot.parent.parent.name}: {rel} points to a missing blob; skipped")
                continue
            records.append(
                FileRecord(
                    path=rel,
                    size=st.st_size,
                    sha256=sha,
                    mtime_ns=st.st_mtime_ns,
                    dev=st.st_dev,
                    inode=st.st_ino,
                )
            )
    return records


def _repos(cache: Path) -> Iterator[Path]:
    try:
        children = sorted(cache.iterdir())
    except OSError:
        return
    for child in children:
        if child.name.startswith(REPO_PREFIX) and child.is_dir():
            yield child


def _known(registry: Registry | None) -> dict[str, list[ModelEntry]]:
    """Entries whose primary is an HF cache snapshot, by folder: a re-import of an unchanged snapshot
    reuses them instead of inspecting the files again."""
    from imageworks.naming import path_key

    out: dict[str, list[ModelEntry]] = {}
    if registry is None:
        return out
    for entry in registry.entries():
        if entry.tool == "hf-cache" and entry.path:
            out.setdefault(path_key(entry.path) or entry.path, []).append(entry)
    return out


def _remember_digests(snapshot: Path, known: list[ModelEntry], memo: dict[Path, str | None]) -> None:
    """A re-import reads no file again: a small file's blob whose inode, size and mtime are what an earlier
    import recorded keeps the SHA-256 recorded then (`hashing.trusted_digest`)."""
    from imageworks.hashing import trusted_digest

    for entry in known:
        for record in entry.files:
            blob = Path(os.path.realpath(snapshot / record.path))
            if blob in memo or not record.sha256:
                continue
            try:
                st = os.stat(blob)
            except OSError:
                continue
            if record.inode == st.st_ino and trusted_digest(record, st.st_size, st.st_mtime_ns):
                memo[blob] = record.sha256


def _unchanged(known: list[ModelEntry], records: list, revisions: list[str]) -> bool:
    on_disk = {(r.path, r.size, r.mtime_ns, r.inode) for r in records}
    recorded = {(f.path, f.size, f.mtime_ns, f.inode) for e in known for f in e.files}
    return on_disk == recorded and set(revisions) <= {e.source.revision for e in known}


def find(cache: Path, registry: Registry | None = None) -> tuple[list[Found], ImportResult]:
    """Every repo revision in the cache as entries (one per GGUF quant, as a download would make them)."""

    result = ImportResult("hf-cache", cache)
    found: list[Found] = []
    if not cache.is_dir():
        result.notes.append(f"{cache} does not exist: nothing to import")
        return found, result
    memo: dict[Path, str | None] = {}
    known = _known(registry)
    for repo_dir in _repos(cache):
        try:
            _find_repo(repo_dir, found, result, known, memo)
        except OSError as exc:  # an unreadable repo folder is reported, the others are imported
            result.notes.append(f"{repo_dir.name}: {exc.strerror or exc}; skipped")
    return found, result


def _find_repo(
    repo_dir: Path,  # models--OWNER--NAME: one entry per revision (and GGUF quant) it holds
    found: list[Found],
    result: ImportResult,
    known: dict[str, list[ModelEntry]],
    memo: dict[Path, str | None],
) -> None:
    from imageworks.entries import build_entry, folder_variants
    from imageworks.naming import path_key
    from imageworks.registry.schema import Source

    repo_id = "/".join(repo_dir.name[len(REPO_PREFIX) :].split(SEPARATOR))
    refs = _read_refs(repo_dir / "refs")
    snapshots = repo_dir / "snapshots"
    commits = sorted(p.name for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
    for ref, commit in sorted(refs.items()):
        if commit not in commits:
            result.notes.append(
                f"{repo_id}: ref {ref} points to {commit[:12]}, which is not in the cache; skipped"
            )
    for commit in commits:
        folder = snapshots / commit
        same = known.get(path_key(folder) or str(folder), [])
        _remember_digests(folder, same, memo)
        records = _snapshot_files(folder, result, memo)
        if not records:
            continue
        revisions = sorted(r for r, c in refs.items() if c == commit) or [commit]
        if same and _unchanged(same, records, revisions):
            found.extend(Found(e, weight_digests(e)) for e in same)  # nothing moved: no inspection
            continue
        by_path = {r.path: r for r in records}
        variants = folder_variants(folder, list(by_path))
        for revision in revisions:
            source = Source(provider="hf", repo_id=repo_id, revision=revision, commit=commit)
            for variant, inspection in variants:
                entry = build_entry(
                    folder,
                    source=source,
                    location=None,
                    files=[by_path[p] for p in variant.files],
                    inspection=inspection,
                ).model_copy(update={"tool": "hf-cache"})
                found.append(Found(entry, weight_digests(entry)))


# ------------------------------------------------------------------------------------------- link

CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by huggingface_hub.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/\n"
)
_LFS_SUFFIX = re.compile(r"\.(gguf|safetensors|bin|pt|pth|onnx|ckpt|h5|msgpack|tflite|model|npz|pkl)$", re.I)


def _etag(path: str, disk: Path, size: int, sha256: str | None) -> str:
    """The name huggingface_hub gives the blob: the SHA-256 of an LFS file, the git blob SHA-1 of a small
    one (the Hub keeps weights and anything above 10 MB in LFS)."""
    if sha256 and (size > SMALL_FILE_LIMIT or _LFS_SUFFIX.search(path)):
        return sha256
    from imageworks.hashing import git_blob_sha1_file

    return git_blob_sha1_file(disk)


def _pointer(snapshot: Path, rel: str) -> Path:
    """snapshots/COMMIT/PATH, checked like any path from a registry (no `..`, not absolute); the file
    itself is a symlink into blobs/, so only its folder must resolve inside the snapshot."""
    from imageworks.errors import UnsafePathError
    from imageworks.locations import safe_join

    folder, _, name = rel.rpartition("/")
    if name in {"", ".", ".."} or "\x00" in name or "\\" in name:
        raise UnsafePathError(f"refusing path {rel!r}")
    base = safe_join(snapshot, folder) if folder else snapshot
    return base / name


def _symlink(pointer: Path, blob: Path) -> None:
    """The relative symlink huggingface_hub writes (`../../blobs/ETAG`), made beside and renamed over."""
    relative = os.path.relpath(blob, pointer.parent)
    if pointer.is_symlink() and os.readlink(pointer) == relative:
        return
    pointer.parent.mkdir(parents=True, exist_ok=True)
    temp = pointer.with_name(f".{pointer.name}.imageworks-link")
    if temp.is_symlink() or temp.exists():
        temp.unlink()
    os.symlink(relative, temp)
    os.replace(temp, pointer)


def _write_ref(repo_dir: Path, revision: str, commit: str, snapshot: Path, made: list[str]) -> list[str]:
    """refs/REVISION holding the commit, without a trailing newline (as huggingface_hub writes it); a ref
    naming another commit is left alone. Returns notes."""
    from imageworks.locations import safe_join

    if revision == commit:
        return []
    ref = safe_join(repo_dir / "refs", revision)
    current = ref.read_text().strip() if ref.is_file() else None
    if current is None:
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
        made.append(os.path.relpath(ref, snapshot))
    elif current != commit:
        return [f"refs/{revision} names {current[:12]} (a newer download?): left as it is"]
    return []


def link(entry):  # (ModelEntry) -> Placed
    """blobs/ETAG hardlinked to our file, snapshots/COMMIT/PATH as the relative symlink huggingface_hub
    writes, refs/REVISION holding the commit (no newline), CACHEDIR.TAG if missing. No trees cache file:
    a model we hold only partly must not look incomplete to the offline client."""
    from imageworks.clock import utc_now
    from imageworks.errors import UsageError
    from imageworks.locations import safe_component
    from imageworks.registry.schema import Copy
    from imageworks.stores import shelves
    from imageworks.stores.linking import Placed, copy_files_at, source_files
    from imageworks.stores.placing import place

    source = entry.source
    if source.provider != "hf" or not source.repo_id or not source.commit:
        raise UsageError(
            f"{entry.name} has no Hub repo and commit: the Hugging Face cache is keyed by both",
            hint="download it from the Hub (or import it) so the commit is known",
        )
    if not re.fullmatch(r"[0-9a-f]{40}", source.commit):
        raise UsageError(f"{entry.name}: recorded commit {source.commit!r} is not a git commit id")
    cache = shelves.hf_cache()
    repo_dir = cache / safe_component(repo_folder(source.repo_id))
    snapshot = repo_dir / "snapshots" / source.commit
    made: list[str] = []
    methods: list[str] = []
    where: dict[str, Path] = {}
    for rel, disk, size, sha in source_files(entry):
        etag = _etag(rel, disk, size, sha)
        blob = repo_dir / "blobs" / etag
        methods.append(place(disk, blob, sha256=sha))
        made.append(os.path.relpath(blob, snapshot))
        pointer = _pointer(snapshot, rel)
        _symlink(pointer, blob)
        made.append(rel)
        where[rel] = pointer
    notes = _write_ref(repo_dir, source.revision or "main", source.commit, snapshot, made)
    tag = cache / "CACHEDIR.TAG"
    if not tag.exists():
        tag.write_text(CACHEDIR_TAG)
    if "copy" in methods:
        notes.append(f"{cache} is on another filesystem: blobs copied and verified, not hardlinked")
    copy = Copy(
        path=str(snapshot), tool="hf-cache", method="copy" if "copy" in methods else "link", files=copy_files_at(entry, snapshot, where),
        made=sorted(set(made)), created_at=utc_now(),
    )  # fmt: skip
    return Placed(copy, methods, notes)
