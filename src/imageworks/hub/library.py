"""huggingface_hub's shared HTTP client, scoped to HubClient's calls (see the comment below)."""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from imageworks.hub.urls import read_capped

log = logging.getLogger("imageworks.hub")

CONNECT_TIMEOUT_CAP = 10.0  # a Hub that accepts no connection in 10 s is down, whatever the read timeout


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imageworks")
    except PackageNotFoundError:
        return "0"


def network_error_types() -> tuple[type[BaseException], ...]:
    """The network errors of the HTTP clients loaded so far: an error of a client nobody imported
    cannot be raised, and importing httpx2 (huggingface_hub's client) only to name its errors cost
    ~50 ms of every download's start-up. Use it as an except clause's expression, which is evaluated
    when an exception reaches it, i.e. after the request has loaded its client."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx", "httpx2"):
        mod = sys.modules.get(module)
        if mod is not None:
            types.append(mod.TransportError)
    return tuple(types)


def is_timeout(exc: BaseException) -> bool:
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
# `AttemptFailed`, which `http_backoff` does not catch: one attempt per HubClient try.
# Limits: a transport, proxy or TLS setting of a factory an application installed before us is not
# carried over, and a factory installed after ours takes these guarantees away.


@dataclass(frozen=True)
class Policy:
    timeout: float  # seconds per connect and per read
    max_body: int  # bytes of one answer


POLICY: ContextVar[Policy | None] = ContextVar("imageworks_hub_policy", default=None)
_INSTALL_LOCK = threading.Lock()
_INSTALLED = False


class AttemptFailed(Exception):
    """One request of a HubClient call failed in a way HubClient may retry: `status` 408/429/5xx, or a
    network error (`status` None)."""

    def __init__(self, status: int | None, headers: Mapping[str, str], error: BaseException | None) -> None:
        super().__init__(f"HTTP {status}" if status else repr(error))
        self.status = status
        self.headers = dict(headers)
        self.timed_out = error is not None and is_timeout(error)


def retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


@functools.cache
def _scoped_client_class() -> type[Any]:
    import httpx2

    class ScopedClient(httpx2.Client):
        def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
            policy = POLICY.get()
            if policy is None:
                return super().send(request, **kwargs)
            timeout = httpx2.Timeout(policy.timeout, connect=min(policy.timeout, CONNECT_TIMEOUT_CAP))
            request.extensions["timeout"] = timeout.as_dict()
            streamed = kwargs.pop("stream", False)
            try:
                response = super().send(request, stream=True, **kwargs)
                if retryable(response.status_code):
                    response.close()
                    raise AttemptFailed(response.status_code, response.headers, None)
                if not streamed:
                    # What Response.read() does, with a cap on the size.
                    response._content = read_capped(response, policy.max_body)
            except httpx2.TransportError as exc:
                raise AttemptFailed(None, {}, exc) from exc
            return response

    return ScopedClient


def scoped_session() -> None:
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
