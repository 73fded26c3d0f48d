"""`download`: resolve -> plan -> fetch -> record, for Hub repos and direct URLs.

    import imageworks
    result = imageworks.download("Qwen/Qwen2.5-0.5B-Instruct")                      # config from the env
    result = imageworks.download("owner/repo-GGUF", DownloadOptions(quant="Q8_0"))  # or quant="Q8_0"

Layers (STYLE.md #6), one function each: the reference is parsed (`refs`), pinned to a commit and listed
(`hub`), and the files chosen from the listing (`select`): `_resolve`. Under the model's lock (one writer
per model folder), the chosen files are checked against the disk (`plan`): `_plan`. The engine fetches the
rest to temporary names, verifies and renames them (`transfer`): `_fetch`. The model is then inspected and
recorded in one registry transaction (`entries`): `_record`. A failure before the record leaves the
registry untouched and the bytes on disk for the next run to resume from.

Where files go:
  Hub repos     <location root>/<owner>/<repo>[@<revision>]/<path in repo>
  direct URLs   <location root>/url/<host>/<file stem>/<file>   (linux_wsl by default)
                <LM Studio root>/<host>/<file stem>/<file>      (--location windows_lmstudio: LM Studio
                                                                 lists exactly two folder levels)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.errors import TransferError, UsageError
from imageworks.naming import path_key
from imageworks.plan import DownloadPlan, KnownFile, PlannedFile, build_plan, check_space, known_files
from imageworks.refs import HubRef, parse_reference
from imageworks.resolve import Resolved, resolve_hub, resolve_url
from imageworks.stores.local import take_local_copies

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.registry import Registry, RegistryStore
    from imageworks.registry.schema import ModelEntry, Source
    from imageworks.transfer import Engine, FileJob, ProgressSink

log = logging.getLogger("imageworks.downloader")


@dataclass
class DownloadOptions:
    """What the user asked for, besides the reference (the CLI's flags, one to one)."""

    format: str | None = None
    quant: str | None = None
    location: str | None = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    engine: str = "auto"
    connections: int = 16
    max_files: int = 4
    no_aria2: bool = False
    stall_timeout: float = 30.0
    dry_run: bool = False
    force: bool = False
    sha256: str | None = None
    backup: bool = True
    hub_options: dict[str, Any] = field(default_factory=dict)

    def selection(self) -> dict[str, Any]:
        """The selection as the user gave it, recorded in the entry's source (`update` repeats it)."""
        return {
            "format": self.format,
            "quant": self.quant,
            "include": list(self.include),
            "exclude": list(self.exclude),
        }


@dataclass
class DownloadResult:
    """What `download` did. `entries`: the registry entries the files make, one per GGUF quant (see
    `imageworks.entries.split_variants`), in that order; `name` and `entry` are the first of them.
    `up_to_date`: every file was already present and verified (nothing fetched); `recorded`: the
    registry changed; `replaced`: files that were on disk with other bytes and were fetched again;
    `unverified`: files with no published digest to check (a direct URL without --sha256)."""

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
    replaced: list[str] = field(default_factory=list)
    unverified: dict[str, str] = field(default_factory=dict)  # path -> the SHA-256 recorded
    waited_for_lock: bool = False
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
            "replaced": self.replaced,
            "unverified": self.unverified,
            "waited_for_lock": self.waited_for_lock,
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
    options: DownloadOptions | None = None,
    *,
    config: Config | None = None,
    progress: ProgressSink | None = None,
    on_plan: Callable[[DownloadPlan], None] | None = None,
    command: Sequence[str] | str | None = None,
    **option_values: Any,
) -> DownloadResult:
    """Download `reference` (see `imageworks.refs`), verify every file, record the model in the registry.

    `options` (or the same fields as keywords: `quant="Q8_0"`, `engine="native"`) say what to fetch and
    how; `config` defaults to `resolve_config()` (environment, imageworks.toml).

    Raises `imageworks.errors` exceptions: UsageError (bad reference/flags), HubError subclasses,
    TransferError, IntegrityError (a file that does not match its digest: nothing is recorded),
    InsufficientSpace, UnsafePathError (a server path outside the model folder), RegistryWriteError (a
    registry that cannot be written: found before any byte is fetched).

    `on_plan` is called with the plan before anything is fetched (the CLI prints the notes there);
    `progress` receives the engine's per-file progress and messages (the engine chosen, waiting for
    another download of the same model)."""
    from imageworks.registry import RegistryStore
    from imageworks.transfer import NullProgress

    started = time.monotonic()
    options = dataclasses.replace(options or DownloadOptions(), **option_values)
    options.sha256 = _check_sha256(options.sha256)
    if config is None:
        from imageworks.config import resolve_config

        config = resolve_config()
    sink = progress or NullProgress()
    ref = parse_reference(reference, endpoint=str(config.hf_endpoint.value))
    # Bad engine flags (aria2 asked for but missing) fail before any network traffic; `auto` and `native`
    # cannot fail, so their engines are built only when there is something to fetch (an up-to-date re-run
    # never imports them).
    engine = None if options.dry_run or options.engine in ("auto", "native") else _choose_engine(options)
    store = RegistryStore(config.registry_path)
    if not options.dry_run:
        _check_registry_writable(store)
    resolved = (
        resolve_hub(ref, reference, options, config)
        if isinstance(ref, HubRef)
        else resolve_url(ref, options, config)
    )
    if command is None:
        command = (
            f"imageworks.download({reference!r})" if isinstance(ref, HubRef) else "imageworks.download(<url>)"
        )
    try:
        result = _under_lock(resolved, store, engine, sink, options, command, on_plan, started)
    finally:
        if resolved.hub is not None:
            resolved.hub.close()
    result.timings["total"] = time.monotonic() - started
    return result


