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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, Protocol

from imageworks.errors import HubError, UsageError
from imageworks.hashing import FileDigest, aggregate_sha256, git_blob_sha1_file, hash_files, trusted_digest
from imageworks.registry import FileRecord, ModelEntry, Registry, RegistryStore, find_entry
from imageworks.walk import resolved_path

if TYPE_CHECKING:
    from imageworks.config import Config

# File statuses.
F_OK = "ok"
F_CHANGED = "changed"  # same size, different SHA-256
F_SIZE = "size differs"  # truncated, grown, or replaced by another file
F_MISSING = "missing"
F_EXTRA = "extra"
F_UNREADABLE = "unreadable"
F_NO_DIGEST = "no digest"
F_RECORDED = "recorded"  # --record stored the digest it just computed
F_MTIME = "mtime differs"  # --quick: same size, different mtime; the content is unknown
F_UNSAFE = "unsafe path"
F_REMOTE = "remote mismatch"  # recorded digest or size differs from the Hub's for the recorded commit
F_NOT_ON_HUB = "not on hub"

# Model statuses, most serious first: a model's headline is the first that applies.
CHANGED = "changed"
MISSING = "missing"
EXTRA = "extra"
REMOTE_MISMATCH = "remote mismatch"
INCONSISTENT = "registry inconsistent"  # recorded aggregate_sha256 disagrees with the recorded files
REMOTE_ERROR = "remote unavailable"
NO_DIGESTS = "no digests"
NOT_INSTALLED = "not installed"
RECORDED = "recorded"
OK = "ok"
SKIPPED = "skipped"
_SEVERITY = [CHANGED, MISSING, EXTRA, REMOTE_MISMATCH, INCONSISTENT, REMOTE_ERROR, NO_DIGESTS, NOT_INSTALLED]
_FILE_PROBLEM = {
    F_CHANGED: CHANGED,
    F_SIZE: CHANGED,
    F_MTIME: CHANGED,
    F_UNREADABLE: CHANGED,
    F_UNSAFE: CHANGED,
    F_MISSING: MISSING,
    F_EXTRA: EXTRA,
    F_NO_DIGEST: NO_DIGESTS,
    F_REMOTE: REMOTE_MISMATCH,
    F_NOT_ON_HUB: REMOTE_MISMATCH,
}

# Never "extra": what git and huggingface_hub keep in a local_dir, and what an interrupted download of
# ours leaves behind (`.<name>.imageworks-partial`, its `.json` state and aria2's `.aria2` control file).
_IGNORED_DIRS = {(".git",), (".cache", "huggingface")}
PARTIAL_MARKER = ".imageworks-partial"

ProgressFn = Callable[[int, int], None]
"""progress(bytes_just_hashed, total_bytes_to_hash); called from worker threads."""


