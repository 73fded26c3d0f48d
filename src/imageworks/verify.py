"""verify: prove that the files on disk are the files that were downloaded.

For every file an entry records: is it there, has it the recorded size, has it the recorded SHA-256?
Files in the model's folder that the entry does not list are reported too (a stray `*.safetensors`
is loaded by vLLM as surely as a listed one). The work is split in three steps so that all the
hashing of a `--all` run goes through one thread pool and one progress bar:

  plan    resolve names, stat every file, list the folders (cheap; bad names fail here, before any I/O)
  hash    every file that needs a digest, in parallel (`hashing.hash_files`)
  record  one registry transaction: `verified_at`, refreshed mtimes, digests for `--record`

`--quick` compares size and mtime with what was recorded when the file was last hashed: it catches a
truncated or re-downloaded file but, by design, not a byte changed in place with its mtime put back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from imageworks.clock import utc_now
from imageworks.errors import UsageError
from imageworks.hashing import FileDigest, HashAhead, aggregate_sha256, hash_files, trusted_digest
from imageworks.listing import RepoFile
from imageworks.registry import FileRecord, ModelEntry, Registry, RegistryStore, find_entry
from imageworks.stores.copies import copy_claims
from imageworks.verify_ahead import entry_folder, safe_relative
from imageworks.verify_report import (
    F_CHANGED,
    F_EXTRA,
    F_MISSING,
    F_MTIME,
    F_NO_DIGEST,
    F_OK,
    F_RECORDED,
    F_SIZE,
    F_UNREADABLE,
    F_UNSAFE,
    FILE_PROBLEM,
    INCONSISTENT,
    MISSING,
    NO_DIGESTS,
    NOT_INSTALLED,
    OK,
    RECORDED,
    SEVERITY,
    SKIPPED,
    FileCheck,
    VerifyReport,
    VerifyRun,
)
from imageworks.walk import resolved_path

if TYPE_CHECKING:
    from imageworks.config import Config

# Never "extra": what git and huggingface_hub keep in a local_dir, and what an interrupted download of
# ours leaves behind (`.<name>.imageworks-partial`, its `.json` state and aria2's `.aria2` control file).
_IGNORED_DIRS = {(".git",), (".cache", "huggingface")}
PARTIAL_MARKER = ".imageworks-partial"

ProgressFn = Callable[[int, int], None]
"""progress(bytes_just_hashed, total_bytes_to_hash); called from worker threads."""


RemoteLister = Callable[[str, str], Mapping[str, RepoFile]]
"""remote_lister(repo_id, commit) -> {path: RepoFile}; raises a HubError."""


# --------------------------------------------------------------------------------------------- plan
@dataclass
class _Pending:
    """One file to hash and what to do with its digest."""

    check: FileCheck
    full_path: Path
    size: int
    record: FileRecord | None  # None: a folder file found by --record on an entry that lists none
    mtime_ns: int | None = None  # when it was hashed: what a later --quick compares with


@dataclass
class _ModelPlan:
    entry: ModelEntry
    report: VerifyReport
    folder: Path | None = None  # the model's folder: recorded file paths are relative to it
    pending: list[_Pending] = field(default_factory=list)
    listed_from_disk: bool = False  # --record on an entry with no file list: the folder becomes it
    # (path, size, sha256) of every recorded file as it was when we planned: recording is refused if
    # another command changed the entry meanwhile.
    snapshot: list[tuple[str, int, str | None]] = field(default_factory=list)


def is_ours(relative: PurePosixPath) -> bool:
    """Files and folders that are never a model's own: left by our downloads, git or huggingface_hub.

    Hidden files (`.gitattributes` of a git-cloned repo, `.DS_Store`) count too: download never fetches
    them and scan never lists them, so calling them "extra" would fail every verify of such a folder."""
    parts = relative.parts
    if any(parts[: len(d)] == d for d in _IGNORED_DIRS):
        return True
    return any(part.startswith(".") for part in parts)


def _walk_files(folder: Path) -> Iterable[PurePosixPath]:
    for current, dirs, files in os.walk(folder):
        rel_folder = PurePosixPath(Path(current).relative_to(folder).as_posix())
        dirs.sort()
        for name in sorted(files):
            rel = rel_folder / name if str(rel_folder) != "." else PurePosixPath(name)
            yield rel


def _model_folder(entry: ModelEntry) -> tuple[Path | None, bool]:
    """(folder the file paths are relative to, whether `path` names a single file)."""
    return entry_folder(entry.path)


class _FolderClaims:
    """Which files each registry entry records, by model folder. One repo folder can hold several GGUF
    quants, each its own entry: a file another entry records is not extra for this one. Built once per
    run (a `--all` over thousands of entries must not compare every pair)."""

    def __init__(self, registry: Registry) -> None:
        self._by_folder: dict[Path, list[tuple[str, list[str]]]] | None = None
        self._registry = registry

    def others(self, entry: ModelEntry, folder: Path) -> set[str]:
        if self._by_folder is None:
            self._by_folder = {}
            # The merged layers as stored: typing 10,000 entries to read two fields would cost more
            # than verifying one model.
            for name, raw in self._registry.merged_raw().items():
                for copy_folder, paths in copy_claims(raw):  # stores: what other copies hold is not extra
                    self._by_folder.setdefault(resolved_path(copy_folder), []).append((name, paths))
                files = raw.get("files")
                if not isinstance(files, list) or not files:
                    continue
                path = raw.get("path")
                other_folder, _ = entry_folder(path if isinstance(path, str) else None)
                if other_folder is not None:
                    paths = [
                        f["path"] for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)
                    ]
                    self._by_folder.setdefault(resolved_path(other_folder), []).append((name, paths))
        claimed: set[str] = set()
        for name, paths in self._by_folder.get(resolved_path(folder), []):
            if name != entry.name:
                claimed.update(paths)
        return claimed


def _plan_model(
    claims: _FolderClaims, entry: ModelEntry, *, quick: bool, record: bool, explicit: bool
) -> _ModelPlan:
    report = VerifyReport(entry.name, entry.path, "quick" if quick else "full")
    plan = _ModelPlan(entry, report)
    plan.snapshot = [(f.path, f.size, f.sha256) for f in entry.files]
    folder, single_file = _model_folder(entry)
    if folder is None:
        _no_folder(plan, explicit=explicit)
        return plan
    plan.folder = folder
    if not folder.exists():
        report.notes.append(f"{folder} does not exist")
        if not entry.files:
            report.problems.append(MISSING)
    for record_ in entry.files:
        _plan_file(plan, folder, record_, quick=quick, record=record)
    hashing_the_folder = record and not quick
    if single_file and not entry.files and hashing_the_folder:
        # `path` names the model's one file (a direct-URL GGUF, say): --record makes it the file list.
        full = Path(entry.path or "").expanduser()
        _adopt(plan, full.name, full)
    # An entry that lists no files cannot have extras: it is reported as having no digests instead.
    if folder.is_dir() and not single_file and (entry.files or hashing_the_folder):
        _plan_folder(plan, claims, folder, adopt=hashing_the_folder and not entry.files)
    _note_missing_digests(plan, folder)
    return plan


def _no_folder(plan: _ModelPlan, *, explicit: bool) -> None:
    report = plan.report
    if plan.entry.files:
        report.notes.append("the entry records files but no path: nothing to compare them with")
        report.problems.append(NOT_INSTALLED)
    elif explicit:
        report.notes.append("the entry records no path and no files (not downloaded by imageworks?)")
        report.problems.append(NOT_INSTALLED)
    else:
        report.notes.append("no path and no files recorded: nothing on disk to verify")
        report.status = SKIPPED


def _plan_file(plan: _ModelPlan, folder: Path, record_: FileRecord, *, quick: bool, record: bool) -> None:
    """Stat one recorded file; queue it for hashing when a digest is to be compared or recorded."""
    check = FileCheck(record_.path, F_OK, expected_size=record_.size, expected_sha256=record_.sha256)
    plan.report.files.append(check)
    relative = safe_relative(record_.path)
    if relative is None:
        check.status = F_UNSAFE
        check.detail = "the recorded path would leave the model folder; not read"
        return
    full = folder.joinpath(*relative.parts)
    try:
        st = full.stat()
    except FileNotFoundError:
        check.status = F_MISSING
        return
    except OSError as exc:
        check.status = F_UNREADABLE
        check.detail = exc.strerror or str(exc)
        return
    if not full.is_file():
        check.status = F_UNREADABLE
        check.detail = "not a regular file"
        return
    check.actual_size = st.st_size
    if st.st_size != record_.size:
        # The size alone proves the change; hashing a truncated 10 GB file would only add a digest
        # nobody can use.
        check.status = F_SIZE
    elif quick:
        if record_.mtime_ns is None:
            check.detail = "no mtime recorded: size checked only"
        elif trusted_digest(record_, st.st_size, st.st_mtime_ns) is None and record_.sha256:
            check.status = F_MTIME
            check.detail = "modified since it was last hashed: run a full verify"
        elif record_.mtime_ns != st.st_mtime_ns:  # no digest recorded to trust or distrust
            check.status = F_MTIME
            check.detail = "modified since it was recorded: run a full verify"
    elif record_.sha256 or record:
        plan.pending.append(_Pending(check, full, st.st_size, record_))
    else:
        check.status = F_NO_DIGEST


def _adopt(plan: _ModelPlan, key: str, full: Path) -> None:
    """--record on an entry that lists no files: this file on disk becomes part of its file list."""
    try:
        size = full.stat().st_size
    except OSError:
        size = 0
    check = FileCheck(key, F_OK, actual_size=size)
    plan.report.files.append(check)
    plan.pending.append(_Pending(check, full, size, None))
    plan.listed_from_disk = True


def _plan_folder(plan: _ModelPlan, claims: _FolderClaims, folder: Path, *, adopt: bool) -> None:
    """Files in the model folder the entry does not list: extra, or (`adopt`) the file list to record."""
    listed = {f.path for f in plan.entry.files}
    claimed = claims.others(plan.entry, folder)
    partial = 0
    for relative in _walk_files(folder):
        key = relative.as_posix()
        if key in listed or key in claimed:
            continue
        if is_ours(relative):
            partial += relative.name.endswith(PARTIAL_MARKER)
            continue
        full = folder.joinpath(*relative.parts)
        if adopt:
            _adopt(plan, key, full)
            continue
        try:
            extra_size: int | None = full.stat().st_size
        except OSError:
            extra_size = None
        plan.report.files.append(FileCheck(key, F_EXTRA, actual_size=extra_size))
    if partial:
        plan.report.notes.append(f"{partial} partial download file(s) of an interrupted download ignored")


def _note_missing_digests(plan: _ModelPlan, folder: Path) -> None:
    report = plan.report
    undigested = sum(1 for f in report.files if f.status == F_NO_DIGEST)
    if undigested:
        report.notes.append(
            f"{undigested} file(s) have no recorded SHA-256: run `verify --record` to hash and store them"
        )
    if not plan.entry.files and not plan.listed_from_disk and folder.exists():
        report.problems.append(NO_DIGESTS)
        report.notes.append(
            "the entry lists no files: run `verify --record` to hash the folder and record its files"
        )


# -------------------------------------------------------------------------------------------- api
def selection(names: Sequence[str], all_models: bool) -> list[str] | None:
    """What to verify: the NAMEs given, or every model (None) for --all; never both, never neither."""
    if all_models and names:
        raise UsageError("give model names or --all, not both", hint="drop the names to verify every model")
    if not all_models and not names:
        raise UsageError(
            "give one or more model names, or --all", hint="`imageworks-download list` shows the names"
        )
    return None if all_models else list(names)


def resolve_entries(registry: Registry, names: Sequence[str] | None) -> list[ModelEntry]:
    """The entries to verify: each NAME by the usual rule (exact, alias, HF id, unique substring), or
    every entry when `names` is None. Duplicates are verified once."""
    if names is None:
        return registry.entries()
    seen: dict[str, ModelEntry] = {}
    for name in selection(names, False) or []:
        entry = find_entry(registry, name)
        seen.setdefault(entry.name, entry)
    return list(seen.values())


def run_verify(store: RegistryStore, names: Sequence[str] | None, **options: Any) -> VerifyRun:
    """`verify_models` timed as a whole (what the CLI reports)."""
    started = time.perf_counter()
    reports = verify_models(store, names, **options)
    ahead = options.get("ahead")
    if ahead is not None and ahead.used:  # the work began before this call
        started = min(started, ahead.started)
    return VerifyRun(reports, time.perf_counter() - started)


def verify_models(
    store: RegistryStore,
    names: Sequence[str] | None,
    *,
    quick: bool = False,
    remote: bool = False,
    record: bool = False,
    jobs: int | None = None,
    progress: ProgressFn | None = None,
    config: Config | None = None,
    remote_lister: RemoteLister | None = None,
    command: Sequence[str] | str | None = None,
    backup: bool = True,
    ahead: HashAhead | None = None,
) -> list[VerifyReport]:
    """Verify the named models (`names=None`: all of them) and return one report per model.

    A model that verifies clean gets `verified_at` in the discovered layer, and the mtimes of the files
    just hashed are refreshed so a later `--quick` has something to compare with. `record=True` hashes
    and stores the digests an entry lacks (never replaces one that differs: that is what verify
    reports). Bad names raise before any file is read."""
    if quick and record:
        raise UsageError(
            "--record hashes the files: it cannot be combined with --quick",
            hint="drop --quick to record digests",
        )
    registry = store.load()
    entries = resolve_entries(registry, names)
    explicit = names is not None
    claims = _FolderClaims(registry)
    plans = [_plan_model(claims, e, quick=quick, record=record, explicit=explicit) for e in entries]

    _hash_pending(plans, jobs=jobs, progress=progress, ahead=ahead)
    if remote:
        from imageworks.verify_hub import check_remote, hub_lister

        if remote_lister is None:
            if config is None:
                from imageworks.config import resolve_config

                config = resolve_config()
            remote_lister = hub_lister(config)
        for plan in plans:
            if plan.report.status != SKIPPED:
                check_remote(plan, remote_lister)

    for plan in plans:
        _conclude(plan)
    if not quick:
        _record(store, plans, record=record, command=command, backup=backup)
    return [plan.report for plan in plans]


def _hash_pending(
    plans: list[_ModelPlan], *, jobs: int | None, progress: ProgressFn | None, ahead: HashAhead | None
) -> None:
    """Every file of every model through one pool (and one progress bar), then each digest applied
    (`ahead`: files the CLI started hashing before the registry was loaded, see verify_ahead)."""
    pending = [p for plan in plans for p in plan.pending]
    total = sum(p.size for p in pending)
    callback = (lambda n: progress(n, total)) if progress is not None else None
    started = time.perf_counter()
    digests = hash_files(
        [p.full_path for p in pending],
        jobs=jobs,
        progress=callback,
        sizes=[p.size for p in pending],
        ahead=ahead,
    )
    hash_seconds = time.perf_counter() - started
    if ahead is not None and ahead.used:  # plus the time it hashed before this call
        hash_seconds += ahead.seconds_before(started)
    by_pending = {id(p): d for p, d in zip(pending, digests, strict=True)}
    for plan in plans:
        if plan.pending:
            plan.report.hash_seconds = hash_seconds
        for item in plan.pending:
            _apply_digest(plan, item, by_pending[id(item)])


def _apply_digest(plan: _ModelPlan, item: _Pending, digest: FileDigest) -> None:
    check = item.check
    plan.report.hashed_bytes += digest.size or 0
    if digest.sha256 is None:
        check.status = F_UNREADABLE
        check.detail = digest.error
        return
    check.actual_sha256 = digest.sha256
    check.actual_size = digest.size
    item.mtime_ns = digest.mtime_ns
    record_ = item.record
    if record_ is None or record_.sha256 is None:
        check.status = F_RECORDED
    elif digest.size != record_.size:
        check.status = F_SIZE  # it changed between the stat and the read
    elif digest.sha256 != record_.sha256.lower():
        check.status = F_CHANGED


def _conclude(plan: _ModelPlan) -> None:
    report = plan.report
    if report.status == SKIPPED:
        return
    problems = set(report.problems)
    problems.update(FILE_PROBLEM[f.status] for f in report.files if f.status in FILE_PROBLEM)
    if plan.entry.aggregate_sha256 and plan.entry.files and all(f.sha256 for f in plan.entry.files):
        recomputed = aggregate_sha256((f.path, f.sha256) for f in plan.entry.files)
        if recomputed != plan.entry.aggregate_sha256:
            problems.add(INCONSISTENT)
            report.notes.append(
                "the recorded aggregate_sha256 does not match the recorded file digests (registry edited by hand?)"
            )
    report.problems = [p for p in SEVERITY if p in problems]
    if report.problems:
        report.status = report.problems[0]
    elif any(f.status == F_RECORDED for f in report.files):
        report.status = RECORDED
    else:
        report.status = OK


# ------------------------------------------------------------------------------------------ record
def _record(
    store: RegistryStore,
    plans: list[_ModelPlan],
    *,
    record: bool,
    command: Sequence[str] | str | None,
    backup: bool,
) -> None:
    """One transaction for the whole run. Only models whose entry is still what was verified are
    touched: a download that replaced the entry meanwhile wins."""
    todo = [p for p in plans if p.report.status in {OK, RECORDED} and p.folder is not None]
    if record:
        todo += [p for p in plans if p not in todo and any(f.status == F_RECORDED for f in p.report.files)]
    if not todo:
        return
    now = utc_now()
    with store.transaction(command, backup=backup) as registry:
        for plan in todo:
            _record_one(registry, plan, now)


def _record_one(registry: Registry, plan: _ModelPlan, now: str) -> None:
    report = plan.report
    name = plan.entry.name
    discovered = registry.discovered_entry(name)
    if discovered is None:
        report.notes.append(
            f"{name} is defined only in the curated layer: verified_at and digests are not recorded "
            "(tools never rewrite model_registry.curated.json)"
        )
        return
    current = registry.get(name)
    if current is None or [(f.path, f.size, f.sha256) for f in current.files] != plan.snapshot:
        report.notes.append(
            "the entry changed while it was being verified: nothing recorded; run verify again"
        )
        return
    files_from_curated = registry.origins(name).get("files") == "curated"
    updated = discovered.model_copy(deep=True)
    hashed = {p.check.path: p for p in plan.pending if p.check.actual_sha256 is not None}

    if not files_from_curated:
        if plan.listed_from_disk and not updated.files:
            updated.files = [
                FileRecord(path=p.check.path, size=p.check.actual_size or 0)
                for p in plan.pending
                if p.check.status == F_RECORDED
            ]
        for file_record in updated.files:
            item = hashed.get(file_record.path)
            if item is None:
                continue
            check = item.check
            if (
                check.status == F_RECORDED
                and file_record.sha256 is None
                and check.actual_size == file_record.size
            ):
                file_record.sha256 = check.actual_sha256
                file_record.mtime_ns = item.mtime_ns
                check.expected_size = file_record.size
                report.recorded_digests += 1
            elif check.status == F_OK and file_record.sha256 == check.actual_sha256:
                file_record.mtime_ns = item.mtime_ns
        if report.recorded_digests:
            updated.aggregate_sha256 = aggregate_sha256((f.path, f.sha256) for f in updated.files)
            updated.size_bytes = sum(f.size for f in updated.files)
    elif report.status == RECORDED:
        report.notes.append("the file list comes from the curated layer: record the digests there by hand")

    if report.status == OK:
        updated.verified_at = now
        report.verified_at = now
    registry.put(updated)
