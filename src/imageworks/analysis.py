"""`analyze`: what a model offers (formats, GGUF quants, dtype, parameters) before downloading it
(a Hub repo: its listing and Range reads of the weights' headers through `imageworks.hub`) or before
scanning it (a folder on disk: headers only, no network)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.hub import ResolvedUrl


@dataclass
class RepoAnalysis:
    """What a remote repo offers, read from its listing and the headers of its weights (Range reads)."""

    repo_id: str
    revision: str
    commit: str
    files: int
    total_size: int
    inspection: Any  # imageworks.inspect.ModelInspection
    bytes_read: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        ins = self.inspection
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "files": self.files,
            "total_size": self.total_size,
            "format": ins.format,
            "quantization": ins.quantization,
            "bits": ins.bits,
            "dtype": ins.dtype,
            "parameters": ins.parameters,
            "architecture": ins.architecture,
            "context_length": ins.context_length,
            "capabilities": list(ins.capabilities),
            "gguf_quants": list(ins.gguf_quants),
            "offers": [
                {
                    "format": o.format,
                    "quantization": o.quantization,
                    "files": list(o.files),
                    "size": o.size,
                    "role": o.role,
                }
                for o in ins.offers
            ],
            "evidence": [f"{e.signal}: {e.detail}" for e in ins.evidence],
            "problems": list(ins.problems),
            "reason": ins.reason,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
        }


def analyze_folder(folder: Path) -> RepoAnalysis:
    """`analyze PATH`: the same report for a model folder on disk (headers only), so a user can check a
    folder before `scan` the way they check a repo before `download`."""
    from imageworks.inspect import inspect_folder

    started = time.monotonic()
    inspection = inspect_folder(folder)
    return RepoAnalysis(
        repo_id=str(folder),
        revision="(folder)",
        commit="",
        files=len(inspection.files),
        total_size=inspection.total_size,
        inspection=inspection,
        bytes_read=inspection.bytes_read,
        seconds=time.monotonic() - started,
    )


def analyze_repo(
    reference: str, *, config: Config, hub_options: dict[str, Any] | None = None
) -> RepoAnalysis:
    """`analyze OWNER/REPO[@REV]`: the formats and GGUF quants on offer with sizes, and the dtype and
    parameter count of the weights, without downloading them (small files whole, weights' headers by
    Range requests through the resolved CDN URLs)."""
    from imageworks.errors import UsageError
    from imageworks.inspect import inspect_remote
    from imageworks.refs import HubRef, parse_reference

    started = time.monotonic()
    ref = parse_reference(reference, endpoint=str(config.hf_endpoint.value))
    if not isinstance(ref, HubRef):
        raise UsageError("analyze takes a Hub repo (OWNER/REPO[@REV]), not a direct URL")
    from imageworks.hub import HubClient

    with HubClient(config, **(hub_options or {})) as client:
        snap = client.snapshot(ref.repo_id, ref.revision)
        resolved: dict[str, ResolvedUrl] = {}
        sizes = {f.path: f.size for f in snap.files}
        read = 0

        def url_of(path: str) -> ResolvedUrl:
            if path not in resolved:
                resolved[path] = client.resolve_file_url(snap.repo_id, snap.commit, path)
            return resolved[path]

        def read_range(path: str, start: int, end: int) -> bytes:
            nonlocal read
            data = client.read_range(url_of(path), start, end)
            read += len(data)
            return data

        def read_small(path: str) -> bytes:
            return read_range(path, 0, sizes.get(path, 0))

        inspection = inspect_remote(
            list(snap.files),
            read_range,
            read_small,
            name_hint=f"{snap.repo_id}@{snap.revision}",
        )
    return RepoAnalysis(
        repo_id=snap.repo_id,
        revision=snap.revision,
        commit=snap.commit,
        files=len(snap.files),
        total_size=sum(f.size for f in snap.files),
        inspection=inspection,
        bytes_read=read,
        seconds=time.monotonic() - started,
    )