class RemoteFile(Protocol):
    """What the Hub lists for one file at a commit (`imageworks.hub.HubClient.list_files` items): LFS
    files carry a SHA-256, small files only their git blob id."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def git_sha1(self) -> str | None: ...


RemoteLister = Callable[[str, str], Mapping[str, RemoteFile]]
"""remote_lister(repo_id, commit) -> {path: RemoteFile}; raises a HubError."""


@dataclass
class FileCheck:
    path: str
    status: str
    expected_size: int | None = None
    actual_size: int | None = None
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    remote_sha256: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyReport:
    name: str
    path: str | None
    mode: Literal["full", "quick"]
    status: str = OK
    problems: list[str] = field(default_factory=list)
    files: list[FileCheck] = field(default_factory=list)
    hashed_bytes: int = 0
    # Wall time of the hashing step this model's files were part of (shared by every model of a run:
    # all files go through one pool).
    hash_seconds: float = 0.0
    remote: str | None = None  # None: not asked; else "ok", "skipped: …", "mismatch", "error: …"
    verified_at: str | None = None  # set when this run recorded it
    recorded_digests: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in {OK, RECORDED, SKIPPED}

    @property
    def problem_files(self) -> list[FileCheck]:
        return [f for f in self.files if f.status not in {F_OK, F_RECORDED}]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "mode": self.mode,
            "status": self.status,
            "ok": self.ok,
            "problems": self.problems,
            "files": [f.as_dict() for f in self.files],
            "hashed_bytes": self.hashed_bytes,
            "hash_seconds": round(self.hash_seconds, 3),
            "remote": self.remote,
            "verified_at": self.verified_at,
            "recorded_digests": self.recorded_digests,
            "notes": self.notes,
        }


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
    root: Path | None = None
    pending: list[_Pending] = field(default_factory=list)
    listed_from_disk: bool = False  # --record on an entry with no file list: the folder becomes it
    # (path, size, sha256) of every recorded file as it was when we planned: recording is refused if
    # another command changed the entry meanwhile.
    snapshot: list[tuple[str, int, str | None]] = field(default_factory=list)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _safe_relative(relative: str) -> PurePosixPath | None:
    """A file path from the registry is untrusted: it must stay inside the model folder. Symlinks are
    followed on purpose (verify only reads, and HF-cache style folders are symlinks to blobs)."""
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        return None
    pure = PurePosixPath(relative)
    if any(part in {"", ".", ".."} for part in relative.split("/")) or (
        len(relative) > 1 and relative[1] == ":"
    ):
        return None
    return pure


def is_ours(relative: PurePosixPath) -> bool:
    """Files and folders that are never a model's own: left by our downloads, git or huggingface_hub.

    Hidden files (`.gitattributes` of a git-cloned repo, `.DS_Store`) count too: download never fetches
    them and scan never lists them, so calling them "extra" would fail every verify of such a folder."""
    parts = relative.parts
    if any(parts[: len(d)] == d for d in _IGNORED_DIRS):
        return True
    return any(part.startswith(".") for part in parts)


def _walk_files(root: Path) -> Iterable[PurePosixPath]:
    for folder, dirs, files in os.walk(root):
        rel_folder = PurePosixPath(Path(folder).relative_to(root).as_posix())
        dirs.sort()
        for name in sorted(files):
            rel = rel_folder / name if str(rel_folder) != "." else PurePosixPath(name)
            yield rel


def _model_root(entry: ModelEntry) -> tuple[Path | None, bool]:
    """(folder the file paths are relative to, whether `path` names a single file)."""
    if not entry.path:
        return None, False
    path = Path(entry.path).expanduser()
    if path.is_file():
        return path.parent, True
    return path, False


class _FolderClaims:
    """Which files each registry entry records, by model folder. One repo folder can hold several GGUF
    quants, each its own entry: a file another entry records is not extra for this one. Built once per
    run (a `--all` over thousands of entries must not compare every pair)."""

    def __init__(self, registry: Registry) -> None:
        self._by_root: dict[Path, list[tuple[str, list[str]]]] | None = None
        self._registry = registry

    def others(self, entry: ModelEntry, root: Path) -> set[str]:
        if self._by_root is None:
            self._by_root = {}
            for other in self._registry.entries():
                other_root, _ = _model_root(other)
                if other_root is not None and other.files:
                    key = resolved_path(other_root)
                    self._by_root.setdefault(key, []).append((other.name, [f.path for f in other.files]))
        claimed: set[str] = set()
        for name, paths in self._by_root.get(resolved_path(root), []):
            if name != entry.name:
                claimed.update(paths)
        return claimed


def _plan_model(
    claims: _FolderClaims, entry: ModelEntry, *, quick: bool, record: bool, explicit: bool
) -> _ModelPlan:
    report = VerifyReport(entry.name, entry.path, "quick" if quick else "full")
    plan = _ModelPlan(entry, report)
    plan.snapshot = [(f.path, f.size, f.sha256) for f in entry.files]
    root, single_file = _model_root(entry)
    if root is None:
        if entry.files:
            report.notes.append("the entry records files but no path: nothing to compare them with")
            report.problems.append(NOT_INSTALLED)
        elif explicit:
            report.notes.append("the entry records no path and no files (not downloaded by imageworks?)")
            report.problems.append(NOT_INSTALLED)
        else:
            report.notes.append("no path and no files recorded: nothing on disk to verify")
            report.status = SKIPPED
        return plan
    plan.root = root
    if not root.exists():
        report.notes.append(f"{root} does not exist")
        if not entry.files:
            report.problems.append(MISSING)

    for record_ in entry.files:
        check = FileCheck(record_.path, F_OK, expected_size=record_.size, expected_sha256=record_.sha256)
        report.files.append(check)
        relative = _safe_relative(record_.path)
        if relative is None:
            check.status = F_UNSAFE
            check.detail = "the recorded path would leave the model folder; not read"
            continue
        full = root.joinpath(*relative.parts)
        try:
            st = full.stat()
        except FileNotFoundError:
            check.status = F_MISSING
            continue
        except OSError as exc:
            check.status = F_UNREADABLE
            check.detail = exc.strerror or str(exc)
            continue
        if not full.is_file():
            check.status = F_UNREADABLE
            check.detail = "not a regular file"
            continue
        check.actual_size = st.st_size
        if st.st_size != record_.size:
            # The size alone proves the change; hashing a truncated 10 GB file would only add a digest
            # nobody can use.
            check.status = F_SIZE
            continue
        if quick:
            if record_.mtime_ns is None:
                check.detail = "no mtime recorded: size checked only"
            elif trusted_digest(record_, st.st_size, st.st_mtime_ns) is None and record_.sha256:
                check.status = F_MTIME
                check.detail = "modified since it was last hashed: run a full verify"
            elif record_.mtime_ns != st.st_mtime_ns:  # no digest recorded to trust or distrust
                check.status = F_MTIME
                check.detail = "modified since it was recorded: run a full verify"
            continue
        if record_.sha256 or record:
            plan.pending.append(_Pending(check, full, st.st_size, record_))
        else:
            check.status = F_NO_DIGEST

    if single_file and not entry.files and record and not quick:
        # `path` names the model's one file (a direct-URL GGUF, say): --record makes it the file list.
        full = Path(entry.path or "").expanduser()
        size = full.stat().st_size
        check = FileCheck(full.name, F_OK, actual_size=size)
        report.files.append(check)
        plan.pending.append(_Pending(check, full, size, None))
        plan.listed_from_disk = True
    # An entry that lists no files cannot have extras: it is reported as having no digests instead.
    if root.is_dir() and not single_file and (entry.files or (record and not quick)):
        listed = {f.path for f in entry.files}
        claimed = claims.others(entry, root)
        partial = 0
        for relative in _walk_files(root):
            key = relative.as_posix()
            if key in listed or key in claimed:
                continue
            if is_ours(relative):
                partial += relative.name.endswith(PARTIAL_MARKER)
                continue
            if not entry.files and record and not quick:
                # An entry that lists no files (a hand-written or scanned one): --record makes the folder
                # its file list.
                full = root.joinpath(*relative.parts)
                try:
                    size = full.stat().st_size
                except OSError:
                    size = 0
                check = FileCheck(key, F_OK, actual_size=size)
                report.files.append(check)
                plan.pending.append(_Pending(check, full, size, None))
                plan.listed_from_disk = True
                continue
            try:
                extra_size: int | None = (root / key).stat().st_size
            except OSError:
                extra_size = None
            report.files.append(FileCheck(key, F_EXTRA, actual_size=extra_size))
        if partial:
            report.notes.append(f"{partial} partial download file(s) of an interrupted download ignored")

    undigested = sum(1 for f in report.files if f.status == F_NO_DIGEST)
    if undigested:
        report.notes.append(
            f"{undigested} file(s) have no recorded SHA-256: run `verify --record` to hash and store them"
        )
    if not entry.files and not plan.listed_from_disk and root.exists():
        report.problems.append(NO_DIGESTS)
        report.notes.append(
            "the entry lists no files: run `verify --record` to hash the folder and record its files"
        )
    return plan


# ------------------------------------------------------------------------------------------- remote
def hub_lister(config: Config) -> RemoteLister:
    """List a repo's files at a commit through the one Hub client (`imageworks.hub`)."""
    from imageworks.hub import HubClient

    # Fewer rounds than a download: a verify is a one-shot check, and huggingface_hub retries too.
    client = HubClient(config, retries=2)

    def list_files(repo_id: str, commit: str) -> dict[str, RemoteFile]:
        return {f.path: f for f in client.list_files(repo_id, commit)}

    return list_files


