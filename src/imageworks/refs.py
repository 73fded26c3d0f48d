"""Model references as users type them, parsed into one typed value.

Accepted forms (issue 3):
  owner/repo                                   the default branch
  repo                                         a legacy id without owner (gpt2), as the Hub resolves it
  owner/repo@REV                               a branch (may contain '/', e.g. refs/pr/1), tag or commit
  hf://owner/repo[@REV]
  https://huggingface.co/owner/repo            (or the configured HF_ENDPOINT's host)
  .../owner/repo/tree/REV[/folder]             that revision (only files under `folder`, plus configs)
  .../owner/repo/blob/REV/path                 that one file plus the small files the model needs
  .../owner/repo/resolve/REV/path              the same
  any other http(s):// URL                     a direct download of one file

A revision inside a URL that contains '/' must be percent-encoded (`tree/refs%2Fpr%2F1`), as the Hub's
own links do, except the Hub's `refs/pr/N` and `refs/convert/NAME`, also taken unencoded; in
`owner/repo@REV` everything after the first '@' is the revision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from imageworks.errors import UsageError

HUB_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})

# The Hub's rules for a namespace or repo name: letters, digits, '-', '_', '.', at most 96 characters,
# not starting or ending with '-' or '.', and no '--' or '..'.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
_NOT_MODEL_KINDS = {"datasets", "spaces", "buckets", "collections", "docs", "organizations", "settings"}


@dataclass(frozen=True)
class HubRef:
    """A model repo on the Hub. `revision` None means the default branch; `path` is one file (blob/
    resolve URLs); `folder` restricts the weights to one folder (tree URLs)."""

    repo_id: str
    revision: str | None = None
    path: str | None = None
    folder: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class UrlRef:
    """A direct download of one file from any http(s) server."""

    url: str

    def __str__(self) -> str:
        return self.url


ModelRef = HubRef | UrlRef


def _bad(text: str, why: str) -> UsageError:
    return UsageError(
        f"cannot understand model reference {text!r}: {why}",
        hint="use OWNER/REPO, OWNER/REPO@REVISION, a huggingface.co URL, hf://OWNER/REPO or a direct http(s) URL",
    )


def check_repo_id(repo_id: str, *, original: str | None = None) -> str:
    """OWNER/REPO, or a legacy id without an owner (`gpt2`, `bert-base-uncased`), which the Hub still
    resolves to its canonical OWNER/REPO."""
    parts = repo_id.split("/")
    if len(parts) not in (1, 2):
        raise _bad(original or repo_id, "a repo id is OWNER/REPO")
    for part in parts:
        if not _NAME.match(part) or "--" in part or ".." in part:
            raise _bad(original or repo_id, f"{part!r} is not a valid owner or repo name")
    return repo_id


def _check_revision(revision: str, original: str) -> str:
    if not revision or revision != revision.strip() or any(c in revision for c in "\x00\n\r\t "):
        raise _bad(original, f"revision {revision!r} is empty or holds whitespace")
    if revision.startswith("/") or revision.endswith("/") or "//" in revision or ".." in revision:
        raise _bad(original, f"revision {revision!r} is not a valid branch, tag or commit")
    return revision


def _check_path(path: str, original: str) -> str:
    if not path or path.startswith("/") or any(p in {"", ".", ".."} for p in path.split("/")):
        raise _bad(original, f"file path {path!r} is not a plain path inside the repo")
    return path


def _split_at_revision(text: str, original: str) -> HubRef:
    repo_id, sep, revision = text.partition("@")
    check_repo_id(repo_id, original=original)
    if sep:
        return HubRef(repo_id, _check_revision(unquote(revision), original))
    return HubRef(repo_id)


def _host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return host, port


def is_hub_url(url: str, endpoint: str | None = None) -> bool:
    host, port = _host_port(url)
    if host in HUB_HOSTS:
        return True
    return endpoint is not None and (host, port) == _host_port(endpoint)


def _parse_hub_url(text: str, endpoint: str | None) -> HubRef:
    parts = urlsplit(text)
    path = parts.path
    if endpoint:
        # A mirror may serve the Hub under a path prefix (https://mirror.example/hf/owner/repo).
        prefix = urlsplit(endpoint).path.rstrip("/")
        if prefix and path.startswith(prefix + "/"):
            path = path[len(prefix) :]
    segments = [s for s in path.split("/") if s]
    if segments and segments[0] == "models":
        segments = segments[1:]
    if not segments or segments[0] in _NOT_MODEL_KINDS:
        raise _bad(text, "only model repositories can be downloaded")
    if len(segments) < 2:
        raise _bad(text, "the URL names no OWNER/REPO")
    repo_id = check_repo_id(f"{unquote(segments[0])}/{unquote(segments[1])}", original=text)
    rest = segments[2:]
    if not rest:
        return HubRef(repo_id)
    kind, rest = rest[0], rest[1:]
    if kind not in {"tree", "blob", "resolve"} or not rest:
        raise _bad(text, "expected .../tree/REV, .../blob/REV/PATH or .../resolve/REV/PATH after the repo")
    # The Hub's own refs (refs/pr/N, refs/convert/...) are often pasted unencoded; no branch starts so.
    rev_parts = 3 if rest[0] == "refs" and len(rest) >= 3 else 1
    revision = _check_revision(unquote("/".join(rest[:rev_parts])), text)
    inner = "/".join(unquote(s) for s in rest[rev_parts:])
    if kind == "tree":
        return HubRef(repo_id, revision, folder=_check_path(inner, text) if inner else None)
    if not inner:
        raise _bad(text, f"a {kind} URL names one file: .../{kind}/REV/PATH")
    return HubRef(repo_id, revision, path=_check_path(inner, text))


def parse_reference(text: str, *, endpoint: str | None = None) -> ModelRef:
    """Parse what the user typed. `endpoint` is the configured Hub endpoint, so URLs of a mirror (or of
    the fake Hub in tests) are recognised as Hub URLs rather than direct downloads."""
    original = text
    text = text.strip()
    if not text:
        raise _bad(original, "it is empty")
    lowered = text.lower()
    if lowered.startswith("hf://"):
        body = text[5:]
        if body.startswith("models/"):
            body = body[len("models/") :]
        head = body.split("/", 1)[0]
        if head in _NOT_MODEL_KINDS:
            raise _bad(original, "only model repositories can be downloaded")
        return _split_at_revision(body, original)
    if lowered.startswith(("http://", "https://")):
        parts = urlsplit(text)
        if not parts.hostname:
            raise _bad(original, "the URL has no host")
        if is_hub_url(text, endpoint):
            return _parse_hub_url(text, endpoint)
        return UrlRef(text)
    if "://" in text:
        raise _bad(original, "only http(s):// and hf:// URLs are supported")
    return _split_at_revision(text, original)
