"""The one place that turns a model into a registry name and an identity.

Name rule (documented in the README):
  hf     owner/repo                     lower case, the Hub's canonical id
         owner/repo@rev                 a revision other than main/master (made filesystem-safe)
         owner/repo:q4_k_m              an entry holding exactly one GGUF quant
         owner/repo@rev:q4_k_m          both
  url    url/<file-stem>[:quant]        a direct download
  local  local/<parent>/<folder>[:quant] a folder found on disk outside the owner/repo layout
The same model always gets the same name whatever the order of imports, and two owners with the same
repo name never collide because the owner is part of the name.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from imageworks.locations import DEFAULT_BRANCHES

_SAFE = re.compile(r"[^a-z0-9._\-]+")


def _slug(text: str) -> str:
    return _SAFE.sub("-", text.lower()).strip("-.") or "model"


def _suffix(revision: str | None, quant: str | None) -> str:
    out = ""
    if revision and revision not in DEFAULT_BRANCHES:
        out += "@" + _slug(revision.replace("/", "-"))
    if quant:
        out += ":" + _slug(quant)
    return out


def model_name(
    provider: str,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    quant: str | None = None,
    url: str | None = None,
    folder: Path | None = None,
) -> str:
    if provider == "hf" and repo_id:
        owner, _, repo = repo_id.partition("/")
        return f"{_slug(owner)}/{_slug(repo)}{_suffix(revision, quant)}"
    if provider == "url" and url:
        stem = PurePosixPath(url.split("?", 1)[0]).name
        stem = re.sub(r"\.(gguf|safetensors|bin|pt|pth|onnx)$", "", stem, flags=re.IGNORECASE)
        return f"url/{_slug(stem)}{_suffix(None, quant)}"
    if folder is not None:
        parts = [p for p in Path(folder).parts[-2:]]
        return "local/" + "/".join(_slug(p) for p in parts) + _suffix(None, quant)
    raise ValueError(f"cannot name a model without identity (provider={provider!r})")


def identity(
    provider: str, repo_id: str | None, revision: str | None, variant: str | None, url: str | None = None
) -> tuple[str, str, str, str]:
    """What makes two entries the same model: provider + canonical repo id (any case) + revision +
    variant (the GGUF quant when the entry holds one)."""
    rev = (revision or "main").lower()
    if rev in DEFAULT_BRANCHES:
        rev = "main"
    key = (repo_id or url or "").lower()
    return (provider, key, rev, (variant or "").lower())


def entry_identity(entry: Any) -> tuple[str, str, str, str]:
    source = entry.source
    variant = entry.quantization if (entry.format == "gguf" and entry.quantization) else None
    if source.provider == "local" or not (source.repo_id or source.url):
        # A local model has no id but its folder: without this, every local model would share one key.
        return identity(source.provider, path_key(entry.path) or entry.name, None, variant)
    return identity(source.provider, source.repo_id, source.revision, variant, source.url)


def path_key(path: str | Path | None) -> str | None:
    """A normalised folder path, so a folder reached through a symlink or a trailing slash matches."""
    if not path:
        return None
    try:
        return str(Path(path).expanduser().resolve())
    except OSError:
        return str(Path(path).expanduser().absolute())


_VLLM_QUANT = {"awq": "awq", "gptq": "gptq", "fp8": "fp8", "bnb": "bitsandbytes", "exl2": None}
_VLLM_DTYPE = {"bf16": "bfloat16", "f16": "float16", "fp16": "float16", "f32": "float32"}


def serve_hints(
    *,
    name: str,
    format: str | None,
    quantization: str | None,
    path: str | None,
    files: list[str],
    context_length: int | None = None,
    location: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Served-model hints per backend: a `vllm serve` command for HF-layout weights, an Ollama
    Modelfile and the LM Studio path for GGUF."""
    if not path:
        return {}
    hints: dict[str, dict[str, Any]] = {}
    if format == "gguf":
        weights = sorted(f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.lower())
        projectors = sorted(f for f in files if f.lower().endswith(".gguf") and "mmproj" in f.lower())
        if weights:
            # A split model is loaded from its first part; llama.cpp finds the rest.
            first = next((w for w in weights if re.search(r"-0*1-of-\d+\.gguf$", w)), weights[0])
            lines = [f"FROM {Path(path) / first}"]
            lines += [f"FROM {Path(path) / p}" for p in projectors]
            if context_length:
                lines.append(f"PARAMETER num_ctx {min(context_length, 8192)}")
            hints["ollama"] = {
                "modelfile": "\n".join(lines) + "\n",
                "create": f"ollama create {name.replace(':', '-')} -f Modelfile",
            }
        hints["lmstudio"] = {"path": str(path), "visible": location == "windows_lmstudio"}
        return hints
    if format in {"safetensors", "awq", "gptq", "fp8", "bnb", "pytorch"}:
        command = ["vllm", "serve", str(path), "--served-model-name", name]
        quant_flag = _VLLM_QUANT.get(format or "")
        if quant_flag:
            command += ["--quantization", quant_flag]
        dtype = _VLLM_DTYPE.get((quantization or "").lower())
        if dtype:
            command += ["--dtype", dtype]
        elif format in {"awq", "gptq"}:
            command += ["--dtype", "float16"]
        hints["vllm"] = {"command": " ".join(_shell_quote(c) for c in command)}
    return hints


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
