"""Download engines behind one interface: `choose_engine(...)` -> `Engine.fetch(jobs, progress)`.

The caller (the Hub-aware orchestrator) resolves refs to final URLs and expected digests; an engine
fetches, verifies and renames files into place, resuming whatever an earlier run left on disk.
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
]


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
) -> Engine:
    """auto: aria2c when it is on PATH, else the native engine. `single_stream` (--no-aria2) is the
    native engine with one connection per file. The engine's `note` says what was chosen and why.
    `verify=False` skips hashing (FileResult.sha256 is ""): for benchmarks, not for users."""
    from imageworks.transfer.aria2 import Aria2Engine
    from imageworks.transfer.native import NativeEngine

    if kind not in ("auto", "aria2", "native"):
        raise UsageError(f"unknown engine {kind!r}", hint="use --engine auto, aria2 or native")
    if connections < 1 or max_files < 1:
        raise UsageError("--connections and the number of files at once must be at least 1")
    common: dict[str, Any] = dict(
        connections=connections,
        max_files=max_files,
        stall_timeout=stall_timeout,
        retries=retries,
        backoff=backoff,
        verify=verify,
    )
    engine: Engine
    if single_stream:
        if kind == "aria2":
            raise UsageError("--no-aria2 contradicts --engine aria2")
        engine = NativeEngine(
            single_stream=True, note="native engine, one stream per file (--no-aria2)", **common
        )
    elif kind == "native":
        engine = NativeEngine(note="native engine (--engine native)", **common)
    else:
        path = aria2c_path or shutil.which("aria2c")
        if path and not (os.path.isfile(path) and os.access(path, os.X_OK)):
            path = None
        if path:
            why = "--engine aria2" if kind == "aria2" else "found on PATH"
            # auto: if aria2c then refuses to start, the native engine takes over (and says so).
            fallback = (
                NativeEngine(note="native engine (aria2c failed to start)", **common)
                if kind == "auto"
                else None
            )
            engine = Aria2Engine(path, note=f"aria2c engine ({why}: {path})", fallback=fallback, **common)
        elif kind == "aria2":
            raise UsageError(
                f"aria2c not found{' at ' + aria2c_path if aria2c_path else ' on PATH'}",
                hint="install aria2 (e.g. `sudo apt install aria2`) or use --engine native",
            )
        else:
            engine = NativeEngine(note="native engine (aria2c not found on PATH)", **common)
    log.info("download engine: %s", engine.note)
    return engine
