"""The Hub API: the one network choke point for repo metadata, listings, file URLs and auth.

Metadata goes through huggingface_hub's `HfApi` (imported lazily: it costs ~0.3 s), always with the
endpoint and token from our `Config`, never from the library's import-time globals. File URLs are
resolved here too: a HEAD on `{endpoint}/{repo}/resolve/{commit}/{path}` with the token, without
following redirects, so we decide which host gets the token: the Hub itself may, the CDN it redirects to
never does (a signed URL plus a bearer token is refused by the CDN anyway, and the token must not leak).

Every failure becomes an `imageworks.errors` exception whose hint says what to do.

Retries and timeouts are HubClient's alone (see `_scoped_session`): each Hub request made through the
library gets the configured timeout (`hub_timeout`, IMAGEWORKS_HUB_TIMEOUT) and one attempt, and
`HubClient` decides what to retry and how long to wait.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

from imageworks.errors import (
    AuthError,
    EntryNotFound,
    GatedRepo,
    HubError,
    HubUnavailable,
    RepoNotFound,
    RevisionNotFound,
)

if TYPE_CHECKING:
    import httpx

    from imageworks.config import Config

log = logging.getLogger("imageworks.hub")
T = TypeVar("T")

USER_AGENT = "imageworks"
MAX_REDIRECTS = 5
CONNECT_TIMEOUT_CAP = 10.0  # a Hub that accepts no connection in 10 s is down, whatever the read timeout


@dataclass(frozen=True)
class ListedFile:
    """One file of a commit as the Hub lists it. `sha256` is the LFS digest (large files); `git_sha1` the
    git blob id of a small file (for an LFS file the blob id is the pointer's, so it is not kept)."""

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None

    @property
    def lfs(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class RepoInfo:
    repo_id: str  # the Hub's canonical spelling
    commit: str
    gated: bool
    private: bool


@dataclass(frozen=True)
class Snapshot:
    """A repo pinned to one commit: everything a download needs to know before fetching a byte."""

    repo_id: str
    revision: str  # what was asked for ("main" by default)
    commit: str
    gated: bool
    private: bool
    files: tuple[ListedFile, ...]

    def file(self, path: str) -> ListedFile | None:
        return next((f for f in self.files if f.path == path), None)


@dataclass(frozen=True)
class ResolvedUrl:
    """Where to GET a file. `headers` carry the token only when `url` is on the Hub's own host."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    cross_host: bool = False


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    return _origin(a) == _origin(b)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds (delay-seconds or an HTTP date), None when absent or unparsable."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imageworks")
    except PackageNotFoundError:
        return "0"


def _network_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx", "httpx2"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        types.append(mod.TransportError)
    return tuple(types)


def _is_timeout(exc: BaseException) -> bool:
    for module in ("httpx", "httpx2"):
        mod = sys.modules.get(module)
        if mod is not None and isinstance(exc, mod.TimeoutException):
            return True
    return isinstance(exc, TimeoutError)


# ------------------------------------------------------------------------------ huggingface_hub's client
#
# HfApi sends every request through one process-wide httpx2 client (`huggingface_hub.get_session()`),
# made with timeout=None, and its paginated listings (the file tree) go through `http_backoff`, which
# passes timeout=None per request and retries network errors and 408/429/5xx five times (sleeping
# 1+2+4+8+8 s) before raising. Under HubClient's own retries that stacked to 131 s for an unreachable
# endpoint, and a stalled listing waited forever.
#
# The library's hook for this is `set_client_factory`. The client installed here is built like the one
# it replaces (same event hooks, which carry offline mode and request ids; same redirect and timeout
# settings) and behaves exactly like it, except while a HubClient call runs in the current thread or
# task (a ContextVar, so other threads and other code using huggingface_hub are unaffected). Then every
# request gets HubClient's timeout, and a network error or a retryable status leaves the library as
# `_AttemptFailed`, which `http_backoff` does not catch: one attempt per HubClient try.
# Limits: a transport, proxy or TLS setting of a factory an application installed before us is not
# carried over, and a factory installed after ours takes these guarantees away.


@dataclass(frozen=True)
class _Policy:
    timeout: float  # seconds per connect and per read


_POLICY: ContextVar[_Policy | None] = ContextVar("imageworks_hub_policy", default=None)
_INSTALL_LOCK = threading.Lock()
_INSTALLED = False


class _AttemptFailed(Exception):
    """One request of a HubClient call failed in a way HubClient may retry: `status` 408/429/5xx, or a
    network error (`status` None)."""

    def __init__(self, status: int | None, headers: Mapping[str, str], error: BaseException | None) -> None:
        super().__init__(f"HTTP {status}" if status else repr(error))
        self.status = status
        self.headers = dict(headers)
        self.timed_out = error is not None and _is_timeout(error)


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


@functools.cache
def _scoped_client_class() -> type[Any]:
    import httpx2

    class ScopedClient(httpx2.Client):
        def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
            policy = _POLICY.get()
            if policy is None:
                return super().send(request, **kwargs)
            timeout = httpx2.Timeout(policy.timeout, connect=min(policy.timeout, CONNECT_TIMEOUT_CAP))
            request.extensions["timeout"] = timeout.as_dict()
            try:
                response = super().send(request, **kwargs)
            except httpx2.TransportError as exc:
                raise _AttemptFailed(None, {}, exc) from exc
            if _retryable(response.status_code):
                response.close()
                raise _AttemptFailed(response.status_code, response.headers, None)
            return response

    return ScopedClient


def _scoped_session() -> None:
    """Install the scoped client as huggingface_hub's shared one, once per process (see above)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from huggingface_hub import get_session, set_client_factory

    cls = _scoped_client_class()
    with _INSTALL_LOCK:
        if _INSTALLED:
            return
        current = get_session()
        hooks = current.event_hooks
        follow, timeout = current.follow_redirects, current.timeout
        set_client_factory(lambda: cls(event_hooks=hooks, follow_redirects=follow, timeout=timeout))
        _INSTALLED = True


class HubClient:
    """Talks to one Hub endpoint with one token (or none).

    Retries: a 429 waits for Retry-After (at most `max_retry_after` seconds, else fails with the time to
    wait) and tries again; 5xx, connection failures and timeouts back off exponentially from `backoff`
    seconds, and after `retries` retries raise HubUnavailable. `timeout` (default: the config's
    `hub_timeout`) bounds each connect and each wait for bytes of every request, the library's too."""

    def __init__(
        self,
        config: Config,
        *,
        timeout: float | None = None,
        retries: int = 4,
        backoff: float = 1.0,
        max_retry_after: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = str(config.hf_endpoint.value).rstrip("/")
        self.token: str | None = config.token
        self.timeout = float(config.hub_timeout.value) if timeout is None else timeout
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._api: Any = None
        self._http: httpx.Client | None = None

    # -- plumbing ----------------------------------------------------------------------------------
    @property
    def api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            _scoped_session()

            # token=False (not None) when we have none: None would make the library read its own
            # token file, located from the environment as it was when it was imported.
            self._api = HfApi(
                endpoint=self.endpoint,
                token=self.token or False,
                library_name=USER_AGENT,
                library_version=_version(),
            )
        return self._api

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            self._http = httpx.Client(
                follow_redirects=False,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT_CAP)),
                headers={"User-Agent": USER_AGENT},
            )
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def repo_url(self, repo_id: str) -> str:
        return f"{self.endpoint}/{repo_id}"

    def file_url(self, repo_id: str, revision: str, path: str) -> str:
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def _wait(
        self,
        attempt: int,
        status: int | None,
        headers: Mapping[str, str],
        what: str,
        *,
        timed_out: bool = False,
    ) -> None:
        """Sleep before retry number `attempt`, or raise when retries are exhausted. `status` None is a
        network failure (`timed_out`: no connection or no bytes within `timeout`)."""
        if status == 429:
            wait = retry_after_seconds(headers)
            if wait is None:
                wait = self.backoff * 2**attempt
            if wait > self.max_retry_after:
                raise HubError(
                    f"{what}: the Hub is rate-limiting this machine (HTTP 429) for another {wait:.0f} s",
                    hint="wait and run the same command again; logging in (HF_TOKEN) raises the limits",
                )
            if attempt >= self.retries:
                raise HubError(
                    f"{what}: still rate limited (HTTP 429) after {attempt} retries",
                    hint="wait a few minutes and run the same command again",
                )
            log.warning("%s: rate limited, retrying in %.0f s (Retry-After)", what, wait)
        else:
            if status:
                reason = f"HTTP {status}"
            elif timed_out:
                reason = f"no answer within {self.timeout:g} s"
            else:
                reason = "no connection"
            if attempt >= self.retries:
                hint = "check https://status.huggingface.co (or your HF_ENDPOINT mirror) and try again later"
                if timed_out:
                    hint = (
                        "check the network and HF_ENDPOINT; on a slow link raise IMAGEWORKS_HUB_TIMEOUT"
                        f" (now {self.timeout:g} s)"
                    )
                raise HubUnavailable(
                    f"{what}: the Hub at {self.endpoint} is unavailable ({reason}) after {attempt} retries",
                    hint=hint,
                )
            wait = self.backoff * 2**attempt
            log.warning("%s: %s, retrying in %.1f s", what, reason, wait)
        self._sleep(wait)

    def _call(
        self, what: str, fn: Callable[[], T], *, repo_id: str, revision: str | None, path: str | None = None
    ) -> T:
        """`fn` (HfApi calls) under this client's retry policy and timeout; failures mapped to ours."""
        from huggingface_hub.errors import HfHubHTTPError

        network = _network_error_types()
        attempt = 0
        while True:
            scope = _POLICY.set(_Policy(self.timeout))
            try:
                return fn()
            except _AttemptFailed as exc:
                log.debug("%s: %s", what, exc)
                failed: tuple[int | None, Mapping[str, str], bool] = (exc.status, exc.headers, exc.timed_out)
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if not (status is not None and _retryable(status)):
                    raise self._map_hf_error(exc, repo_id=repo_id, revision=revision, path=path) from None
                failed = (status, exc.response.headers, False)
            except network as exc:
                log.debug("%s: %r", what, exc)
                failed = (None, {}, _is_timeout(exc))
            finally:
                _POLICY.reset(scope)
            self._wait(attempt, failed[0], failed[1], what, timed_out=failed[2])
            attempt += 1

    # -- error mapping -----------------------------------------------------------------------------
    def _gated(self, repo_id: str, status: int | None) -> GatedRepo:
        page = self.repo_url(repo_id)
        if self.token is None or status == 401:
            return GatedRepo(
                f"{repo_id} is a gated repo and no token was sent",
                hint=f"gated repo: run `hf auth login` or set HF_TOKEN, and accept the licence on {page}",
            )
        return GatedRepo(
            f"{repo_id} is a gated repo and this token has no access to it yet",
            hint=f"accept the licence on {page} (with the account of this token), then run the command again",
        )

    def map_status(
        self,
        status: int,
        headers: Mapping[str, str],
        *,
        repo_id: str,
        revision: str | None,
        path: str | None = None,
    ) -> HubError:
        """One HTTP failure of the Hub as our exception, from the status and the X-Error-Code header."""
        code = next((v for k, v in headers.items() if k.lower() == "x-error-code"), None)
        message = next((v for k, v in headers.items() if k.lower() == "x-error-message"), "") or ""
        if code == "GatedRepo":
            return self._gated(repo_id, status)
        if code == "RevisionNotFound":
            return RevisionNotFound(
                f"{repo_id} has no revision {revision!r}",
                hint=f"check the branch, tag or commit on {self.repo_url(repo_id)}/tree/main (branches are case-sensitive)",
            )
        if code == "EntryNotFound":
            return EntryNotFound(
                f"{repo_id}@{revision or 'main'} has no file {path!r}",
                hint=f"see the files on {self.repo_url(repo_id)}/tree/{quote(revision or 'main', safe='')}",
            )
        if status == 401 and message.startswith("Invalid credentials"):
            return AuthError(
                "the Hub rejected the token (invalid or expired)",
                hint="run `hf auth login` again, or fix HF_TOKEN / --token",
            )
        if code == "RepoNotFound" or status in (401, 404):
            hint = "check the spelling of OWNER/REPO"
            if self.token is None:
                hint += "; if it is private, run `hf auth login` or set HF_TOKEN"
            return RepoNotFound(f"repository {repo_id} not found on {self.endpoint}", hint=hint)
        if status == 403:
            return AuthError(
                f"access to {repo_id} was refused (HTTP 403){': ' + message if message else ''}",
                hint="check that your token has read access to this repo (https://huggingface.co/settings/tokens)",
            )
        if status == 429:
            return HubError(
                f"{repo_id}: rate limited by the Hub (HTTP 429)", hint="wait a few minutes and retry"
            )
        if status >= 500:
            return HubUnavailable(
                f"the Hub at {self.endpoint} is unavailable (HTTP {status})", hint="try again later"
            )
        return HubError(f"{repo_id}: the Hub answered HTTP {status}{': ' + message if message else ''}")

    def _map_hf_error(
        self, exc: Exception, *, repo_id: str, revision: str | None, path: str | None
    ) -> HubError:
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RemoteEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        response = getattr(exc, "response", None)
        status = response.status_code if response is not None else 0
        headers: Mapping[str, str] = response.headers if response is not None else {}
        if isinstance(exc, GatedRepoError):
            return self._gated(repo_id, status)
        if isinstance(exc, RevisionNotFoundError):
            return self.map_status(
                status, {"X-Error-Code": "RevisionNotFound"}, repo_id=repo_id, revision=revision
            )
        if isinstance(exc, RemoteEntryNotFoundError):
            return self.map_status(
                status, {"X-Error-Code": "EntryNotFound"}, repo_id=repo_id, revision=revision, path=path
            )
        if isinstance(exc, RepositoryNotFoundError) and not (
            status == 401 and str(headers.get("X-Error-Message", "")).startswith("Invalid credentials")
        ):
            return self.map_status(404, {"X-Error-Code": "RepoNotFound"}, repo_id=repo_id, revision=revision)
        if isinstance(exc, HfHubHTTPError):
            return self.map_status(status, headers, repo_id=repo_id, revision=revision, path=path)
        return HubError(f"{repo_id}: {exc}")

    # -- metadata ----------------------------------------------------------------------------------
    def repo_info(self, repo_id: str, revision: str | None = None) -> RepoInfo:
        """Canonical id, the commit `revision` points at, and whether the repo is gated/private."""
        rev = revision or "main"

        def call() -> Any:
            return self.api.model_info(repo_id, revision=revision, timeout=self.timeout)

        info = self._call(f"{repo_id}@{rev}: model info", call, repo_id=repo_id, revision=rev)
        if not info.sha:
            raise HubError(f"{repo_id}: the Hub did not say which commit {rev!r} is")
        return RepoInfo(repo_id=info.id, commit=info.sha, gated=bool(info.gated), private=bool(info.private))

    def list_files(self, repo_id: str, commit: str) -> list[ListedFile]:
        """Every file of the commit (recursive tree, all pages), with sizes and LFS SHA-256."""
        from huggingface_hub.hf_api import RepoFile

        def call() -> list[ListedFile]:
            out = []
            for item in self.api.list_repo_tree(repo_id, revision=commit, recursive=True):
                if not isinstance(item, RepoFile):
                    continue
                lfs = item.lfs
                if lfs is not None:
                    out.append(ListedFile(item.path, int(lfs.size), sha256=str(lfs.sha256).lower()))
                else:
                    out.append(ListedFile(item.path, int(item.size), git_sha1=str(item.blob_id).lower()))
            return out

        files = self._call(f"{repo_id}@{commit[:12]}: file listing", call, repo_id=repo_id, revision=commit)
        return sorted(files, key=lambda f: f.path)

    def snapshot(self, repo_id: str, revision: str | None = None, *, require_access: bool = True) -> Snapshot:
        """Resolve `revision` to a commit, then list that commit. A gated repo without a token fails here
        (`require_access`): the Hub lists it, but refuses every file."""
        info = self.repo_info(repo_id, revision)
        if require_access and info.gated and not self.token:
            raise self._gated(info.repo_id, 401)
        files = self.list_files(info.repo_id, info.commit)
        return Snapshot(
            repo_id=info.repo_id,
            revision=revision or "main",
            commit=info.commit,
            gated=info.gated,
            private=info.private,
            files=tuple(files),
        )

    def whoami(self) -> str | None:
        """The user name of the token, None without one."""
        if not self.token:
            return None
        data = self._call("whoami", lambda: self.api.whoami(), repo_id="(whoami)", revision=None)
        return str(data.get("name")) if isinstance(data, dict) else None

    # -- file URLs ---------------------------------------------------------------------------------
    def resolve_file_url(self, repo_id: str, commit: str, path: str) -> ResolvedUrl:
        """The URL to GET `path` from, and the headers that may go with it.

        Redirects within the Hub's host (a renamed repo) are followed with the token; a redirect to any
        other host ends the walk and that URL is returned with no Authorization header."""
        url = self.file_url(repo_id, commit, path)
        what = f"{repo_id}: {path}"
        for _ in range(MAX_REDIRECTS + 1):
            response = self._head(url, what)
            status = response.status_code
            if 300 <= status < 400:
                location = response.headers.get("Location")
                if not location:
                    raise HubError(f"{what}: redirect (HTTP {status}) without a Location")
                target = urljoin(url, location)
                if not same_origin(target, self.endpoint):
                    return ResolvedUrl(target, {}, cross_host=True)
                url = target
                continue
            if status < 300:
                return ResolvedUrl(url, self.auth_headers(), cross_host=False)
            raise self.map_status(status, response.headers, repo_id=repo_id, revision=commit, path=path)
        raise HubError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _head(self, url: str, what: str) -> httpx.Response:
        attempt = 0
        network = _network_error_types()
        while True:
            try:
                response = self.http.head(url, headers=self.auth_headers())
            except network as exc:
                log.debug("%s: %r", what, exc)
                self._wait(attempt, None, {}, what, timed_out=_is_timeout(exc))
                attempt += 1
                continue
            if response.status_code == 429 or response.status_code >= 500:
                self._wait(attempt, response.status_code, response.headers, what)
                attempt += 1
                continue
            return response

    def resolve_file_urls(
        self, repo_id: str, commit: str, paths: Iterable[str], *, workers: int = 8
    ) -> dict[str, ResolvedUrl]:
        """`resolve_file_url` for many files, a few at a time (one HEAD each costs a round trip)."""
        paths = list(paths)
        if len(paths) <= 1:
            return {p: self.resolve_file_url(repo_id, commit, p) for p in paths}
        with ThreadPoolExecutor(max_workers=min(workers, len(paths)), thread_name_prefix="resolve") as pool:
            results = pool.map(lambda p: (p, self.resolve_file_url(repo_id, commit, p)), paths)
            return dict(results)

    def read_range(self, resolved: ResolvedUrl, start: int, end: int) -> bytes:
        """Bytes [start, end) of a resolved file with one Range request (for header-only inspection)."""
        if end <= start:
            return b""
        headers = {**resolved.headers, "Range": f"bytes={start}-{end - 1}"}
        attempt = 0
        network = _network_error_types()
        while True:
            try:
                response = self.http.get(resolved.url, headers=headers)
            except network as exc:
                log.debug("range read: %r", exc)
                self._wait(attempt, None, {}, "range read", timed_out=_is_timeout(exc))
                attempt += 1
                continue
            if response.status_code == 429 or response.status_code >= 500:
                self._wait(attempt, response.status_code, response.headers, "range read")
                attempt += 1
                continue
            if response.status_code == 206:
                return response.content
            if response.status_code == 200:  # a server that ignores Range: keep what we asked for
                return response.content[start:end]
            if response.status_code == 416:
                return b""
            raise HubError(
                f"range read failed (HTTP {response.status_code}) for {urlsplit(resolved.url).path}"
            )


# ----------------------------------------------------------------------------------------- analyze


@dataclass
class RepoAnalysis:
    """What a remote repo offers, read from its listing and the headers of its weights (Range reads)."""

    repo_id: str
    revision: str
    commit: str
    files: int
    total_size: int
    inspection: Any  # imageworks.inspect.ModelInspection
    bytes_read: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        ins = self.inspection
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "files": self.files,
            "total_size": self.total_size,
            "format": ins.format,
            "quantization": ins.quantization,
            "bits": ins.bits,
            "dtype": ins.dtype,
            "parameters": ins.parameters,
            "architecture": ins.architecture,
            "context_length": ins.context_length,
            "capabilities": list(ins.capabilities),
            "gguf_quants": list(ins.gguf_quants),
            "offers": [
                {
                    "format": o.format,
                    "quantization": o.quantization,
                    "files": list(o.files),
                    "size": o.size,
                    "role": o.role,
                }
                for o in ins.offers
            ],
            "evidence": [f"{e.signal}: {e.detail}" for e in ins.evidence],
            "problems": list(ins.problems),
            "reason": ins.reason,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
        }


