"""Download engines behind one interface: `choose_engine(...)` -> `Engine.fetch(jobs, progress)`.

The caller (the Hub-aware orchestrator) gives each file's URL (or a resolver for it) and expected
digests; an engine fetches, verifies and renames files into place, resuming whatever an earlier run
left on disk. The engine is chosen per file: small files (every non-LFS file, and LFS files below
`pool.SMALL_FILE`) go through one keep-alive connection pool (`pool`), large ones through aria2c or the
native ranged engine (`engine_for` says which, for `download --dry-run` and `--json`).
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Literal

from imageworks.errors import UsageError
from imageworks.transfer.base import (
    Engine,
    FileJob,
    FileResult,
    NullProgress,
    PartialPaths,
    ProgressSink,
)
from imageworks.transfer.router import Router

log = logging.getLogger("imageworks.transfer")

EngineKind = Literal["auto", "aria2", "native"]

__all__ = [
    "Engine",
    "EngineKind",
    "FileJob",
    "FileResult",
    "NullProgress",
    "PartialPaths",
    "ProgressSink",
    "choose_engine",
    "engine_for",
    "large_engine_name",
]


def large_engine_name(kind: str = "auto", *, single_stream: bool = False) -> str:
    """The engine large files will get, without starting anything (for a plan shown before a run)."""
    if single_stream or kind == "native":
        return "native"
    if kind == "aria2":
        return "aria2"
    return "aria2" if shutil.which("aria2c") else "native"


def engine_for(size: int | None, *, lfs: bool, large: str) -> str:
    """Which engine fetches a file of this size: "pool" for small ones, else `large`."""
    from imageworks.transfer.pool import is_small

    return "pool" if is_small(size, lfs=lfs) else large


def choose_engine(
    kind: EngineKind | str = "auto",
    *,
    connections: int = 16,
    max_files: int = 4,
    single_stream: bool = False,
    stall_timeout: float = 30.0,
    retries: int = 5,
    backoff: float = 1.0,
    aria2c_path: str | None = None,
    verify: bool = True,
    pool: bool = True,
) -> Engine:
    """auto: aria2c when it is on PATH, else the native engine. `single_stream` (--no-aria2) is the
    native engine with one connection per file. The engine's `note` says what was chosen and why.
    `verify=False` skips hashing (FileResult.sha256 is ""): for benchmarks, not for users. `pool`:
    small files through the keep-alive pool (False: every file through the one engine)."""
    _check_choice(kind, connections=connections, max_files=max_files, single_stream=single_stream)
    common: dict[str, Any] = dict(
        connections=connections,
        max_files=max_files,
        stall_timeout=stall_timeout,
        retries=retries,
        backoff=backoff,
        verify=verify,
    )
    engine = _large_engine(kind, single_stream=single_stream, aria2c_path=aria2c_path, common=common)
    if pool:
        from imageworks.transfer.pool import PoolEngine

        small = PoolEngine(stall_timeout=stall_timeout, retries=retries, backoff=backoff, verify=verify)
        engine = Router(engine, small)
    log.info("download engine: %s", engine.note)
    return engine


def _check_choice(kind: str, *, connections: int, max_files: int, single_stream: bool) -> None:
    """Refuse an unknown engine, zero connections or files, and --no-aria2 with --engine aria2."""
    if kind not in ("auto", "aria2", "native"):
        raise UsageError(f"unknown engine {kind!r}", hint="use --engine auto, aria2 or native")
    if connections < 1 or max_files < 1:
        raise UsageError("--connections and the number of files at once must be at least 1")
    if single_stream and kind == "aria2":
        raise UsageError("--no-aria2 contradicts --engine aria2")


def _large_engine(
    kind: str, *, single_stream: bool, aria2c_path: str | None, common: dict[str, Any]
) -> Engine:
    """The engine for large files: native when asked for (or single-stream), else aria2c if usable. The
    native engine is imported only when it is the one (15 ms of start-up)."""
    if single_stream or kind == "native":
        from imageworks.transfer.native import NativeEngine

        if single_stream:
            return NativeEngine(
                single_stream=True, note="native engine, one stream per file (--no-aria2)", **common
            )
        return NativeEngine(note="native engine (--engine native)", **common)
    path = _usable_aria2c(aria2c_path)
    if path:
        return _aria2_engine(kind, path, common)
    if kind == "aria2":
        raise UsageError(
            f"aria2c not found{' at ' + aria2c_path if aria2c_path else ' on PATH'}",
            hint="install aria2 (e.g. `sudo apt install aria2`) or use --engine native",
        )
    from imageworks.transfer.native import NativeEngine

    return NativeEngine(note="native engine (aria2c not found on PATH)", **common)


def _usable_aria2c(aria2c_path: str | None) -> str | None:
    """The given aria2c, or the one on PATH, if it is an executable file."""
    path = aria2c_path or shutil.which("aria2c")
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return None


def _aria2_engine(kind: str, path: str, common: dict[str, Any]) -> Engine:
    """aria2c at `path`; under auto, the native engine takes over if aria2c then refuses to start."""
    from imageworks.transfer.aria2 import Aria2Engine

    why = "--engine aria2" if kind == "aria2" else "found on PATH"

    def native_fallback() -> Engine:
        from imageworks.transfer.native import NativeEngine

        return NativeEngine(note="native engine (aria2c failed to start)", **common)

    fallback = native_fallback if kind == "auto" else None
    return Aria2Engine(path, note=f"aria2c engine ({why}: {path})", fallback=fallback, **common)
