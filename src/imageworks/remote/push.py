"""`push`: upload verified models to a remote, each file once by content, the manifest last.

plan (which blobs the store lacks: one HEAD each, in parallel) -> upload the missing blobs (s3transfer:
parallel multipart, bounded memory) -> optional files/ layout (server-side copies) -> manifest ->
record the push in the entry, in one registry transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.errors import IntegrityError, UsageError
from imageworks.remote.client import S3Client, check_bucket, head, make_client, metadata_sha256, s3_errors
from imageworks.remote.config import Remote
from imageworks.remote.manifest import Manifest, blob_key, files_key, manifest_key

if TYPE_CHECKING:
    from imageworks.registry import ModelEntry, RegistryStore

ProgressFn = Callable[[int], None]


@dataclass
class Blob:
    sha256: str
    size: int
    local: Path
    key: str
    present: bool = False


@dataclass
class PushedModel:
    name: str
    manifest_key: str
    files: int
    size_bytes: int
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_present: int = 0
    layout_files: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PushResult:
    remote: str
    url: str
    dry_run: bool
    models: list[PushedModel] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # --all: models that are not verified
    bytes_uploaded: int = 0
    objects_uploaded: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "url": self.url,
            "dry_run": self.dry_run,
            "models": [m.as_dict() for m in self.models],
            "skipped": self.skipped,
            "bytes_uploaded": self.bytes_uploaded,
            "objects_uploaded": self.objects_uploaded,
            "seconds": round(self.seconds, 3),
        }


def _model_file(entry: ModelEntry, root: Path, relative: str) -> Path:
    """`root/relative`, refused if it resolves outside the model, except that an HF cache snapshot's
    files are symlinks into the repo's `blobs/`, two levels up: they may resolve anywhere in the repo."""
    from imageworks.locations import safe_join

    if entry.tool == "hf-cache" and root.parent.name == "snapshots":
        return safe_join(root.parent.parent, f"snapshots/{root.name}/{relative}")
    return safe_join(root, relative)


def _local_files(entry: ModelEntry) -> list[tuple[Path, str, int]]:
    """(path on disk, sha256, size) of each file, checked against the entry: only a verified model is
    pushed. A file whose size and mtime are what was recorded when it was hashed is trusted; any other is
    hashed again, and a mismatch stops the push (the store must never hold bytes under a wrong digest)."""
    from imageworks.hashing import sha256_file

    if not entry.path or not entry.files:
        raise UsageError(f"{entry.name}: no files on disk to push", hint="download or scan it first")
    missing = [f.path for f in entry.files if not f.sha256]
    if missing:
        raise UsageError(
            f"{entry.name}: not verified ({len(missing)} file(s) without a recorded sha256)",
            hint=f"run `imageworks-loader verify --record {entry.name}` first",
        )
    root = Path(entry.path).expanduser()
    out = []
    for record in entry.files:
        path = _model_file(entry, root, record.path)
        assert record.sha256 is not None
        try:
            st = path.stat()
        except OSError as exc:
            raise UsageError(
                f"{entry.name}: {record.path} is missing on disk ({exc.strerror})",
                hint=f"run `imageworks-loader verify {entry.name}`",
            ) from None
        changed = st.st_size != record.size or (
            record.mtime_ns is not None and st.st_mtime_ns != record.mtime_ns
        )
        if record.mtime_ns is None or changed:
            actual = sha256_file(path)
            if actual != record.sha256 or st.st_size != record.size:
                raise IntegrityError(
                    f"{entry.name}: {record.path} differs from the recorded sha256",
                    path=str(path),
                    expected=record.sha256,
                    actual=actual,
                    hint=f"run `imageworks-loader verify {entry.name}`; push sends verified bytes only",
                )
        out.append((path, record.sha256, record.size))
    return out


def select_entries(store: RegistryStore, names: Sequence[str], all_models: bool) -> list[ModelEntry]:
    from imageworks.registry import find_entry

    registry = store.load()
    if all_models:
        return [e for e in registry.entries() if e.files and e.path]
    seen: dict[str, ModelEntry] = {}
    for name in names:
        entry = find_entry(registry, name)
        seen[entry.name] = entry
    return list(seen.values())


