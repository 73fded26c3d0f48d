"""What a remote holds (`remote ls`) and whether its objects match the recorded digests
(`verify --remote-store`: a HEAD per object and its sha256 metadata; `--deep` reads every byte)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imageworks.errors import ImageworksError
from imageworks.remote.client import S3Client, check_bucket, head, make_client, metadata_sha256, s3_errors
from imageworks.remote.config import Remote
from imageworks.remote.manifest import Manifest, blob_key
from imageworks.remote.pull import list_manifest_names, read_manifest

if TYPE_CHECKING:
    from imageworks.registry import ModelEntry, Registry

READ_BLOCK = 4 * 1024 * 1024


@dataclass
class StoredModel:
    name: str
    files: int
    size_bytes: int
    format: str | None
    quantization: str | None
    repo_id: str | None
    commit: str | None
    pushed_at: str | None
    local: bool  # the registry has it with the same digests and its folder exists
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _same_locally(registry: Registry, manifest: Manifest) -> bool:
    from imageworks.inventory import is_installed

    entry = registry.get(manifest.name)
    if entry is None or not is_installed(entry):
        return False
    recorded = {f.path: f.sha256 for f in entry.files}
    return all(recorded.get(f.path) == f.sha256 for f in manifest.files)


def list_store(registry: Registry, remote: Remote, *, client: S3Client | None = None) -> list[StoredModel]:
    client = client or make_client(remote)
    check_bucket(client, remote)
    out = []

    def describe(name: str) -> StoredModel:
        try:
            manifest = read_manifest(client, remote, name)
        except ImageworksError as exc:
            return StoredModel(name, 0, 0, None, None, None, None, None, False, error=exc.message)
        if manifest is None:  # deleted while we listed
            return StoredModel(name, 0, 0, None, None, None, None, None, False, error="manifest vanished")
        return StoredModel(
            name=name,
            files=len(manifest.files),
            size_bytes=manifest.size_bytes,
            format=manifest.format,
            quantization=manifest.quantization,
            repo_id=manifest.source.get("repo_id"),
            commit=manifest.source.get("commit"),
            pushed_at=manifest.pushed_at,
            local=_same_locally(registry, manifest),
        )

    with ThreadPoolExecutor(max_workers=remote.concurrency) as pool:
        out = list(pool.map(describe, list_manifest_names(client, remote)))
    return out


@dataclass
class ObjectCheck:
    path: str
    key: str
    status: str  # ok | missing | size differs | no digest metadata | metadata differs | content differs
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class StoreCheck:
    name: str
    status: str = "ok"  # ok | problems | not in store | bad manifest
    mode: str = "head"
    files: list[ObjectCheck] = field(default_factory=list)
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def problems(self) -> list[ObjectCheck]:
        return [f for f in self.files if f.status != "ok"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "ok": self.ok,
            "mode": self.mode,
            "detail": self.detail,
            "files": [f.as_dict() for f in self.files],
        }


def _read_digest(client: S3Client, remote: Remote, key: str) -> str:
    digest = hashlib.sha256()
    with s3_errors(remote, f"reading {key}"):
        body = client.get_object(Bucket=remote.bucket, Key=key)["Body"]
        try:
            for block in iter(lambda: body.read(READ_BLOCK), b""):
                digest.update(block)
        finally:
            body.close()
    return digest.hexdigest()


def _check_object(
    client: S3Client, remote: Remote, path: str, size: int, sha256: str, recorded: str | None, deep: bool
) -> ObjectCheck:
    key = remote.key(blob_key(sha256))
    check = ObjectCheck(path, key, "ok")
    answer = head(client, remote, key)
    if answer is None:
        check.status = "missing"
    elif answer.get("ContentLength") != size:
        check.status, check.detail = (
            "size differs",
            f"manifest {size} bytes, store {answer.get('ContentLength')}",
        )
    elif metadata_sha256(answer) is None:
        check.status = "no digest metadata"
    elif metadata_sha256(answer) != sha256:
        check.status, check.detail = "metadata differs", f"object metadata sha256 {metadata_sha256(answer)}"
    elif recorded is not None and recorded != sha256:
        check.status, check.detail = "registry differs", f"registry sha256 {recorded}"
    if deep and check.status in {"ok", "no digest metadata"}:
        actual = _read_digest(client, remote, key)
        if actual != sha256:
            check.status, check.detail = "content differs", f"store bytes hash to {actual}"
    return check


def _local_name(registry: Registry, name: str) -> str:
    """The registry's name for what the user typed; a model only the store holds keeps its name."""
    from imageworks.errors import ModelNotFound
    from imageworks.registry import find_entry

    try:
        return find_entry(registry, name).name
    except ModelNotFound:
        return name


def verify_store(
    registry: Registry,
    remote: Remote,
    names: Sequence[str] = (),
    *,
    deep: bool = False,
    client: S3Client | None = None,
) -> list[StoreCheck]:
    """Check the store's objects of NAMES (default: every model the store holds) against the manifests
    and against the digests the registry recorded."""
    client = client or make_client(remote)
    check_bucket(client, remote)
    wanted = [_local_name(registry, n) for n in names] if names else list_manifest_names(client, remote)
    reports = []
    with ThreadPoolExecutor(max_workers=remote.concurrency) as pool:
        for name in wanted:
            report = StoreCheck(name, mode="deep" if deep else "head")
            reports.append(report)
            try:
                manifest = read_manifest(client, remote, name)
            except ImageworksError as exc:
                report.status, report.detail = "bad manifest", exc.message
                continue
            if manifest is None:
                report.status = "not in store"
                continue
            entry: ModelEntry | None = registry.get(name)
            recorded = {f.path: f.sha256 for f in entry.files} if entry is not None else {}
            futures = [
                pool.submit(
                    _check_object, client, remote, f.path, f.size, f.sha256, recorded.get(f.path), deep
                )
                for f in manifest.files
            ]
            report.files = [future.result() for future in futures]
            if report.problems:
                report.status = "problems"
    return reports
