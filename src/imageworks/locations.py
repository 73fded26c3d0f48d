"""Where models live: named roots (linux_wsl, windows_lmstudio, custom) or a folder path, and the
`<owner>/<repo>[@rev]` layout beneath them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from imageworks.config import Config
from imageworks.errors import UnsafePathError

DEFAULT_BRANCHES = frozenset({"main", "master"})


@dataclass(frozen=True)
class Location:
    name: str  # "linux_wsl", "windows_lmstudio", a custom name, or "path"
    root: Path


def resolve_location(config: Config, value: str | None, *, prefer_lmstudio: bool = False) -> Location:
    """`value` is a location name or a folder path. Without one, GGUF models go to LM Studio's folder
    when it exists (LM Studio loads GGUF only) and everything else to linux_wsl."""
    if value is None:
        if prefer_lmstudio and "windows_lmstudio" in config.locations:
            root = config.location_root("windows_lmstudio")
            if root.is_dir():
                return Location("windows_lmstudio", root)
        return Location("linux_wsl", config.location_root("linux_wsl"))
    if value in config.locations:
        return Location(value, config.location_root(value))
    if "/" in value or "\\" in value or value.startswith(("~", ".")):
        return Location("path", Path(value).expanduser().absolute())
    config.location_root(value)  # raises with the list of known names
    raise AssertionError("unreachable")


_UNSAFE_CHARS = re.compile(r'[<>:"|?*\x00-\x1f\\/]')


def safe_component(text: str) -> str:
    """One filesystem-safe path component (also safe on the Windows side of WSL)."""
    cleaned = _UNSAFE_CHARS.sub("-", text).strip(" .")
    if cleaned in {"", ".", ".."}:
        raise UnsafePathError(f"cannot make a folder name from {text!r}")
    return cleaned


def model_folder(root: Path, repo_id: str, revision: str | None = None) -> Path:
    """`<root>/<owner>/<repo>`, or `<repo>@<rev>` for a non-default revision."""
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise UnsafePathError(f"repo id {repo_id!r} is not OWNER/REPO")
    owner, repo = (safe_component(p) for p in parts)
    if revision and revision not in DEFAULT_BRANCHES:
        repo = f"{repo}@{safe_component(revision)}"
    return root / owner / repo


def safe_join(root: Path, relative: str) -> Path:
    """Join a path that came from a server or a registry onto `root`, refusing anything that would land
    outside it: '..', absolute paths, drive letters, backslashes, NUL."""
    if not relative or "\x00" in relative or "\\" in relative:
        raise UnsafePathError(f"refusing unsafe path {relative!r}")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", relative):
        raise UnsafePathError(f"refusing absolute path {relative!r} from the server")
    if any(part in {"..", ""} for part in relative.split("/")) or any(part == "." for part in pure.parts):
        raise UnsafePathError(f"refusing path {relative!r}: it would leave the target folder")
    target = root.joinpath(*pure.parts)
    resolved_root = root.resolve()
    try:
        target.resolve().relative_to(resolved_root)
    except ValueError:
        raise UnsafePathError(f"refusing path {relative!r}: it resolves outside {root}") from None
    return target
