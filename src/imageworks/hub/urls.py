"""The HTTP rules of the one network module, each written once: what "the same host" is (`origin`),
which headers may follow a redirect (`forward_headers`: the token never leaves the Hub's origin),
which schemes are fetched (`check_scheme`), how big an answer may be (`read_capped`), and the
redirect walk that applies them (`walk_redirects`, `locate`, `probe_url`)."""

from __future__ import annotations

import email.utils
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from imageworks.errors import (
    HubError,
    TransferError,
)

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("imageworks.hub")

USER_AGENT = "imageworks"
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class ResolvedUrl:
    """Where to GET a file. `headers` carry the token only when `url` is on the Hub's own host."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    cross_host: bool = False


# ------------------------------------------------------------------------------ the rules, once each


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context every httpx client of ours shares, made as httpx makes its default one
    (SSL_CERT_FILE, SSL_CERT_DIR, else certifi's bundle). Loading the CA bundle costs ~20 ms, and
    each `httpx.Client()` would otherwise load it again (a download makes three or four clients)."""
    import httpx

    return httpx.create_ssl_context()


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the default port filled in: what "the same host" means here."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    return origin(a) == origin(b)


def forward_headers(headers: Mapping[str, str], source: str, target: str) -> dict[str, str]:
    """The headers a request to `target` may carry when `headers` were meant for `source`: the token
    (Authorization) never goes to another origin, the CDN above all. The one place of this rule."""
    if same_origin(source, target):
        return dict(headers)
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


def carries_token(headers: Mapping[str, str]) -> bool:
    return any(k.lower() == "authorization" for k in headers)


def check_scheme(url: str, what: str) -> None:
    """Only http(s) is ever fetched: a redirect to file://, ftp:// or data: fails at once, clearly
    (it is not a network fault to retry)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise TransferError(
            f"{what}: the server sent us to an unsupported URL scheme {scheme + ':' if scheme else '(none)'!r}",
            hint="only http:// and https:// are downloaded; the server or mirror (HF_ENDPOINT) is misconfigured",
        )


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


class TooLarge(Exception):
    """A Hub answer longer than the cap: not buffered, not retried."""

    def __init__(self, size: int, cap: int) -> None:
        super().__init__(f"more than {cap} bytes")
        self.size, self.cap = size, cap


def read_capped(response: Any, cap: int) -> bytes:
    """The body of a streamed httpx/httpx2 response, refusing (and closing) past `cap` bytes: a
    hostile or broken Hub cannot make us buffer 400 MB of model info."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > cap:
        response.close()
        raise TooLarge(int(length), cap)
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > cap:
            response.close()
            raise TooLarge(size, cap)
        chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------------- redirects and direct URLs

Request = Callable[[str, Mapping[str, str]], Any]
"""request(url, headers) -> an httpx response (redirects not followed)."""


def walk_redirects(
    request: Request, url: str, headers: Mapping[str, str], what: str, *, to_other_hosts: bool = False
) -> tuple[str, dict[str, str], Any]:
    """Follow redirects ourselves, so that we decide which host gets which header (`forward_headers`)
    and which schemes are fetched (`check_scheme`). Returns (url, headers, final response); without
    `to_other_hosts` the walk ends at the first redirect to another host, with response None."""
    current = dict(headers)
    check_scheme(url, what)
    for _ in range(MAX_REDIRECTS + 1):
        response = request(url, current)
        status = response.status_code
        if status not in (301, 302, 303, 307, 308):
            return url, current, response
        location = response.headers.get("Location")
        if not location:
            raise HubError(f"{what}: redirect (HTTP {status}) without a Location")
        target = urljoin(url, location)
        check_scheme(target, what)
        current = forward_headers(current, url, target)
        if not to_other_hosts and not same_origin(target, url):
            return target, current, None
        url = target
    raise TransferError(f"{what}: more than {MAX_REDIRECTS} redirects")


def locate(url: str, headers: Mapping[str, str], *, timeout: float, what: str) -> ResolvedUrl:
    """Where a GET of `url` with `headers` ends up, for an engine that must not follow redirects with
    the token itself (aria2c forwards every header on a redirect): HEAD requests, one attempt each."""
    import httpx

    with httpx.Client(
        follow_redirects=False, timeout=timeout, headers={"User-Agent": USER_AGENT}, verify=tls_context()
    ) as client:

        def head(u: str, h: Mapping[str, str]) -> Any:
            try:
                return client.head(u, headers=dict(h))
            except httpx.HTTPError as exc:
                raise TransferError(
                    f"{what}: cannot reach {urlsplit(u).hostname}: {type(exc).__name__}",
                    hint="check the network and run the same command again to resume",
                ) from exc

        target, out, response = walk_redirects(head, url, headers, what)
    return ResolvedUrl(target, out, cross_host=response is None)


def probe_url(url: str, *, timeout: float = 30.0) -> tuple[str | None, int | None]:
    """(file name from Content-Disposition, size) of a direct URL, following redirects (only http(s));
    no token is ever sent to a direct URL."""
    import httpx

    from imageworks.redaction import redact_url

    what = redact_url(url)
    with httpx.Client(
        follow_redirects=False, timeout=timeout, headers={"User-Agent": USER_AGENT}, verify=tls_context()
    ) as client:

        def request(u: str, h: Mapping[str, str]) -> Any:
            response = client.head(u, headers=dict(h))
            if response.status_code in (403, 405, 501):  # servers (and signed URLs) that refuse HEAD
                with client.stream("GET", u, headers=dict(h)) as streamed:
                    response = streamed
            return response

        try:
            _, _, response = walk_redirects(request, url, {}, what, to_other_hosts=True)
        except httpx.HTTPError as exc:
            raise TransferError(
                f"cannot reach {what}: {type(exc).__name__}", hint="check the URL and the network"
            ) from None
    if response.status_code >= 400:
        raise HubError(
            f"{what} answered HTTP {response.status_code}",
            hint="check the URL; it may need a login in a browser, or may have expired",
        )
    size = response.headers.get("Content-Length")
    encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    return (
        _content_disposition_name(response.headers.get("Content-Disposition")),
        int(size) if size and size.isdigit() and not encoded else None,
    )


def _content_disposition_name(value: str | None) -> str | None:
    if not value:
        return None
    from email.message import Message

    message = Message()
    message["content-disposition"] = value
    name = message.get_filename()
    return PurePosixPath(name.replace("\\", "/")).name if name else None