def _mark_present(client: S3Client, remote: Remote, blobs: list[Blob]) -> None:
    """A HEAD per blob decides: an object of the right size under its digest is never uploaded again."""

    def probe(blob: Blob) -> None:
        answer = head(client, remote, blob.key)
        # Metadata that names another digest marks a damaged object: upload it again. No metadata at all
        # is trusted (some stores, rclone among them, drop user metadata when they restart).
        recorded = metadata_sha256(answer) if answer is not None else None
        blob.present = (
            answer is not None
            and answer.get("ContentLength") == blob.size
            and recorded in (None, blob.sha256)
        )

    with ThreadPoolExecutor(max_workers=remote.concurrency) as pool:
        list(pool.map(probe, blobs))


def _upload(client: S3Client, remote: Remote, blobs: list[Blob], progress: ProgressFn | None) -> None:
    if not blobs:
        return
    from s3transfer.manager import TransferConfig, TransferManager
    from s3transfer.subscribers import BaseSubscriber

    class _Progress(BaseSubscriber):
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            if progress is not None:
                progress(bytes_transferred)

    config = TransferConfig(
        multipart_threshold=remote.chunk_size,
        multipart_chunksize=remote.chunk_size,
        max_request_concurrency=remote.concurrency,
    )
    with s3_errors(remote, "uploading"), TransferManager(client, config) as manager:
        futures = [
            manager.upload(
                str(blob.local),
                remote.bucket,
                blob.key,
                extra_args={"Metadata": {"sha256": blob.sha256}, "ContentType": "application/octet-stream"},
                subscribers=[_Progress()],
            )
            for blob in blobs
        ]
        for future in futures:
            future.result()


def _copy_files_layout(client: S3Client, remote: Remote, manifest: Manifest) -> int:
    """Server-side copies blob -> files/OWNER/REPO/COMMIT/PATH for the files not there yet."""
    from s3transfer.manager import TransferConfig, TransferManager

    if files_key(manifest.source, manifest.files[0].path) is None:
        raise UsageError(f"{manifest.name}: --layout files needs a Hub model with a recorded repo and commit")
    todo = []
    for item in manifest.files:
        key = remote.key(files_key(manifest.source, item.path) or "")
        answer = head(client, remote, key)
        if answer is None or answer.get("ContentLength") != item.size:
            todo.append((item, key))
    config = TransferConfig(
        multipart_threshold=max(remote.chunk_size, 64 << 20),
        multipart_chunksize=max(remote.chunk_size, 64 << 20),
        max_request_concurrency=remote.concurrency,
    )
    with s3_errors(remote, "copying to the files/ layout"), TransferManager(client, config) as manager:
        futures = [
            manager.copy(
                {"Bucket": remote.bucket, "Key": remote.key(blob_key(item.sha256))},
                remote.bucket,
                key,
                extra_args={"Metadata": {"sha256": item.sha256}, "MetadataDirective": "REPLACE"},
            )
            for item, key in todo
        ]
        for future in futures:
            future.result()
    return len(todo)


Checked = list[tuple["ModelEntry", list[tuple[Path, str, int]]]]  # entry, (file, sha256, size) each


def _check_entries(
    store: RegistryStore, names: Sequence[str], all_models: bool, result: PushResult
) -> Checked:
    """The models to push with their verified files; with --all, unverified ones are skipped and named."""
    checked: Checked = []
    for entry in select_entries(store, names, all_models):
        try:
            checked.append((entry, _local_files(entry)))
        except (UsageError, IntegrityError):
            if not all_models:
                raise
            result.skipped.append(entry.name)
    return checked


def _plan(client: S3Client, remote: Remote, checked: Checked, result: PushResult) -> list[Blob]:
    """Which blobs the store lacks (one HEAD each); fills in the per-model figures. Returns the uploads."""
    blobs: dict[str, Blob] = {}
    for _, files in checked:
        for path, digest, size in files:
            blobs.setdefault(digest, Blob(digest, size, path, remote.key(blob_key(digest))))
    _mark_present(client, remote, list(blobs.values()))
    for entry, files in checked:
        own = [blobs[d] for d in {d for _, d, _ in files}]
        result.models.append(
            PushedModel(
                name=entry.name,
                manifest_key=remote.key(manifest_key(entry.name)),
                files=len(files),
                size_bytes=sum(s for _, _, s in files),
                blobs_uploaded=sum(1 for b in own if not b.present),
                bytes_uploaded=sum(b.size for b in own if not b.present),
                blobs_present=sum(1 for b in own if b.present),
            )
        )
    to_upload = [b for b in blobs.values() if not b.present]
    result.objects_uploaded = len(to_upload)
    result.bytes_uploaded = sum(b.size for b in to_upload)
    return to_upload


