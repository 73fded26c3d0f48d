"""Where each tool keeps its models, resolved at call time from the environment exactly as the tool does."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

TOOLS = ("hf-cache", "ollama", "lmstudio", "llama.cpp")


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def _expand(value: str, env: Mapping[str, str]) -> Path:
    if value.startswith("~"):
        value = str(_home(env)) + value[1:]
    return Path(value)


def hf_cache(env: Mapping[str, str] | None = None) -> Path:
    """`HF_HUB_CACHE` > `HF_HOME/hub` > `XDG_CACHE_HOME/huggingface/hub` > `~/.cache/huggingface/hub`
    (huggingface_hub's constants.py)."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return _expand(env["HF_HUB_CACHE"], env)
    if env.get("HF_HOME"):
        return _expand(env["HF_HOME"], env) / "hub"
    if env.get("XDG_CACHE_HOME"):
        return _expand(env["XDG_CACHE_HOME"], env) / "huggingface" / "hub"
    return _home(env) / ".cache" / "huggingface" / "hub"


def ollama_models(env: Mapping[str, str] | None = None) -> list[Path]:
    """`OLLAMA_MODELS` > `~/.ollama/models`, and the Linux service's store when readable."""
    env = os.environ if env is None else env
    if env.get("OLLAMA_MODELS"):
        return [_expand(env["OLLAMA_MODELS"], env)]
    out = [_home(env) / ".ollama" / "models"]
    service = Path("/usr/share/ollama/.ollama/models")
    if env.get("IMAGEWORKS_OLLAMA_SERVICE_STORE", "1") != "0" and os.access(service / "manifests", os.R_OK):
        out.append(service)
    return out


def lmstudio_home(env: Mapping[str, str] | None = None) -> Path:
    """`LMSTUDIO_HOME` > the folder named in `~/.lmstudio-home-pointer` (read, never written) >
    `~/.cache/lm-studio` (older versions) > `~/.lmstudio`."""
    env = os.environ if env is None else env
    if env.get("LMSTUDIO_HOME"):
        return _expand(env["LMSTUDIO_HOME"], env)
    home = _home(env)
    pointer = home / ".lmstudio-home-pointer"
    try:
        named = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        named = ""
    if named:
        return _expand(named, env)
    legacy = home / ".cache" / "lm-studio"
    if legacy.is_dir():
        return legacy
    return home / ".lmstudio"


def lmstudio_models(env: Mapping[str, str] | None = None) -> Path:
    return lmstudio_home(env) / "models"


def llama_cache(env: Mapping[str, str] | None = None) -> Path:
    """`LLAMA_CACHE` > `XDG_CACHE_HOME/llama.cpp` > `~/.cache/llama.cpp` (llama.cpp's fs_get_cache_directory)."""
    env = os.environ if env is None else env
    if env.get("LLAMA_CACHE"):
        return _expand(env["LLAMA_CACHE"], env)
    if env.get("XDG_CACHE_HOME"):
        return _expand(env["XDG_CACHE_HOME"], env) / "llama.cpp"
    return _home(env) / ".cache" / "llama.cpp"


def default_shelf(tool: str) -> Path:
    if tool == "hf-cache":
        return hf_cache()
    if tool == "ollama":
        return ollama_models()[0]
    if tool == "lmstudio":
        return lmstudio_models()
    return llama_cache()


def detect_shelf(folder: Path) -> str | None:
    """The tool whose layout `folder` is, if it is one: a Hugging Face cache (`models--*/snapshots`), an
    Ollama store (`manifests/` + `blobs/`) or llama.cpp's flat cache (`manifest=*.json`). `scan` hands
    these to `import` so their files are registered in place as that tool's copies."""
    try:
        if any(p.name.startswith("models--") and (p / "snapshots").is_dir() for p in folder.iterdir()):
            return "hf-cache"
        if (folder / "manifests").is_dir() and (folder / "blobs").is_dir():
            return "ollama"
        if next(folder.glob("manifest=*.json"), None) is not None:
            return "llama.cpp"
    except OSError:
        return None
    return None
