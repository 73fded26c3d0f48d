"""Resolve, the first step of `download`: a parsed reference pinned to one commit (or a direct URL probed),
its files chosen from the listing (`imageworks.select`), the location and the model folder decided. No
byte of the model is fetched and the disk is not looked at (that is the plan's job, under the model's
lock). A `--format` naming a kind of safetensors checkpoint (awq, gptq, ...) is checked against the
repo's configs here, and a branch without weights is refused naming the branches that hold them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from imageworks.errors import HubError, UsageError
from imageworks.locations import model_folder, resolve_location, safe_component
from imageworks.redaction import redact_url
from imageworks.refs import HubRef, UrlRef

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.downloader import DownloadOptions
    from imageworks.hub import HubClient, Snapshot
    from imageworks.registry.schema import Source
    from imageworks.select import Selection

# How many other branches are listed to find the ones holding weights, when the asked one holds none.
MAX_BRANCHES_LISTED = 8


@dataclass
class Resolved:
    """A reference pinned and its files chosen: everything the plan needs except the disk."""

    source: Source
    folder: Path
    plan_args: dict[str, Any]  # build_plan's arguments besides the disk
    hub: HubClient | None = None
    url: str | None = None  # what the engine GETs for a direct URL


def resolve_hub(ref: HubRef, reference: str, options: DownloadOptions, config: Config) -> Resolved:
    from imageworks.hub import HubClient
    from imageworks.registry.schema import Source
    from imageworks.select import select_files

    if options.sha256:
        raise UsageError("--sha256 applies to direct URL downloads (the Hub gives every file's digest)")
    hub = HubClient(config, **options.hub_options)
    try:
        snap = hub.snapshot(ref.repo_id, ref.revision)
        selection = select_files(
            snap.files,
            format=options.format,
            quant=options.quant,
            include=options.include,
            exclude=options.exclude,
            path=ref.path,
            folder=ref.folder,
        )
        if selection.format is None and ref.path is None:
            _refuse_branch_without_weights(hub, snap)
        if selection.flavour is not None:
            _check_flavour(hub, snap, selection)
    except BaseException:
        hub.close()
        raise
    loc = resolve_location(config, options.location, prefer_lmstudio=selection.format == "gguf")
    folder = model_folder(loc.root, snap.repo_id, ref.revision)
    notes = list(selection.notes)
    if snap.repo_id != ref.repo_id:
        notes.insert(0, f"{ref.repo_id} is {snap.repo_id} on the Hub")
    rows = [
        (s.file.path, s.file.size, s.file.sha256, None if s.file.lfs else s.file.git_sha1, s.role)
        for s in selection.files
    ]
    plan_args = dict(
        reference=reference,
        provider="hf",
        location=loc,
        folder=folder,
        files=rows,
        format=selection.format,
        quants=selection.quants,
        available_quants=selection.available_quants,
        notes=notes,
        repo_id=snap.repo_id,
        revision=snap.revision,
        commit=snap.commit,
    )
    source = Source.model_validate(
        {
            "provider": "hf",
            "repo_id": snap.repo_id,
            "revision": snap.revision,
            "commit": snap.commit,
            "selection": options.selection(),
        }
    )
    return Resolved(source, folder, plan_args, hub=hub)


def _refuse_branch_without_weights(hub: HubClient, snap: Snapshot) -> None:
    """A revision without weights (the `main` of an EXL2 repo holds only a README: each bit rate is its own
    branch) is refused, naming the branches that hold weights. A repo with no weights anywhere goes on
    (configs and docs only)."""
    from concurrent.futures import ThreadPoolExecutor

    from imageworks.select import weight_kind

    try:
        branches = hub.list_branches(snap.repo_id)
    except HubError:
        return  # only a better message is lost
    others = [b for b in branches if b != snap.revision][:MAX_BRANCHES_LISTED]

    def holds_weights(branch: str) -> bool:
        try:
            files = hub.snapshot(snap.repo_id, branch).files
        except HubError:
            return False
        return any(weight_kind(f.path) for f in files)

    with ThreadPoolExecutor(max_workers=4) as pool:
        found = [b for b, ok in zip(others, pool.map(holds_weights, others), strict=True) if ok]
    if found:
        raise UsageError(
            f"{snap.repo_id}@{snap.revision} holds no weights; {', '.join(found)} "
            f"{'does' if len(found) == 1 else 'do'}",
            hint=f"download one branch: {snap.repo_id}@{found[0]}",
        )


def _check_flavour(hub: HubClient, snap: Snapshot, selection: Selection) -> None:
    """`--format awq|gptq|exl2|...` names a kind of safetensors checkpoint that only the repo's configs
    (and tensor headers) reveal: read them (small files and Range reads, no weights) and refuse a repo
    that holds another kind, naming what it holds."""
    from imageworks.inspect import inspect_remote

    urls: dict[str, Any] = {}
    sizes = {s.file.path: s.file.size for s in selection.files}

    def read_range(path: str, start: int, end: int) -> bytes:
        if path not in urls:
            urls[path] = hub.resolve_file_url(snap.repo_id, snap.commit, path)
        return hub.read_range(urls[path], start, end)

    inspection = inspect_remote(
        [s.file for s in selection.files],
        read_range,
        lambda path: read_range(path, 0, sizes.get(path, 0)),
        name_hint=f"{snap.repo_id}@{snap.revision}",
    )
    if inspection.format == selection.flavour:
        return
    held = [inspection.format, *(f for f in selection.formats_present if f != "safetensors")]
    raise UsageError(
        f"this repo has no {selection.flavour} weights (formats present: {', '.join(held)})",
        hint="pick one of the formats present with --format, or another repo/revision",
    )


def resolve_url(ref: UrlRef, options: DownloadOptions, config: Config) -> Resolved:
    from imageworks.formats import weight_stem
    from imageworks.registry.schema import Source
    from imageworks.select import weight_kind

    if options.quant or options.include or options.exclude:
        raise UsageError("--quant, --include and --exclude apply to Hub repos, not to a direct URL")
    from imageworks.hub import probe_url

    disposition_name, size = probe_url(ref.url)
    raw_name = disposition_name or PurePosixPath(urlsplit(ref.url).path).name or "download"
    name = safe_component(raw_name)
    host = safe_component(urlsplit(ref.url).hostname or "host")
    # The folder is named after the file; a long name keeps its first 100 characters (the file its own).
    stem = safe_component((weight_stem(name) or name)[:100])
    loc = resolve_location(config, options.location)
    folder = loc.root / host / stem if loc.name == "windows_lmstudio" else loc.root / "url" / host / stem
    kind = weight_kind(name)
    plan_args = dict(
        reference=redact_url(ref.url),
        provider="url",
        location=loc,
        folder=folder,
        files=[(name, size, options.sha256, None, "weights" if kind else "included")],
        format=kind or (options.format.lower() if options.format else None),
        url=redact_url(ref.url),
    )
    source = Source.model_validate(
        {"provider": "url", "url": redact_url(ref.url), "selection": options.selection()}
    )
    return Resolved(source, folder, plan_args, url=ref.url)
