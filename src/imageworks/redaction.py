"""Secrets never leave the process: one place that scrubs tokens from command lines, log lines, change-log
patches, registry URLs and error messages before they are written anywhere.

What counts as a secret: Hub tokens (`hf_...`), `--token` and other secret options, Authorization and
Cookie headers, the userinfo of a URL (`https://user:pass@host`), query parameters whose name says
credential (`token=`, `api_key=`, `sig=`, `X-Amz-Signature=`, ...), and query values that look like one
whatever their name (JWTs, cloud access keys, long random strings)."""

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
# Not a path component: `/data/hf_home/hub` is a folder, not a token.
_HF_TOKEN = re.compile(r"(?<![/\\])\b(hf_|token:)[A-Za-z0-9_\-]{3,}(?![A-Za-z0-9_\-/\\])")
_TOKEN_FLAG = re.compile(r"(--token[= ])(\S+)")
_SECRET_NAME = (
    r"token|key|sig|signature|auth|credential|password|passwd|pwd|secret|session|jwt|x-amz-|expires"
)
_SECRET_QUERY = re.compile(_SECRET_NAME, re.IGNORECASE)
_OPTIONS_WITH_SECRET_VALUE = {"--token", "--rpc-secret"}
# `user:password@` (or a bare `token@`) after a scheme.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@")
# A query parameter anywhere in the text: `?name=value` or `&name=value`.
_QUERY_PARAM = re.compile(r"([?&;])([^=&#\s\"'<>?;]+)=([^&#\s\"'<>;]*)")
_CREDENTIAL_VALUE = re.compile(
    r"^(?:hf_[A-Za-z0-9]{8,}"  # Hugging Face
    r"|eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*"  # JWT
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})"
)
_RANDOM_VALUE = re.compile(r"^[A-Za-z0-9_\-+/=%.~]{32,}$")


def looks_like_credential(value: str) -> bool:
    """A known token format, or a long random-looking string (upper and lower case letters and
    digits mixed: a hex digest or a file name is not one)."""
    if _CREDENTIAL_VALUE.match(value):
        return True
    return bool(
        _RANDOM_VALUE.match(value)
        and re.search(r"[A-Z]", value)
        and re.search(r"[a-z]", value)
        and re.search(r"[0-9]", value)
    )


def _query_param(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    if value and (_SECRET_QUERY.search(name) or looks_like_credential(value)):
        return f"{sep}{name}={MASK}"
    return match.group(0)


def redact_text(text: str) -> str:
    """Scrub anything that looks like a Hub token or a credential from free text (URLs included)."""
    text = _TOKEN_FLAG.sub(rf"\1{MASK}", text)
    text = _AUTH_HEADER.sub(rf"\1{MASK}", text)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    if "=" in text:
        text = _QUERY_PARAM.sub(_query_param, text)
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
            (k, "***" if v and (_SECRET_QUERY.search(k) or looks_like_credential(v)) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class RedactingFilter:
    """A logging filter (on a handler) that scrubs every record's final text."""

    def filter(self, record: Any) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
