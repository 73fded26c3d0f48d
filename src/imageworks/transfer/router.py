"""`Router`: small files through the keep-alive pool, the rest through the large-file engine, both at
once, as one engine to the caller."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from imageworks.transfer.base import (
    HALT_TIMEOUT,
    TICK,
    Engine,
    FileJob,
    FileResult,
    PartialPaths,
    ProgressSink,
    join_all,
    wait_threads,
)


class _Relay:
    """A ProgressSink for an engine running on another thread: its calls are queued and replayed on
    the thread that called `Router.fetch` (sinks are only ever called from that one thread)."""

    def __init__(self, calls: deque[tuple[Callable[..., None], tuple[Any, ...]]], sink: ProgressSink) -> None:
        self._calls, self._sink = calls, sink

    def file_started(self, job: FileJob, total: int | None, already: int) -> None:
        self._calls.append((self._sink.file_started, (job, total, already)))

    def advance(self, job: FileJob, n: int) -> None:
        self._calls.append((self._sink.advance, (job, n)))

    def file_done(self, job: FileJob, result: FileResult) -> None:
        self._calls.append((self._sink.file_done, (job, result)))

    def message(self, text: str) -> None:
        self._calls.append((self._sink.message, (text,)))


class Router:
    """Small files through the pool, the rest through `large`: one engine to the caller.

    The two groups run at once, so the large files start as soon as the plan is made rather than after
    every small file (on a fast link the small files of a model cost ~5% of the whole download). A
    failure of one group does not stop the other; the first error is raised once both are done."""

    def __init__(self, large: Engine, small: Engine) -> None:
        self.large, self.small = large, small
        self.name = large.name
        self.note = f"{large.note}; small files through one keep-alive connection pool"

    def fetch(
        self,
        jobs: Sequence[FileJob],
        progress: ProgressSink,
        *,
        cancel: threading.Event | None = None,
    ) -> list[FileResult]:
        from imageworks.transfer.pool import is_small

        def pooled(job: FileJob) -> bool:
            # A small file with a resume record left by an engine that resumes goes back to it.
            paths = PartialPaths.for_dest(job.dest)
            resumable = paths.state.exists() or paths.control.exists()
            return is_small(job.size, lfs=not job.git_sha1) and not resumable

        small = [j for j in jobs if pooled(j)]
        large = [j for j in jobs if not pooled(j)]
        groups = [(engine, group) for engine, group in ((self.small, small), (self.large, large)) if group]
        if len(groups) == 1:
            engine, group = groups[0]
            results = engine.fetch(group, progress, cancel=cancel)
        else:
            results = self._both(groups, progress, cancel)
        order = {id(j): i for i, j in enumerate(jobs)}
        return sorted(results, key=lambda r: order.get(id(r.job), len(jobs)))

    def _both(
        self,
        groups: list[tuple[Engine, list[FileJob]]],
        progress: ProgressSink,
        cancel: threading.Event | None,
    ) -> list[FileResult]:
        calls: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        relay = _Relay(calls, progress)
        stop = threading.Event()  # set on the caller's cancel or Ctrl-C: both groups stop
        outcomes: list[list[FileResult] | BaseException | None] = [None] * len(groups)

        def run(index: int) -> None:
            engine, group = groups[index]
            try:
                outcomes[index] = engine.fetch(group, relay, cancel=stop)
            except BaseException as exc:  # re-raised below, in the caller's thread
                outcomes[index] = exc

        threads = [
            threading.Thread(target=run, args=(i,), name="fetch group", daemon=True)
            for i in range(len(groups))
        ]
        try:
            for thread in threads:
                thread.start()
            while not wait_threads(threads, TICK):
                _replay(calls)
                if cancel is not None and cancel.is_set():
                    stop.set()
        except BaseException:  # Ctrl-C: both engines stop and leave resumable state, then it goes on up
            stop.set()
            join_all(threads, HALT_TIMEOUT)
            raise
        finally:
            _replay(calls)
        return _gather(outcomes)


def _replay(calls: deque[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
    while calls:
        method, args = calls.popleft()
        method(*args)


def _gather(outcomes: list[list[FileResult] | BaseException | None]) -> list[FileResult]:
    """Every group's results, or the first group's error (small files first, as they were fetched
    before the groups ran at once)."""
    results: list[FileResult] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results += outcome or []
    return results
