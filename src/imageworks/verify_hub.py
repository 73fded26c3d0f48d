"""`verify --remote`: the digests a registry entry records, checked against the Hub's listing of the
recorded commit (a registry edited by hand, or a download recorded from a corrupted mirror, shows here).
Split from verify.py, which plans, hashes and records; this is the one step that talks to the network."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imageworks.errors import HubError
from imageworks.hashing import git_blob_sha1_file
from imageworks.listing import RepoFile
from imageworks.verify import RemoteLister, _ModelPlan
from imageworks.verify_ahead import safe_relative
from imageworks.verify_report import F_NO_DIGEST, F_NOT_ON_HUB, F_OK, F_REMOTE, REMOTE_ERROR, FileCheck

if TYPE_CHECKING:
    from imageworks.config import Config


def hub_lister(config: Config) -> RemoteLister:
    """List a repo's files at a commit through the one Hub client (`imageworks.hub`)."""
    from imageworks.hub import HubClient

    # Fewer rounds than a download: a verify is a one-shot check, and huggingface_hub retries too.
    client = HubClient(config, retries=2)

    def list_files(repo_id: str, commit: str) -> dict[str, RepoFile]:
        return {f.path: f for f in client.list_files(repo_id, commit)}

    return list_files


def check_remote(plan: _ModelPlan, lister: RemoteLister) -> None:
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
        elif theirs.git_sha1 and check.status == F_OK and plan.folder is not None:
            # A small non-LFS file: the Hub only knows its git blob id. The file on disk was just proven
            # equal to the recorded digest, so its blob id stands in for the recorded one.
            relative = safe_relative(record_.path)
            if relative is None:
                continue
            try:
                ours = git_blob_sha1_file(plan.folder.joinpath(*relative.parts))
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
