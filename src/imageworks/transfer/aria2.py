"""The aria2c engine: aria2c does the transfer, we drive it over JSON-RPC and verify.

One aria2c process per `fetch()`, listening on a random loopback port with a random RPC secret
(handed over in a private config file, so it is not in `ps` or our logs). Each file is added with
`aria2.addUri` and polled with `aria2.tellStatus`: completedLength feeds the progress sink, and the
piece bitfield tells which bytes are on disk, so the completed contiguous prefix is hashed while
aria2c writes the rest (`--disk-cache=0`: a piece marked done is in the file, not in aria2's cache).
Resume across runs is aria2c's own control file (`.<name>.imageworks-partial.aria2`).

Tokens: headers travel over RPC, never on a command line. aria2c forwards every header to wherever a
redirect leads (and has no option to stop following redirects), so aria2c is only ever given URLs that
need no token: the job's resolver (a Hub file) or our own redirect walk (`imageworks.hub.locate`) finds
the final URL first, and a file whose final URL still needs the token (a Hub that serves it itself) is
fetched by the native engine instead, whose HTTP client drops the token on any redirect off the Hub.

Watchdog: aria2c can sit "active" with no connection and no progress (e.g. resuming from a control
file that marks every piece done); a download that makes no progress for the stall timeout is taken
back and checked or restarted, never waited on forever.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from imageworks.errors import IntegrityError, TransferError
from imageworks.hashing import usable_cores
from imageworks.hub import carries_token, check_scheme, locate
from imageworks.transfer.aria2_control import ControlInfo, read_control, write_control
from imageworks.transfer.aria2_rpc import Aria2StartError, Daemon, Daemons, Halted
from imageworks.transfer.aria2_status import (
    RESUME_IMPOSSIBLE,
    STATUS_KEYS,
    bitfield_ranges,
    error_for,
    next_poll,
    prefix_pieces,
)
from imageworks.transfer.base import (
    Engine,
    Events,
    FileJob,
    FileResult,
    MiB,
    PartialPaths,
    PrefixHasher,
    ProgressSink,
    ResumeState,
    backoff_delay,
    check_and_commit,
    check_partial_paths,
    check_server_size,
    covered,
    disk_error,
    existing_result,
    load_state,
    merge_ranges,
    prefix_end,
    run_file_tasks,
    save_state,
)

log = logging.getLogger("imageworks.transfer.aria2")

POLL = 0.05
LOWEST_SPEED = 512  # bytes/s: a connection slower than this (over aria2c's window) is replaced
STATE_SAVE_INTERVAL = 1.0
SINGLE_STREAM_BELOW = 4 * MiB  # as in the native engine: small files get no resume record


class Aria2Engine:
    name = "aria2"

    def __init__(
        self,
        aria2c: str,
        *,
        connections: int = 16,
        max_files: int = 4,
        stall_timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 1.0,
        verify: bool = True,
        note: str = "",
        piece_selector: str = "inorder",
        min_split_size: int = 8 * MiB,
        fallback: Callable[[], Engine] | None = None,
        processes: int | None = None,
    ) -> None:
        self.aria2c = aria2c
        # aria2c processes at most (one per core by default): see `Daemons`.
        self.processes = max(1, processes if processes is not None else usable_cores())
        self.fallback = fallback  # used, and said so, when aria2c cannot even start
        # aria2c refuses more than 16 connections per server.
        self.connections = max(1, min(16, connections))
        self.max_files = max(1, max_files)
        self.stall_timeout = stall_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.verify = verify
        self.note = note
        # "inorder" keeps the written prefix growing at the full rate, which is what lets the hash
        # keep up; aria2c's default spreads connections over the file and leaves most of it to hash
        # at the end.
        self.piece_selector = piece_selector
        # 8 MiB ranges: with 4 MiB, aria2c spent ~0.1 s more per GiB on new requests (loopback, two
        # 512 MiB files); with 16 MiB and more, the prefix grows in larger steps and more is left to
        # hash once the last byte is in.
        self.min_split_size = min_split_size

    def fetch(
        self,
        jobs: Sequence[FileJob],
        progress: ProgressSink,
        *,
        cancel: threading.Event | None = None,
    ) -> list[FileResult]:
        stop = threading.Event()
        events: Events = collections.deque()
        missing = sum(not job.dest.exists() for job in jobs)
        daemons = Daemons(self, min(self.processes, self.max_files, missing))
        if missing:
            daemons.start_soon()  # a re-run with every file in place never starts aria2c
        try:
            tasks = [_Aria2Task(self, job, daemons, stop, events) for job in jobs]
            return run_file_tasks(
                tasks,
                events,
                progress,
                max_files=self.max_files,
                stop=stop,
                cancel=cancel,
                on_stop=daemons.stop,
            )
        except Aria2StartError as exc:
            if self.fallback is None:
                raise
            fallback = self.fallback()
            text = f"{exc}; falling back to the {fallback.name} engine"
            log.warning("%s", text)
            progress.message(text)
            return fallback.fetch(jobs, progress, cancel=cancel)
        finally:
            daemons.stop()

    def global_options(self) -> list[str]:
        return [
            "--enable-rpc=true",
            "--rpc-listen-all=false",
            f"--max-concurrent-downloads={self.max_files}",
            "--disk-cache=0",
            "--auto-save-interval=1",
            "--file-allocation=none",
            "--console-log-level=error",
            "--summary-interval=0",
            "--show-console-readout=false",
            "--enable-color=false",
            "--quiet=true",
            f"--stop-with-process={os.getpid()}",  # no orphan aria2c if we are SIGKILLed
        ]

    def _split_size(self, size: int | None) -> int:
        """Ranges of `min_split_size` for a large file; smaller ones for a file that would otherwise
        get fewer ranges than connections (aria2c accepts 1 MiB at least)."""
        if not size:
            return self.min_split_size
        return max(MiB, min(self.min_split_size, size // self.connections))

    def download_options(self, job: FileJob, paths: PartialPaths, headers: dict[str, str]) -> dict[str, Any]:
        timeout = str(max(1, round(self.stall_timeout)))
        return {
            "dir": str(paths.temp.parent),
            "out": paths.temp.name,
            "continue": "true",
            "allow-overwrite": "false",
            "auto-file-renaming": "false",
            "always-resume": "false",  # a server that cannot resume: start over rather than fail
            "max-resume-failure-tries": "0",
            "split": str(self.connections),
            "max-connection-per-server": str(self.connections),
            "min-split-size": str(self._split_size(job.size)),
            "stream-piece-selector": self.piece_selector,
            "header": [f"{k}: {v}" for k, v in headers.items()],
            "max-tries": str(self.retries + 1),
            "retry-wait": str(max(1, round(self.backoff))),
            "timeout": timeout,
            "connect-timeout": timeout,
            # A trickling connection (a few bytes a second) is closed and its piece fetched again.
            "lowest-speed-limit": str(LOWEST_SPEED),
            "remote-time": "false",
            "conditional-get": "false",
            "check-integrity": "false",
            "http-accept-gzip": "false",
        }


@dataclasses.dataclass
class _Attempts:
    """One file's runs through aria2c: bytes resumed (now, and at the first run), failures in a row,
    whether it was already started over from zero."""

    resumed: int
    first: int
    failures: int = 0
    fresh: bool = False


class _Aria2Task:
    def __init__(
        self,
        engine: Aria2Engine,
        job: FileJob,
        daemons: Daemons,
        stop: threading.Event,
        events: Events,
    ) -> None:
        self.engine = engine
        self.job = job
        self.daemons = daemons
        self.daemon: Daemon | None = None  # taken from `daemons` once the file needs aria2c
        self.stop = stop
        self.events = events
        self.paths = PartialPaths.for_dest(job.dest)
        self.result: FileResult | None = None
        self.error: BaseException | None = None
        self._on_disk = 0
        self._native: Any = None  # the native engine's task, when this file is fetched by it
        self.hasher: PrefixHasher | None = None
        self.started = False

    @property
    def on_disk_bytes(self) -> int:
        return self._native.on_disk_bytes if self._native is not None else self._on_disk

    @on_disk_bytes.setter
    def on_disk_bytes(self, value: int) -> None:
        self._on_disk = value

    def _call(self, method: str, *params: Any) -> Any:
        assert self.daemon is not None, "a file's RPC calls come after it took an aria2c"
        return self.daemon.call(method, *params)

    def interrupt(self) -> None:
        if self._native is not None:
            self._native.interrupt()
        # else: stopping aria2c (run_file_tasks' on_stop) ends every download

    def _emit(self, kind: str, payload: Any) -> None:
        self.events.append((kind, self, payload))

    def run(self) -> None:
        try:
            self.result = self._run()
            self._emit("done", self.result)
        except BaseException as exc:
            self.error = exc
        finally:
            if self.hasher is not None:
                self.hasher.close(abort=True)
            if self.daemon is not None:
                self.daemons.give_back(self.daemon)

    def _run(self) -> FileResult:
        existing = existing_result(self.job, verify=self.engine.verify)
        if existing is not None:
            self._emit("started", (existing.size, existing.size))
            self.on_disk_bytes = existing.size
            return existing
        try:
            self.job.dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(self.job, exc, 0) from exc
        check_partial_paths(self.paths)
        url, headers = self._target()
        if carries_token(headers):
            return self._fetch_natively(url, headers)
        resumed = self._prepare_partial()
        run = _Attempts(resumed=resumed, first=resumed)
        daemon = self.daemon = self.daemons.take()
        daemon.ensure_started()
        while True:
            if self.stop.is_set():
                raise Halted()
            gid = daemon.call(
                "aria2.addUri", [url], self.engine.download_options(self.job, self.paths, headers)
            )
            log.debug("%s: added to aria2c as %s, resuming from %d bytes", self.job.name, gid, run.resumed)
            status = self._follow(gid, run.resumed)
            log.debug("%s: aria2c reports %s", self.job.name, status["status"])
            result = self._settle(status, run)
            if result is not None:
                return result
            # A signed CDN URL expires (the CDN then answers 403): resolve the file again each time.
            url, headers = self._target()
            if carries_token(headers):
                return self._fetch_natively(url, headers)

    def _settle(self, status: dict[str, Any], run: _Attempts) -> FileResult | None:
        """The file, once aria2c has stopped with it; None to add it again (after a wait, or from
        zero); or the error that ends it."""
        total = int(status.get("totalLength", 0))
        if status["status"] == "complete":
            return self._complete(total, run)
        if self.stop.is_set():
            raise Halted()
        code, message = status.get("errorCode", "1"), status.get("errorMessage", "")
        if status["status"] == "stalled" and status["completedLength"] == status["totalLength"]:
            # aria2c says every piece is done yet does not finish (a control file that claims too
            # much): the digest decides; wrong bytes are fetched again from zero.
            done = self._finish_claimed(total, run.first)
            if done is not None:
                return done
            if run.fresh:
                raise TransferError(
                    f"{self.job.name}: aria2c reports the whole file but made no progress for "
                    f"{self.engine.stall_timeout:g} s, and the bytes on disk are not the file",
                    hint="run the same command again, or use --engine native",
                )
            code = "8"
        if code in RESUME_IMPOSSIBLE and not run.fresh:
            # The partial bytes cannot be continued (another piece length, a server that will not
            # resume): start this file over.
            self._start_over(run, f"cannot resume ({message})")
            return None
        error = self._error(code, message)
        if error is not None:
            raise error
        self._back_off(run, int(status.get("completedLength", 0)), code, message)
        return None

    def _complete(self, total: int, run: _Attempts) -> FileResult | None:
        if not run.first or run.fresh:
            return self._finish(total, run.first)
        # Resumed from a control file: if the digest refutes what it claimed (a planted or damaged
        # one), the file is fetched once more from zero instead of failing.
        done = self._finish_claimed(total, run.first)
        if done is None:
            self._start_over(run, "the bytes resumed from disk were wrong")
        return done

    def _start_over(self, run: _Attempts, why: str) -> None:
        self._emit("message", f"{self.job.name}: {why}; starting from zero")
        self.paths.discard()
        run.resumed = run.first = 0
        run.fresh = True

    def _back_off(self, run: _Attempts, completed: int, code: str, message: str) -> None:
        run.failures = 1 if completed > run.resumed else run.failures + 1  # progress resets the count
        if run.failures > self.engine.retries:
            raise TransferError(
                f"{self.job.name}: download failed after {self.engine.retries} retries: {message} "
                f"(aria2c error {code})",
                hint="check the network and run the same command again to resume",
            )
        wait = backoff_delay(self.engine.backoff, run.failures)
        self._emit(
            "message", f"{self.job.name}: {message or 'aria2c error ' + code}; retrying in {wait:.1f}s"
        )
        if self.stop.wait(wait):
            raise Halted()
        run.resumed = self._resumable_bytes()

    def _finish_claimed(self, total: int, resumed: int) -> FileResult | None:
        """The result if the bytes on disk really are the file, else None (partial state discarded)."""
        if self.hasher is not None:
            self.hasher.close(abort=True)
            self.hasher = None
        self.started = False
        try:
            return self._finish(total, resumed)
        except (IntegrityError, OSError):  # wrong bytes (discarded), or none at all
            return None

    def _fetch_natively(self, url: str, headers: dict[str, str]) -> FileResult:
        """A file whose final URL needs the token: aria2c could carry the token across a redirect, so
        the native engine (same connections, same resume state) fetches it."""
        import httpx

        from imageworks.transfer.native import NativeEngine, _FileTask

        self._emit("message", f"{self.job.name}: served by the Hub itself; fetched by the native engine")
        engine = NativeEngine(
            connections=self.engine.connections,
            stall_timeout=self.engine.stall_timeout,
            retries=self.engine.retries,
            backoff=self.engine.backoff,
            verify=self.engine.verify,
        )
        job = dataclasses.replace(self.job, url=url, headers=headers)
        with engine.client() as client:
            self._native = _FileTask(engine, job, client, self.stop, _Relay(self.events, self))
            try:
                result = self._native._run()
            except httpx.HTTPError as exc:
                raise TransferError(f"{self.job.name}: {exc}") from exc
        return dataclasses.replace(result, job=self.job)

    def _error(self, code: str, message: str) -> TransferError | None:
        """The error to raise for aria2c's errorCode, or None when it is worth retrying."""
        return error_for(
            code,
            message,
            name=self.job.name,
            host=self._host(),
            folder=self.job.dest.parent,
            kept=self._resumable_bytes,
        )

    def _host(self) -> str:
        return urlsplit(self.job.url).hostname or self.job.url

    def _resumable_bytes(self) -> int:
        info = read_control(self.paths.control)
        if info is not None:
            return covered(info.done)
        state = load_state(self.paths, self.job)
        return prefix_end(state.done) if state is not None else 0

    def _prepare_partial(self) -> int:
        """Make the partial state safe for aria2c and return how many bytes it will resume from.

        aria2c with --continue and no control file trusts the temp file's length as a contiguous
        prefix, which a segmented download's sparse file is not: only hand it a file it can trust.
        Our own JSON record (kept beside aria2c's, see _follow, and written so that it survives a
        full disk) wins when it knows more: aria2c truncates its control file when the disk fills
        up, so a control file is rebuilt from the record and every piece on disk is kept."""
        temp, control = self.paths.temp, self.paths.control
        if temp.exists():
            info = self._read_control()
            if info is not None and self.job.size is not None and info.total != self.job.size:
                info = None
            known = covered(info.done) if info is not None else 0
            state = load_state(self.paths, self.job)
            if state is not None and covered(state.done) > known:
                on_disk = temp.stat().st_size
                done = merge_ranges((a, min(b, on_disk)) for a, b in state.done if a < on_disk)
                marked = write_control(control, state.size, done)
                if marked:
                    log.info("%s: resuming %d bytes from our own record", self.job.name, marked)
                    return marked
            elif info is not None:
                return known
            elif (
                self.job.size
                and temp.stat().st_size == self.job.size
                and (self.job.sha256 or self.job.git_sha1)
            ):
                # Whole, with no record: an aria2c of an interrupted run finished it after its parent
                # died. aria2c takes it as complete, and the digest then decides (`_complete`).
                return self.job.size
        self.paths.discard()
        return 0

    def _read_control(self) -> ControlInfo | None:
        """aria2c's control file; an unreadable one is read again for up to a second, since an aria2c
        of an interrupted run may still be rewriting it (it stops on its own once its parent died)."""
        deadline = time.monotonic() + 1.0
        while True:
            info = read_control(self.paths.control)
            if info is not None or not self.paths.control.exists() or time.monotonic() > deadline:
                return info
            time.sleep(0.1)

    def _target(self) -> tuple[str, dict[str, str]]:
        """The URL and headers to give aria2c: the job's resolver asks the Hub; any other URL, and one
        that still carries the token, is walked here (aria2c would send the token on to the CDN)."""
        if self.job.resolve is not None:
            target = self.job.resolve()  # redirects walked by the Hub client
            url, headers = target.url, dict(target.headers)
        else:
            url, headers = self.job.url, dict(self.job.headers)
        if carries_token(headers) or self.job.resolve is None:
            # Walked here: aria2c would forward the token, and would follow any scheme.
            timeout = max(self.engine.stall_timeout, 10.0)
            found = locate(url, headers, timeout=timeout, what=self.job.name)
            url, headers = found.url, dict(found.headers)
        check_scheme(url, self.job.name)
        return url, headers

    def _follow(self, gid: str, resumed: int) -> dict[str, Any]:
        """Poll one download until it stops; feeds progress, the hasher and our resume record. The
        watchdog: no progress for the stall timeout (twice that while aria2c's own connection timeout
        may still act) ends the download with the status "stalled"."""
        last_save = 0.0
        progress_at, seen = time.monotonic(), -1
        while True:
            try:
                status = self._call("aria2.tellStatus", gid, STATUS_KEYS)
            except TransferError:
                if self.stop.is_set():
                    raise Halted() from None
                raise
            total = int(status.get("totalLength", "0"))
            completed = int(status.get("completedLength", "0"))
            if total and not self.started:
                try:
                    self._on_size(total, min(resumed, completed) if completed else resumed)
                except IntegrityError:
                    self._abort(gid)
                    self.paths.discard()
                    raise
            self.on_disk_bytes = completed
            bitfield = status.get("bitfield")
            if bitfield and total:
                piece = int(status["pieceLength"])
                if self.hasher is not None:
                    self.hasher.advance_to(min(total, prefix_pieces(bitfield) * piece))
                due = time.monotonic() - last_save >= STATE_SAVE_INTERVAL or status["status"] == "error"
                if due and total >= SINGLE_STREAM_BELOW:
                    # On an error too: on a full disk aria2c truncates its control file, and this
                    # record (rewritten in place) is then what the next run resumes from.
                    last_save = time.monotonic()
                    self._save(total, bitfield_ranges(bitfield, piece, total))
            state = status["status"]
            now = time.monotonic()
            if completed != seen:
                progress_at, seen = now, completed
            elif state == "active" and now - progress_at > self._patience(total, completed):
                self._emit(
                    "message",
                    f"{self.job.name}: aria2c made no progress for {now - progress_at:.0f} s; taking it back",
                )
                self._abort(gid)
                return {**status, "status": "stalled", "errorCode": "2", "errorMessage": "no progress"}
            if state in ("complete", "error", "removed"):
                with contextlib.suppress(TransferError):
                    self._call("aria2.removeDownloadResult", gid)
                if state == "removed":
                    raise Halted()
                return dict(status)
            if self.stop.wait(next_poll(status, POLL)):
                raise Halted()

    def _patience(self, total: int, completed: int) -> float:
        stall = self.engine.stall_timeout
        return stall if total and completed >= total else 2 * stall + self.engine.backoff

    def _save(self, total: int, done: list[tuple[int, int]]) -> None:
        try:
            save_state(self.paths, ResumeState(size=total, done=done, sha256=self.job.sha256))
        except OSError as exc:
            log.warning("%s: cannot save resume state: %s", self.job.name, exc)

    def _abort(self, gid: str) -> None:
        """Stop one download and wait until aria2c has let go of its files."""
        with contextlib.suppress(TransferError):
            self._call("aria2.forceRemove", gid)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if self._call("aria2.tellStatus", gid, ["status"])["status"] in (
                    "removed",
                    "error",
                    "complete",
                ):
                    break
                time.sleep(0.02)
            self._call("aria2.removeDownloadResult", gid)

    def _on_size(self, total: int, already: int) -> None:
        check_server_size(self.job, total)
        self.started = True
        self._emit("started", (total, already))
        self.hasher = PrefixHasher(
            self.paths.temp, total, want_git=bool(self.job.git_sha1), digest=self.engine.verify
        )

    def _finish(self, total: int, resumed: int) -> FileResult:
        if not self.started:  # an empty file, or one aria2c found complete before our first poll
            self._on_size(total, resumed)
        sha256, sha1 = "", None
        if self.hasher is not None:
            sha256, sha1 = self.hasher.finish(total)
        try:
            size = check_and_commit(self.job, self.paths, sha256, sha1, verify=self.engine.verify)
        except OSError as exc:
            raise disk_error(self.job, exc, total) from exc
        self.on_disk_bytes = size
        return FileResult(
            self.job, sha256, size, bytes_fetched=max(0, size - resumed), resumed_from=resumed, skipped=False
        )


class _Relay(collections.deque[tuple[str, Any, Any]]):
    """The event queue of a native task run on behalf of an aria2 task: events are reported as the
    aria2 task's own, so the progress pump sees one file."""

    def __init__(self, events: Events, owner: _Aria2Task) -> None:
        super().__init__()
        self.events, self.owner = events, owner

    def append(self, item: tuple[str, Any, Any]) -> None:
        kind, _task, payload = item
        self.events.append((kind, self.owner, payload))


__all__ = ["Aria2Engine"]
