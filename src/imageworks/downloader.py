"""`download`: resolve -> plan -> fetch -> verify -> record, for Hub repos and direct URLs.

    result = download("Qwen/Qwen2.5-0.5B-Instruct", config=resolve_config())

Layers (STYLE.md #6): the reference is parsed (`refs`), pinned to a commit and listed (`hub`), turned into
a plan of files with their expected digests and what is already on disk (`plan`); the engine fetches the
rest to temporary names, verifies and renames them (`transfer`); the model is then inspected and recorded
in one registry transaction (`entries`). A failure before the record leaves the registry untouched and
the bytes on disk for the next run to resume from.

Where files go:
  Hub repos     <location root>/<owner>/<repo>[@<revision>]/<path in repo>
  direct URLs   <location root>/url/<host>/<file stem>/<file>   (linux_wsl by default)
                <LM Studio root>/<host>/<file stem>/<file>      (--location windows_lmstudio: LM Studio
                                                                 lists exactly two folder levels)
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from imageworks.entries import (
    build_entry,
    find_existing,
    folder_variants,
    merge_entry,
    record_entry,
    same_content,
    utc_now,
)
from imageworks.errors import UsageError
from imageworks.locations import model_folder, resolve_location, safe_component
from imageworks.naming import path_key
from imageworks.plan import (
    DownloadPlan,
    KnownFile,
    PlannedFile,
    build_plan,
    check_space,
    known_files,
    select_files,
    weight_kind,
)
from imageworks.redaction import redact_url
from imageworks.refs import HubRef, UrlRef, parse_reference
from imageworks.registry.schema import FileRecord, ModelEntry, Source
from imageworks.stores.local import take_local_copies

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.registry import Registry, RegistryStore
    from imageworks.transfer import Engine, FileJob, ProgressSink

log = logging.getLogger("imageworks.downloader")

_WEIGHT_SUFFIX = re.compile(r"\.(gguf|safetensors|bin|pt|pth|onnx|ckpt|h5|tflite|msgpack)$", re.IGNORECASE)


@dataclass
class DownloadResult:
    """What `download` did. `entries`: the registry entries the files make, one per GGUF quant (see
    `imageworks.entries.split_variants`), in that order; `name` and `entry` are the first of them.
    `up_to_date`: every file was already present and verified (nothing fetched); `recorded`: the
    registry changed."""

    reference: str
    plan: DownloadPlan
    dry_run: bool = False
    entries: list[ModelEntry] = field(default_factory=list)
    up_to_date: bool = False
    recorded: bool = False
    engine: str | None = None
    engine_note: str | None = None
    bytes_fetched: int = 0
    bytes_resumed: int = 0
    files_fetched: int = 0
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.plan.folder

    @property
    def entry(self) -> ModelEntry | None:
        return self.entries[0] if self.entries else None

    @property
    def name(self) -> str | None:
        return self.entries[0].name if self.entries else None

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "name": self.name,
            "names": self.names,
            "path": str(self.plan.folder),
            "location": self.plan.location.name,
            "dry_run": self.dry_run,
            "up_to_date": self.up_to_date,
            "recorded": self.recorded,
            "engine": self.engine,
            "engine_note": self.engine_note,
            "bytes_fetched": self.bytes_fetched,
            "bytes_resumed": self.bytes_resumed,
            "files_fetched": self.files_fetched,
            "format": self.entry.format if self.entry else self.plan.format,
            "quantization": self.entry.quantization if self.entry else None,
            "entries": [
                {
                    "name": e.name,
                    "format": e.format,
                    "quantization": e.quantization,
                    "size_bytes": e.size_bytes,
                }
                for e in self.entries
            ],
            "plan": self.plan.as_dict(),
            "notes": self.notes,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def _known_in(registry: Registry, folder: Path) -> dict[str, KnownFile]:
    """What earlier downloads recorded about files in `folder` (any entry stored there)."""
    key = path_key(folder)
    records = [r for e in registry.entries() if e.path and path_key(e.path) == key for r in e.files]
    return known_files(records)


# ------------------------------------------------------------------------------------- resolving


@dataclass
class _Resolved:
    plan: DownloadPlan
    source: Source
    hub: Any = None  # HubClient for Hub refs
    url: str | None = None  # what the engine GETs for a direct URL


def _plan_hub(
    ref: HubRef,
    reference: str,
    *,
    config: Config,
    registry: Registry,
    format: str | None,
    quant: str | None,
    location: str | None,
    include: Sequence[str],
    exclude: Sequence[str],
    hub_options: dict[str, Any],
    check_disk: bool,
) -> _Resolved:
    from imageworks.hub import HubClient

    hub = HubClient(config, **hub_options)
    snap = hub.snapshot(ref.repo_id, ref.revision)
    selection = select_files(
        snap.files,
        format=format,
        quant=quant,
        include=include,
        exclude=exclude,
        path=ref.path,
        folder=ref.folder,
    )
    loc = resolve_location(config, location, prefer_lmstudio=selection.format == "gguf")
    folder = model_folder(loc.root, snap.repo_id, ref.revision)
    rows = [
        (s.file.path, s.file.size, s.file.sha256, None if s.file.lfs else s.file.git_sha1, s.role)
        for s in selection.files
    ]
    notes = list(selection.notes)
    if snap.repo_id != ref.repo_id:
        notes.insert(0, f"{ref.repo_id} is {snap.repo_id} on the Hub")
    plan = build_plan(
        reference=reference,
        provider="hf",
        location=loc,
        folder=folder,
        files=rows,
        known=_known_in(registry, folder),
        format=selection.format,
        quants=selection.quants,
        available_quants=selection.available_quants,
        notes=notes,
        repo_id=snap.repo_id,
        revision=snap.revision,
        commit=snap.commit,
        check_disk=check_disk,
    )
    source = Source(provider="hf", repo_id=snap.repo_id, revision=snap.revision, commit=snap.commit)
    return _Resolved(plan, source, hub=hub)


def _plan_url(
    ref: UrlRef,
    reference: str,
    *,
    config: Config,
    registry: Registry,
    format: str | None,
    quant: str | None,
    location: str | None,
    include: Sequence[str],
    exclude: Sequence[str],
    sha256: str | None,
    check_disk: bool,
) -> _Resolved:
    if quant or include or exclude:
        raise UsageError("--quant, --include and --exclude apply to Hub repos, not to a direct URL")
    from imageworks.hub import probe_url

    disposition_name, size = probe_url(ref.url)
    raw_name = disposition_name or PurePosixPath(urlsplit(ref.url).path).name or "download"
    name = safe_component(raw_name)
    host = safe_component(urlsplit(ref.url).hostname or "host")
    stem = safe_component(_WEIGHT_SUFFIX.sub("", name) or name)
    loc = resolve_location(config, location)
    folder = loc.root / host / stem if loc.name == "windows_lmstudio" else loc.root / "url" / host / stem
    kind = weight_kind(name)
    plan = build_plan(
        reference=redact_url(ref.url),
        provider="url",
        location=loc,
        folder=folder,
        files=[(name, size, sha256, None, "weights" if kind else "included")],
        known=_known_in(registry, folder),
        format=kind or (format.lower() if format else None),
        url=redact_url(ref.url),
        check_disk=check_disk,
    )
    source = Source(provider="url", url=redact_url(ref.url))
    return _Resolved(plan, source, url=ref.url)


# ----------------------------------------------------------------------------------------- download


def _check_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise UsageError(f"--sha256 {value!r} is not 64 hex digits")
    return value


def download(
    reference: str,
    *,
    config: Config,
    format: str | None = None,
    quant: str | None = None,
    location: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    engine: str = "auto",
    connections: int = 16,
    max_files: int = 4,
    no_aria2: bool = False,
    stall_timeout: float = 30.0,
    dry_run: bool = False,
    force: bool = False,
    sha256: str | None = None,
    progress: ProgressSink | None = None,
    on_plan: Callable[[DownloadPlan], None] | None = None,
    command: Sequence[str] | str | None = None,
    backup: bool = True,
    hub_options: dict[str, Any] | None = None,
) -> DownloadResult:
    """Download `reference` (see `imageworks.refs`), verify every file, record the model in the registry.

    Raises `imageworks.errors` exceptions: UsageError (bad reference/flags), HubError subclasses,
    TransferError, IntegrityError (a file that does not match its digest: nothing is recorded),
    InsufficientSpace, UnsafePathError (a server path outside the model folder).

    `on_plan` is called with the plan before anything is fetched (the CLI prints the notes there);
    `progress` receives the engine's per-file progress and its choice of engine as a message."""
    from imageworks.registry import RegistryStore
    from imageworks.transfer import choose_engine

    started = time.monotonic()
    timings: dict[str, float] = {}
    sha256 = _check_sha256(sha256)
    ref = parse_reference(reference, endpoint=str(config.hf_endpoint.value))
    # Bad engine flags (aria2 asked for but missing) fail before any network traffic.
    chosen: Engine | None = None
    if not dry_run:
        chosen = choose_engine(
            engine,
            connections=connections,
            max_files=max_files,
            single_stream=no_aria2,
            stall_timeout=stall_timeout,
        )
    store = RegistryStore(config.registry_path)
    registry = store.load()
    if isinstance(ref, HubRef):
        if sha256:
            raise UsageError("--sha256 applies to direct URL downloads (the Hub gives every file's digest)")
        resolved = _plan_hub(
            ref,
            reference,
            config=config,
            registry=registry,
            format=format,
            quant=quant,
            location=location,
            include=include,
            exclude=exclude,
            hub_options=hub_options or {},
            check_disk=not force,  # --force re-fetches everything: no point hashing what is there
        )
    else:
        resolved = _plan_url(
            ref,
            reference,
            config=config,
            registry=registry,
            format=format,
            quant=quant,
            location=location,
            include=include,
            exclude=exclude,
            sha256=sha256,
            check_disk=not force,
        )
    from imageworks.transfer import engine_for, large_engine_name

    large = chosen.name if chosen is not None else large_engine_name(engine, single_stream=no_aria2)
    for item in resolved.plan.files:
        item.engine = engine_for(item.size, lfs=item.git_sha1 is None, large=large)
    try:
        return _execute(
            resolved,
            reference=reference,
            ref=ref,
            chosen=chosen,
            store=store,
            format=format,
            dry_run=dry_run,
            force=force,
            progress=progress,
            on_plan=on_plan,
            command=command,
            backup=backup,
            started=started,
            timings=timings,
        )
    finally:
        if resolved.hub is not None:
            resolved.hub.close()


