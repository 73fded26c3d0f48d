"""`outdated`: which Hub models moved on since they were downloaded, and what an update would fetch.

    report = check_outdated(store.load(), names=["owner/repo"], config=config)

Every entry whose source is the Hub (`source.provider == "hf"`, downloads and imported copies alike) and
that follows a branch is checked with ONE metadata request per repo and revision (model info with the
files' metadata: the branch's commit and every file's size, LFS SHA-256 or git blob id), several in flight.
The selection the entry was made with (`source.selection`: format, quant, include, exclude as the user
gave them) is run again on the new listing and compared file by file with the entry's recorded files:

  current        the branch still points at the recorded commit
  metadata only  the commit moved, but no selected file changed except documentation (README, *.md)
  outdated       selected files changed, were added or removed (listed, with the bytes to fetch)
  gone           the repo, the branch or the selected files no longer exist, or we lost access
  pinned         a commit or tag reference, or `pinned: true` in the curated layer: never flagged
  unchecked      the Hub could not be asked (unavailable, rate limited for too long)

An entry recorded before selections were kept is compared by its own files (a file the repo added since
cannot be noticed then; the report says so).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from imageworks.errors import (
    AuthError,
    EntryNotFound,
    GatedRepo,
    HubError,
    RepoNotFound,
    RevisionNotFound,
    UsageError,
)
from imageworks.locations import DEFAULT_BRANCHES

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.hub import HubClient, Snapshot
    from imageworks.listing import RepoFile
    from imageworks.registry import Registry
    from imageworks.registry.schema import FileRecord, ModelEntry

CURRENT = "current"
METADATA_ONLY = "metadata only"
OUTDATED = "outdated"
GONE = "gone"
PINNED = "pinned"
UNCHECKED = "unchecked"
NEEDS_ATTENTION = frozenset({OUTDATED, GONE, UNCHECKED})

DEFAULT_WORKERS = 16
_COMMIT = re.compile(r"[0-9a-f]{40}")


def is_documentation(path: str) -> bool:
    """Files whose change alone does not make a model outdated: the model card and git bookkeeping."""
    p = PurePosixPath(path)
    name = p.name.lower()
    return name.startswith("readme") or name.endswith(".md") or any(s.startswith(".") for s in p.parts)


@dataclass(frozen=True)
class FileChange:
    path: str
    change: str  # "changed" | "added" | "removed"
    size: int  # the new size (the old one for a removed file)
    old_size: int | None = None
    documentation: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "change": self.change,
            "size": self.size,
            "old_size": self.old_size,
            "documentation": self.documentation,
        }


@dataclass
class NewFile:
    """One file of the selection at the new commit; `record` is the entry's file it replaces (None when
    added), `unchanged` when that file is the same bytes."""

    listed: RepoFile
    role: str
    record: FileRecord | None
    unchanged: bool


@dataclass
class ModelStatus:
    name: str
    state: str
    repo_id: str | None
    revision: str | None
    commit: str | None  # recorded
    new_commit: str | None = None
    changes: list[FileChange] = field(default_factory=list)
    reason: str | None = None
    hint: str | None = None
    notes: list[str] = field(default_factory=list)
    entry: ModelEntry | None = field(default=None, repr=False)
    new_files: list[NewFile] = field(default_factory=list, repr=False)
    removed: list[FileRecord] = field(default_factory=list, repr=False)

    @property
    def bytes_to_fetch(self) -> int:
        if self.state != OUTDATED:
            return 0
        return sum(c.size for c in self.changes if c.change != "removed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "new_commit": self.new_commit,
            "changes": [c.as_dict() for c in self.changes],
            "bytes_to_fetch": self.bytes_to_fetch,
            "reason": self.reason,
            "hint": self.hint,
            "notes": self.notes,
        }


@dataclass
class OutdatedReport:
    models: list[ModelStatus]
    requests: int = 0  # metadata requests made (one per repo and revision)
    seconds: float = 0.0

    @property
    def needs_attention(self) -> bool:
        return any(m.state in NEEDS_ATTENTION for m in self.models)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.models:
            out[m.state] = out.get(m.state, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "models": [m.as_dict() for m in self.models],
            "counts": self.counts(),
            "bytes_to_fetch": sum(m.bytes_to_fetch for m in self.models),
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------------------------- choosing


def hub_identity(entry: ModelEntry) -> tuple[str, str | None] | None:
    """(repo id, revision) of the Hub model an entry holds: a download or an import with a Hub source,
    or a GGUF Ollama pulled as `hf.co/OWNER/REPO:QUANT` (from the default branch); None otherwise."""
    src = entry.source
    if src.provider == "hf" and src.repo_id:
        return src.repo_id, src.revision
    repo = src.repo_id or ""
    if src.provider == "ollama" and repo.lower().startswith("hf.co/") and repo.count("/") == 2:
        return repo[len("hf.co/") :], None
    return None


def is_hub_entry(entry: ModelEntry) -> bool:
    return hub_identity(entry) is not None


def pick_entries(registry: Registry, names: Sequence[str], all_: bool) -> list[ModelEntry]:
    """The entries NAME... (a repo id takes all its entries) or every Hub entry (`--all`)."""
    from imageworks.registry import find_entries, find_entry

    if bool(names) == all_:
        raise UsageError("give model NAMEs or --all (not both)", hint="see `imageworks-download list`")
    if all_:  # a scanned folder's repo id is a guess from its path: without a commit it is not checked
        return [e for e in registry.entries() if is_hub_entry(e) and e.source.commit]
    picked: dict[str, ModelEntry] = {}
    for name in names:
        matches = find_entries(registry, name)
        repo_wide = len(matches) > 1 and all(
            (e.source.repo_id or "").lower() == name.lower().removeprefix("hf://") for e in matches
        )
        for entry in matches if repo_wide else [find_entry(registry, name)]:
            if not is_hub_entry(entry):
                raise UsageError(
                    f"{entry.name} did not come from the Hub: there is nothing to compare it with",
                    hint="outdated and update apply to models downloaded or imported from the Hub",
                )
            picked[entry.name] = entry
    return list(picked.values())


def pin_reason(entry: ModelEntry) -> str | None:
    """Why an entry never moves, from the registry alone (a tag needs the Hub: see `_ask_hub`)."""
    if getattr(entry, "pinned", None):
        return "pinned in the curated registry (pinned: true)"
    identity = hub_identity(entry)
    revision = identity[1] if identity else None
    if revision and _COMMIT.fullmatch(revision.lower()):
        return f"pinned to commit {revision[:12]}"
    return None


def follows_branch(revision: str | None) -> bool:
    return revision is None or revision in DEFAULT_BRANCHES


# ---------------------------------------------------------------------------------------- comparing


def selection_of(entry: ModelEntry) -> dict[str, Any] | None:
    value = getattr(entry.source, "selection", None)
    return value if isinstance(value, dict) else None


def _same_bytes(record: FileRecord, listed: RepoFile, folder: Path | None) -> bool:
    if listed.sha256 is not None:
        return record.sha256 == listed.sha256
    if record.size != listed.size:
        return False
    known = getattr(record, "git_sha1", None)
    if isinstance(known, str):
        return known == listed.git_sha1
    if folder is None or listed.git_sha1 is None:
        return False
    # A small file's listing gives its git blob id, not its SHA-256: hash the local copy (a few KB).
    from imageworks.hashing import git_blob_sha1_file

    relative = PurePosixPath(record.path)
    if relative.is_absolute() or ".." in relative.parts:
        return False
    # Only read: a symlink out of the folder is fine here (the Hugging Face cache links into blobs/).
    local = folder.joinpath(*relative.parts)
    try:
        if local.stat().st_size != record.size:
            return False
        return git_blob_sha1_file(local) == listed.git_sha1
    except OSError:
        return False


def _old_by_repo_path(entry: ModelEntry, snap: Snapshot) -> dict[str, FileRecord]:
    """The entry's files keyed by their path in the repo. Imported copies may store a file under another
    name (Ollama's blobs/sha256-HEX): such a file is matched by its SHA-256, else by its GGUF quant."""
    from imageworks.select import gguf_label

    listing = {f.path: f for f in snap.files}
    by_sha = {f.sha256: f.path for f in snap.files if f.sha256}
    quant = (entry.quantization or "").upper() if entry.format == "gguf" else ""
    ollama = entry.metadata.get("ollama")
    weights = set(ollama.get("weights") or ()) if isinstance(ollama, dict) else set()
    out: dict[str, FileRecord] = {}
    for record in entry.files:
        path = record.path
        if path not in listing:
            if record.sha256 and record.sha256 in by_sha:
                path = by_sha[record.sha256]
            elif record.path.startswith("sha256-") and record.sha256 not in weights:
                continue  # Ollama's own config, template and parameter layers: no file of the repo
            elif quant and (record.path.lower().endswith(".gguf") or "sha256-" in record.path):
                same_quant = [
                    f.path
                    for f in snap.files
                    if f.path.lower().endswith(".gguf") and gguf_label(f.path).upper() == quant
                ]
                if len(same_quant) == 1:
                    path = same_quant[0]
        out.setdefault(path, record)
    return out


def _reselect(
    entry: ModelEntry, snap: Snapshot, old: dict[str, FileRecord]
) -> tuple[dict[str, tuple[RepoFile, str]], list[str]]:
    """The files the entry's selection picks at the new commit, path -> (file, role); raises UsageError or
    EntryNotFound when the selection no longer matches anything."""
    from imageworks.formats import canonical_format
    from imageworks.select import select_files

    selection = selection_of(entry)
    listing = {f.path: f for f in snap.files}
    if selection is None:
        note = "the selection was not recorded at download time: compared the entry's own files only"
        return {p: (listing[p], "recorded") for p in old if p in listing}, [note]
    quant = selection.get("quant")
    if entry.format == "gguf" and entry.quantization and not selection.get("path"):
        # One download of several quants made one entry per quant: each follows its own quant.
        quant = entry.quantization
    fmt = selection.get("format")
    if fmt is None and entry.format and canonical_format(entry.format):
        # The format the download settled on, so a repo that adds safetensors beside its .bin files
        # does not turn an update into a switch of format.
        fmt = entry.format
    chosen = select_files(
        snap.files,
        format=fmt,
        quant=quant,
        include=list(selection.get("include") or ()),
        exclude=list(selection.get("exclude") or ()),
        path=selection.get("path"),
        folder=selection.get("folder"),
    )
    return {s.file.path: (s.file, s.role) for s in chosen.files}, []


def compare(status: ModelStatus, entry: ModelEntry, snap: Snapshot) -> None:
    """Fill `status` (state, changes, new_files) from the new listing."""
    status.new_commit = snap.commit
    if entry.source.commit and entry.source.commit == snap.commit:
        status.state = CURRENT
        return
    old = _old_by_repo_path(entry, snap)
    try:
        new, notes = _reselect(entry, snap, old)
    except (UsageError, EntryNotFound) as exc:
        status.state = GONE
        status.reason = f"the files this entry selected are gone at commit {snap.commit[:12]}: {exc.message}"
        status.hint = exc.hint or "download the model again with another selection"
        return
    status.notes.extend(notes)
    folder = Path(entry.path) if entry.path else None
    changes: list[FileChange] = []
    for path, (listed, role) in sorted(new.items()):
        record = old.get(path)
        unchanged = record is not None and _same_bytes(record, listed, folder)
        status.new_files.append(NewFile(listed, role, record, unchanged))
        if record is None:
            changes.append(FileChange(path, "added", listed.size, None, is_documentation(path)))
        elif not unchanged:
            changes.append(FileChange(path, "changed", listed.size, record.size, is_documentation(path)))
    for path, record in sorted(old.items()):
        if path not in new:
            status.removed.append(record)
            changes.append(FileChange(path, "removed", record.size, record.size, is_documentation(path)))
    status.changes = changes
    if not new:
        status.state = GONE
        status.reason = f"none of this entry's files exist at commit {snap.commit[:12]}"
        status.hint = "the repo was reorganised: download it again"
    elif any(not c.documentation for c in changes):
        status.state = OUTDATED
    elif changes or (entry.source.commit and entry.source.commit != snap.commit):
        status.state = METADATA_ONLY
    else:
        status.state = CURRENT


# ---------------------------------------------------------------------------------------- the Hub


def _gone_reason(exc: HubError, repo_id: str, revision: str) -> tuple[str, str, str | None]:
    """(state, reason, hint) for a failed check."""
    if isinstance(exc, RepoNotFound):
        return (
            GONE,
            f"repository {repo_id} not found (HTTP 404): deleted, renamed or made private",
            "the files on disk still work; `remove NAME` drops the entry, or download the model's new home",
        )
    if isinstance(exc, RevisionNotFound):
        return GONE, f"{repo_id} has no branch {revision!r} any more", exc.hint
    if isinstance(exc, GatedRepo):
        return GONE, f"gated now: {exc.message}", exc.hint
    if isinstance(exc, AuthError):
        return GONE, f"no access now: {exc.message}", exc.hint
    return UNCHECKED, f"could not ask the Hub: {exc.message}", exc.hint


def _ask_hub(client: HubClient, repo_id: str, revision: str | None) -> Snapshot | str | HubError:
    """The listing of the branch, "tag" when the revision is a tag, or the error the Hub gave."""
    try:
        if not follows_branch(revision) and revision is not None and client.is_tag(repo_id, revision):
            return "tag"
        return client.model_files(repo_id, revision)
    except HubError as exc:
        return exc


def check_entries(
    entries: Sequence[ModelEntry],
    *,
    config: Config,
    workers: int = DEFAULT_WORKERS,
    hub_options: dict[str, Any] | None = None,
) -> OutdatedReport:
    """Check `entries` (see the module docstring): one request per repo and revision, `workers` at once."""
    from imageworks.hub import HubClient

    started = time.monotonic()
    statuses: list[ModelStatus] = []
    to_ask: dict[tuple[str, str | None], tuple[str, str | None]] = {}
    for entry in entries:
        identity = hub_identity(entry)
        assert identity is not None
        repo_id, revision = identity
        status = ModelStatus(entry.name, UNCHECKED, repo_id, revision, entry.source.commit, entry=entry)
        statuses.append(status)
        reason = pin_reason(entry)
        if reason is not None:
            status.state, status.reason = PINNED, reason
            continue
        to_ask.setdefault((repo_id.lower(), revision), (repo_id, revision))
    answers: dict[tuple[str, str | None], Snapshot | str | HubError] = {}
    token: str | None = None
    if to_ask:
        with HubClient(config, **(hub_options or {})) as client:
            keys = list(to_ask)
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
                results = pool.map(lambda k: _ask_hub(client, *to_ask[k]), keys)
                answers = dict(zip(keys, results, strict=True))
            token = client.token
    for status in statuses:
        if status.state == PINNED:
            continue
        model = status.entry
        assert model is not None and status.repo_id
        answer = answers[(status.repo_id.lower(), status.revision)]
        if answer == "tag":
            status.state, status.reason = PINNED, f"pinned to tag {status.revision}"
        elif isinstance(answer, HubError):
            status.state, status.reason, status.hint = _gone_reason(
                answer, status.repo_id, status.revision or "main"
            )
        elif not isinstance(answer, str):
            if answer.gated and not token:
                status.state, status.new_commit = GONE, answer.commit
                status.reason = f"gated now: {answer.repo_id} asks for a licence acceptance and a login"
                status.hint = "accept the licence on the model page, then run `hf auth login` or set HF_TOKEN"
                continue
            compare(status, model, answer)
    return OutdatedReport(statuses, requests=len(to_ask), seconds=time.monotonic() - started)


def check_outdated(
    registry: Registry,
    *,
    names: Sequence[str] = (),
    all_: bool = False,
    config: Config,
    workers: int = DEFAULT_WORKERS,
    hub_options: dict[str, Any] | None = None,
) -> OutdatedReport:
    """`outdated NAME...|--all`."""
    entries = pick_entries(registry, names, all_)
    return check_entries(entries, config=config, workers=workers, hub_options=hub_options)
