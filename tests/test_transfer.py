"""The download engines against a real loopback HTTP server (no mocked client): both engines, every
failure the issue names (drops, stalls, 429, corrupt bytes, kill -9, a full disk, a token and a
cross-host redirect)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from imageworks.errors import IntegrityError, TransferError, UsageError
from imageworks.redaction import redact_argv
from imageworks.transfer import FileJob, FileResult, NullProgress, PartialPaths, choose_engine
from imageworks.transfer.aria2_control import read_control
from imageworks.transfer.base import merge_ranges, missing_ranges, prefix_end

MiB = 1024 * 1024
ARIA2C = shutil.which("aria2c")
ENGINES = [
    "native",
    pytest.param("aria2", marks=pytest.mark.skipif(ARIA2C is None, reason="aria2c not on PATH")),
]


# ---------------------------------------------------------------------------------------------------
# A small ranged file server with fault knobs.


@dataclass
class Fault:
    kind: str  # "drop" (close mid-body) | "stall" (pause mid-body) | "status" (answer `status` instead)
    # | "trickle" (from `after` bytes on, send `rate` bytes a second)
    after: int = 0
    seconds: float = 0.0
    rate: float = 1.0
    status: int = 503
    retry_after: int | None = None
    times: int = 1


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    get_redirects: dict[str, str] = field(default_factory=dict)  # GET redirects, HEAD answers 200
    no_range: set[str] = field(default_factory=set)
    rate: float | None = None  # bytes/s per connection
    requests: list[Request] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # body bytes sent per path
    host: str = "127.0.0.1"
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path}"

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def fail(self, path: str, kind: str, **kw: object) -> None:
        self.faults.setdefault(path, []).append(Fault(kind, **kw))  # type: ignore[arg-type]

    def take_fault(self, path: str, kinds: tuple[str, ...]) -> Fault | None:
        with self.lock:
            for fault in self.faults.get(path, []):
                if fault.kind in kinds and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def gets(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path == "/" + path]


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            server.requests.append(Request(self.command, self.path, dict(self.headers.items())))
            path = self.path.lstrip("/")
            target = server.redirects.get(path) or (server.get_redirects.get(path) if body else None)
            if target:
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = server.files.get(path) or server.files.get(server.get_redirects.get(path, ""))
            if data is None:
                self._status(404)
                return
            fault = server.take_fault(path, ("status",))
            if fault is not None:
                self._status(fault.status, fault.retry_after)
                return
            etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
            start, end = 0, len(data)
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            partial = bool(rng) and path not in server.no_range and (if_range is None or if_range == etag)
            if partial:
                first, _, last = (rng or "").removeprefix("bytes=").partition("-")
                start = int(first)
                end = min(len(data), int(last) + 1) if last else len(data)
                if start >= len(data):
                    self._status(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(end - start))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if body:
                self._body(path, data, start, end)

        def _status(self, status: int, retry_after: int | None = None) -> None:
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _body(self, path: str, data: bytes, start: int, end: int) -> None:
            drop = stall = None
            if end - start > 0:
                fault = server.take_fault(path, ("drop", "stall", "trickle"))
                if fault is not None and fault.kind == "trickle":
                    self._trickle(data, start, end, fault)
                    return
                if fault is not None and fault.after < end - start:
                    drop, stall = (fault, None) if fault.kind == "drop" else (None, fault)
            sent = 0
            chunk = 64 * 1024
            began = time.monotonic()
            try:
                while start + sent < end:
                    n = min(chunk, end - start - sent)
                    for fault in (drop, stall):
                        if fault is not None and sent < fault.after:
                            n = min(n, fault.after - sent)
                    if drop is not None and sent >= drop.after:
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if stall is not None and sent >= stall.after:
                        self.wfile.flush()
                        time.sleep(stall.seconds)
                        stall = None
                    self.wfile.write(data[start + sent : start + sent + n])
                    sent += n
                    with server.lock:
                        server.sent[path] = server.sent.get(path, 0) + n
                    if server.rate:
                        ahead = began + sent / server.rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
            except OSError:
                self.close_connection = True

        def _trickle(self, data: bytes, start: int, end: int, fault: Fault) -> None:
            try:
                self.wfile.write(data[start : start + fault.after])
                deadline = time.monotonic() + 60  # or when the client hangs up
                for pos in range(start + fault.after, end):
                    if time.monotonic() > deadline:
                        break
                    self.wfile.write(data[pos : pos + 1])
                    self.wfile.flush()
                    time.sleep(1 / fault.rate)
            except OSError:
                self.close_connection = True

    return Handler


@pytest.fixture
def make_server() -> Iterator[object]:
    servers: list[ThreadingHTTPServer] = []

    def make(host: str = "127.0.0.1") -> FileServer:
        state = FileServer(host=host)
        httpd = ThreadingHTTPServer((host, 0), _handler(state))
        httpd.daemon_threads = True
        state.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return state

    yield make
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(make_server) -> FileServer:
    return make_server()


def blob(n: int, seed: int = 0) -> bytes:
    # Non-repeating content, so a byte landing at the wrong offset changes the digest.
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d-%d" % (seed, counter)).digest() * 64
        counter += 1
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def engine_for(kind: str, **kw: object):
    # pool=False: these tests are about the large-file engine itself, whatever the file's size.
    opts: dict = {"connections": 4, "stall_timeout": 5.0, "retries": 3, "backoff": 0.1, "pool": False}
    opts.update(kw)
    return choose_engine(kind, **opts)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


class Recorder:
    def __init__(self) -> None:
        self.started: list[tuple[str, int | None, int]] = []
        self.advanced = 0
        self.done: list[FileResult] = []
        self.messages: list[str] = []
        self.threads: set[int] = set()

    def file_started(self, job: FileJob, total: int | None, already: int) -> None:
        self.threads.add(threading.get_ident())
        self.started.append((job.name, total, already))

    def advance(self, job: FileJob, n: int) -> None:
        self.threads.add(threading.get_ident())
        self.advanced += n

    def file_done(self, job: FileJob, result: FileResult) -> None:
        self.done.append(result)

    def message(self, text: str) -> None:
        self.messages.append(text)


# ---------------------------------------------------------------------------------------------------
# Pure helpers


def test_range_helpers() -> None:
    assert merge_ranges([(5, 10), (0, 5), (20, 30), (25, 26)]) == [(0, 10), (20, 30)]
    assert missing_ranges([(0, 10), (20, 30)], 40) == [(10, 20), (30, 40)]
    assert prefix_end([(3, 9)]) == 0 and prefix_end([(0, 4), (4, 9), (12, 13)]) == 9


def test_redaction_hides_secrets() -> None:
    line = redact_argv(
        ["aria2c", "--rpc-secret=s3cret", "--header=Authorization: Bearer hf_abcdefghijkl", "x token:zzz"]
    )
    assert "s3cret" not in line and "hf_abcdefghijkl" not in line and "zzz" not in line
    assert "--rpc-secret=<redacted>" in line


def test_choose_engine_explains_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    engine = choose_engine("auto")
    assert engine.name == "native" and "not found" in engine.note
    with pytest.raises(UsageError):
        choose_engine("aria2")
    assert "(--no-aria2)" in choose_engine("native", single_stream=True).note
    with pytest.raises(UsageError):
        choose_engine("aria2", single_stream=True)
    if ARIA2C:
        assert choose_engine("auto", aria2c_path=ARIA2C).name == "aria2"


def test_auto_falls_back_to_native_when_aria2c_will_not_start(server: FileServer, tmp_path: Path) -> None:
    broken = tmp_path / "aria2c"
    broken.write_text("#!/bin/sh\necho 'error while loading shared libraries' >&2\nexit 127\n")
    broken.chmod(0o755)
    data = blob(100_000, 30)
    url = server.add("w.bin", data)
    progress = Recorder()
    engine = choose_engine("auto", aria2c_path=str(broken), pool=False)
    assert engine.name == "aria2"
    [result] = engine.fetch([FileJob(url, tmp_path / "w.bin", len(data), sha(data))], progress)
    assert result.sha256 == sha(data)
    assert any("shared libraries" in m and "native" in m for m in progress.messages)
    with pytest.raises(TransferError, match="shared libraries"):
        choose_engine("aria2", aria2c_path=str(broken), pool=False).fetch(
            [FileJob(url, tmp_path / "x.bin", len(data))], NullProgress()
        )


# ---------------------------------------------------------------------------------------------------
# Both engines


@pytest.mark.parametrize("kind", ENGINES)
def test_multi_segment_download(kind: str, server: FileServer, tmp_path: Path) -> None:
    big, small = blob(12 * MiB + 12345, 1), b'{"model_type": "llama"}\n'
    jobs = [
        FileJob(
            server.add("model.safetensors", big), tmp_path / "m" / "model.safetensors", len(big), sha(big)
        ),
        FileJob(
            server.add("config.json", small),
            tmp_path / "m" / "config.json",
            len(small),
            git_sha1=git_sha1(small),
        ),
    ]
    progress = Recorder()
    results = engine_for(kind).fetch(jobs, progress)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == big
    assert (tmp_path / "m" / "config.json").read_bytes() == small
    assert [r.sha256 for r in results] == [sha(big), sha(small)]
    assert results[0].bytes_fetched == len(big) and not results[0].skipped
    ranges = {r.headers.get("Range") for r in server.gets("model.safetensors")}
    assert len(ranges) >= 4, "the big file should have been fetched over several ranges"
    assert leftovers(tmp_path / "m") == []
    assert progress.advanced == len(big) + len(small)
    assert progress.threads == {threading.get_ident()}
    assert len(progress.done) == 2


@pytest.mark.parametrize("kind", ENGINES)
def test_drop_mid_body_is_retried_in_the_same_run(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(6 * MiB, 2)
    url = server.add("w.bin", data)
    server.fail("w.bin", "drop", after=300_000, times=3)
    [result] = engine_for(kind).fetch(
        [FileJob(url, tmp_path / "w.bin", len(data), sha(data))], NullProgress()
    )
    assert (tmp_path / "w.bin").read_bytes() == data and result.sha256 == sha(data)


@pytest.mark.parametrize("kind", ENGINES)
def test_resume_across_runs_after_a_drop(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(8 * MiB, 3)
    url = server.add("w.bin", data)
    server.rate = 8 * MiB  # slow enough that the drop happens while other ranges are in flight
    server.fail("w.bin", "drop", after=2 * MiB, times=100)
    job = FileJob(url, tmp_path / "w.bin", len(data), sha(data))
    with pytest.raises(TransferError):
        engine_for(kind, retries=0, connections=1).fetch([job], NullProgress())
    assert not job.dest.exists()
    paths = PartialPaths.for_dest(job.dest)
    assert paths.temp.exists() and (paths.state.exists() or paths.control.exists())
    server.faults.clear()
    server.rate = None
    before = len(server.gets("w.bin"))
    [result] = engine_for(kind).fetch([job], NullProgress())
    assert job.dest.read_bytes() == data
    assert result.resumed_from >= MiB and result.bytes_fetched <= len(data) - MiB
    first_range = server.gets("w.bin")[before].headers.get("Range", "")
    assert not first_range.startswith("bytes=0-")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ENGINES)
def test_stalled_connection_is_restarted(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(6 * MiB, 4)
    url = server.add("w.bin", data)
    server.fail("w.bin", "stall", after=100_000, seconds=20, times=2)
    began = time.monotonic()
    engine_for(kind, stall_timeout=1.0).fetch(
        [FileJob(url, tmp_path / "w.bin", len(data), sha(data))], NullProgress()
    )
    assert time.monotonic() - began < 10
    assert (tmp_path / "w.bin").read_bytes() == data


@pytest.mark.parametrize("kind", ENGINES)
def test_429_then_success(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(100_000, 5)
    url = server.add("w.bin", data)
    server.fail("w.bin", "status", status=429, retry_after=1, times=1)
    began = time.monotonic()
    engine_for(kind).fetch([FileJob(url, tmp_path / "w.bin", len(data), sha(data))], NullProgress())
    assert (tmp_path / "w.bin").read_bytes() == data
    if kind == "native":  # aria2c does not expose Retry-After; it backs off on its own
        assert time.monotonic() - began >= 1.0


@pytest.mark.parametrize("kind", ENGINES)
def test_5xx_exhausting_retries_is_a_transfer_error(kind: str, server: FileServer, tmp_path: Path) -> None:
    url = server.add("w.bin", b"x" * 1000)
    server.fail("w.bin", "status", status=503, times=100)
    with pytest.raises(TransferError):
        engine_for(kind, retries=0).fetch([FileJob(url, tmp_path / "w.bin", 1000)], NullProgress())
    assert not (tmp_path / "w.bin").exists()


@pytest.mark.parametrize("kind", ENGINES)
def test_corrupt_bytes_are_discarded(kind: str, server: FileServer, tmp_path: Path) -> None:
    good = blob(5 * MiB, 6)
    bad = bytearray(good)
    bad[3 * MiB] ^= 0xFF
    url = server.add("w.bin", bytes(bad))
    job = FileJob(url, tmp_path / "w.bin", len(good), sha(good), label="w.bin")
    with pytest.raises(IntegrityError) as info:
        engine_for(kind).fetch([job], NullProgress())
    assert info.value.expected == sha(good) and info.value.actual == sha(bytes(bad))
    assert "w.bin" in str(info.value)
    assert not job.dest.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ENGINES)
def test_wrong_size_is_an_integrity_error(kind: str, server: FileServer, tmp_path: Path) -> None:
    url = server.add("w.bin", b"y" * 5000)
    with pytest.raises(IntegrityError):
        engine_for(kind).fetch([FileJob(url, tmp_path / "w.bin", 4000)], NullProgress())
    assert not (tmp_path / "w.bin").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ENGINES)
def test_small_file_git_sha1(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = b"hello tokenizer\n" * 100
    url = server.add("tokenizer.json", data)
    good = FileJob(url, tmp_path / "tokenizer.json", len(data), git_sha1=git_sha1(data))
    [result] = engine_for(kind).fetch([good], NullProgress())
    assert result.sha256 == sha(data)
    bad = FileJob(url, tmp_path / "other.json", len(data), git_sha1="0" * 40)
    with pytest.raises(IntegrityError):
        engine_for(kind).fetch([bad], NullProgress())
    assert not bad.dest.exists()


@pytest.mark.parametrize("kind", ENGINES)
def test_up_to_date_rerun_fetches_nothing(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(5 * MiB, 7)
    url = server.add("w.bin", data)
    job = FileJob(url, tmp_path / "w.bin", len(data), sha(data))
    engine = engine_for(kind)
    engine.fetch([job], NullProgress())
    count = len(server.requests)
    [again] = engine.fetch([job], NullProgress())
    assert again.skipped and again.bytes_fetched == 0 and again.sha256 == sha(data)
    assert len(server.requests) == count
    # A destination with other bytes is not "up to date": it is fetched again and replaced.
    job.dest.write_bytes(b"z" * len(data))
    [third] = engine.fetch([job], NullProgress())
    assert not third.skipped and job.dest.read_bytes() == data


@pytest.mark.parametrize("kind", ENGINES)
def test_server_without_range_support(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(6 * MiB, 8)
    url = server.add("w.bin", data)
    server.no_range.add("w.bin")
    [result] = engine_for(kind).fetch(
        [FileJob(url, tmp_path / "w.bin", len(data), sha(data))], NullProgress()
    )
    assert (tmp_path / "w.bin").read_bytes() == data and result.sha256 == sha(data)


@pytest.mark.parametrize("kind", ENGINES)
def test_no_token_on_cross_host_redirect(kind: str, make_server, tmp_path: Path) -> None:
    hub, cdn = make_server("127.0.0.1"), make_server("localhost")
    data = blob(5 * MiB, 9)
    hub.redirects["org/model/resolve/main/w.bin"] = cdn.add("blobs/abc", data)
    job = FileJob(
        hub.url("org/model/resolve/main/w.bin"),
        tmp_path / "w.bin",
        len(data),
        sha(data),
        headers={"Authorization": "Bearer hf_secret_token", "X-Client": "imageworks"},
    )
    engine_for(kind).fetch([job], NullProgress())
    assert job.dest.read_bytes() == data
    assert hub.requests and all(
        r.headers.get("Authorization") == "Bearer hf_secret_token" for r in hub.requests
    )
    assert cdn.requests and not any("Authorization" in r.headers for r in cdn.requests)
    assert len(cdn.gets("blobs/abc")) >= 2


def test_native_single_stream(server: FileServer, tmp_path: Path) -> None:
    data = blob(9 * MiB, 10)
    url = server.add("w.bin", data)
    choose_engine("native", single_stream=True).fetch(
        [FileJob(url, tmp_path / "w.bin", len(data), sha(data))], NullProgress()
    )
    assert (tmp_path / "w.bin").read_bytes() == data
    assert len(server.gets("w.bin")) == 1


def test_native_unknown_size_and_no_digest(server: FileServer, tmp_path: Path) -> None:
    data = blob(7 * MiB, 11)
    url = server.add("direct.gguf", data)
    progress = Recorder()
    [result] = engine_for("native").fetch([FileJob(url, tmp_path / "direct.gguf", None)], progress)
    assert result.sha256 == sha(data) and result.size == len(data)
    assert progress.started == [("direct.gguf", len(data), 0)]
    assert len(server.gets("direct.gguf")) > 2


def test_native_restarts_when_the_file_changed(server: FileServer, tmp_path: Path) -> None:
    old, new = blob(6 * MiB, 12), blob(6 * MiB, 13)
    url = server.add("w.bin", old)
    server.fail("w.bin", "drop", after=3 * MiB, times=100)
    job = FileJob(url, tmp_path / "w.bin", len(new))
    with pytest.raises(TransferError):
        engine_for("native", retries=0, connections=1).fetch([job], NullProgress())
    server.faults.clear()
    server.files["w.bin"] = new  # same size, new ETag: If-Range makes the server send it whole
    [result] = engine_for("native").fetch([job], NullProgress())
    assert job.dest.read_bytes() == new and result.resumed_from == 0


@pytest.mark.parametrize("kind", ENGINES)
def test_cancel_keeps_partial_state(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(8 * MiB, 14)
    url = server.add("w.bin", data)
    server.rate = MiB // 4  # 4 connections: about 8 s for the whole file
    cancel = threading.Event()
    timer = threading.Timer(1.0, cancel.set)
    timer.start()
    job = FileJob(url, tmp_path / "w.bin", len(data), sha(data))
    began = time.monotonic()
    with pytest.raises(TransferError, match="cancelled"):
        engine_for(kind).fetch([job], NullProgress(), cancel=cancel)
    assert time.monotonic() - began < 5
    paths = PartialPaths.for_dest(job.dest)
    record = read_control(paths.control)
    done = record.done if record is not None else json.loads(paths.state.read_text())["done"]
    assert sum(b - a for a, b in done) > 0
    server.rate = None
    [result] = engine_for(kind).fetch([job], NullProgress())
    assert result.resumed_from > 0 and job.dest.read_bytes() == data


# ---------------------------------------------------------------------------------------------------
# Against the fake Hub: a gated repo, the token on the Hub only, a CDN that refuses it, faults.


def _gated_repo(hub, files: dict[str, bytes]) -> dict[str, str]:
    hub.tokens["hf_alice_token"] = "alice"
    hub.add_repo("org/gated-model", files, gated=True)
    hub.grant("org/gated-model", "alice")
    return {"Authorization": "Bearer hf_alice_token"}


def _hub_job(hub, path: str, dest: Path, headers: dict[str, str]) -> FileJob:
    entry = hub.file("org/gated-model", path)
    return FileJob(
        hub.resolve_url("org/gated-model", path),
        dest / path,
        entry.size,
        sha256=entry.sha256 if entry.lfs else None,
        git_sha1=None if entry.lfs else entry.oid,
        headers=headers,
        label=path,
    )


@pytest.mark.parametrize("kind", ENGINES)
def test_fake_hub_gated_repo_token_stays_on_the_hub(kind: str, fake_hub, tmp_path: Path) -> None:
    weights, config = blob(6 * MiB, 20), b'{"model_type": "llama"}\n'
    headers = _gated_repo(fake_hub, {"model.safetensors": weights, "config.json": config})
    jobs = [_hub_job(fake_hub, p, tmp_path, headers) for p in ("model.safetensors", "config.json")]
    results = engine_for(kind).fetch(jobs, NullProgress())
    assert (tmp_path / "model.safetensors").read_bytes() == weights
    assert (tmp_path / "config.json").read_bytes() == config
    assert [r.sha256 for r in results] == [sha(weights), sha(config)]
    hub_side = [r for r in fake_hub.requests if r.server == "hub"]
    cdn_side = [r for r in fake_hub.requests if r.server == "cdn"]
    assert hub_side and all(r.authorized for r in hub_side)
    assert len(cdn_side) >= 2 and not any(r.authorized for r in cdn_side)
    assert all(r.status in (200, 206, 302) for r in fake_hub.requests)


@pytest.mark.parametrize("kind", ENGINES)
def test_fake_hub_faults_and_corruption(kind: str, fake_hub, tmp_path: Path) -> None:
    good, bad = blob(6 * MiB, 21), blob(5 * MiB, 22)
    headers = _gated_repo(fake_hub, {"good.safetensors": good, "bad.safetensors": bad})
    fake_hub.fail("good.safetensors", "reset", after_bytes=500_000, server="cdn", times=2)
    fake_hub.fail("good.safetensors", "stall", after_bytes=100_000, seconds=30, server="cdn")
    fake_hub.fail("good.safetensors", "status", status=503, server="cdn")
    fake_hub.corrupt("org/gated-model", "bad.safetensors")
    jobs = [_hub_job(fake_hub, p, tmp_path, headers) for p in ("good.safetensors", "bad.safetensors")]
    with pytest.raises(IntegrityError) as info:
        engine_for(kind, stall_timeout=1.0).fetch(jobs, NullProgress())
    assert "bad.safetensors" in str(info.value)
    assert (tmp_path / "good.safetensors").read_bytes() == good  # the other file still completed
    assert not (tmp_path / "bad.safetensors").exists() and leftovers(tmp_path) == []
    assert all(f.exhausted for f in fake_hub.faults)


@pytest.mark.parametrize("kind", ENGINES)
def test_expired_cdn_url_is_resolved_again(kind: str, fake_hub, tmp_path: Path) -> None:
    weights = blob(20 * MiB, 23)
    headers = _gated_repo(fake_hub, {"model.safetensors": weights})
    # Expiry is signed in whole seconds: a fresh URL lives 0.5 to 1.5 s, a retry may meet another.
    fake_hub.cdn_url_ttl = 1.5
    fake_hub.throttle(per_connection_bps=2 * MiB)
    # A connection dropped after ~2 s must reconnect with a URL that has expired by then.
    fake_hub.fail("model.safetensors", "reset", after_bytes=4 * MiB, server="cdn")
    job = _hub_job(fake_hub, "model.safetensors", tmp_path, headers)
    engine_for(kind, retries=3).fetch([job], NullProgress())
    assert job.dest.read_bytes() == weights
    refused = sum(r.server == "cdn" and r.status == 403 for r in fake_hub.requests)
    resolved = sum(r.server == "hub" for r in fake_hub.requests)
    assert refused >= 1
    if kind == "native":
        # One Hub request per refusal (the fresh URL is shared), not one per piece from then on.
        assert 2 <= resolved <= refused + 1
    else:
        # Connections opened before the expiry may finish the job; otherwise one resolve per
        # retry of the whole download (3 allowed here).
        assert resolved <= 1 + 3


# ---------------------------------------------------------------------------------------------------
# Whole processes: kill -9, a full disk.

CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from imageworks.transfer import FileJob, NullProgress, choose_engine
    spec = json.loads(sys.argv[1])
    job = FileJob(spec["url"], Path(spec["dest"]), spec["size"], spec["sha256"])
    engine = choose_engine(spec["kind"], connections=4, stall_timeout=5.0, retries=2, backoff=0.1)
    out = []
    for attempt in range(spec.get("runs", 1)):
        if attempt and spec.get("filler"):
            Path(spec["filler"]).unlink()
        try:
            [r] = engine.fetch([job], NullProgress())
            out.append({"ok": True, "resumed_from": r.resumed_from, "bytes_fetched": r.bytes_fetched})
        except Exception as exc:
            out.append({"ok": False, "error": type(exc).__name__, "message": str(exc)})
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("kind", ENGINES)
def test_kill_9_then_rerun_resumes(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(8 * MiB, 15)
    url = server.add("w.bin", data)
    server.rate = MiB // 4  # 4 connections: about 8 s for the whole file, we kill it after ~2
    dest = tmp_path / "w.bin"
    spec = {"url": url, "dest": str(dest), "size": len(data), "sha256": sha(data), "kind": kind}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)], start_new_session=True, stdout=subprocess.PIPE
    )
    paths = PartialPaths.for_dest(dest)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        record = read_control(paths.control) if kind == "aria2" else None
        if kind == "native" and paths.state.exists():
            done = json.loads(paths.state.read_text())["done"]
            if sum(b - a for a, b in done) >= MiB:
                break
        if record is not None and sum(b - a for a, b in record.done) >= MiB:
            break
        time.sleep(0.05)
    else:
        child.kill()
        pytest.fail("no resumable state appeared")
    helpers = _aria2c_serving(child.pid)
    os.killpg(child.pid, signal.SIGKILL)
    for pid in helpers:  # aria2c runs in its own session: it dies as abruptly as we do
        os.kill(pid, signal.SIGKILL)
    child.wait()
    assert not dest.exists()
    server.rate = None
    [result] = engine_for(kind).fetch([FileJob(url, dest, len(data), sha(data))], NullProgress())
    assert dest.read_bytes() == data
    assert result.resumed_from >= MiB and result.bytes_fetched < len(data)
    assert leftovers(tmp_path) == []


def _aria2c_serving(pid: int) -> list[int]:
    """aria2c processes started by the process `pid` (they carry --stop-with-process=<pid>)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"--stop-with-process={pid}".encode() in argv:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("kind", ENGINES)
