"""One aria2c process and its JSON-RPC endpoint: started on first use on a random loopback port with
a random secret (in a private config file, so it is not in `ps` or our logs), stopped in order."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import os
import secrets
import socket
import subprocess
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

from imageworks.errors import TransferError
from imageworks.process import spawn

if TYPE_CHECKING:
    from imageworks.transfer.aria2 import Aria2Engine

log = logging.getLogger("imageworks.transfer.aria2")


class Halted(Exception):
    """Cancelled: aria2c is being stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """One aria2c process and its RPC endpoint."""

    def __init__(self, engine: Aria2Engine) -> None:
        self.engine = engine
        self.proc: subprocess.Popen[bytes] | None = None
        self.secret = secrets.token_hex(16)
        self.port = 0
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.start_lock = threading.Lock()
        self.stderr: Any = None
        self.conn: http.client.HTTPConnection | None = None
        self.stopped = False
        self.start_error: BaseException | None = None

    def ensure_started(self) -> None:
        """Started on first use: a re-run where every file is already complete never starts aria2c."""
        with self.start_lock:
            if self.stopped:
                raise Halted()
            if self.start_error is not None:
                raise self.start_error
            if self.proc is None:
                try:
                    self._start()
                except BaseException as exc:
                    self.start_error = exc
                    raise

    def start_soon(self) -> None:
        """Start aria2c in the background now, overlapping the Hub requests that resolve the files
        (a failure is kept, and raised by the first `ensure_started`)."""

        def start() -> None:
            with contextlib.suppress(Exception):
                self.ensure_started()

        threading.Thread(target=start, name="aria2c start", daemon=True).start()

    def _start(self) -> None:
        self.port = free_port()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        # The secret goes in a 0600 file rather than on the command line, where `ps` would show it.
        # Being aria2c's config file it also keeps the user's ~/.aria2/aria2.conf out (like --no-conf).
        fd, conf = tempfile.mkstemp(prefix="imageworks-aria2-", suffix=".conf")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(f"rpc-secret={self.secret}\n")
            argv = [
                self.engine.aria2c,
                f"--conf-path={conf}",
                f"--rpc-listen-port={self.port}",
                *self.engine.global_options(),
            ]
            try:
                self.proc = spawn(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=self.stderr,
                    # Its own process group: Ctrl-C reaches us, and we stop aria2c in order.
                    start_new_session=True,
                )
            except OSError as exc:
                raise Aria2StartError(f"cannot start aria2c ({self.engine.aria2c}): {exc}") from exc
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    self.call("aria2.getVersion")
                    break
                except TransferError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise Aria2StartError(
                            f"aria2c did not start: {self._stderr_tail() or 'no output'}"
                        ) from None
                    time.sleep(0.02)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(conf)

    def _post(self, payload: bytes) -> Any:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10.0)
            try:
                self.conn.request("POST", "/jsonrpc", payload, {"Content-Type": "application/json"})
                response = self.conn.getresponse()
                return json.loads(response.read())
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _stderr_tail(self) -> str:
        if self.stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self.stderr.seek(0)
            return self.stderr.read()[-2000:].decode("utf-8", "replace").strip()
        return ""

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call over a kept-alive loopback connection. The stdlib client suffices here
        (no proxies, no TLS) and, unlike httpx, costs nothing to import."""
        if self.proc is None or self.stopped:
            raise TransferError("aria2c is not running")
        payload = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": next(self.ids),
                "method": method,
                "params": [f"token:{self.secret}", *params],
            }
        ).encode()
        try:
            with self.lock:
                body = self._post(payload)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if self.proc.poll() is not None and not self.stopped:
                raise TransferError(
                    f"aria2c exited unexpectedly (status {self.proc.returncode}): {self._stderr_tail()}"
                ) from exc
            raise TransferError(f"aria2c RPC {method} failed: {exc}") from exc
        if "error" in body:
            raise Aria2RpcError(method, body["error"].get("message", "error"))
        return body.get("result")

    def stop(self) -> None:
        """Stop aria2c: SIGTERM is its graceful shutdown (control files are saved) and, unlike
        aria2.shutdown over RPC which lingers ~4 s, immediate. Safe to call twice."""
        with self.start_lock:
            already, self.stopped = self.stopped, True
        if already or self.proc is None:
            return
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
        began = time.perf_counter()
        self.proc.terminate()
        # An idle aria2c notices the signal only at its next event-loop tick, up to a second away;
        # a connection to its RPC port wakes the loop now.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            pass
        try:
            self.proc.wait(10)
            log.debug("aria2c stopped in %.3f s", time.perf_counter() - began)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.stderr is not None:
            self.stderr.close()


class Daemons:
    """The aria2c processes of one fetch, each file on the least busy one.

    aria2c runs a single thread, and on a fast link that thread is the limit: on loopback one aria2c
    moves two 512 MiB files in 2.1 s with the machine 60% idle, two aria2c (a file each) in 1.4 s. So a
    fetch of several large files starts one aria2c per core, never more than files it has to fetch."""

    def __init__(self, engine: Aria2Engine, count: int) -> None:
        self.members = [Daemon(engine) for _ in range(max(1, count))]
        self._busy = [0] * len(self.members)
        self._lock = threading.Lock()

    def start_soon(self) -> None:
        for daemon in self.members:
            daemon.start_soon()

    def take(self) -> Daemon:
        with self._lock:
            index = min(range(len(self.members)), key=self._busy.__getitem__)
            self._busy[index] += 1
            return self.members[index]

    def give_back(self, daemon: Daemon) -> None:
        with self._lock:
            self._busy[self.members.index(daemon)] -= 1

    def stop(self) -> None:
        for daemon in self.members:
            daemon.stop()


class Aria2StartError(TransferError):
    """aria2c is there but would not run (broken install, sandbox): worth falling back."""


class Aria2RpcError(TransferError):
    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"aria2c {method}: {message}")
        self.rpc_message = message