def _under_lock(
    resolved: Resolved,
    store: RegistryStore,
    engine: Engine | None,
    sink: ProgressSink,
    options: DownloadOptions,
    command: Sequence[str] | str,
    on_plan: Callable[[DownloadPlan], None] | None,
    started: float,
) -> DownloadResult:
    """Plan, fetch and record while holding the model's lock (one writer per model folder)."""
    lock = contextlib.nullcontext(False) if options.dry_run else _model_lock(resolved, sink)
    with lock as waited:
        registry = store.load()
        plan = _plan(resolved, registry, options)
        if not options.force:  # bytes a registered copy on this machine holds are linked or copied (#11)
            take_local_copies(plan, store, dry_run=options.dry_run, command=command, backup=options.backup)
        result = DownloadResult(
            reference=plan.reference,
            plan=plan,
            dry_run=options.dry_run,
            notes=list(plan.notes),
            waited_for_lock=bool(waited),
            timings={"plan": time.monotonic() - started},
        )
        if on_plan is not None:
            on_plan(plan)
        if options.dry_run:
            result.up_to_date = not plan.to_fetch
        else:
            digests = _fetch(resolved, plan, engine, sink, result, options=options)
            _record(resolved, plan, digests, store, registry, result, options=options, command=command)
    return result


def _choose_engine(options: DownloadOptions) -> Engine:
    from imageworks.transfer import choose_engine

    return choose_engine(
        options.engine,
        connections=options.connections,
        max_files=options.max_files,
        single_stream=options.no_aria2,
        stall_timeout=options.stall_timeout,
    )


# ------------------------------------------------------------------------------- one writer per model


def _check_registry_writable(store: RegistryStore) -> None:
    """A registry that cannot be written (read-only mount, permissions, a file in the way) is found before
    any byte is fetched, not after: a probe file is created and removed in its folder, and its lock file
    opened for writing."""
    import os
    import tempfile

    from imageworks.errors import RegistryWriteError
    from imageworks.registry.store import LOCK

    try:
        store.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=store.folder, prefix=".imageworks-probe-"):
            pass
        os.close(os.open(store.path(LOCK), os.O_RDWR | os.O_CREAT, 0o644))  # what the transaction will lock
    except OSError as exc:
        raise RegistryWriteError(
            f"the registry folder {store.folder} cannot be written ({exc.strerror}): nothing was downloaded",
            hint="fix its permissions (or mount), or point IMAGEWORKS_REGISTRY_DIR / --registry-dir elsewhere",
        ) from None


@contextlib.contextmanager
def _model_lock(resolved: Resolved, sink: ProgressSink) -> Iterator[bool]:
    """One writer per model folder (`imageworks.model_lock`). Yields whether we had to wait for another
    download of the same model."""
    from imageworks.model_lock import hold

    folder = resolved.folder
    what = resolved.plan_args.get("repo_id") or resolved.plan_args["reference"]

    def waiting() -> None:
        sink.message(f"waiting for another download of {what} into {folder} to finish (Ctrl-C to stop)")

    with hold(folder, waiting) as waited:
        yield waited