def _file_jobs(resolved: _Resolved, to_fetch: Sequence[PlannedFile]) -> list[FileJob]:
    """One engine job per file. Hub files are resolved by the engine when each starts (overlapping
    the transfer), and again if the CDN refuses an expired signed URL; small ones with no HEAD."""
    from imageworks.transfer import FileJob

    plan, hub = resolved.plan, resolved.hub
    jobs = []
    for item in to_fetch:
        item.dest.parent.mkdir(parents=True, exist_ok=True)
        if hub is not None:
            assert plan.repo_id and plan.commit
            url, headers = hub.file_url(plan.repo_id, plan.commit, item.path), hub.auth_headers()
            resolve = hub.resolver(plan.repo_id, plan.commit, item.path)
        else:
            assert resolved.url
            url, headers, resolve = resolved.url, {}, None
        jobs.append(
            FileJob(
                url=url,
                dest=item.dest,
                size=item.size,
                sha256=item.sha256,
                git_sha1=item.git_sha1,
                headers=headers,
                label=item.path,
                resolve=resolve,
                root=plan.folder,
            )
        )
    return jobs


def _execute(
    resolved: _Resolved,
    *,
    reference: str,
    ref: HubRef | UrlRef,
    chosen: Engine | None,
    store: RegistryStore,
    format: str | None,
    dry_run: bool,
    force: bool,
    progress: ProgressSink | None,
    on_plan: Callable[[DownloadPlan], None] | None,
    command: Sequence[str] | str | None,
    backup: bool,
    started: float,
    timings: dict[str, float],
) -> DownloadResult:
    from imageworks.transfer import NullProgress, PartialPaths

    plan = resolved.plan
    timings["plan"] = time.monotonic() - started
    result = DownloadResult(reference=plan.reference, plan=plan, dry_run=dry_run, notes=list(plan.notes))
    if not plan.files:
        raise UsageError("nothing to download: the selection is empty", hint="check --include/--exclude")
    if not force:  # stores (#9.4, #11): bytes a registered copy on this machine holds are linked or copied
        take_local_copies(plan, store, dry_run=dry_run, command=command, backup=backup)
    if on_plan is not None:
        on_plan(plan)
    if dry_run:
        result.up_to_date = not plan.to_fetch
        timings["total"] = time.monotonic() - started
        result.timings = timings
        return result

    for item in plan.files:
        if item.present:
            # A resume record beside a complete, verified file is stale (two runs raced, or one
            # died between the rename and the cleanup): it would keep `scan` away from the folder.
            PartialPaths.for_dest(item.dest).discard()
    if force:
        # A fresh download: what is on disk is neither trusted nor resumed from.
        for item in plan.files:
            with contextlib.suppress(FileNotFoundError):
                item.dest.unlink()
            PartialPaths.for_dest(item.dest).discard()
    check_space(plan)

    digests: dict[str, str] = {f.path: f.local_sha256 for f in plan.files if f.present and f.local_sha256}
    to_fetch = plan.to_fetch
    if to_fetch:
        fetch_started = time.monotonic()
        jobs = _file_jobs(resolved, to_fetch)
        timings["resolve_urls"] = time.monotonic() - fetch_started
        assert chosen is not None
        result.engine, result.engine_note = chosen.name, chosen.note
        sink = progress or NullProgress()
        sink.message(f"engine: {chosen.note}")
        fetch_started = time.monotonic()
        results = chosen.fetch(jobs, sink)
        timings["fetch"] = time.monotonic() - fetch_started
        for done in results:
            digests[done.job.label] = done.sha256
            result.bytes_fetched += done.bytes_fetched
            result.bytes_resumed += done.resumed_from if not done.skipped else 0
            result.files_fetched += 0 if done.skipped else 1
    record_started = time.monotonic()
    records = []
    for item in plan.files:
        st = item.dest.stat()
        records.append(
            FileRecord(
                path=item.path, size=st.st_size, sha256=digests.get(item.path), mtime_ns=st.st_mtime_ns
            )
        )
    now = utc_now()
    by_path = {r.path: r for r in records}
    # One entry per GGUF quant (`--quant A,B`, `--quant all`), by the rule scan applies to the folder.
    entries = [
        build_entry(
            plan.folder,
            source=resolved.source,
            location=plan.location.name,
            files=[by_path[p] for p in variant.files],
            format_hint=format,
            downloaded_at=now,
            verified_at=now,
            inspection=inspection,
        )
        for variant, inspection in folder_variants(plan.folder, list(by_path))
    ]
    if command is None:
        command = (
            f"imageworks.download({reference!r})" if isinstance(ref, HubRef) else "imageworks.download(<url>)"
        )
    with store.transaction(command, backup=backup) as reg:
        for entry in entries:
            existing = find_existing(reg, entry)
            previous = reg.discovered_entry(existing.name) if existing is not None else None
            if previous is not None and same_content(merge_entry(previous, entry), previous):
                result.entries.append(previous)
            else:
                result.entries.append(record_entry(reg, entry))
                result.recorded = True
    timings["record"] = time.monotonic() - record_started
    result.up_to_date = not to_fetch
    timings["total"] = time.monotonic() - started
    result.timings = timings
    return result
