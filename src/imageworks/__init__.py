"""imageworks: fetch, check and keep track of local AI model weights.

    import imageworks
    result = imageworks.download("Qwen/Qwen2.5-0.5B-Instruct", config=imageworks.resolve_config())

The names below are imported on first use, so `import imageworks` (and the CLI's `--help`) stays cheap.
The download machinery lives in `imageworks.downloader`: a submodule named `download` would be bound
over the `download` function by the import system as soon as anything imported it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imageworks.config import resolve_config
    from imageworks.downloader import DownloadResult, download

__all__ = ["DownloadResult", "download", "resolve_config"]

_LAZY = {
    "download": "imageworks.downloader",
    "DownloadResult": "imageworks.downloader",
    "resolve_config": "imageworks.config",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'imageworks' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later lookups skip this function
    return value
