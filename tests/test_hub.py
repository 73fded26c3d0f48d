"""HubClient against the fake Hub: canonical ids, pagination, revisions, error mapping, retries, and
which host gets the token."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from imageworks.analysis import analyze_repo
from imageworks.config import resolve_config
from imageworks.errors import (
    AuthError,
    EntryNotFound,
    GatedRepo,
    HubError,
    HubUnavailable,
    RepoNotFound,
    RevisionNotFound,
)
from imageworks.hub import HubClient
from tests.fakehub import FakeHub, samples

TOKEN = "hf_aliceTOKEN0123456789"


def client(token: str | None = None, **kw) -> HubClient:
    return HubClient(resolve_config(token=token), backoff=0.01, **kw)


def test_snapshot_canonical_id_pagination_and_digests(fake_hub: FakeHub) -> None:
    repo = samples.add_sharded_model(fake_hub)
    fake_hub.page_size = 3
    snap = client().snapshot(repo.repo_id.lower())
    assert snap.repo_id == repo.repo_id and snap.commit == repo.commit and snap.revision == "main"
    listed = {f.path: f for f in snap.files}
    assert set(listed) == set(repo.files) | {".gitattributes"}
    tree_pages = [r for r in fake_hub.requests if "/tree/" in r.path]
    assert len(tree_pages) == -(-len(listed) // 3)  # every page followed, none twice
    assert all(repo.commit in r.path for r in tree_pages)  # the listing is pinned to the commit
    shard = listed["model-00001-of-00002.safetensors"]
    served = fake_hub.file(repo.repo_id, shard.path)
    assert (
        shard.lfs and shard.sha256 == served.sha256 and shard.size == served.size and shard.git_sha1 is None
    )
    config = listed["config.json"]
    assert not config.lfs and config.git_sha1 == fake_hub.file(repo.repo_id, "config.json").oid


def test_branch_with_slash_and_tags(fake_hub: FakeHub) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    pr = fake_hub.add_revision(repo.repo_id, {"extra.json": b"{}"}, branch="refs/pr/1")
    fake_hub.add_revision(repo.repo_id, branch="feature/x", tag="v1")
    c = client()
    snap = c.snapshot(repo.repo_id, "refs/pr/1")
    assert snap.commit == pr and snap.file("extra.json") is not None
    assert c.snapshot(repo.repo_id, "feature/x").commit == repo.commit
    assert c.snapshot(repo.repo_id, "v1").commit == repo.commit
    assert c.snapshot(repo.repo_id, repo.commit).commit == repo.commit


def test_errors_say_what_to_do(fake_hub: FakeHub) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    with pytest.raises(RepoNotFound) as info:
        client().snapshot("nobody/nothing")
    assert "hf auth login" in (info.value.hint or "")
    with pytest.raises(RevisionNotFound, match="no-such-branch"):
        client().snapshot(repo.repo_id, "no-such-branch")
    with pytest.raises(AuthError, match="rejected the token"):
        client("hf_wrong").snapshot(repo.repo_id)
    snap = client().snapshot(repo.repo_id)
    with pytest.raises(EntryNotFound):
        client().resolve_file_url(snap.repo_id, snap.commit, "missing.bin")


def test_gated_repo_with_and_without_token(fake_hub: FakeHub) -> None:
    repo = samples.add_gated_model(fake_hub)
    fake_hub.tokens[TOKEN] = "alice"
    with pytest.raises(GatedRepo) as info:
        client().snapshot(repo.repo_id)
    assert "hf auth login" in (info.value.hint or "") and "licence" in (info.value.hint or "")
    c = client(TOKEN)
    snap = c.snapshot(repo.repo_id)  # the listing is public, the files are not
    with pytest.raises(GatedRepo) as info:
        c.resolve_file_url(snap.repo_id, snap.commit, "model.safetensors")
    assert "accept the licence" in (info.value.hint or "")
    fake_hub.grant(repo.repo_id, "alice")
    assert c.resolve_file_url(snap.repo_id, snap.commit, "model.safetensors").cross_host


def test_token_goes_to_the_hub_never_to_the_cdn(fake_hub: FakeHub) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    fake_hub.tokens[TOKEN] = "alice"
    c = client(TOKEN)
    snap = c.snapshot(repo.repo_id)
    big = c.resolve_file_url(snap.repo_id, snap.commit, "model.safetensors")
    assert big.cross_host and big.url.startswith(fake_hub.cdn_url) and "Authorization" not in big.headers
    small = c.resolve_file_url(snap.repo_id, snap.commit, "config.json")
    assert not small.cross_host and small.headers == {"Authorization": f"Bearer {TOKEN}"}
    hub_requests = [r for r in fake_hub.requests if r.server == "hub"]
    assert hub_requests and all(r.authorized for r in hub_requests)
    # Reading through the resolved URL: the CDN refuses requests that carry a token, so this also
    # proves none was sent.
    data = c.read_range(big, 0, 8)
    assert data == repo.bytes_of("model.safetensors")[:8]
    assert not any(r.authorized for r in fake_hub.requests if r.server == "cdn")


def test_429_waits_for_retry_after(fake_hub: FakeHub) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    fault = fake_hub.fail("/api/models/*", "status", status=429, retry_after=1, times=1)
    waits: list[float] = []
    c = HubClient(resolve_config(), backoff=0.01, sleep=waits.append)
    assert c.snapshot(repo.repo_id).commit == repo.commit
    assert fault.hits == 1 and waits == [1.0]
    fake_hub.fail("/api/models/*", "status", status=429, retry_after=3600, times=1)
    with pytest.raises(HubError, match="3600 s"):
        c.snapshot(repo.repo_id)


def test_5xx_backs_off_then_says_the_hub_is_down(fake_hub: FakeHub) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    fake_hub.fail("/api/models/*", "status", status=503, times=2)
    c = client()
    assert c.snapshot(repo.repo_id).commit == repo.commit
    fake_hub.fail("/api/models/*", "status", status=500, times=None)
    started = time.monotonic()
    with pytest.raises(HubUnavailable) as info:
        client(retries=2).snapshot(repo.repo_id)
    assert time.monotonic() - started < 5
    assert info.value.exit_code == 1 and "later" in (info.value.hint or "")


def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("call", ["snapshot", "list_files"])
def test_unreachable_hub_fails_fast_without_library_retries(monkeypatch, call: str) -> None:
    """huggingface_hub retries a listing 5 times with 1..8 s sleeps of its own: under HubClient's retries
    that took 131 s. The library now makes one attempt per HubClient retry."""
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    c = client(retries=2)
    started = time.monotonic()
    with pytest.raises(HubUnavailable) as info:
        if call == "snapshot":
            c.snapshot("owner/repo")
        else:
            c.list_files("owner/repo", "a" * 40)
    assert time.monotonic() - started < 3
    assert "no connection" in str(info.value) and "after 2 retries" in str(info.value)


class StallingHub:
    """A Hub whose model info answers at once and whose file listing stalls: `mode` "headers" sends the
    status line, headers and part of the body, then nothing; "silent" sends nothing at all."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.tree_requests = 0
        self.release = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if "/tree/" not in self.path:
                    body = json.dumps({"id": "Owner/Repo", "sha": "a" * 40, "private": False, "gated": False})
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body.encode())
                    return
                hub.tree_requests += 1
                if hub.mode == "headers":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'[{"type": "file", ')
                    self.wfile.flush()
                hub.release.wait(30)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["headers", "silent"])