def analyze_folder(folder: Path) -> RepoAnalysis:
    """`analyze PATH`: the same report for a model folder on disk (headers only), so a user can check a
    folder before `scan` the way they check a repo before `download`."""
    from imageworks.inspect import inspect_folder

    started = time.monotonic()
    inspection = inspect_folder(folder)
    return RepoAnalysis(
        repo_id=str(folder),
        revision="(folder)",
        commit="",
        files=len(inspection.files),
        total_size=inspection.total_size,
        inspection=inspection,
        bytes_read=inspection.bytes_read,
        seconds=time.monotonic() - started,
    )


def analyze_repo(
    reference: str, *, config: Config, hub_options: dict[str, Any] | None = None
) -> RepoAnalysis:
    """`analyze OWNER/REPO[@REV]`: the formats and GGUF quants on offer with sizes, and the dtype and
    parameter count of the weights, without downloading them (small files whole, weights' headers by
    Range requests through the resolved CDN URLs)."""
    from imageworks.errors import UsageError
    from imageworks.inspect import RemoteFile, inspect_remote
    from imageworks.refs import HubRef, parse_reference

    started = time.monotonic()
    ref = parse_reference(reference, endpoint=str(config.hf_endpoint.value))
    if not isinstance(ref, HubRef):
        raise UsageError("analyze takes a Hub repo (OWNER/REPO[@REV]), not a direct URL")
    with HubClient(config, **(hub_options or {})) as client:
        snap = client.snapshot(ref.repo_id, ref.revision)
        resolved: dict[str, ResolvedUrl] = {}
        sizes = {f.path: f.size for f in snap.files}
        read = 0

        def url_of(path: str) -> ResolvedUrl:
            if path not in resolved:
                resolved[path] = client.resolve_file_url(snap.repo_id, snap.commit, path)
            return resolved[path]

        def read_range(path: str, start: int, end: int) -> bytes:
            nonlocal read
            data = client.read_range(url_of(path), start, end)
            read += len(data)
            return data

        def read_small(path: str) -> bytes:
            return read_range(path, 0, sizes.get(path, 0))

        inspection = inspect_remote(
            [RemoteFile(f.path, f.size, f.sha256) for f in snap.files],
            read_range,
            read_small,
            name_hint=f"{snap.repo_id}@{snap.revision}",
        )
    return RepoAnalysis(
        repo_id=snap.repo_id,
        revision=snap.revision,
        commit=snap.commit,
        files=len(snap.files),
        total_size=sum(f.size for f in snap.files),
        inspection=inspection,
        bytes_read=read,
        seconds=time.monotonic() - started,
    )