def _check_remote(plan: _ModelPlan, lister: RemoteLister) -> None:
    entry, report = plan.entry, plan.report
    source = entry.source
    if source.provider != "hf" or not source.repo_id:
        report.remote = "skipped: not a Hub model"
        return
    if not source.commit:
        report.remote = "skipped: no commit recorded"
        return
    try:
        remote = lister(source.repo_id, source.commit)
    except HubError as exc:
        report.remote = f"error: {exc.message}"
        report.problems.append(REMOTE_ERROR)
        if exc.hint:
            report.notes.append(f"hint: {exc.hint}")
        return
    mismatches = 0
    by_path = {c.path: c for c in report.files}
    for record_ in entry.files:
        check = by_path[record_.path]
        theirs = remote.get(record_.path)
        if theirs is None:
            mismatches += 1
            _remote_problem(check, F_NOT_ON_HUB, f"not in {source.repo_id} at {source.commit[:12]}")
            continue
        if theirs.size != record_.size:
            mismatches += 1
            _remote_problem(
                check, F_REMOTE, f"the Hub lists {theirs.size} bytes, the registry {record_.size}"
            )
            continue
        if theirs.sha256 is not None:
            check.remote_sha256 = theirs.sha256
            if record_.sha256 and theirs.sha256 != record_.sha256:
                mismatches += 1
                _remote_problem(check, F_REMOTE, "the recorded SHA-256 is not the Hub's")
        elif theirs.git_sha1 and check.status == F_OK and plan.root is not None:
            # A small non-LFS file: the Hub only knows its git blob id. The file on disk was just proven
            # equal to the recorded digest, so its blob id stands in for the recorded one.
            relative = _safe_relative(record_.path)
            if relative is None:
                continue
            try:
                ours = git_blob_sha1_file(plan.root.joinpath(*relative.parts))
            except OSError:
                continue
            if ours != theirs.git_sha1:
                mismatches += 1
                _remote_problem(check, F_REMOTE, f"git blob id {ours} is not the Hub's {theirs.git_sha1}")
    report.remote = "mismatch" if mismatches else "ok"


