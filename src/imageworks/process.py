"""The one way this package starts programs: every command line is logged with its secrets redacted."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from typing import Any

from imageworks.redaction import redact_argv

log = logging.getLogger("imageworks.process")


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    log.debug("starting: %s", redact_argv(argv))
    return subprocess.Popen(list(argv), **kwargs)


def run(argv: Sequence[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run to completion and capture text output (short helper commands: `aria2c --version`, `git`)."""
    log.debug("running: %s", redact_argv(argv))
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
