"""A local Hugging Face Hub (API + resolve) and its CDN, as two real HTTP servers on loopback.

The Hub listens on 127.0.0.1 and the CDN on 127.0.0.2: different hosts, so clients treat the CDN as a
foreign origin exactly as with huggingface.co -> cdn-lfs.hf.co, and must not send the token there (the
CDN answers 403 to any request with an Authorization header). No Xet headers are ever sent, so
huggingface_hub downloads over plain HTTP.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from .faults import Fault, FaultKind, Server, Throttle, TokenBucket
from .model import (
    DEFAULT_LFS_PATTERNS,
    DEFAULT_LFS_THRESHOLD,
    Blob,
    Commit,
    FileContent,
    Gated,
    HubFile,
    Repo,
    commit_date,
    commit_sha,
    folders_of,
    gitattributes_text,
    iso,
    make_file,
)
from .payloads import content_type, entry_json, is_hostile, model_info_json

_INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
_TRUE = {"1", "true", "True"}


@dataclass
class RecordedRequest:
    """One request as a server received it. `headers` keys are lower-case; `path` is the raw (still
    percent-encoded) path; `status` is filled in when the response starts (None if none was sent)."""

    server: Server
    method: str
    host: str  # the address of the server that received it, "127.0.0.1:PORT" or "127.0.0.2:PORT"
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int | None = None
    sent: int = 0  # body bytes sent (file content only)
    client: str = ""  # the client's "address:port": one per TCP connection

    @property
    def authorized(self) -> bool:
        return "authorization" in self.headers


@dataclass
class _CdnObject:
    repo_key: str
    blob: Blob
    paths: set[str] = field(default_factory=set)


class _HttpError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


class FakeHub:
    """The fake Hub: add repos, start it, point the client at `endpoint`, inspect `requests`."""

    def __init__(self, *, host: str = "127.0.0.1", cdn_host: str = "127.0.0.2") -> None:
        self.host = host
        self.cdn_host = cdn_host
        self.tokens: dict[str, str] = {}  # token -> user name
        self.page_size: int | None = None  # tree page size; None: the Hub's (1000, or 50 with expand)
        self.cdn_url_ttl: float = 3600.0  # seconds a signed CDN URL stays valid
        # Legacy ids without an owner, as the Hub keeps them: /api/models/gpt2 answers for
        # openai-community/gpt2 (e.g. aliases["gpt2"] = "openai-community/gpt2").
        self.aliases: dict[str, str] = {}
        self.api_latency: float = 0.0  # seconds each /api/ request waits before answering (a far Hub)
        self._lock = threading.RLock()
        self._repos: dict[str, Repo] = {}
        self._serial = 0
        self._cdn_objects: dict[tuple[str, str], _CdnObject] = {}  # (repo hash, sha256) -> object
        self._corrupt: set[tuple[str, str]] = set()  # (repo key, sha256)
        self._faults: list[Fault] = []
        self._throttle = Throttle(None, None)
        self._requests: list[RecordedRequest] = []
        self._secret = os.urandom(16)
        self._servers: dict[Server, _Server] = {}
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self.server_errors: list[str] = []  # tracebacks of fake-Hub bugs, to assert on

    # ----------------------------------------------------------------------------------------- repos
    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, FileContent],
        *,
        branch: str = "main",
        gated: bool | Gated = False,
        private: bool = False,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        lfs_patterns: tuple[str, ...] | list[str] = DEFAULT_LFS_PATTERNS,
        gitattributes: bool = True,
        title: str = "Initial commit",
    ) -> str:
        """Create a model repo with one commit on `branch`; returns the commit sha.

        `gitattributes` adds the `.gitattributes` every Hub repo has (from `lfs_patterns`) unless `files`
        has its own. Paths are kept verbatim, hostile ones ('../x', '/abs') included.
        """
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(f"repo id must be 'owner/name', got {repo_id!r}")
        with self._lock:
            if repo_id.lower() in self._repos:
                raise ValueError(f"repo {repo_id!r} already exists")
            gated_value: Gated = "manual" if gated is True else gated
            object_id = hashlib.sha1(repo_id.lower().encode()).hexdigest()[:24]
            repo = Repo(
                repo_id, gated_value, private, commit_date(self._serial), object_id, default_branch=branch
            )
            self._repos[repo.key] = repo
            all_files = dict(files)
            if gitattributes and ".gitattributes" not in all_files:
                all_files[".gitattributes"] = gitattributes_text(lfs_patterns)
            return self._commit(repo, all_files, None, [branch], [], lfs_threshold, lfs_patterns, title)

    def add_revision(
        self,
        repo_id: str,
        files: Mapping[str, FileContent | None] | None = None,
        *,
        branch: str | None = None,
        tag: str | None = None,
        base: str | None = None,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        lfs_patterns: tuple[str, ...] | list[str] = DEFAULT_LFS_PATTERNS,
        replace: bool = False,
        title: str = "Update",
    ) -> str:
        """Commit `files` to `branch` (e.g. "dev", "feature/x", "refs/pr/1") and/or point `tag` at it.

        Like a branch made on the Hub, the commit starts from `base` (a revision; default: the branch's
        head if it exists, else the default branch); `files` then adds or replaces paths (None deletes
        one). With `replace=True`, `files` is the whole file set instead. With `files=None`, no commit is
        made: the branch/tag just points at the base commit. Returns the commit sha.
        """
        if branch is None and tag is None:
            raise ValueError("add_revision needs a branch or a tag")
        with self._lock:
            repo = self._get_repo(repo_id)
            start_rev = (
                base if base is not None else (branch if branch in repo.branches else repo.default_branch)
            )
            parent = repo.resolve(start_rev)
            if parent is None and (base is not None or files is None):
                raise ValueError(f"unknown revision {start_rev!r} in {repo.id}")
            branches = [branch] if branch else []
            tags = [tag] if tag else []
            if files is None:
                assert parent is not None
                for b in branches:
                    repo.branches[b] = parent.sha
                for t in tags:
                    repo.tags[t] = parent.sha
                return parent.sha
            merged: dict[str, FileContent | HubFile] = dict(parent.files) if parent and not replace else {}
            for path, content in files.items():
                if content is None:
                    merged.pop(path, None)
                else:
                    merged[path] = content
            return self._commit(repo, merged, parent, branches, tags, lfs_threshold, lfs_patterns, title)

    def push(
        self,
        repo_id: str,
        files: Mapping[str, FileContent | None],
        *,
        branch: str | None = None,
        title: str = "Update",
    ) -> str:
        """What a repo owner's push does: one new commit on `branch` (default: the repo's default branch) on
        top of its head; `files` adds or replaces paths, None removes one. Returns the new commit sha."""
        return self.add_revision(
            repo_id, files, branch=branch or self.repo(repo_id).default_branch, title=title
        )

    def delete_repo(self, repo_id: str) -> None:
        """The owner deletes the repo: the API and resolve answer 404, the CDN forgets its objects."""
        with self._lock:
            repo = self._repos.pop(self._get_repo(repo_id).key)
            for key in [k for k, obj in self._cdn_objects.items() if obj.repo_key == repo.key]:
                del self._cdn_objects[key]

    def set_gated(self, repo_id: str, gated: bool | Gated) -> None:
        """Put a repo behind a gate (or lift it) after the fact."""
        with self._lock:
            self._get_repo(repo_id).gated = "manual" if gated is True else gated

    def expire_token(self, token: str) -> None:
        """The token stops working: every request carrying it gets 401 Invalid credentials."""
        with self._lock:
            self.tokens.pop(token, None)

    def grant(self, repo_id: str, user: str) -> None:
        """Give `user` access to a gated (accepted licence) or private repo."""
        with self._lock:
            self._get_repo(repo_id).allowed.add(user)

    def repo(self, repo_id: str) -> Repo:
        with self._lock:
            return self._get_repo(repo_id)

    def file(self, repo_id: str, path: str, revision: str = "main") -> HubFile:
        """The file as the Hub describes it (size, sha256, oid, lfs), for assertions."""
        with self._lock:
            repo = self._get_repo(repo_id)
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"no revision {revision!r} in {repo.id}")
            return commit.files[path]

    def resolve_url(self, repo_id: str, path: str, revision: str = "main") -> str:
        """The URL huggingface_hub builds for a file (`hf_hub_url`)."""
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def cdn_url_for(self, repo_id: str, path: str, revision: str = "main") -> str:
        """A freshly signed CDN URL of an LFS file, as the Hub's 302 would give."""
        with self._lock:
            repo = self._get_repo(repo_id)
        return self._signed_cdn_url(repo, self.file(repo_id, path, revision))

    def _get_repo(self, repo_id: str) -> Repo:
        try:
            return self._repos[repo_id.lower()]
        except KeyError:
            raise KeyError(f"no repo {repo_id!r} on the fake Hub") from None

    def _commit(
        self,
        repo: Repo,
        files: Mapping[str, FileContent | HubFile],
        parent: Commit | None,
        branches: list[str],
        tags: list[str],
        lfs_threshold: int,
        lfs_patterns: tuple[str, ...] | list[str],
        title: str,
    ) -> str:
        entries: dict[str, HubFile] = {}
        for path, content in files.items():
            if isinstance(content, HubFile):
                entries[path] = content
            else:
                entries[path] = make_file(
                    path, content, lfs_threshold=lfs_threshold, lfs_patterns=lfs_patterns
                )
        self._serial += 1
        sha = commit_sha(repo.id, parent.sha if parent else None, entries, self._serial)
        repo.commits[sha] = Commit(
            sha, entries, parent.sha if parent else None, commit_date(self._serial), title
        )
        for b in branches:
            repo.branches[b] = sha
        for t in tags:
            repo.tags[t] = sha
        repo_hash = _repo_hash(repo.key)
        for entry in entries.values():
            obj = self._cdn_objects.setdefault((repo_hash, entry.sha256), _CdnObject(repo.key, entry.blob))
            obj.paths.add(entry.path)
        return sha

    # ---------------------------------------------------------------------------------- faults & co
    def fail(
        self,
        pattern: str,
        kind: FaultKind = "drop",
        *,
        after_bytes: int = 0,
        seconds: float = 0.0,
        status: int = 500,
        retry_after: int | None = None,
        error_code: str | None = None,
        message: str | None = None,
        server: Server | None = None,
        method: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """Inject a fault (see `Fault`); returns it so a test can check `fault.hits`."""
        fault = Fault(
            pattern,
            kind,
            after_bytes=after_bytes,
            seconds=seconds,
            status=status,
            retry_after=retry_after,
            error_code=error_code,
            message=message,
            server=server,
            method=method,
            times=times,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def corrupt(self, repo_id: str, path: str, revision: str = "main") -> None:
        """Serve this file's content with one byte flipped (same size): its sha256/sha1 no longer match."""
        entry = self.file(repo_id, path, revision)
        if entry.size == 0:
            raise ValueError("an empty file cannot be corrupted")
        with self._lock:
            self._corrupt.add((repo_id.lower(), entry.sha256))

    def throttle(self, per_connection_bps: float | None = None, total_bps: float | None = None) -> None:
        """Cap response-body bandwidth per TCP connection and/or in total (both servers). None: no cap."""
        with self._lock:
            self._throttle = Throttle(per_connection_bps, TokenBucket(total_bps) if total_bps else None)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> FakeHub:
        if self._servers:
            return self
        self._stopping.clear()
        for role, host in (("hub", self.host), ("cdn", self.cdn_host)):
            server = _Server((host, 0), _Handler)
            server.hub = self
            server.role = role  # type: ignore[assignment]
            self._servers[role] = server  # type: ignore[index]
            # A short poll keeps stop() (once per test) fast.
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fakehub-{role}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled responses
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        with self._lock:
            connections = list(self._connections)
        # Idle keep-alive connections would otherwise keep their handler threads (and sockets) alive.
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return self._base_url("hub")

    @property
    def cdn_url(self) -> str:
        return self._base_url("cdn")

    def _base_url(self, role: Server) -> str:
        server = self._servers.get(role)
        if server is None:
            raise RuntimeError("the fake Hub is not started")
        host, port = server.server_address[:2]
        return f"http://{host!s}:{port}"

    # ------------------------------------------------------------------------------------- internals
    def _signed_cdn_url(self, repo: Repo, entry: HubFile) -> str:
        repo_hash = _repo_hash(repo.key)
        path = f"/repos/{repo_hash[:2]}/{repo_hash[2:4]}/{repo_hash}/{entry.sha256}"
        name = entry.path.rsplit("/", 1)[-1]
        disposition = f"inline; filename*=UTF-8''{quote(name)}; filename=\"{_ascii(name)}\";"
        expires = str(int(time.time() + self.cdn_url_ttl))
        query = urlencode(
            {
                "response-content-disposition": disposition,
                "Expires": expires,
                "Signature": self._sign(path, expires, disposition),
                "Key-Pair-Id": "KFAKEHUB",
            }
        )
        return f"{self.cdn_url}{path}?{query}"

    def _sign(self, path: str, expires: str, disposition: str) -> str:
        return hmac.new(
            self._secret, f"{path}\n{expires}\n{disposition}".encode(), hashlib.sha256
        ).hexdigest()

    def _record_error(self, error: str) -> None:
        with self._lock:
            self.server_errors.append(error)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _status_fault(self, role: Server, method: str, subjects: Iterable[str]) -> Fault | None:
        subjects = list(subjects)
        with self._lock:
            candidates = [f for f in self._faults if f.kind == "status" and f.matches(role, method, subjects)]
        for fault in candidates:
            if fault.try_fire():
                return fault
        return None

    def _body_faults(self, role: Server, method: str, subjects: Iterable[str]) -> list[Fault]:
        subjects = list(subjects)
        with self._lock:
            return sorted(
                (f for f in self._faults if f.kind != "status" and f.matches(role, method, subjects)),
                key=lambda f: f.after_bytes,
            )


def _repo_hash(repo_key: str) -> str:
    return hashlib.sha256(repo_key.encode()).hexdigest()[:40]


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii").replace('"', "'")


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["offset"])
    except (ValueError, KeyError, TypeError) as e:
        raise _HttpError(400, "Invalid cursor") from e


_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """(start, stop) for a satisfiable single range, None to serve it all, False when unsatisfiable."""
    if header is None:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None  # malformed or multi-range: RFC 9110 lets a server ignore it
    if not m.group(1):
        suffix = int(m.group(2))
        return (max(0, size - suffix), size) if suffix > 0 and size > 0 else False
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else None
    if end is not None and end < start:
        return None
    if start >= size:
        return False
    return start, size if end is None else min(end, size - 1) + 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # aria2c opens 16 connections at once
    hub: FakeHub
    role: Server

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-response are the point of several tests: nothing to report.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 120  # idle keep-alive connections are closed after this
    # Headers and body go out in separate writes: with Nagle's algorithm and the client's delayed ACK
    # every response on a kept-alive connection would wait ~40 ms (real servers set TCP_NODELAY).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self._record: RecordedRequest | None = None
        self._conn_bucket: tuple[Throttle, TokenBucket | None] | None = None
        with self.server.hub._lock:
            self.server.hub._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.hub._lock:
                self.server.hub._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        if self._record is not None:
            self._record.status = code
        super().send_response(code, message)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # ------------------------------------------------------------------------------------ dispatch
    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        raw_path, _, raw_query = self.path.partition("?")
        query = parse_qs(raw_query, keep_blank_values=True)
        host, port = self.server.server_address[:2]
        self._record = RecordedRequest(
            server=self.server.role,
            method=method,
            host=f"{host!s}:{port}",
            path=raw_path,
            query={k: v[-1] for k, v in query.items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            client=f"{self.client_address[0]}:{self.client_address[1]}",
        )
        hub._record(self._record)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            if self.server.role == "hub":
                self._hub(method, raw_path, query, body)
            else:
                self._cdn(method, raw_path, query)
        except _HttpError as e:
            self._send_error(e.status, e.message, e.code, e.headers)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:
            # A bug in the fake Hub must not look like a network fault to the test: report it loudly.
            error = traceback.format_exc()
            hub._record_error(error)
            sys.stderr.write(error)
            self.close_connection = True
            if self._record is not None and self._record.status is None:
                self._send_error(500, "fake hub internal error", None, {})

    # ----------------------------------------------------------------------------------------- hub
    def _hub(self, method: str, raw_path: str, query: dict[str, list[str]], body: bytes) -> None:
        parts = raw_path.split("/")[1:]
        if parts and parts[-1] == "" and len(parts) > 1:
            parts = parts[:-1]
        if parts[:2] == ["api", "whoami-v2"]:
            self._fault_gate(method, [unquote(raw_path)])
            self._whoami()
            return
        legacy = parts[:2] == ["api", "models"] and len(parts) >= 3
        alias = self.server.hub.aliases.get(unquote(parts[2])) if legacy else None
        if alias is not None:
            parts = ["api", "models", *alias.split("/"), *parts[3:]]
        if parts[:1] == ["api"] and self.server.hub.api_latency:
            self.server.hub._stopping.wait(self.server.hub.api_latency)
        if len(parts) >= 4 and parts[0] == "api" and parts[1] == "models":
            repo_id = f"{unquote(parts[2])}/{unquote(parts[3])}"
            self._fault_gate(method, [unquote(raw_path)])
            user = self._user()
            repo = self._visible_repo(repo_id, user)
            self._api(method, repo, parts[4:], query, body)
            return
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            repo_id = f"{unquote(parts[0])}/{unquote(parts[1])}"
            self._fault_gate(method, [unquote("/".join(parts[4:]))])
            user = self._user()
            repo = self._visible_repo(repo_id, user)
            revision, commit, path_parts = self._split_revision(repo, parts[3:], need_path=True)
            self._check_gate(repo, user)
            if commit is None:
                raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            path = "/".join(path_parts)
            entry = commit.files.get(path)
            self._resolve(method, repo, commit, path, entry)
            return
        raise _HttpError(404, "Sorry, we can't find the page you are looking for.")

    def _fault_gate(self, method: str, subjects: list[str]) -> None:
        fault = self.server.hub._status_fault(self.server.role, method, subjects)
        if fault is None:
            return
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        message = fault.message or {429: "Too Many Requests", 503: "Service Unavailable"}.get(
            fault.status, "Internal Error - We're working hard to fix this as soon as possible!"
        )
        raise _HttpError(fault.status, message, fault.error_code, headers)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        user = self.server.hub.tokens.get(token)
        if user is None:
            # The real Hub rejects a bad token on every endpoint, public repos included.
            raise _HttpError(401, _INVALID_CREDENTIALS)
        return user

    def _visible_repo(self, repo_id: str, user: str | None) -> Repo:
        repo = self.server.hub._repos.get(repo_id.lower())
        if repo is None or (repo.private and not repo.can_read(user)):
            # 401 without a token (the Hub will not say whether it exists), 404 with one.
            status = 401 if user is None else 404
            raise _HttpError(status, "Repository not found", "RepoNotFound")
        return repo

    def _check_gate(self, repo: Repo, user: str | None) -> None:
        if not repo.gated or repo.can_read(user):
            return
        if user is None:
            message = (
                f"Access to model {repo.id} is restricted. You must have access to it and be authenticated"
                " to access it. Please log in."
            )
            raise _HttpError(401, message, "GatedRepo")
        message = (
            f"Access to model {repo.id} is restricted and you are not in the authorized list. Visit"
            f" the model page of {repo.id} to ask for access."
        )
        raise _HttpError(403, message, "GatedRepo")

    def _split_revision(
        self, repo: Repo, raw_parts: list[str], *, need_path: bool
    ) -> tuple[str, Commit | None, list[str]]:
        """Split `rev/path...` where rev may be %2F-encoded or contain raw '/'; the longest known ref wins."""
        decoded = [unquote(p) for p in raw_parts]
        last = len(decoded) - 1 if need_path else len(decoded)
        for k in range(last, 0, -1):
            candidate = "/".join(decoded[:k])
            commit = repo.resolve(candidate)
            if commit is not None:
                return candidate, commit, decoded[k:]
        return (decoded[0] if decoded else ""), None, decoded[1:]

    # ------------------------------------------------------------------------------------------ api
    def _api(
        self,
        method: str,
        repo: Repo,
        rest: list[str],
        query: dict[str, list[str]],
        body: bytes,
    ) -> None:
        if not rest and method == "GET":
            self._model_info(repo, repo.resolve(repo.default_branch), repo.default_branch, query)
            return
        if rest and rest[0] == "revision" and len(rest) >= 2 and method == "GET":
            revision = unquote("/".join(rest[1:]))
            self._model_info(repo, repo.resolve(revision), revision, query)
            return
        if rest and rest[0] == "tree" and len(rest) >= 2 and method == "GET":
            revision, commit, path_parts = self._split_revision(repo, rest[1:], need_path=False)
            if commit is None:
                raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            self._tree(repo, commit, "/".join(path_parts), query)
            return
        if rest == ["refs"] and method == "GET":
            self._refs(repo, query)
            return
        if rest and rest[0] == "paths-info" and len(rest) >= 2 and method == "POST":
            revision = unquote("/".join(rest[1:]))
            commit = repo.resolve(revision)
            if commit is None:
                raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            form = parse_qs(body.decode(), keep_blank_values=True)
            expand = form.get("expand", ["false"])[-1] in _TRUE
            self._paths_info(repo, commit, form.get("paths", []), expand)
            return
        raise _HttpError(404, "Sorry, we can't find the page you are looking for.")

    def _model_info(
        self, repo: Repo, commit: Commit | None, revision: str, query: dict[str, list[str]]
    ) -> None:
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        blobs = query.get("blobs", ["false"])[-1] in _TRUE
        expand = query.get("expand", []) + query.get("expand[]", [])
        info = model_info_json(repo, commit, blobs=blobs)
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        self._send_json(200, info)

    def _tree(self, repo: Repo, commit: Commit, folder: str, query: dict[str, list[str]]) -> None:
        recursive = query.get("recursive", ["false"])[-1] in _TRUE
        expand = query.get("expand", ["false"])[-1] in _TRUE
        files = commit.files
        folders = folders_of(files)
        if folder and folder not in folders:
            if folder in files:
                raise _HttpError(404, f"{folder} is not a directory", "EntryNotFound")
            raise _HttpError(404, f'{folder} does not exist on "{commit.sha}"', "EntryNotFound")

        def wanted(path: str) -> bool:
            if folder and not path.startswith(folder + "/"):
                return False
            rel = path[len(folder) + 1 :] if folder else path
            return recursive or "/" not in rel

        entries = [("directory", p) for p in folders if wanted(p)]
        # Hostile paths ('/abs', '../x') are listed at the root, verbatim, as a malicious server would.
        entries += [
            ("file", p) for p in files if wanted(p) or (not folder and p not in folders and is_hostile(p))
        ]
        entries.sort(key=lambda e: e[1])
        page_size = self.server.hub.page_size or (50 if expand else 1000)
        cursor = query.get("cursor", [None])[-1]
        offset = _decode_cursor(cursor) if cursor else 0
        page = entries[offset : offset + page_size]
        payload = [entry_json(repo, commit, kind, path, expand) for kind, path in page]
        headers: dict[str, str] = {}
        if offset + page_size < len(entries):
            params = {k: v[-1] for k, v in query.items() if k != "cursor"}
            params["cursor"] = _encode_cursor(offset + page_size)
            next_url = (
                f"{self.server.hub.endpoint}{self._record.path if self._record else ''}?{urlencode(params)}"
            )
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._send_json(200, payload, headers)

    def _paths_info(self, repo: Repo, commit: Commit, paths: list[str], expand: bool) -> None:
        folders = folders_of(commit.files)
        out = []
        for path in dict.fromkeys(p.strip("/") if p not in commit.files else p for p in paths):
            if path in commit.files:
                out.append(entry_json(repo, commit, "file", path, expand))
            elif path in folders:
                out.append(entry_json(repo, commit, "directory", path, expand))
        self._send_json(200, out)

    def _refs(self, repo: Repo, query: dict[str, list[str]]) -> None:
        def ref(name: str, full: str, sha: str) -> dict[str, str]:
            return {"name": name, "ref": full, "targetCommit": sha}

        branches = [
            ref(b, f"refs/heads/{b}", s) for b, s in repo.branches.items() if not b.startswith("refs/pr/")
        ]
        data: dict[str, Any] = {
            "branches": branches,
            "converts": [],
            "tags": [ref(t, f"refs/tags/{t}", s) for t, s in repo.tags.items()],
        }
        if query.get("include_prs", ["0"])[-1] in _TRUE:
            data["pullRequests"] = [
                ref(b, b, s) for b, s in repo.branches.items() if b.startswith("refs/pr/")
            ]
        self._send_json(200, data)

    def _whoami(self) -> None:
        user = self._user()
        if user is None:
            raise _HttpError(401, _INVALID_CREDENTIALS)
        self._send_json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user.title(),
                "email": f"{user}@example.com",
                "emailVerified": True,
                "canPay": False,
                "periodEnd": None,
                "isPro": False,
                "avatarUrl": "",
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {
                        "displayName": "fakehub",
                        "role": "read",
                        "createdAt": iso(commit_date(0)),
                    },
                },
            },
        )

    # -------------------------------------------------------------------------------------- resolve
    def _resolve(self, method: str, repo: Repo, commit: Commit, path: str, entry: HubFile | None) -> None:
        hub = self.server.hub
        base_headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if entry is None:
            raise _HttpError(404, f'{path} does not exist on "{commit.sha}"', "EntryNotFound", base_headers)
        if entry.lfs:
            location = hub._signed_cdn_url(repo, entry)
            text = f"Found. Redirecting to {location}".encode()
            self.send_response(302)
            self._headers(
                {
                    **base_headers,
                    "Location": location,
                    "X-Linked-Etag": f'"{entry.sha256}"',
                    "X-Linked-Size": str(entry.size),
                    "ETag": f'"{entry.oid}"',
                    "Content-Type": "text/plain; charset=utf-8",
                    "Content-Length": str(len(text)),
                    "Vary": "Origin, Accept",
                }
            )
            if method == "GET":
                self.wfile.write(text)
            return
        name = path.rsplit("/", 1)[-1]
        headers = {
            **base_headers,
            "ETag": f'"{entry.oid}"',
            "Content-Type": content_type(name),
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{_ascii(name)}\";",
        }
        self._send_blob(method, entry.blob, headers, repo.key, [path])

    # ------------------------------------------------------------------------------------------ cdn
    def _cdn(self, method: str, raw_path: str, query: dict[str, list[str]]) -> None:
        hub = self.server.hub
        if method not in ("GET", "HEAD"):
            raise _HttpError(405, "Method Not Allowed")
        if "Authorization" in self.headers:
            # A signed URL plus a bearer token is refused, the way S3/CloudFront refuse two auth mechanisms.
            raise _HttpError(
                403, "Only one auth mechanism allowed; Authorization header is not accepted here"
            )
        parts = raw_path.split("/")[1:]
        obj = None
        if len(parts) == 5 and parts[0] == "repos":
            with hub._lock:
                obj = hub._cdn_objects.get((parts[3], parts[4]))
        if obj is None:
            raise _HttpError(404, "NoSuchKey")
        expires = query.get("Expires", [""])[-1]
        disposition = query.get("response-content-disposition", [""])[-1]
        signature = query.get("Signature", [""])[-1]
        expected = hub._sign(raw_path, expires, disposition)
        if not hmac.compare_digest(signature, expected):
            raise _HttpError(403, "AccessDenied: invalid signature")
        if not expires.isdigit() or int(expires) < time.time():
            raise _HttpError(403, "AccessDenied: request has expired")
        with hub._lock:
            paths = sorted(obj.paths)
        self._fault_gate(method, paths)
        headers = {
            "ETag": f'"{obj.blob.sha256}"',
            "Content-Type": "binary/octet-stream",
            **({"Content-Disposition": disposition} if disposition else {}),
            "Last-Modified": formatdate(commit_date(0).timestamp(), usegmt=True),
            "Cache-Control": "public, max-age=604800, immutable, s-maxage=604800",
        }
        self._send_blob(method, obj.blob, headers, obj.repo_key, paths)

    # ------------------------------------------------------------------------------------ responses
    def _send_blob(
        self, method: str, blob: Blob, headers: dict[str, str], repo_key: str, paths: list[str]
    ) -> None:
        hub = self.server.hub
        size = blob.size
        requested = _parse_range(self.headers.get("Range"), size)
        if requested is False:
            self.send_response(416)
            self._headers({**headers, "Content-Range": f"bytes */{size}", "Content-Length": "0"})
            return
        start, stop = requested if isinstance(requested, tuple) else (0, size)
        self.send_response(206 if isinstance(requested, tuple) else 200)
        if isinstance(requested, tuple):
            headers = {**headers, "Content-Range": f"bytes {start}-{stop - 1}/{size}"}
        self._headers({**headers, "Accept-Ranges": "bytes", "Content-Length": str(stop - start)})
        if method == "HEAD" or start == stop:
            return
        with hub._lock:
            corrupt_at = size // 2 if (repo_key, blob.sha256) in hub._corrupt else None
            throttle = hub._throttle
        faults = hub._body_faults(self.server.role, method, paths)
        self._write_body(blob, start, stop, corrupt_at, faults, throttle)

    def _write_body(
        self,
        blob: Blob,
        start: int,
        stop: int,
        corrupt_at: int | None,
        faults: list[Fault],
        throttle: Throttle,
    ) -> None:
        hub = self.server.hub
        conn_bucket = self._connection_bucket(throttle)
        chunk = throttle.chunk_size
        pending = [f for f in faults if f.after_bytes < stop - start]
        file = blob.content.open("rb") if isinstance(blob.content, Path) else None
        data = memoryview(blob.content) if isinstance(blob.content, bytes) else None
        try:
            pos = start
            while pos < stop:
                sent = pos - start
                while pending and pending[0].after_bytes <= sent:
                    fault = pending.pop(0)
                    if not fault.try_fire():
                        continue
                    if fault.kind == "stall":
                        hub._stopping.wait(fault.seconds)
                    else:
                        self._abort(reset=fault.kind == "reset")
                        return
                n = min(chunk, stop - pos)
                if pending:
                    n = min(n, pending[0].after_bytes - sent)
                wait = max(
                    throttle.total.reserve(n) if throttle.total else 0.0,
                    conn_bucket.reserve(n) if conn_bucket else 0.0,
                )
                if wait > 0:
                    time.sleep(wait)
                if corrupt_at is not None and pos <= corrupt_at < pos + n:
                    piece = bytearray(blob.read(pos, pos + n))
                    piece[corrupt_at - pos] ^= 0xFF
                    self.connection.sendall(piece)
                elif file is not None:
                    self.connection.sendfile(file, pos, n)
                else:
                    assert data is not None
                    self.connection.sendall(data[pos : pos + n])
                pos += n
                if self._record is not None:
                    self._record.sent += n
        finally:
            if file is not None:
                file.close()

    def _connection_bucket(self, throttle: Throttle) -> TokenBucket | None:
        if self._conn_bucket is None or self._conn_bucket[0] is not throttle:
            rate = throttle.per_connection_bps
            self._conn_bucket = (throttle, TokenBucket(rate) if rate else None)
        return self._conn_bucket[1]

    def _abort(self, *, reset: bool) -> None:
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        else:
            self.connection.shutdown(socket.SHUT_RDWR)

    def _headers(self, headers: Mapping[str, str]) -> None:
        self.send_header("X-Request-Id", f"Root=1-{os.urandom(12).hex()}")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self._headers(
            {
                **(headers or {}),
                "Content-Type": "application/json; charset=utf-8",
                "Content-Length": str(len(body)),
            }
        )
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, status: int, message: str, code: str | None, headers: Mapping[str, str]) -> None:
        extra = dict(headers)
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = _ascii(message)
        self._send_json(status, {"error": message}, extra)