# --------------------------------------------------------------------------------------- the plan


def _known_in(registry: Registry, folder: Path) -> dict[str, KnownFile]:
    """What earlier downloads recorded about files in `folder` (any entry stored there)."""
    key = path_key(folder)
    known: dict[str, KnownFile] = {}
    for entry in registry.entries():
        if entry.path and path_key(entry.path) == key:
            known.update(known_files(entry.files, entry.source.commit))
    return known


def _plan(resolved: Resolved, registry: Registry, options: DownloadOptions) -> DownloadPlan:
    """The chosen files against the disk (read under the model's lock: another download of the same
    model may just have finished them). `--force` re-fetches everything: no point hashing what is there."""
    plan = build_plan(
        **resolved.plan_args, known=_known_in(registry, resolved.folder), check_disk=not options.force
    )
    if not plan.files:
        raise UsageError("nothing to download: the selection is empty", hint="check --include/--exclude")
    from imageworks.transfer import engine_for, large_engine_name

    large = large_engine_name(options.engine, single_stream=options.no_aria2)
    for item in plan.files:
        item.engine = engine_for(item.size, lfs=item.git_sha1 is None, large=large)
    for item in plan.stale:
        plan.notes.append(
            f"{item.path} on disk is not the expected file (changed since it was recorded?): fetching it again"
        )
    return plan


# ------------------------------------------------------------------------------------------- fetch


def _fetch(
    resolved: Resolved,
    plan: DownloadPlan,
    engine: Engine | None,
    sink: ProgressSink,
    result: DownloadResult,
    *,
    options: DownloadOptions,
) -> dict[str, str]:
    """Fetch what the plan lacks; returns every file's SHA-256 (path -> digest)."""
    from imageworks.transfer import PartialPaths

    for item in plan.files:
        if item.present:
            # A resume record beside a complete, verified file is stale (two runs raced, or one
            # died between the rename and the cleanup): it would keep `scan` away from the folder.
            PartialPaths.for_dest(item.dest).discard()
    if options.force:
        # A fresh download: what is on disk is neither trusted nor resumed from. The old file stays
        # until verified bytes are renamed over it, so a failed re-fetch loses nothing.
        for item in plan.files:
            PartialPaths.for_dest(item.dest).discard()
    check_space(plan)
    digests = {f.path: f.local_sha256 for f in plan.files if f.present and f.local_sha256}
    to_fetch = plan.to_fetch
    if not to_fetch:
        result.up_to_date = True
        return digests
    started = time.monotonic()
    for item in to_fetch:
        if item.stale and not (item.sha256 or item.git_sha1):
            # Nothing to check a new copy against: the engine would take the old bytes as complete.
            item.dest.unlink()
    jobs = _file_jobs(resolved, plan, to_fetch, refetch=options.force)
    result.timings["resolve_urls"] = time.monotonic() - started
    engine = engine or _choose_engine(options)
    result.engine, result.engine_note = engine.name, engine.note
    sink.message(f"engine: {engine.note}")
    started = time.monotonic()
    for done in engine.fetch(jobs, sink):
        digests[done.job.label] = done.sha256
        result.bytes_fetched += done.bytes_fetched
        result.bytes_resumed += done.resumed_from if not done.skipped else 0
        result.files_fetched += 0 if done.skipped else 1
    result.timings["fetch"] = time.monotonic() - started
    result.replaced = [f.path for f in plan.stale]
    result.unverified = {f.path: digests[f.path] for f in to_fetch if not (f.sha256 or f.git_sha1)}
    return digests


def _file_jobs(
    resolved: Resolved, plan: DownloadPlan, to_fetch: Sequence[PlannedFile], *, refetch: bool = False
) -> list[FileJob]:
    """One engine job per file. Hub files are resolved by the engine when each starts (overlapping
    the transfer), and again if the CDN refuses an expired signed URL; small ones with no HEAD."""
    from imageworks.transfer import FileJob

    hub = resolved.hub
    jobs = []
    for item in to_fetch:
        _make_parent(item.dest, plan.folder)
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
                refetch=refetch,
            )
        )
    return jobs


