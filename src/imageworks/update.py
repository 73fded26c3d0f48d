"""`update`: bring outdated Hub models to their branch's new commit, fetching only what changed.

    report = update_models(names=["owner/repo"], config=config)

For each entry `outdated` finds outdated (see `imageworks.outdated`):
1. plan: each file of the selection at the new commit is reused as it is (same bytes: no network, no
   copy), found already in place (an interrupted update had switched it), found complete in the staging
   folder, or fetched;
2. fetch: changed and new files go to `<folder>/.imageworks-update-<commit12>/<path>` with the normal
   engines (resume, verification, stall handling) while the old files stay untouched;
3. switch: once every new file is verified, each is renamed over its old name (atomic per file), then the
   files that left the selection are deleted (unless another entry lists them);
4. record: one registry transaction for the whole command, whose change-log line names each model's old
   and new commit and the files that changed.
A crash before 4 leaves the entry at its old commit; running `update` again resumes: partial and staged
files are reused and files already switched are recognised by their digest.

`keep_old`: before the switch, the old files are hardlinked into `<folder>@<old commit12>` (built under a
hidden name and renamed when complete) and recorded as the entry `NAME@<old commit12>`, pinned to the old
commit. Unchanged files are then shared by both folders; nothing is copied.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks import update_steps as steps
from imageworks.errors import ImageworksError
from imageworks.outdated import (
    OUTDATED,
    FileChange,
    ModelStatus,
    OutdatedReport,
    check_entries,
    pick_entries,
)

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.hub import HubClient
    from imageworks.registry import Registry
    from imageworks.transfer import Engine, ProgressSink

UPDATED = "updated"
WOULD_UPDATE = "would update"
UNCHANGED = "nothing to do"
STALE = "stale"
FAILED = "failed"


@dataclass
class UpdatedModel:
    name: str
    state: str  # UPDATED, WOULD_UPDATE, UNCHANGED, STALE, FAILED
    check: str  # the state `outdated` found
    commit: str | None
    new_commit: str | None
    changes: list[FileChange] = field(default_factory=list)
    bytes_to_fetch: int = 0  # what the plan had left to fetch (resumed bytes excluded)
    bytes_fetched: int = 0
    bytes_resumed: int = 0  # of an interrupted update, found on disk
    files_fetched: int = 0
    files_reused: int = 0
    kept_as: str | None = None
    stale_copies: list[str] = field(default_factory=list)
    copies_updated: list[str] = field(default_factory=list)
    reason: str | None = None
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "check": self.check,
            "commit": self.commit,
            "new_commit": self.new_commit,
            "changes": [c.as_dict() for c in self.changes],
            "bytes_to_fetch": self.bytes_to_fetch,
            "bytes_fetched": self.bytes_fetched,
            "bytes_resumed": self.bytes_resumed,
            "files_fetched": self.files_fetched,
            "files_reused": self.files_reused,
            "kept_as": self.kept_as,
            "stale_copies": self.stale_copies,
            "copies_updated": self.copies_updated,
            "reason": self.reason,
            "hint": self.hint,
        }


@dataclass
class UpdateReport:
    models: list[UpdatedModel]
    dry_run: bool
    check: OutdatedReport
    recorded: bool = False
    engine: str | None = None

    @property
    def failed(self) -> bool:
        return any(m.state == FAILED for m in self.models) or any(
            m.state == "gone" for m in self.check.models
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "recorded": self.recorded,
            "engine": self.engine,
            "models": [m.as_dict() for m in self.models],
            "bytes_fetched": sum(m.bytes_fetched for m in self.models),
        }


# ------------------------------------------------------------------------------------------ the command


def _skipped(status: ModelStatus) -> UpdatedModel:
    state = FAILED if status.state in ("gone", "unchecked") else UNCHANGED
    return UpdatedModel(
        status.name,
        state,
        status.state,
        status.commit,
        status.new_commit,
        list(status.changes),
        reason=status.reason,
        hint=status.hint,
    )


@dataclass(frozen=True)
class UpdateOptions:
    dry_run: bool = False
    keep_old: bool = False
    engine: str = "auto"
    connections: int = 16
    no_aria2: bool = False
    stall_timeout: float = 30.0
    backup: bool = True
    hub_options: dict[str, Any] = field(default_factory=dict)


def _result_of(status: ModelStatus) -> UpdatedModel:
    """What `update` can do for a model, before touching it: nothing (not outdated), report it stale
    (another tool's store), fail (its folder is gone), or update it (WOULD_UPDATE)."""
    if status.state != OUTDATED:
        return _skipped(status)
    result = UpdatedModel(
        status.name, WOULD_UPDATE, status.state, status.commit, status.new_commit, list(status.changes)
    )
    entry = status.entry
    assert entry is not None
    tool = steps.foreign_store(entry)
    if tool is not None:
        result.state = STALE
        result.reason = f"its files are in {tool}, which imageworks does not write"
        result.hint = f"update it with that tool, or `imageworks-download download {status.repo_id}`"
    elif not entry.path or not Path(entry.path).is_dir():
        result.state, result.reason = FAILED, f"its folder {entry.path} is missing"
        result.hint = f"download it again: imageworks-download download {status.repo_id}"
    return result


def _update_one(
    status: ModelStatus,
    result: UpdatedModel,
    *,
    registry: Registry,
    updating: set[str],
    hub: HubClient,
    engine: Engine | None,
    progress: ProgressSink,
    options: UpdateOptions,
) -> steps.Work | None:
    """Plan, fetch, keep the old revision if asked, switch. The work to record, None on a dry run or a
    failure (in `result`)."""
    try:
        work = steps.plan_model(status, result)
        result.stale_copies = steps.stale_copies(work, registry, updating)
        if engine is None:
            return None
        from imageworks.model_lock import hold

        def waiting() -> None:
            progress.message(f"waiting for another download or update of {status.name} to finish")

        with hold(work.folder, waiting):  # one writer per model folder, as for download
            steps.fetch(work, hub, engine, progress)
            if options.keep_old:
                steps.keep_old(work)
            steps.switch(work, registry)
        return work
    except ImageworksError as exc:
        result.state, result.reason, result.hint = FAILED, exc.message, exc.hint
    except OSError as exc:
        result.state, result.reason = (
            FAILED,
            f"{exc.filename or (status.entry.path if status.entry else status.name)}: {exc.strerror}",
        )
        result.hint = "fix the folder's permissions or free space and run update again: it resumes"
    return None


def update_models(
    *,
    names: Sequence[str] = (),
    all_: bool = False,
    config: Config,
    options: UpdateOptions | None = None,
    progress: ProgressSink | None = None,
    command: Sequence[str] | str | None = None,
) -> UpdateReport:
    """`update NAME...|--all` (see the module docstring)."""
    from imageworks.hub import HubClient
    from imageworks.registry import RegistryStore
    from imageworks.transfer import NullProgress, choose_engine

    opts = options or UpdateOptions()
    engine = None
    if not opts.dry_run:
        engine = choose_engine(
            opts.engine,
            connections=opts.connections,
            single_stream=opts.no_aria2,
            stall_timeout=opts.stall_timeout,
        )
    registry = RegistryStore(config.registry_path).load()
    entries = pick_entries(registry, names, all_)
    check = check_entries(entries, config=config, hub_options=opts.hub_options)
    report = UpdateReport(
        [_result_of(s) for s in check.models], opts.dry_run, check, engine=engine.name if engine else None
    )
    updating = {s.name for s in check.models if s.state == OUTDATED}
    works: list[steps.Work] = []
    with HubClient(config, **opts.hub_options) as hub:
        for status, result in zip(check.models, report.models, strict=True):
            if result.state != WOULD_UPDATE:
                continue
            work = _update_one(
                status,
                result,
                registry=registry,
                updating=updating,
                hub=hub,
                engine=engine,
                progress=progress or NullProgress(),
                options=opts,
            )
            if work is not None:
                works.append(work)
    if works:
        statuses = {status.name: status for status in check.models}
        steps.record(works, statuses, config=config, command=command, backup=opts.backup)
        report.recorded = True
        for work in works:
            work.result.state = UPDATED
            shutil.rmtree(work.stage, ignore_errors=True)
    return report
