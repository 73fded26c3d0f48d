"""Ollama's store as a shelf: import its models in place, link ours into it.

Layout (ollama `server/manifest.go`, `server/layer.go`, `types/model/name.go`; Ollama's internal format):
  <models>/manifests/HOST/NAMESPACE/MODEL/TAG   the manifest: {"schemaVersion":2,"mediaType":...,
                                                "config":{layer},"layers":[{layer},...]} (json.Encoder:
                                                compact, one trailing newline); HOST defaults to
                                                registry.ollama.ai, NAMESPACE to library, TAG to latest
  <models>/blobs/sha256-HEX                     every layer and the config, named by its SHA-256
Layers `application/vnd.ollama.image.model`, `.projector` and `.adapter` are weights; template, params,
system and license layers are metadata.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.hashing import aggregate_sha256
from imageworks.stores.importing import Found, ImportResult

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
MEDIA = "application/vnd.ollama.image."
WEIGHT_LAYERS = {MEDIA + "model", MEDIA + "projector", MEDIA + "adapter"}
TEXT_LAYERS = {"template", "params", "system", "license", "messages"}
MANIFEST_MEDIA = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA = "application/vnd.docker.container.image.v1+json"
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_MAX_MANIFEST = 1 << 20
_MAX_TEXT = 64 * 1024

if TYPE_CHECKING:
    from imageworks.registry import Registry


def blob_name(digest: str) -> str:
    """`sha256:HEX` -> `sha256-HEX` (ollama GetBlobsPath)."""
    return digest.replace(":", "-", 1)


def display_name(host: str, namespace: str, model: str, tag: str) -> str:
    prefix = "" if host == DEFAULT_HOST else f"{host}/"
    return f"{prefix}{namespace}/{model}:{tag}"


def entry_name(host: str, namespace: str, model: str, tag: str) -> str:
    slug = re.sub(r"[^a-z0-9._\-/:]+", "-", display_name(host, namespace, model, tag).lower())
    return f"ollama/{slug}"


def _read_json(path: Path, limit: int) -> Any:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _layers(manifest: Any) -> list[dict[str, Any]] | None:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        return None
    out = []
    for layer in [manifest.get("config"), *manifest["layers"]]:
        if not isinstance(layer, dict) or not _DIGEST.match(str(layer.get("digest", ""))):
            return None
        out.append(layer)
    return out


def _text(blob: Path) -> str | None:
    try:
        if blob.stat().st_size > _MAX_TEXT:
            return None
        return blob.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _read_layers(
    layers: list[dict[str, Any]], blobs: Path
) -> tuple[list, list[str], dict[str, str], list[str]]:
    """(file records, weight digests, text layers, missing blobs) of one manifest's layers."""
    from imageworks.registry.schema import FileRecord

    records, weights, meta, missing = [], [], {}, []
    for index, layer in enumerate(layers):
        hexdigest = _DIGEST.match(layer["digest"]).group(1)  # type: ignore[union-attr]
        blob = blobs / blob_name(layer["digest"])
        try:
            st = blob.stat()
        except OSError:
            missing.append(blob.name)
            continue
        media = str(layer.get("mediaType", ""))
        records.append(
            FileRecord(
                path=blob.name, size=st.st_size, sha256=hexdigest, mtime_ns=st.st_mtime_ns,
                dev=st.st_dev, inode=st.st_ino,
            )
        )  # fmt: skip
        if media in WEIGHT_LAYERS:
            weights.append(hexdigest)
        kind = media.removeprefix(MEDIA).split(";")[0]
        if index > 0 and kind in TEXT_LAYERS:
            text = _text(blob)
            if text is not None:
                meta[kind] = text
    return records, weights, meta, missing


def find(models: Path, registry: Registry | None = None) -> tuple[list[Found], ImportResult]:
    from imageworks.registry.schema import ModelEntry, Source

    result = ImportResult("ollama", models)
    found: list[Found] = []
    manifests, blobs = models / "manifests", models / "blobs"
    if not manifests.is_dir():
        result.notes.append(f"{models} holds no Ollama manifests: nothing to import")
        return found, result
    # Exactly four levels, as Ollama itself globs them (server/manifest.go Manifests()).
    for path in sorted(manifests.glob("*/*/*/*")):
        if not path.is_file():
            continue
        host, namespace, model, tag = path.relative_to(manifests).parts
        shown = display_name(host, namespace, model, tag)
        layers = _layers(_read_json(path, _MAX_MANIFEST))
        if layers is None:
            result.notes.append(f"{path}: not an Ollama manifest; skipped")
            continue
        records, weights, meta, missing = _read_layers(layers, blobs)
        if missing or not weights:
            why = f"missing blobs {', '.join(missing[:3])}" if missing else "no weight layer"
            result.notes.append(f"{shown}: {why}; skipped")
            continue
        config = _read_json(blobs / blob_name(layers[0]["digest"]), _MAX_TEXT) or {}
        config = config if isinstance(config, dict) else {}
        manifest = path.relative_to(models).as_posix()
        entry = ModelEntry(
            name=entry_name(host, namespace, model, tag),
            display_name=shown,
            family=config.get("model_family") or None,
            source=Source(provider="ollama", repo_id=shown.rsplit(":", 1)[0], revision=tag),
            format=config.get("model_format") or "gguf",
            quantization=config.get("file_type") or None,
            path=str(blobs),
            files=records,
            size_bytes=sum(r.size for r in records),
            aggregate_sha256=aggregate_sha256((r.path, r.sha256) for r in records),
            tool="ollama",
            metadata={
                "parameters": config.get("model_type") or None,
                "ollama": {
                    "manifest": manifest,
                    "weights": weights,
                    "blobs": [r.path for r in records],
                    **meta,
                },
            },
        )
        found.append(Found(entry, frozenset(weights), per_model_folder=False))
    return found, result