def _make_parent(dest: Path, folder: Path) -> None:
    import errno

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise TransferError(
                f"{dest.relative_to(folder)}: the path is too long for the filesystem at {folder}",
                hint="leave it out with --exclude GLOB, or choose a --location with a shorter path",
            ) from None
        raise


# ------------------------------------------------------------------------------------------ record


def _record(
    resolved: Resolved,
    plan: DownloadPlan,
    digests: dict[str, str],
    store: RegistryStore,
    registry: Registry,
    result: DownloadResult,
    *,
    options: DownloadOptions,
    command: Sequence[str] | str,
) -> None:
    """One registry transaction for the entries the files make (one per GGUF quant). An up-to-date
    model whose entries already list exactly these files is not inspected again."""
    from imageworks.entries import build_entry, folder_variants, utc_now
    from imageworks.registry.schema import FileRecord

    started = time.monotonic()
    records = []
    # Every file was checked against the Hub's listing (LFS SHA-256, or the git blob id of a small file)
    # or came from the direct URL: its digest is never to be replaced from disk (entries.AUTHORITATIVE).
    source = "hub" if plan.provider == "hf" else "url"
    for item in plan.files:
        st = item.dest.stat()
        sha256 = digests.get(item.path)
        fields = {"path": item.path, "size": st.st_size, "sha256": sha256, "mtime_ns": st.st_mtime_ns}
        records.append(FileRecord.model_validate({**fields, "digest_source": source} if sha256 else fields))
    if result.up_to_date:
        current = _current_entries(registry, plan, records, resolved.source)
        if current is not None:
            result.entries = current
            result.timings["record"] = time.monotonic() - started
            return
    now = utc_now()
    by_path = {r.path: r for r in records}
    entries = [
        build_entry(
            plan.folder,
            source=resolved.source,
            location=plan.location.name,
            files=[by_path[p] for p in variant.files],
            format_hint=options.format,
            downloaded_at=now,
            verified_at=now,
            inspection=inspection,
        )
        for variant, inspection in folder_variants(plan.folder, list(by_path))
    ]
    _store_entries(store, entries, result, command=command, backup=options.backup)
    result.timings["record"] = time.monotonic() - started


def _current_entries(
    registry: Registry, plan: DownloadPlan, records: list[Any], source: Source
) -> list[ModelEntry] | None:
    """The discovered entries that already describe exactly these files (same sizes, digests, mtimes, same
    commit), or None when the record must be rebuilt."""
    key = path_key(plan.folder)
    wanted = {(r.path, r.size, r.sha256, r.mtime_ns) for r in records}
    entries = [
        e
        for e in registry.entries()
        if e.path and path_key(e.path) == key and registry.discovered_entry(e.name) is not None
    ]
    mine = [e for e in entries if {(f.path, f.size, f.sha256, f.mtime_ns) for f in e.files} <= wanted]
    mine = [e for e in mine if e.source.commit == source.commit and e.source.url == source.url]
    covered = {(f.path, f.size, f.sha256, f.mtime_ns) for e in mine for f in e.files}
    if not mine or covered != wanted:
        return None
    weights = {f.path for f in plan.files if f.role in ("weights", "projector")}
    # Only the entries holding the chosen weights (another quant in the same folder is not ours).
    chosen = [e for e in mine if not weights or {f.path for f in e.files} & weights]
    return sorted(chosen, key=lambda e: e.name) or None


def _store_entries(
    store: RegistryStore,
    entries: list[ModelEntry],
    result: DownloadResult,
    *,
    command: Sequence[str] | str,
    backup: bool,
) -> None:
    """Entries into the discovered layer; an entry whose content is unchanged (its selection aside: the
    first download's selection stays) is left as it is, so a re-run writes nothing."""
    from imageworks.entries import find_existing, merge_entry, record_entry, same_content

    with store.transaction(command, backup=backup) as reg:
        for entry in entries:
            existing = find_existing(reg, entry)
            previous = reg.discovered_entry(existing.name) if existing is not None else None
            if previous is not None:
                kept = getattr(previous.source, "selection", None)
                candidate = _with_selection(entry, kept) if kept is not None else entry
                if same_content(merge_entry(previous, candidate), previous):
                    result.entries.append(previous)
                    continue
            result.entries.append(record_entry(reg, entry))
            result.recorded = True


def _with_selection(entry: ModelEntry, selection: Any) -> ModelEntry:
    source = entry.source.model_copy(update={"selection": selection})
    return entry.model_copy(update={"source": source})