def stalling_hub(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[StallingHub]:
    hub = StallingHub(request.param)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    yield hub
    hub.stop()


def test_a_stalled_listing_times_out_with_a_clear_error(stalling_hub: StallingHub, monkeypatch) -> None:
    """The library lists the tree with timeout=None: without our timeout this waits forever."""
    monkeypatch.setenv("IMAGEWORKS_HUB_TIMEOUT", "0.5")
    c = client(retries=1)
    assert c.timeout == 0.5  # from the environment, read when the config is resolved
    started = time.monotonic()
    with pytest.raises(HubUnavailable) as info:
        c.snapshot("owner/repo")
    elapsed = time.monotonic() - started
    assert 2 * 0.5 <= elapsed < 4
    assert "file listing" in str(info.value) and "no answer within 0.5 s" in str(info.value)
    assert "IMAGEWORKS_HUB_TIMEOUT" in (info.value.hint or "")
    assert stalling_hub.tree_requests == 2  # one per HubClient try: the library retried nothing


def test_the_policy_ends_with_the_call(fake_hub: FakeHub) -> None:
    """Outside a HubClient call, huggingface_hub's shared client behaves as the library made it (no
    timeout of ours; statuses handed back, for the library's own retries to act on)."""
    from huggingface_hub import get_session

    samples.add_safetensors_model(fake_hub)
    client().snapshot(samples.SAFETENSORS_REPO)
    session = get_session()
    assert session.timeout.read is None and session.follow_redirects
    fault = fake_hub.fail("/api/models/*", "status", status=503, times=1)
    response = session.get(f"{fake_hub.endpoint}/api/models/{samples.SAFETENSORS_REPO}")
    assert fault.hits == 1 and response.status_code == 503


def test_resolve_retries_5xx_on_the_hub(fake_hub: FakeHub) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    c = client()
    snap = c.snapshot(repo.repo_id)
    fault = fake_hub.fail("config.json", "status", status=502, server="hub", times=1)
    assert c.resolve_file_url(snap.repo_id, snap.commit, "config.json")
    assert fault.hits == 1


def test_analyze_reads_headers_only(fake_hub: FakeHub) -> None:
    repo = samples.add_gguf_model(fake_hub)
    analysis = analyze_repo(repo.repo_id.swapcase(), config=resolve_config())
    data = analysis.as_dict()
    assert data["repo_id"] == repo.repo_id and data["format"] == "gguf"
    assert {"Q4_K_M", "Q8_0", "Q5_K_S"} <= set(data["gguf_quants"])
    assert analysis.bytes_read < analysis.total_size
    assert not any(r.authorized for r in fake_hub.requests if r.server == "cdn")


def test_hub_timeout_setting_flag_env_file_default(tmp_path) -> None:
    from imageworks.config import DEFAULT_HUB_TIMEOUT
    from imageworks.errors import ConfigError

    home = {"HOME": str(tmp_path)}
    assert resolve_config(registry_dir=tmp_path, env=home).hub_timeout.value == DEFAULT_HUB_TIMEOUT
    (tmp_path / "imageworks.toml").write_text("hub_timeout = 7\n")
    from_file = resolve_config(registry_dir=tmp_path, env=home).hub_timeout
    assert from_file.value == 7.0 and from_file.source.endswith("imageworks.toml")
    from_env = resolve_config(registry_dir=tmp_path, env={**home, "IMAGEWORKS_HUB_TIMEOUT": "2.5"})
    assert from_env.hub_timeout.value == 2.5 and HubClient(from_env).timeout == 2.5
    assert HubClient(from_env, timeout=1.0).timeout == 1.0
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(ConfigError, match="positive number of seconds"):
            resolve_config(registry_dir=tmp_path, env={**home, "IMAGEWORKS_HUB_TIMEOUT": bad})


class HostileHub:
    """A Hub whose model info is an endless body, a declared 400 MB one, or JSON nested 100,000 deep."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if hub.mode == "deep":
                    body = b"[" * 100_000 + b"]" * 100_000
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if hub.mode == "declared":
                    self.send_header("Content-Length", str(400 * 1024 * 1024))
                self.send_header("Connection", "close")
                self.end_headers()
                chunk = b'{"id": "x", ' + b" " * (1024 * 1024)
                deadline = time.monotonic() + 20  # a bounded life, whatever the client does
                try:
                    while time.monotonic() < deadline and hub.sent < 400 * 1024 * 1024:
                        self.wfile.write(chunk)
                        hub.sent += len(chunk)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode", ["endless", "declared", "deep"])
def test_hostile_hub_answers_are_capped_with_a_clear_error(mode: str, monkeypatch) -> None:
    """15.8: a 400 MB model-info body is not buffered whole, nor parsed past a depth."""
    hub = HostileHub(mode)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    try:
        started = time.monotonic()
        with pytest.raises(HubError) as info:
            client(retries=0).snapshot("owner/repo")
        assert time.monotonic() - started < 10
    finally:
        hub.stop()
    message = str(info.value)
    if mode == "deep":
        assert "cannot be read" in message
    else:
        assert "larger than 64 MiB" in message
        assert hub.sent < 128 * 1024 * 1024  # we stopped reading at the cap
    assert "Traceback" not in message
