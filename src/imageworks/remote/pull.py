"""`pull`: models from a remote into the usual location layout, verified, then recorded.

manifest (validated, paths untrusted) -> folder (`<root>/<owner>/<repo>` as `download` lays it) ->
fetch each file (`fetch.fetch_blob`: parallel ranged GETs, SHA-256 while streaming, resume) ->
one registry transaction recording every complete model with its Hub source and the remote it came
from. A model with a file that does not match its digest is never recorded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.errors import ImageworksError, InsufficientSpace, TransferError, UsageError
from imageworks.remote.client import (
    ObjectMissing,
    S3Client,
    check_bucket,
    make_client,
    s3_errors,
    translate,
)
from imageworks.remote.config import Remote
from imageworks.remote.fetch import BlobJob, FetchOutcome, copy_verified, fetch_blob, write_empty
from imageworks.remote.manifest import MAX_MANIFEST_BYTES, Manifest, ManifestError, blob_key, manifest_key

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.locations import Location
    from imageworks.registry import ModelEntry, Registry, RegistryStore

ProgressFn = Callable[[int], None]
FILES_AT_ONCE = 4


@dataclass
class PulledModel:
    name: str
    path: str
    location: str
    files: int
    size_bytes: int
    bytes_fetched: int = 0
    bytes_resumed: int = 0
    files_present: int = 0
    recorded: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PullResult:
    remote: str
    url: str
    models: list[PulledModel] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(m.error is None for m in self.models)

    def as_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "url": self.url,
            "models": [m.as_dict() for m in self.models],
            "bytes_fetched": sum(m.bytes_fetched for m in self.models),
            "seconds": round(self.seconds, 3),
        }


def list_manifest_names(client: S3Client, remote: Remote) -> list[str]:
    """Names of the models the store holds (one manifest each)."""
    base = remote.key("models") + "/"
    names = []
    with s3_errors(remote, "listing models"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=remote.bucket, Prefix=base):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith(".json"):
                    names.append(key[len(base) : -len(".json")])
    return sorted(names)


def read_manifest(client: S3Client, remote: Remote, name: str) -> Manifest | None:
    from botocore.exceptions import ClientError

    key = remote.key(manifest_key(name))
    with s3_errors(remote, f"reading {key}"):
        try:
            answer = client.get_object(Bucket=remote.bucket, Key=key)
        except ClientError as exc:
            if isinstance(translate(exc, remote, key), ObjectMissing):
                return None
            raise
        if answer.get("ContentLength", 0) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{key}: {answer['ContentLength']} bytes is too large for a manifest")
        data = answer["Body"].read(MAX_MANIFEST_BYTES + 1)
    manifest = Manifest.parse(data, f"{remote.url}/{manifest_key(name)}")
    if manifest.name != name:
        raise ManifestError(f"{key}: the manifest names another model ({manifest.name!r})")
    return manifest


def _wanted(
    client: S3Client, remote: Remote, registry: Registry, names: Sequence[str], all_models: bool
) -> list[Manifest]:
    from imageworks.registry import find_entries

    if all_models:
        curated = sorted(registry.curated)
        if not curated:
            raise UsageError(
                "--all pulls the models of the curated registry, and it lists none",
                hint="name the models, or add them to model_registry.curated.json",
            )
        held = set(list_manifest_names(client, remote))
        return [m for name in curated if name in held for m in [read_manifest(client, remote, name)] if m]
    out = []
    for name in names:
        manifest = read_manifest(client, remote, name)
        if manifest is None and name.lower() != name:  # a Hub repo id as typed: names are lower case
            manifest = read_manifest(client, remote, name.lower())
        if manifest is None:
            local = find_entries(registry, name)
            if len(local) == 1 and local[0].name != name:
                manifest = read_manifest(client, remote, local[0].name)
        if manifest is None:
            raise UsageError(
                f"remote {remote.name!r} holds no model {name!r}",
                hint=f"`imageworks-download remote ls {remote.name}` lists what it holds",
            )
        out.append(manifest)
    return out


def model_folder_for(manifest: Manifest, location: Location) -> Path:
    """Where `download` would put it: `<root>/<owner>/<repo>[@rev]`; other models under
    `<root>/remote/<name parts>`."""
    from imageworks.locations import model_folder, safe_component

    repo = manifest.source.get("repo_id")
    if isinstance(repo, str) and repo.count("/") == 1:
        return model_folder(location.root, repo, manifest.source.get("revision"))
    return location.root.joinpath("remote", *(safe_component(p) for p in manifest.name.split("/")))


def _jobs(remote: Remote, manifest: Manifest, folder: Path) -> list[BlobJob]:
    from imageworks.locations import safe_join

    return [
        BlobJob(
            key=remote.key(blob_key(item.sha256)),
            size=item.size,
            sha256=item.sha256,
            dest=safe_join(folder, item.path),
            label=f"{manifest.name}/{item.path}",
        )
        for item in manifest.files
    ]


Known = dict[Path, tuple[int, int, str]]  # file -> (size, mtime_ns, sha256) as the registry recorded it


def _known_files(registry: Registry) -> Known:
    """Files the registry recorded with a digest and the size and mtime they had when hashed."""
    known: Known = {}
    for entry in registry.entries():
        if not entry.path:
            continue
        for record in entry.files:
            if record.sha256 and record.mtime_ns is not None:
                known[Path(entry.path) / record.path] = (record.size, record.mtime_ns, record.sha256)
    return known


def _already_there(job: BlobJob, known: Known) -> bool:
    """The right bytes are already at the destination: trusted when size and mtime are what the
    registry recorded with that digest, else hashed."""
    from imageworks.hashing import sha256_file

    try:
        st = job.dest.stat()
        if st.st_size != job.size:
            return False
        if known.get(job.dest) == (st.st_size, st.st_mtime_ns, job.sha256):
            return True
        return sha256_file(job.dest) == job.sha256
    except OSError:
        return False


def _check_space(jobs: list[BlobJob]) -> None:
    """Refuse before fetching anything when a folder's disk cannot hold what remains to fetch."""
    import shutil

    from imageworks.remote.fetch import partial_paths

    needed: dict[int, int] = {}  # device -> bytes
    anchors: dict[int, Path] = {}
    for job in jobs:
        try:
            if job.dest.stat().st_size == job.size:
                continue  # there already (checked by digest later) or replaced in place
        except OSError:
            pass
        try:
            have = partial_paths(job.dest)[0].stat().st_blocks * 512
        except OSError:
            have = 0
        anchor = job.dest.parent
        while not anchor.exists() and anchor != anchor.parent:
            anchor = anchor.parent
        device = anchor.stat().st_dev
        anchors.setdefault(device, anchor)
        needed[device] = needed.get(device, 0) + max(0, job.size - have)
    for device, size in needed.items():
        anchor = anchors[device]
        free = shutil.disk_usage(anchor).free
        if size > free:
            raise InsufficientSpace(
                f"not enough free space in {anchor}: {size:,} bytes to fetch, {free:,} free",
                hint="free some space or choose another --location",
            )