def _write_manifests(
    client: S3Client, remote: Remote, checked: Checked, result: PushResult, now: str, layout_files: bool
) -> None:
    layouts = ["blobs", "files"] if layout_files else ["blobs"]
    for (entry, _), pushed in zip(checked, result.models, strict=True):
        manifest = Manifest.from_entry(entry, pushed_at=now, layouts=layouts)
        if layout_files:
            pushed.layout_files = _copy_files_layout(client, remote, manifest)
        if _same_manifest(client, remote, manifest):
            continue  # pushed before: a repeated push writes nothing
        with s3_errors(remote, f"writing the manifest of {entry.name}"):
            # Written last: a reader never sees a model whose blobs are not all there.
            client.put_object(
                Bucket=remote.bucket,
                Key=pushed.manifest_key,
                Body=manifest.to_bytes(),
                ContentType="application/json",
            )


def push_models(
    store: RegistryStore,
    remote: Remote,
    names: Sequence[str] = (),
    *,
    all_models: bool = False,
    dry_run: bool = False,
    layout_files: bool = False,
    client: S3Client | None = None,
    progress: ProgressFn | None = None,
    command: Sequence[str] | str | None = None,
    backup: bool = True,
) -> PushResult:
    """Plan (local checks, a HEAD per blob), then, unless `dry_run`, upload, write the manifests and
    record the push in each entry."""
    from imageworks.entries import utc_now

    started = time.monotonic()
    if all_models == bool(names):
        raise UsageError("give model names or --all (not both)", hint="`imageworks-download list` shows them")
    result = PushResult(remote=remote.name, url=remote.url, dry_run=dry_run)
    checked = _check_entries(store, names, all_models, result)
    client = client or make_client(remote)
    check_bucket(client, remote)
    to_upload = _plan(client, remote, checked, result)
    if not dry_run:
        now = utc_now()
        _upload(client, remote, to_upload, progress)
        _write_manifests(client, remote, checked, result, now, layout_files)
        _record_pushes(store, remote, [e for e, _ in checked], now, command, backup)
    result.seconds = time.monotonic() - started
    return result


def _same_manifest(client: S3Client, remote: Remote, manifest: Manifest) -> bool:
    from imageworks.errors import ImageworksError
    from imageworks.remote.pull import read_manifest

    try:
        stored = read_manifest(client, remote, manifest.name)
    except ImageworksError:
        return False  # unreadable or foreign: replace it
    if stored is None:
        return False
    mine, theirs = manifest.as_dict(), stored.as_dict()
    return set(mine.pop("layouts")) <= set(theirs.pop("layouts")) and {
        **mine,
        "pushed_at": None,
    } == {**theirs, "pushed_at": None}


def remote_record(remote: Remote, when: str) -> dict[str, Any]:
    return {"url": remote.url, "endpoint_url": remote.endpoint_url, "at": when}


def _recorded(entry: ModelEntry, remote: Remote) -> bool:
    remotes = getattr(entry, "remotes", None)
    old = remotes.get(remote.name) if isinstance(remotes, dict) else None
    return isinstance(old, dict) and (old.get("url"), old.get("endpoint_url")) == (
        remote.url,
        remote.endpoint_url,
    )


def _record_pushes(
    store: RegistryStore,
    remote: Remote,
    entries: list[ModelEntry],
    when: str,
    command: Sequence[str] | str | None,
    backup: bool,
) -> None:
    """`remotes: {NAME: {url, endpoint_url, at}}` in each pushed entry (shown by `show`). A repeated push
    changes no byte of the registry (and does not even take its lock)."""
    from imageworks.registry import ModelEntry

    if all(_recorded(e, remote) for e in entries):
        return
    with store.transaction(command, backup=backup) as registry:
        for pushed in entries:
            entry = registry.discovered_entry(pushed.name) or registry.get(pushed.name)
            if entry is None or _recorded(entry, remote):
                continue
            data = entry.model_dump(mode="json")
            data["remotes"] = {**(data.get("remotes") or {}), remote.name: remote_record(remote, when)}
            registry.put(ModelEntry.model_validate(data))
