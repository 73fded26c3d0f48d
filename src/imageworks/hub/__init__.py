"""The Hub API: the one network choke point for repo metadata, listings, file URLs and auth.

The two calls every download makes (model info, the file tree) are JSON GETs on our own client, under
the same retry loop, timeout and size cap: importing huggingface_hub's `HfApi` costs ~0.15 s, a third of
an up-to-date re-run. Other metadata goes through `HfApi` (imported lazily), always with the endpoint and
token from our `Config`, never from the library's import-time globals. File URLs are
resolved here too: a HEAD on `{endpoint}/{repo}/resolve/{commit}/{path}` with the token, without
following redirects, so we decide which host gets the token: the Hub itself may, the CDN it redirects to
never does (a signed URL plus a bearer token is refused by the CDN anyway, and the token must not leak).

Every failure becomes an `imageworks.errors` exception whose hint says what to do.

Retries and timeouts are HubClient's alone (see `_scoped_session`): each Hub request made through the
library gets the configured timeout (`hub_timeout`, IMAGEWORKS_HUB_TIMEOUT) and one attempt, and
`HubClient` decides what to retry and how long to wait.

Layout: `client` (HubClient), `urls` (the host, token, scheme and size rules, the redirect walk),
`library` (huggingface_hub's shared client, scoped to our calls).
"""

from imageworks.hub.client import MAX_BODY, HubClient, RepoInfo, Snapshot
from imageworks.hub.urls import (
    USER_AGENT,
    ResolvedUrl,
    carries_token,
    check_scheme,
    forward_headers,
    locate,
    origin,
    probe_url,
    retry_after_seconds,
    same_origin,
    tls_context,
    walk_redirects,
)

__all__ = [
    "MAX_BODY",
    "USER_AGENT",
    "HubClient",
    "RepoInfo",
    "ResolvedUrl",
    "Snapshot",
    "carries_token",
    "check_scheme",
    "forward_headers",
    "locate",
    "origin",
    "probe_url",
    "retry_after_seconds",
    "same_origin",
    "tls_context",
    "walk_redirects",
]
