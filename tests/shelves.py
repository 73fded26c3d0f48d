"""Other tools' stores laid out exactly as those tools' own code writes them (for the stores tests).

Ollama (server/manifest.go WriteManifest, server/layer.go NewLayer): blobs/sha256-HEX with mode 0644; the
manifest written by Go's json.Encoder (compact, struct field order, one trailing newline) under
manifests/HOST/NAMESPACE/MODEL/TAG; the config blob a ConfigV2."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MEDIA = "application/vnd.ollama.image."


def _go_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def ollama_blob(models: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    blob = models / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        blob.write_bytes(data)
        os.chmod(blob, 0o644)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def ollama_model(
    models: Path,
    name: str,  # HOST/NAMESPACE/MODEL/TAG
    gguf: bytes,
    *,
    projector: bytes | None = None,
    template: str = "{{ .Prompt }}",
    params: dict | None = None,
    file_type: str = "Q4_K_M",
) -> Path:
    layers = [{"mediaType": MEDIA + "model", **ollama_blob(models, gguf)}]
    if projector is not None:
        layers.append({"mediaType": MEDIA + "projector", **ollama_blob(models, projector)})
    layers.append({"mediaType": MEDIA + "template", **ollama_blob(models, template.encode())})
    if params is not None:
        layers.append({"mediaType": MEDIA + "params", **ollama_blob(models, _go_json(params).rstrip())})
    config = {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "3B",
        "file_type": file_type,
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_layer = {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        **ollama_blob(models, _go_json(config)),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config_layer,
        "layers": layers,
    }
    path = models / "manifests" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_go_json(manifest))
    return path
