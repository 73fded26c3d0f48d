"""Secrets never leave the process: one place that scrubs tokens from command lines, log lines, change-log
patches and URLs before they are written anywhere."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "<redacted>"

_SECRET_OPTION = re.compile(
    r"^(--(?:token|rpc-secret|http-passwd|ftp-passwd|https-proxy-passwd|http-proxy-passwd)=).+$"
)
_AUTH_HEADER = re.compile(r"(?i)((?:authorization|cookie|proxy-authorization)\s*:\s*(?:bearer\s+)?)[^\s\"']+")
_HF_TOKEN = re.compile(r"\b(hf_|token:)[A-Za-z0-9_\-]{3,}")
_TOKEN_FLAG = re.compile(r"(--token[= ])(\S+)")
_SECRET_QUERY = re.compile(
    r"token|key|sig|signature|auth|credential|password|secret|x-amz-|expires", re.IGNORECASE
)
_OPTIONS_WITH_SECRET_VALUE = {"--token", "--rpc-secret"}


def redact_text(text: str) -> str:
    """Scrub anything that looks like a Hub token or a credential from free text."""
    text = _TOKEN_FLAG.sub(rf"\1{MASK}", text)
    text = _AUTH_HEADER.sub(rf"\1{MASK}", text)
    return _HF_TOKEN.sub(rf"\1{MASK}", text)


def redact_argv(argv: Sequence[str]) -> str:
    """A command line fit for logs and the change log (`--token X`, `--token=X`, secret options, headers)."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        hide_next = arg in _OPTIONS_WITH_SECRET_VALUE
        out.append(redact_text(_SECRET_OPTION.sub(rf"\1{MASK}", arg)))
    return shlex.join(out)


def redact_obj(value: Any) -> Any:
    """Redact every string inside a JSON-like value (patches may carry metadata copied from a server)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_obj(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    return value


def redact_url(url: str) -> str:
    """A URL fit for the registry and logs: no user:password, no signed or token query values."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = urlencode(
        [
            (k, "***" if _SECRET_QUERY.search(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