# ------------------------------------------------------------------------------------------- link


def ollama_name(entry) -> tuple[str, str, str, str]:  # (ModelEntry) -> (host, namespace, model, tag)
    """How Ollama itself names a GGUF pulled from the Hub (`hf.co/OWNER/REPO:QUANT`), lower case as the
    manifest path is; other models go to the default library namespace."""
    tag = (entry.quantization or "latest").lower() if entry.format == "gguf" else "latest"
    owner, _, repo = (entry.source.repo_id or "").partition("/")
    if entry.source.provider == "hf" and owner and repo:
        return "hf.co", owner.lower(), repo.lower(), tag
    model = re.sub(r"[^a-z0-9._\-]+", "-", entry.name.split(":")[0].lower()).strip("-.") or "model"
    return DEFAULT_HOST, DEFAULT_NAMESPACE, model, tag


def _weights(entry) -> list[tuple[str, Path, int, str | None, str]]:
    from imageworks.errors import UsageError
    from imageworks.stores.linking import source_files

    if entry.format != "gguf":
        raise UsageError(
            f"{entry.name} is {entry.format or 'not GGUF'}: Ollama loads GGUF files",
            hint="link a GGUF quant of the model (see `list --format gguf`)",
        )
    files = [f for f in source_files(entry) if f[0].lower().endswith(".gguf")]
    models = [f for f in files if "mmproj" not in f[0].lower()]
    if len(models) != 1:
        raise UsageError(f"{entry.name}: Ollama takes one GGUF file per model; this entry has {len(models)}")
    projectors = [f for f in files if "mmproj" in f[0].lower()]
    return [(*models[0], MEDIA + "model"), *((*p, MEDIA + "projector") for p in projectors)]


def _sha256(disk: Path, sha: str | None) -> str:
    if sha:
        return sha
    from imageworks.hashing import sha256_file

    return sha256_file(disk)


def server_url() -> str:
    """`OLLAMA_HOST` as Ollama reads it (host, host:port or a URL), default 127.0.0.1:11434."""
    import os

    value = (os.environ.get("OLLAMA_HOST") or "").strip() or "127.0.0.1:11434"
    if "://" not in value:
        value = "http://" + value
    scheme, _, rest = value.partition("://")
    host = rest.split("/")[0]
    if ":" not in host.rsplit("]", 1)[-1]:
        host += ":11434"
    if host.startswith("0.0.0.0"):
        host = "127.0.0.1" + host[len("0.0.0.0") :]
    return f"{scheme}://{host}"


def _server_answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/api/version", timeout=1.5).status_code == 200
    except httpx.HTTPError:
        return False


def link(entry):  # (ModelEntry) -> Placed
    url = server_url()
    if _server_answers(url):
        return _link_server(entry, url)
    return _link_store(entry)


def _link_server(entry, url: str):  # -> Placed
    """HEAD /api/blobs/sha256:HEX, upload only what is missing, then POST /api/create with `files`."""
    import httpx

    from imageworks.clock import utc_now
    from imageworks.errors import TransferError
    from imageworks.registry.schema import Copy, CopyFile
    from imageworks.stores import shelves
    from imageworks.stores.linking import Placed

    host, namespace, model, tag = ollama_name(entry)
    name = display_name(host, namespace, model, tag)
    files: dict[str, str] = {}
    uploaded = 0
    copy_files = []
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30.0, read=600.0)) as client:
        for rel, disk, size, sha, _media in _weights(entry):
            digest = "sha256:" + _sha256(disk, sha)
            if client.head(f"/api/blobs/{digest}").status_code != 200:
                with open(disk, "rb") as handle:
                    response = client.post(f"/api/blobs/{digest}", content=handle)
                if response.status_code not in (200, 201):
                    raise TransferError(
                        f"Ollama refused the blob {digest[:19]}…: HTTP {response.status_code}"
                    )
                uploaded += 1
            files[Path(rel).name] = digest
            copy_files.append(CopyFile(path=rel, at=blob_name(digest), size=size))
        body: dict[str, Any] = {"model": name, "files": files, "stream": True}
        context = entry.metadata.get("context_length")
        if isinstance(context, int) and context > 0:
            body["parameters"] = {"num_ctx": min(context, 8192)}  # as the Modelfile hint says
        template = (entry.metadata.get("ollama") or {}).get("template")
        if isinstance(template, str):
            body["template"] = template
        with client.stream("POST", "/api/create", json=body) as response:
            status = ""
            for line in response.iter_lines():
                if not line.strip():
                    continue
                message = json.loads(line)
                if message.get("error"):
                    raise TransferError(f"Ollama could not create {name}: {message['error']}")
                status = message.get("status", status)
            if response.status_code != 200 or status != "success":
                raise TransferError(f"Ollama could not create {name}: HTTP {response.status_code} {status}")
    manifest = f"manifests/{host}/{namespace}/{model}/{tag}"
    copy = Copy(
        path=str(shelves.ollama_models()[0] / "blobs"), tool="ollama", method="link", files=copy_files,
        created_at=utc_now(),
        metadata={"ollama": {"name": name, "server": url, "manifest": manifest, "weights": [d[7:] for d in files.values()]}},
    )  # fmt: skip
    note = f"created {name} through the Ollama server at {url} ({uploaded} blobs uploaded)"
    return Placed(copy, ["server"], [note])