def test_ctrl_c_leaves_resumable_state_and_no_aria2c(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(8 * MiB, 17)
    url = server.add("w.bin", data)
    server.rate = MiB // 2
    dest = tmp_path / "w.bin"
    spec = {"url": url, "dest": str(dest), "size": len(data), "sha256": sha(data), "kind": kind}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    paths = PartialPaths.for_dest(dest)
    deadline = time.monotonic() + 10
    while not (paths.temp.exists() and paths.temp.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=20)
    assert b"KeyboardInterrupt" in err
    assert _aria2c_serving(child.pid) == []
    assert paths.temp.exists() and not dest.exists()
    server.rate = None
    [result] = engine_for(kind).fetch([FileJob(url, dest, len(data), sha(data))], NullProgress())
    assert result.resumed_from > 0 and dest.read_bytes() == data


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(
    not _unshare_works(),
    reason="a full disk is simulated with a tmpfs in a user namespace (unshare -rm), unavailable here",
)
@pytest.mark.parametrize("kind", ENGINES)
def test_disk_full_keeps_partial_and_resumes(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(6 * MiB, 16)
    url = server.add("w.bin", data)
    mount = tmp_path / "small"
    mount.mkdir()
    dest, filler = mount / "w.bin", mount / "filler"
    spec = {
        "url": url, "dest": str(dest), "size": len(data), "sha256": sha(data), "kind": kind,
        "runs": 2, "filler": str(filler),
    }  # fmt: skip
    script = (
        f"mount -t tmpfs -o size=8m none {mount} && head -c {4 * MiB} /dev/zero > {filler} && "
        f'exec "$0" -c "$1" "$2"'
    )
    out = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, sys.executable, CHILD, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    first, second = json.loads(out.stdout)
    assert first["ok"] is False and first["error"] == "TransferError", first
    assert "disk full" in first["message"]
    assert second["ok"] is True, second
    assert second["resumed_from"] > 0 and second["bytes_fetched"] < len(data)


# ---------------------------------------------------------------------------------------------------
# Hostile servers and planted local state (issue 15)


def _bounded(fn, seconds: float):
    """Run fn in a thread; fail the test (rather than hang) if it takes longer than `seconds`."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"], time.monotonic() - started


def _hub_files_job(client, hub, repo_id: str, path: str, dest: Path) -> FileJob:
    """A job exactly as `download` builds it: the Hub URL, the token, a resolver for that file."""
    snap = client.snapshot(repo_id)
    listed = snap.file(path)
    return FileJob(
        client.file_url(snap.repo_id, snap.commit, path),
        dest / path,
        listed.size,
        sha256=listed.sha256,
        git_sha1=listed.git_sha1,
        headers=client.auth_headers(),
        label=path,
        resolve=client.resolver(snap.repo_id, snap.commit, path),
        root=dest,
    )


@pytest.mark.parametrize("kind", ENGINES)
def test_expired_signed_url_is_resolved_through_the_hub_and_resumed(
    kind: str, fake_hub, tmp_path: Path
) -> None:
    """15.2: the engine is given the Hub URL and a resolver (as `download` does); URLs signed for
    ~1 s expire mid-download; the Hub is asked again and the bytes on disk are kept."""
    from imageworks.config import resolve_config
    from imageworks.hub import HubClient

    weights = blob(12 * MiB, 40)
    headers = _gated_repo(fake_hub, {"model.safetensors": weights})
    fake_hub.cdn_url_ttl = 1.0
    fake_hub.throttle(per_connection_bps=2 * MiB)
    # aria2c keeps its connections: a reset after ~1.5 s makes it reconnect with an expired URL.
    fake_hub.fail("model.safetensors", "reset", after_bytes=3 * MiB, server="cdn")
    token = headers["Authorization"].split()[1]
    with HubClient(resolve_config(token=token), backoff=0.01) as client:
        job = _hub_files_job(client, fake_hub, "org/gated-model", "model.safetensors", tmp_path)
        fake_hub.clear_requests()
        [result], _ = _bounded(lambda: engine_for(kind, connections=2).fetch([job], NullProgress()), 60)
    assert job.dest.read_bytes() == weights and result.sha256 == sha(weights)
    cdn = [r for r in fake_hub.requests if r.server == "cdn" and r.method == "GET"]
    assert any(r.status == 403 for r in cdn), "no signed URL expired: the test proves nothing"
    heads = [r for r in fake_hub.requests if r.server == "hub"]
    assert len(heads) >= 2  # resolved when the file started, and again after the refusal
    # Went on from the bytes on disk: far less than twice the file went over the wire.
    assert sum(r.sent for r in cdn) < 1.5 * len(weights)
    assert not any(r.authorized for r in fake_hub.requests if r.server == "cdn")


@pytest.mark.skipif(ARIA2C is None, reason="aria2c not on PATH")
def test_aria2c_never_gets_a_token_it_could_carry_to_another_host(make_server, tmp_path: Path) -> None:
    """15.3: the Hub's HEAD answers 200 but its GET redirects to another host. aria2c follows GET
    redirects with every header; the other host must never see Authorization."""
    data = blob(6 * MiB, 41)
    other = make_server("127.0.0.2")
    other.add("blob", data)
    hub = make_server()
    hub.get_redirects["model.bin"] = other.url("blob")
    hub.files["model.bin"] = data  # what HEAD describes
    job = FileJob(
        hub.url("model.bin"), tmp_path / "model.bin", len(data), sha(data),
        headers={"Authorization": "Bearer hf_secret"},
    )  # fmt: skip
    [result], _ = _bounded(lambda: engine_for("aria2").fetch([job], NullProgress()), 60)
    assert job.dest.read_bytes() == data and result.sha256 == sha(data)
    assert other.requests, "the redirect was not followed"
    assert not any("Authorization" in r.headers for r in other.requests)


@pytest.mark.parametrize("kind", ENGINES)
def test_a_symlink_at_the_partial_path_is_refused(kind: str, server: FileServer, tmp_path: Path) -> None:
    """15.4: a symlink planted at `.<name>.imageworks-partial` (plus a resume record) must not be
    written through, and the destination must not become a link out of the model folder."""
    from imageworks.transfer.base import ResumeState, save_state

    data = blob(6 * MiB, 42)
    url = server.add("w.bin", data)
    folder, outside = tmp_path / "model", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_bytes(b"precious" * 1000)
    dest = folder / "w.bin"
    paths = PartialPaths.for_dest(dest)
    paths.temp.symlink_to(outside)
    save_state(paths, ResumeState(size=len(data), done=[(0, 4096)], sha256=sha(data)))
    job = FileJob(url, dest, len(data), sha(data), root=folder)
    with pytest.raises(TransferError, match="symlink"):
        _bounded(lambda: engine_for(kind).fetch([job], NullProgress()), 30)
    assert outside.read_bytes() == b"precious" * 1000
    assert not dest.exists() and not dest.is_symlink()


@pytest.mark.parametrize("kind", ENGINES)
def test_a_fifo_at_the_partial_path_is_refused_at_once(kind: str, server: FileServer, tmp_path: Path) -> None:
    data = blob(6 * MiB, 43)
    url = server.add("w.bin", data)
    dest = tmp_path / "w.bin"
    os.mkfifo(PartialPaths.for_dest(dest).temp)
    with pytest.raises(TransferError, match="not a regular file"):
        _bounded(
            lambda: engine_for(kind).fetch([FileJob(url, dest, len(data), sha(data))], NullProgress()), 20
        )


def test_a_destination_linking_out_of_the_model_folder_is_replaced(
    server: FileServer, tmp_path: Path
) -> None:
    data = blob(100_000, 44)
    url = server.add("w.bin", data)
    folder, outside = tmp_path / "model", tmp_path / "outside.bin"
    folder.mkdir()
    outside.write_bytes(data)  # the right bytes, but outside the model folder
    dest = folder / "w.bin"
    dest.symlink_to(outside)
    [result] = choose_engine("native").fetch(
        [FileJob(url, dest, len(data), sha(data), root=folder)], NullProgress()
    )
    assert not result.skipped and not dest.is_symlink() and dest.read_bytes() == data
    inside = folder / "inside.bin"
    inside.write_bytes(data)
    link = folder / "link.bin"
    link.symlink_to(inside)
    [kept] = choose_engine("native").fetch(
        [FileJob(url, link, len(data), sha(data), root=folder)], NullProgress()
    )
    assert kept.skipped and link.is_symlink()  # a link inside the model folder is fine


@pytest.mark.parametrize("kind", [*ENGINES, "pool"])
def test_a_redirect_to_file_scheme_fails_at_once(kind: str, server: FileServer, tmp_path: Path) -> None:
    """15.11: not 31 s of retries with "check the network"."""
    server.redirects["w.bin"] = "file:///etc/hostname"
    job = FileJob(server.url("w.bin"), tmp_path / "w.bin", 6 * MiB if kind != "pool" else 1000, "0" * 64)
    if kind == "pool":
        from imageworks.transfer.pool import PoolEngine

        engine = PoolEngine(retries=5, backoff=1.0)
    else:
        engine = engine_for(kind, backoff=1.0, retries=5)
    with pytest.raises(TransferError, match="unsupported URL scheme") as info:
        _, _ = _bounded(lambda: engine.fetch([job], NullProgress()), 20)
    assert "check the network" not in str(info.value) + str(info.value.hint)


def test_hub_redirect_to_file_scheme_fails_at_once(make_server) -> None:
    from imageworks.hub import locate, probe_url

    server = make_server()
    server.redirects["x"] = "file:///etc/passwd"
    for call in (
        lambda: probe_url(server.url("x")),
        lambda: locate(server.url("x"), {"Authorization": "Bearer t"}, timeout=5, what="x"),
    ):
        started = time.monotonic()
        with pytest.raises(TransferError, match="unsupported URL scheme"):
            call()
        assert time.monotonic() - started < 2


def _plant_partial(
    dest: Path, data: bytes, ranges: list[tuple[int, int]], *, fill: bytes | None = None
) -> None:
    """A partial file holding `data` at `ranges` (zeros elsewhere, or `fill` everywhere)."""
    temp = PartialPaths.for_dest(dest).temp
    buffer = bytearray(len(data))
    for start, end in ranges:
        buffer[start:end] = data[start:end]
    temp.write_bytes(fill * (len(data) // len(fill)) if fill else bytes(buffer))


FAKE_ARIA2C = textwrap.dedent(
    """
    import json, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    # What aria2c 1.36 did resuming from a control file that marks every piece done: the download
    # stays "active" with completedLength == totalLength, and never completes.
    port = int(next(a.split("=")[1] for a in sys.argv if a.startswith("--rpc-listen-port=")))
    state = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            call = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            method, params = call["method"], call["params"][1:]
            result = "OK"
            if method == "aria2.getVersion":
                result = {"version": "1.36.0"}
            elif method == "aria2.addUri":
                state["size"] = int(open(params[1]["dir"] + "/size").read())
                state["status"] = "active"
                result = "0000000000000001"
            elif method == "aria2.forceRemove":
                state["status"] = "removed"
            elif method == "aria2.tellStatus":
                size = state["size"]
                pieces = (size + 1048575) // 1048576
                result = {
                    "status": state["status"], "totalLength": str(size), "completedLength": str(size),
                    "numPieces": str(pieces), "pieceLength": "1048576", "bitfield": "f" * ((pieces + 3) // 4),
                }
            body = json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": result}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


@pytest.mark.parametrize("right_bytes", [True, False])
def test_aria2c_stuck_at_complete_is_taken_back(
    right_bytes: bool, server: FileServer, tmp_path: Path
) -> None:
    """15.5: an aria2c that stays "active" with completed == total and no connection (as aria2c did
    resuming from a control file that marks every piece done) is taken back by the watchdog after
    the stall timeout; the digest decides (right bytes: done; wrong bytes: fetched again)."""
    from imageworks.transfer.aria2 import Aria2Engine
    from imageworks.transfer.aria2_control import write_control

    fake = tmp_path / "bin" / "aria2c"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\n{FAKE_ARIA2C}")
    fake.chmod(0o755)
    data = blob(6 * MiB, 45)
    url = server.add("w.bin", data)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "size").write_text(str(len(data)))
    dest = folder / "w.bin"
    _plant_partial(dest, data, [(0, len(data))], fill=None if right_bytes else b"\0")
    write_control(PartialPaths.for_dest(dest).control, len(data), [(0, len(data))])
    engine = Aria2Engine(str(fake), stall_timeout=1.0, retries=1, backoff=0.1)
    job = FileJob(url, dest, len(data), sha(data))
    if right_bytes:
        [result], seconds = _bounded(lambda: engine.fetch([job], NullProgress()), 30)
        assert dest.read_bytes() == data and result.sha256 == sha(data) and seconds < 10
    else:
        # The fake never downloads: the wrong bytes are discarded and the file fails clearly.
        with pytest.raises(TransferError, match="no progress"):
            _bounded(lambda: engine.fetch([job], NullProgress()), 30)
        assert not dest.exists()


@pytest.mark.skipif(ARIA2C is None, reason="aria2c not on PATH")
def test_aria2_resumes_every_piece_after_its_control_file_was_truncated(
    server: FileServer, tmp_path: Path
) -> None:
    """15.13: on a full disk aria2c truncates its control file; our own record (which survives it)
    knows the scattered pieces on disk, and the next run fetches only the rest."""
    from imageworks.transfer.base import ResumeState, save_state

    data = blob(8 * MiB, 46)
    url = server.add("w.bin", data)
    dest = tmp_path / "w.bin"
    have = [(0, 1 * MiB), (2 * MiB, 4 * MiB), (5 * MiB, 7 * MiB)]
    _plant_partial(dest, data, have)
    paths = PartialPaths.for_dest(dest)
    save_state(paths, ResumeState(size=len(data), done=have, sha256=sha(data)))
    paths.control.write_bytes(b"")  # what aria2c leaves on ENOSPC
    server.rate = 4 * MiB  # so that what the server sent is what aria2c asked for (no buffered excess)
    [result] = engine_for("aria2").fetch([FileJob(url, dest, len(data), sha(data))], NullProgress())
    assert dest.read_bytes() == data
    assert result.resumed_from == 5 * MiB  # all three ranges, not only the 1 MiB prefix
    # Before: only the 1 MiB prefix was kept, and 7 MiB fetched again.
    assert server.sent["w.bin"] < 3 * MiB + 1536 * 1024


def test_a_trickling_connection_is_replaced(server: FileServer, tmp_path: Path) -> None:
    """15.6: a connection that sends 20 bytes a second never trips the read timeout; the minimum
    speed rule replaces it and the download finishes."""
    data = blob(6 * MiB, 47)
    url = server.add("w.bin", data)
    server.fail("w.bin", "trickle", after=1000, rate=20)
    engine = engine_for("native", stall_timeout=1.0)
    progress = Recorder()
    [result], seconds = _bounded(
        lambda: engine.fetch([FileJob(url, tmp_path / "w.bin", len(data), sha(data))], progress), 40
    )
    assert result.sha256 == sha(data) and seconds < 20
    assert any("is replaced" in m for m in progress.messages)


# ---------------------------------------------------------------------------------------------------
# Whole downloads through the CLI: stale records, small files, the plan's engines (issues 15.14, 13)


def _small_files_repo(hub, n: int = 40) -> dict[str, bytes]:
    files = {f"tokenizer/part-{i:03d}.json": b'{"i": %d}' % i * (i + 1) for i in range(n)}
    files["config.json"] = b'{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}'
    files["model.safetensors"] = blob(6 * MiB, 48)
    hub.add_repo("Owner/Many", files)
    return files


def test_stale_partial_records_of_complete_files_are_cleaned(fake_hub, run_cli, isolated_env) -> None:
    _small_files_repo(fake_hub, 3)
    assert run_cli("download", "Owner/Many", "--engine", "native").returncode == 0
    folder = isolated_env["models"] / "Owner" / "Many"
    paths = PartialPaths.for_dest(folder / "model.safetensors")
    paths.temp.write_bytes(b"x" * 100)
    paths.state.write_text('{"format": "imageworks-partial", "version": 1, "size": 1, "done": []}')
    again = run_cli("download", "Owner/Many", "--engine", "native")
    assert again.returncode == 0 and "up to date" in again.stdout
    assert not paths.temp.exists() and not paths.state.exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_small_files_share_kept_alive_connections_and_skip_the_head(
    engine: str, fake_hub, run_cli, isolated_env
) -> None:
    """13: small files go through one keep-alive pool: one GET each, no HEAD, a few connections for
    all of them; the large file goes through the chosen engine. The plan says which engine is whose."""
    files = _small_files_repo(fake_hub)
    plan = run_cli("download", "Owner/Many", "--engine", engine, "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    engines = {f["path"]: f["engine"] for f in json.loads(plan.stdout)["data"]["plan"]["files"]}
    assert engines["model.safetensors"] == engine
    assert {engines[p] for p in files if p != "model.safetensors"} == {"pool"}
    text = run_cli("download", "Owner/Many", "--engine", engine, "--dry-run")
    assert "engine" in text.stdout and "pool" in text.stdout
    fake_hub.clear_requests()
    result = run_cli("download", "Owner/Many", "--engine", engine)
    assert result.returncode == 0, result.stderr
    folder = isolated_env["models"] / "Owner" / "Many"
    for path, data in files.items():
        assert (folder / path).read_bytes() == data
    small = [p for p in files if p != "model.safetensors"]
    hub_side = [r for r in fake_hub.requests if r.server == "hub" and "/resolve/" in r.path]
    small_requests = [r for r in hub_side if any(r.path.endswith(p.split("/")[-1]) for p in small)]
    assert not any(r.method == "HEAD" for r in small_requests)
    assert len([r for r in small_requests if r.method == "GET"]) == len(small)
    assert len({r.client for r in small_requests}) <= 16  # kept alive, not one connection per file


def test_progress_speed_and_eta_leave_resumed_bytes_out() -> None:
    """Issue 9: a file resumed from 1 MB on disk must not show as 1 MB downloaded in an instant."""
    from imageworks.cli.download_cmd import RichProgress

    display = RichProgress(total=2 * MiB)
    first, second = (FileJob("http://x/a", Path("a"), MiB), FileJob("http://x/b", Path("b"), MiB))
    started = time.monotonic()
    display.file_started(first, MiB, 0)
    display.advance(first, 10_000)
    time.sleep(0.05)
    display.file_started(second, MiB, MiB - 20_000)  # resumed: almost all of it was on disk
    display.advance(second, 10_000)
    time.sleep(0.05)
    display.advance(second, 10_000)
    elapsed = time.monotonic() - started
    [total] = [t for t in display._progress.tasks if t.description == "total"]
    assert total.speed is not None and total.speed < 40_000 / elapsed * 1.5  # ~30 KB fetched, not 1 MB
    assert total.time_remaining is not None and total.time_remaining > 1.0


@pytest.mark.parametrize("kind", ENGINES)
def test_small_files_do_not_hold_up_the_large_ones(kind: str, server: FileServer, tmp_path: Path) -> None:
    """With the pool (the default), small and large files are fetched at once: a config that stalls
    for a second does not delay the weights, and the sink still hears everything on this thread."""
    big, small = blob(6 * MiB + 321, 3), b'{"model_type": "llama", "pad": "' + b"x" * 50_000 + b'"}\n'
    server.fail("config.json", "stall", after=10_000, seconds=1.5)
    jobs = [
        FileJob(
            server.add("config.json", small),
            tmp_path / "m" / "config.json",
            len(small),
            git_sha1=git_sha1(small),
        ),
        FileJob(
            server.add("model.safetensors", big), tmp_path / "m" / "model.safetensors", len(big), sha(big)
        ),
    ]
    progress = Recorder()
    results = engine_for(kind, pool=True).fetch(jobs, progress)
    assert [r.job.name for r in results] == ["config.json", "model.safetensors"]  # job order
    assert [r.sha256 for r in results] == [hashlib.sha256(small).hexdigest(), sha(big)]
    assert [r.job.name for r in progress.done] == ["model.safetensors", "config.json"]
    assert progress.threads == {threading.get_ident()}
    assert progress.advanced == len(big) + len(small)


def test_aria2_files_go_to_the_least_busy_aria2c() -> None:
    from imageworks.transfer.aria2 import Aria2Engine
    from imageworks.transfer.aria2_rpc import Daemons

    daemons = Daemons(Aria2Engine("aria2c"), 2)  # nothing is started until a file needs it
    first, second = daemons.take(), daemons.take()
    assert first is not second
    daemons.give_back(first)
    assert daemons.take() is first
    assert Aria2Engine("aria2c", processes=3).processes == 3


def test_aria2_polls_sooner_when_the_download_is_about_to_end() -> None:
    from imageworks.transfer.aria2_status import next_poll

    status = {"totalLength": "1000", "completedLength": "0", "downloadSpeed": "0"}
    assert next_poll(status, 0.1) == 0.1  # no speed yet
    assert next_poll({**status, "downloadSpeed": "100000"}, 0.1) == pytest.approx(0.01)
    assert next_poll({**status, "completedLength": "500", "downloadSpeed": "10000"}, 0.1) == pytest.approx(
        0.05
    )
    assert next_poll({**status, "completedLength": "1000", "downloadSpeed": "10"}, 0.1) == 0.1