def _remote_problem(check: FileCheck, status: str, detail: str) -> None:
    # A local problem (missing, changed) is the more useful headline for the file; keep both in detail.
    if check.status in {F_OK, F_NO_DIGEST}:
        check.status = status
        check.detail = detail
    else:
        check.detail = f"{check.detail + '; ' if check.detail else ''}remote: {detail}"


# -------------------------------------------------------------------------------------------- api
def resolve_entries(registry: Registry, names: Sequence[str] | None) -> list[ModelEntry]:
    """The entries to verify: each NAME by the usual rule (exact, alias, HF id, unique substring), or
    every entry when `names` is None. Duplicates are verified once."""
    if names is None:
        return registry.entries()
    if not names:
        raise UsageError("give one or more model names, or --all")
    seen: dict[str, ModelEntry] = {}
    for reference in names:
        entry = find_entry(registry, reference)
        seen.setdefault(entry.name, entry)
    return list(seen.values())


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
) -> list[VerifyReport]:
    """Verify the named models (`names=None`: all of them) and return one report per model.

    A model that verifies clean gets `verified_at` in the discovered layer, and the mtimes of the files
    just hashed are refreshed so a later `--quick` has something to compare with. `record=True` hashes
    and stores the digests an entry lacks (never replaces one that differs: that is what verify
    reports). Bad names raise before any file is read."""
    if quick and record:
        raise UsageError("--record needs the files hashed: drop --quick")
    registry = store.load()
    entries = resolve_entries(registry, names)
    explicit = names is not None
    claims = _FolderClaims(registry)
    plans = [_plan_model(claims, e, quick=quick, record=record, explicit=explicit) for e in entries]

    pending = [p for plan in plans for p in plan.pending]
    total = sum(p.size for p in pending)
    callback = (lambda n: progress(n, total)) if progress is not None else None
    started = time.perf_counter()
    digests = hash_files(
        [p.full_path for p in pending], jobs=jobs, progress=callback, sizes=[p.size for p in pending]
    )
    hash_seconds = time.perf_counter() - started
    by_pending = {id(p): d for p, d in zip(pending, digests, strict=True)}
    for plan in plans:
        if plan.pending:
            plan.report.hash_seconds = hash_seconds
        for item in plan.pending:
            _apply_digest(plan, item, by_pending[id(item)])

    if remote:
        if remote_lister is None:
            if config is None:
                from imageworks.config import resolve_config

                config = resolve_config()
            remote_lister = hub_lister(config)
        for plan in plans:
            if plan.report.status != SKIPPED:
                _check_remote(plan, remote_lister)

    for plan in plans:
        _conclude(plan)
    if not quick:
        _record(store, plans, record=record, command=command, backup=backup)
    return [plan.report for plan in plans]


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
    problems.update(_FILE_PROBLEM[f.status] for f in report.files if f.status in _FILE_PROBLEM)
    if plan.entry.aggregate_sha256 and plan.entry.files and all(f.sha256 for f in plan.entry.files):
        recomputed = aggregate_sha256((f.path, f.sha256) for f in plan.entry.files)
        if recomputed != plan.entry.aggregate_sha256:
            problems.add(INCONSISTENT)
            report.notes.append(
                "the recorded aggregate_sha256 does not match the recorded file digests (registry edited by hand?)"
            )
    report.problems = [p for p in _SEVERITY if p in problems]
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
    todo = [p for p in plans if p.report.status in {OK, RECORDED} and p.root is not None]
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


def first_problem(reports: Iterable[VerifyReport]) -> VerifyReport | None:
    return next((r for r in reports if not r.ok), None)


def summarize(reports: Sequence[VerifyReport]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for report in reports:
        counts[report.status] = counts.get(report.status, 0) + 1
    return counts