def _fetch_all(
    client: S3Client, remote: Remote, jobs: list[BlobJob], known: Known, progress: ProgressFn | None
) -> dict[Path, FetchOutcome | ImageworksError]:
    """Every job, files several at a time and ranges in parallel; one outcome or error per file."""
    outcomes: dict[Path, FetchOutcome | ImageworksError] = {}
    first_by_digest: dict[str, BlobJob] = {}
    later: list[BlobJob] = []
    unique: list[BlobJob] = []
    for job in jobs:
        if job.sha256 in first_by_digest:
            later.append(job)
        else:
            first_by_digest[job.sha256] = job
            unique.append(job)

    def one(job: BlobJob) -> None:
        try:
            if _already_there(job, known):
                outcomes[job.dest] = FetchOutcome(job, skipped=True)
            elif job.size == 0:
                outcomes[job.dest] = write_empty(job)
            else:
                outcomes[job.dest] = fetch_blob(client, remote, job, ranges, progress, cancel)
        except ImageworksError as exc:
            outcomes[job.dest] = exc
        except OSError as exc:  # the local disk (full, read-only): what was written stays resumable
            outcomes[job.dest] = TransferError(
                f"{job.label}: {exc.strerror or exc}", hint="fix the folder or free space, then pull again"
            )

    cancel = threading.Event()
    ranges = ThreadPoolExecutor(max_workers=remote.concurrency)
    files = ThreadPoolExecutor(max_workers=FILES_AT_ONCE)
    try:
        for future in [files.submit(one, job) for job in unique]:
            future.result()
    except BaseException:
        # Ctrl-C: stop every worker at its next block; what is on disk stays resumable.
        cancel.set()
        files.shutdown(wait=True, cancel_futures=True)
        ranges.shutdown(wait=True, cancel_futures=True)
        raise
    files.shutdown()
    ranges.shutdown()
    for job in later:
        source = first_by_digest[job.sha256]
        if isinstance(outcomes.get(source.dest), ImageworksError):
            outcomes[job.dest] = outcomes[source.dest]
        elif _already_there(job, known):
            outcomes[job.dest] = FetchOutcome(job, skipped=True)
        else:
            outcomes[job.dest] = copy_verified(source.dest, job)
    return outcomes