def _go_json(obj: Any) -> bytes:
    """What Go's json.Encoder writes: compact, fields in struct order, one trailing newline."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _write_blob(blobs: Path, data: bytes) -> tuple[str, bool]:
    import hashlib
    import os

    from imageworks.durable import atomic_write_text

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blobs / blob_name(digest)
    if path.exists():
        return digest, False
    atomic_write_text(path, data)
    os.chmod(path, 0o644)
    return digest, True


def _write_config_and_manifest(
    entry: Any, models: Path, name: tuple[str, str, str, str], layers: list[dict[str, Any]], made: list[str]
) -> str:
    """The config blob (a ConfigV2) and the manifest, as Ollama writes them; what is new goes to `made`.
    Returns the config's digest."""
    import os

    from imageworks.durable import atomic_write_text

    blobs = models / "blobs"
    family = entry.family or entry.metadata.get("architecture") or ""
    config = {
        "model_format": "gguf",
        "model_family": family,
        "model_families": [family],
        "model_type": str(entry.metadata.get("parameters") or ""),
        "file_type": entry.quantization or "",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_data = _go_json(config)
    config_digest, new = _write_blob(blobs, config_data)
    if new:
        made.append(blob_name(config_digest))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA,
        "config": {"mediaType": CONFIG_MEDIA, "digest": config_digest, "size": len(config_data)},
        "layers": layers,
    }
    manifest_path = models.joinpath("manifests", *name)
    data = _go_json(manifest)
    if not (manifest_path.is_file() and manifest_path.read_bytes() == data):
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest_path, data)
        made.append(os.path.relpath(manifest_path, blobs))
    return config_digest


def _link_store(entry):  # -> Placed
    """No server: hardlink the GGUF to blobs/sha256-HEX and write the config blob and the manifest exactly
    as Ollama does (Ollama's internal format), so the next `ollama list` shows the model."""
    from imageworks.clock import utc_now
    from imageworks.locations import safe_component
    from imageworks.registry.schema import Copy
    from imageworks.stores import shelves
    from imageworks.stores.copies import copy_file
    from imageworks.stores.linking import Placed
    from imageworks.stores.placing import place

    models = shelves.ollama_models()[0]
    blobs = models / "blobs"
    host, namespace, model, tag = (safe_component(part) for part in ollama_name(entry))
    layers: list[dict[str, Any]] = []
    methods: list[str] = []
    made: list[str] = []
    copy_files = []
    for rel, disk, size, sha, media in _weights(entry):
        hexdigest = _sha256(disk, sha)
        blob = blobs / f"sha256-{hexdigest}"
        existed = blob.exists()
        methods.append(place(disk, blob, sha256=hexdigest))
        if not existed:
            made.append(blob.name)
        layers.append({"mediaType": media, "digest": f"sha256:{hexdigest}", "size": size})
        copy_files.append(copy_file(rel, blob, blobs))
    config_digest = _write_config_and_manifest(entry, models, (host, namespace, model, tag), layers, made)
    manifest_path = models / "manifests" / host / namespace / model / tag
    name = display_name(host, namespace, model, tag)
    blob_names = [blob_name(layer["digest"]) for layer in layers] + [blob_name(config_digest)]
    copy = Copy(
        path=str(blobs), tool="ollama", method="copy" if "copy" in methods else "link", files=copy_files,
        made=sorted(made), created_at=utc_now(),
        metadata={"ollama": {
            "name": name, "manifest": manifest_path.relative_to(models).as_posix(), "blobs": blob_names,
            "weights": [layer["digest"][7:] for layer in layers],
        }},
    )  # fmt: skip
    notes = [f"no Ollama server answered: wrote {name} into {models} (Ollama's internal format)"]
    if "copy" in methods:
        notes.append(f"{models} is on another filesystem: the GGUF was copied and verified, not hardlinked")
    return Placed(copy, methods, notes)
