"""HubClient: repo metadata, listings, file URLs and auth against one endpoint with one token."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

from imageworks.errors import (
    AuthError,
    EntryNotFound,
    GatedRepo,
    HubError,
    HubUnavailable,
    ImageworksError,
    RepoNotFound,
    RevisionNotFound,
)
from imageworks.listing import RepoFile

if TYPE_CHECKING:
    import httpx

    from imageworks.config import Config

from imageworks.hub.library import (
    CONNECT_TIMEOUT_CAP,
    POLICY,
    AttemptFailed,
    Policy,
    network_error_types,
    package_version,
    retryable,
    scoped_session,
)
from imageworks.hub.urls import (
    USER_AGENT,
    ResolvedUrl,
    TooLarge,
    read_capped,
    retry_after_seconds,
    tls_context,
    walk_redirects,
)

log = logging.getLogger("imageworks.hub")

T = TypeVar("T")
# The largest Hub answer we read: model info with every file of a 50,000-file repo is ~10 MB.
MAX_BODY = 64 * 1024 * 1024


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
    files: tuple[RepoFile, ...]

    def file(self, path: str) -> RepoFile | None:
        return next((f for f in self.files if f.path == path), None)


class HubClient:
    """Talks to one Hub endpoint with one token (or none).

    Retries: a 429 waits for Retry-After (at most `max_retry_after` seconds, else fails with the time to
    wait) and tries again; 5xx, connection failures and timeouts back off exponentially from `backoff`
    seconds, and after `retries` retries raise HubUnavailable. `timeout` (default: the config's
    `hub_timeout`) bounds each connect and each wait for bytes of every request, the library's too.
    `max_body` caps the bytes of one answer (model info, a listing page): a larger one is refused, not
    buffered. All requests go through one retry loop (`_retrying`)."""

    def __init__(
        self,
        config: Config,
        *,
        timeout: float | None = None,
        retries: int = 4,
        backoff: float = 1.0,
        max_retry_after: float = 120.0,
        max_body: int = MAX_BODY,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = str(config.hf_endpoint.value).rstrip("/")
        self.token: str | None = config.token
        self.timeout = float(config.hub_timeout.value) if timeout is None else timeout
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.max_body = max_body
        self._sleep = sleep
        self._api: Any = None
        self._http: httpx.Client | None = None

    # -- plumbing ----------------------------------------------------------------------------------
    @property
    def api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            scoped_session()

            # token=False (not None) when we have none: None would make the library read its own
            # token file, located from the environment as it was when it was imported.
            self._api = HfApi(
                endpoint=self.endpoint,
                token=self.token or False,
                library_name=USER_AGENT,
                library_version=package_version(),
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
                verify=tls_context(),
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

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        """The one retry loop: `attempt` raises `AttemptFailed` for what may be retried (network
        errors, 408/429/5xx); `_wait` sleeps or gives up."""
        tries = 0
        while True:
            try:
                return attempt()
            except AttemptFailed as exc:
                log.debug("%s: %s", what, exc)
                self._wait(tries, exc.status, exc.headers, what, timed_out=exc.timed_out)
                tries += 1

    def _call(
        self, what: str, fn: Callable[[], T], *, repo_id: str, revision: str | None, path: str | None = None
    ) -> T:
        """`fn` (HfApi calls) under this client's retry policy, timeout and size cap; failures mapped
        to ours."""
        from huggingface_hub.errors import HfHubHTTPError

        def once() -> T:
            scope = POLICY.set(Policy(self.timeout, self.max_body))
            try:
                return fn()
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if not (status is not None and retryable(status)):
                    raise self._map_hf_error(exc, repo_id=repo_id, revision=revision, path=path) from None
                raise AttemptFailed(status, exc.response.headers, None) from exc
            except network_error_types() as exc:  # evaluated once fn() has imported its client
                raise AttemptFailed(None, {}, exc) from exc
            except TooLarge as exc:
                raise self._too_large(what, exc) from None
            except (RecursionError, ValueError) as exc:
                # A Hub answer nested thousands deep, or a 5,000-digit number, breaks the JSON parser.
                if isinstance(exc, ImageworksError):
                    raise
                raise HubError(
                    f"{what}: the Hub's answer cannot be read ({type(exc).__name__})",
                    hint="the Hub (or the HF_ENDPOINT mirror) sent a malformed answer; try again later",
                ) from None
            finally:
                POLICY.reset(scope)

        return self._retrying(what, once)

    def _too_large(self, what: str, exc: TooLarge) -> HubError:
        return HubError(
            f"{what}: the Hub's answer is larger than {exc.cap // (1024 * 1024)} MiB; refused",
            hint="the Hub (or the HF_ENDPOINT mirror) sent an oversized answer; check HF_ENDPOINT",
        )

    def _request(self, method: str, url: str, headers: Mapping[str, str], what: str, *, cap: int) -> Any:
        """One request with our timeout (redirects not followed); the body read up to `cap` bytes.
        Retryable failures raise `AttemptFailed` for `_retrying`."""
        try:
            with self.http.stream(method, url, headers=dict(headers)) as response:
                if response.status_code == 429 or response.status_code >= 500:
                    raise AttemptFailed(response.status_code, response.headers, None)
                body = read_capped(response, cap) if method != "HEAD" else b""
        except network_error_types() as exc:  # evaluated after the request: httpx is loaded
            raise AttemptFailed(None, {}, exc) from exc
        except TooLarge as exc:
            raise self._too_large(what, exc) from None
        response._content = body  # what Response.read() does, capped
        return response

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
    # The two calls every download makes (model info, the file tree) are plain JSON GETs on our own
    # client: importing huggingface_hub's HfApi costs ~0.15 s, a third of an up-to-date re-run.
    def _get_json(self, url: str, what: str, *, repo_id: str, revision: str | None) -> tuple[Any, Any]:
        """(decoded JSON, response) of a GET on the Hub's API, with the token (redirects followed within
        the Hub's host: a renamed repo), under the one retry loop, the timeout and the size cap."""

        def get(target: str, headers: Mapping[str, str]) -> Any:
            return self._retrying(
                what, lambda: self._request("GET", target, headers, what, cap=self.max_body)
            )

        _, _, response = walk_redirects(get, url, self.auth_headers(), what)
        if response is None:
            raise HubError(f"{what}: the Hub redirected to another host", hint="check HF_ENDPOINT")
        if response.status_code >= 300:
            raise self.map_status(response.status_code, response.headers, repo_id=repo_id, revision=revision)
        try:
            return response.json(), response
        except (RecursionError, ValueError):
            # A Hub answer nested thousands deep, or a 5,000-digit number, breaks the JSON parser.
            raise HubError(
                f"{what}: the Hub's answer cannot be read",
                hint="the Hub (or the HF_ENDPOINT mirror) sent a malformed answer; try again later",
            ) from None

    def repo_info(self, repo_id: str, revision: str | None = None) -> RepoInfo:
        """Canonical id, the commit `revision` points at, and whether the repo is gated/private."""
        rev = revision or "main"
        url = f"{self.endpoint}/api/models/{repo_id}"
        if revision is not None:
            url += f"/revision/{quote(revision, safe='')}"
        info, _ = self._get_json(url, f"{repo_id}@{rev}: model info", repo_id=repo_id, revision=rev)
        if not isinstance(info, dict) or not info.get("sha") or not isinstance(info.get("id"), str):
            raise HubError(f"{repo_id}: the Hub did not say which commit {rev!r} is")
        return RepoInfo(
            repo_id=info["id"],
            commit=str(info["sha"]),
            gated=bool(info.get("gated")),
            private=bool(info.get("private")),
        )

    def list_files(self, repo_id: str, commit: str) -> list[RepoFile]:
        """Every file of the commit (recursive tree, all pages), with sizes and LFS SHA-256."""
        what = f"{repo_id}@{commit[:12]}: file listing"
        url: str | None = f"{self.endpoint}/api/models/{repo_id}/tree/{quote(commit, safe='')}?recursive=true"
        out: list[RepoFile] = []
        while url is not None:
            items, response = self._get_json(url, what, repo_id=repo_id, revision=commit)
            if not isinstance(items, list):
                raise HubError(f"{what}: the Hub answered something that is not a file list")
            try:
                out.extend(_listed(i) for i in items if isinstance(i, dict) and i.get("type") == "file")
            except (KeyError, TypeError, ValueError):
                raise HubError(f"{what}: the Hub answered a malformed file entry") from None
            following = response.links.get("next", {}).get("url")
            url = urljoin(url, following) if following else None
        return sorted(out, key=lambda f: f.path)

    def list_branches(self, repo_id: str) -> list[str]:
        """The repo's branch names (not tags, not PR refs)."""

        def call() -> list[str]:
            return [ref.name for ref in self.api.list_repo_refs(repo_id).branches]

        return self._call(f"{repo_id}: branches", call, repo_id=repo_id, revision=None)

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

    def model_files(self, repo_id: str, revision: str | None = None) -> Snapshot:
        """`snapshot` in ONE request (model info with the files' metadata): the commit `revision` points
        at and every file with its size, LFS SHA-256 or git blob id. For checking many models at once
        (`outdated`); a download uses `snapshot`, whose paginated tree scales to any repo size."""
        rev = revision or "main"

        def call() -> Any:
            return self.api.model_info(repo_id, revision=revision, files_metadata=True, timeout=self.timeout)

        info = self._call(f"{repo_id}@{rev}: model info", call, repo_id=repo_id, revision=rev)
        if not info.sha:
            raise HubError(f"{repo_id}: the Hub did not say which commit {rev!r} is")
        files = []
        for sibling in info.siblings or []:
            lfs = sibling.lfs
            if lfs is not None:
                files.append(RepoFile(sibling.rfilename, int(lfs.size), sha256=str(lfs.sha256).lower()))
            else:
                blob = str(sibling.blob_id).lower() if sibling.blob_id else None
                files.append(RepoFile(sibling.rfilename, int(sibling.size or 0), git_sha1=blob))
        return Snapshot(
            repo_id=info.id,
            revision=rev,
            commit=info.sha,
            gated=bool(info.gated),
            private=bool(info.private),
            files=tuple(sorted(files, key=lambda f: f.path)),
        )

    def is_tag(self, repo_id: str, revision: str) -> bool:
        """Whether `revision` names a tag of the repo (a tag pins a model; a branch moves)."""

        def call() -> Any:
            return self.api.list_repo_refs(repo_id)

        refs = self._call(f"{repo_id}: refs", call, repo_id=repo_id, revision=revision)
        name = revision.removeprefix("refs/tags/")
        return any(t.name == name for t in refs.tags)

    def whoami_status(self) -> tuple[int, str | None]:
        """(HTTP status, user name) of the token as the Hub sees it, in one request (no retries): for
        `doctor`, which reports a Hub that cannot be reached rather than waiting it out."""
        url = f"{self.endpoint}/api/whoami-v2"
        try:
            response = self._request("GET", url, self.auth_headers(), "whoami", cap=1024 * 1024)
        except AttemptFailed as exc:
            if exc.status is not None:
                return exc.status, None
            reason = f"no answer within {self.timeout:g} s" if exc.timed_out else "no connection"
            raise HubUnavailable(
                f"the Hub at {self.endpoint} is not reachable ({reason})",
                hint="check the network or HF_ENDPOINT",
            ) from None
        user = None
        if response.status_code == 200:
            try:
                data = response.json()
            except (RecursionError, ValueError):
                data = None
            user = str(data.get("name", "?")) if isinstance(data, dict) else "?"
        return response.status_code, user

    # -- file URLs ---------------------------------------------------------------------------------
    def resolve_file_url(self, repo_id: str, commit: str, path: str) -> ResolvedUrl:
        """The URL to GET `path` from, and the headers that may go with it.

        Redirects within the Hub's host (a renamed repo) are followed with the token; a redirect to any
        other host ends the walk and that URL is returned with no Authorization header. Called again
        when a signed CDN URL has expired (`imageworks.transfer.FileJob.resolve`)."""
        what = f"{repo_id}: {path}"

        def head(url: str, headers: Mapping[str, str]) -> Any:
            return self._retrying(what, lambda: self._request("HEAD", url, headers, what, cap=0))

        url = self.file_url(repo_id, commit, path)
        target, headers, response = walk_redirects(head, url, self.auth_headers(), what)
        if response is None:
            return ResolvedUrl(target, headers, cross_host=True)
        if response.status_code >= 300:
            raise self.map_status(
                response.status_code, response.headers, repo_id=repo_id, revision=commit, path=path
            )
        return ResolvedUrl(target, headers, cross_host=False)

    def resolver(self, repo_id: str, commit: str, path: str) -> Callable[[], ResolvedUrl]:
        """A function that resolves `path` afresh each time it is called: what an engine calls when a
        file starts (so resolving overlaps the transfer) and again when a signed URL has expired."""
        return functools.partial(self.resolve_file_url, repo_id, commit, path)

    def read_range(self, resolved: ResolvedUrl, start: int, end: int) -> bytes:
        """Bytes [start, end) of a resolved file with one Range request (for header-only inspection)."""
        if end <= start:
            return b""
        headers = {**resolved.headers, "Range": f"bytes={start}-{end - 1}"}
        what = f"range read of {urlsplit(resolved.url).path}"
        # A server that ignores Range sends the whole file: read no further than we asked.
        response = self._retrying(what, lambda: self._request("GET", resolved.url, headers, what, cap=end))
        if response.status_code == 206:
            return bytes(response.content[: end - start])
        if response.status_code == 200:
            return bytes(response.content[start:end])
        if response.status_code == 416:
            return b""
        raise HubError(f"range read failed (HTTP {response.status_code}) for {urlsplit(resolved.url).path}")


def _listed(item: dict[str, Any]) -> RepoFile:
    """One file of a tree page (`{"type": "file", "path", "size", "oid", "lfs": {"oid", "size"}}`)."""
    lfs = item.get("lfs")
    if lfs:
        return RepoFile(str(item["path"]), int(lfs["size"]), sha256=str(lfs["oid"]).lower())
    return RepoFile(str(item["path"]), int(item["size"]), git_sha1=str(item["oid"]).lower())