def _entry_for(manifest: Manifest, folder: Path, location: str, remote: Remote, now: str) -> ModelEntry:
    import os

    from imageworks.entries import build_entry, renamed
    from imageworks.registry import FileRecord, ModelEntry, Source
    from imageworks.remote.push import remote_record

    records = []
    for item in manifest.files:
        st = os.stat(folder.joinpath(*item.path.split("/")))
        records.append(
            FileRecord(path=item.path, size=st.st_size, sha256=item.sha256, mtime_ns=st.st_mtime_ns)
        )
    src = manifest.source
    provider = src.get("provider") if src.get("provider") in {"hf", "url", "local", "ollama"} else "local"
    source = Source(
        provider=provider,  # type: ignore[arg-type]
        repo_id=src.get("repo_id"),
        revision=src.get("revision"),
        commit=src.get("commit"),
        url=src.get("url"),
    )
    entry = build_entry(
        folder,
        source=source,
        location=location,
        files=records,
        format_hint=manifest.format,
        downloaded_at=now,
        verified_at=now,
    )
    data = renamed(entry, manifest.name).model_dump(mode="json")
    data["pulled_from"] = {**remote_record(remote, now), "remote": remote.name}
    data["remotes"] = {remote.name: remote_record(remote, now)}
    return ModelEntry.model_validate(data)


def _keep_remotes(registry: Registry, entry: ModelEntry) -> ModelEntry:
    """The remotes an existing entry was pushed to stay listed after a pull updates it."""
    from imageworks.entries import find_existing
    from imageworks.registry import ModelEntry

    existing = find_existing(registry, entry)
    earlier = getattr(existing, "remotes", None) if existing is not None else None
    if not isinstance(earlier, dict):
        return entry
    data = entry.model_dump(mode="json")
    data["remotes"] = {**earlier, **data["remotes"]}
    return ModelEntry.model_validate(data)


def _record(
    store: RegistryStore,
    complete: list[tuple[PulledModel, ModelEntry]],
    command: Sequence[str] | str | None,
    backup: bool,
) -> None:
    """Every complete model in one registry transaction."""
    from imageworks.entries import record_entry

    with store.transaction(command, backup=backup) as registry:
        for pulled, entry in complete:
            entry = _keep_remotes(registry, entry)
            if entry.name in registry.curated and entry.name not in registry.discovered:
                # The team's curated registry names this model: the pulled entry fills that name in.
                registry.put(entry)
                stored = entry
            else:
                stored = record_entry(registry, entry)
            pulled.name, pulled.recorded = stored.name, True


def pull_models(
    store: RegistryStore,
    config: Config,
    remote: Remote,
    names: Sequence[str] = (),
    *,
    all_models: bool = False,
    location: str | None = None,
    client: S3Client | None = None,
    progress: ProgressFn | None = None,
    command: Sequence[str] | str | None = None,
    backup: bool = True,
) -> PullResult:
    from imageworks.entries import utc_now
    from imageworks.locations import resolve_location

    started = time.monotonic()
    if all_models == bool(names):
        raise UsageError("give model names or --all (not both)", hint=f"`remote ls {remote.name}` lists them")
    client = client or make_client(remote)
    check_bucket(client, remote)
    registry = store.load()
    manifests = _wanted(client, remote, registry, names, all_models)
    result = PullResult(remote=remote.name, url=remote.url)
    plans = []
    for manifest in manifests:
        loc = resolve_location(config, location, prefer_lmstudio=manifest.format == "gguf")
        folder = model_folder_for(manifest, loc)
        plans.append((manifest, loc, folder, _jobs(remote, manifest, folder)))
    all_jobs = [j for *_, model_jobs in plans for j in model_jobs]
    _check_space(all_jobs)
    outcomes = _fetch_all(client, remote, all_jobs, _known_files(registry), progress)

    now = utc_now()
    complete: list[tuple[PulledModel, ModelEntry]] = []
    for manifest, loc, folder, jobs in plans:
        pulled = PulledModel(manifest.name, str(folder), loc.name, len(jobs), manifest.size_bytes)
        result.models.append(pulled)
        for job in jobs:
            outcome = outcomes[job.dest]
            if isinstance(outcome, ImageworksError):
                pulled.error = pulled.error or outcome.message
                continue
            pulled.bytes_fetched += outcome.bytes_fetched
            pulled.bytes_resumed += outcome.resumed_from
            pulled.files_present += outcome.skipped
        if pulled.error is None:
            complete.append((pulled, _entry_for(manifest, folder, loc.name, remote, now)))
    if complete:
        _record(store, complete, command, backup)
    result.seconds = time.monotonic() - started
    return result
