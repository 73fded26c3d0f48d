"""The one way this package starts programs: the command line is logged with secrets redacted."""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("imageworks.transfer.process")

_SECRET_OPTION = re.compile(
    r"^(--(?:rpc-secret|http-passwd|ftp-passwd|https-proxy-passwd|http-proxy-passwd)=).+$"
)
_AUTH_HEADER = re.compile(r"(?i)((?:authorization|cookie|proxy-authorization)\s*:\s*).+$")
_TOKEN = re.compile(r"\b(hf_|token:)[A-Za-z0-9_\-]+")


def redact(arg: str) -> str:
    arg = _SECRET_OPTION.sub(r"\1<redacted>", arg)
    arg = _AUTH_HEADER.sub(r"\1<redacted>", arg)
    return _TOKEN.sub(r"\1<redacted>", arg)


def redact_argv(argv: Sequence[str]) -> str:
    return shlex.join(redact(a) for a in argv)


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    log.debug("starting: %s", redact_argv(argv))
    return subprocess.Popen(list(argv), **kwargs)
