"""Fault injection and bandwidth throttling for the fake Hub."""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["drop", "reset", "stall", "status"]
Server = Literal["hub", "cdn"]


@dataclass
class Fault:
    """One injected failure, matched against the repo file path(s) a request is about.

    For file requests (Hub `resolve`, CDN blob) the glob is matched against the file's path in the repo
    (a CDN blob matches if any path holding that content matches); for API requests, against the decoded
    URL path, e.g. "/api/models/*". `fnmatch` rules: `*` also matches `/`.

    - drop: close the connection after `after_bytes` bytes of this response's body (FIN, body incomplete).
    - reset: the same with a TCP RST.
    - stall: stop sending for `seconds` after `after_bytes` bytes of the body, then go on.
    - status: answer `status` (with `Retry-After` / `X-Error-Code` / `X-Error-Message` when given) instead.

    `times` is how often it fires (None: forever); `hits` counts firings. drop/stall only fire on responses
    that carry a body, and only if the body is longer than `after_bytes`.
    """

    pattern: str
    kind: FaultKind
    after_bytes: int = 0
    seconds: float = 0.0
    status: int = 500
    retry_after: int | None = None
    error_code: str | None = None
    message: str | None = None
    server: Server | None = None
    method: str | None = None
    times: int | None = 1
    hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def matches(self, server: Server, method: str, subjects: Iterable[str]) -> bool:
        if self.server is not None and self.server != server:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        return any(fnmatch.fnmatchcase(s, self.pattern) for s in subjects)

    def try_fire(self) -> bool:
        """Claim one firing; False when another connection used up the last one."""
        with self._lock:
            if self.times is not None and self.hits >= self.times:
                return False
            self.hits += 1
            return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class TokenBucket:
    """A rate limiter shared by threads (GCRA): each caller reserves its slot, then sleeps until it."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        # 20 ms worth of bytes: enough to absorb scheduling jitter, too little to blur the rate.
        self._burst_s = (burst if burst is not None else max(rate * 0.02, 16 * 1024)) / self.rate
        self._tat = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self, n: int) -> float:
        """Reserve n bytes; returns how long the caller must wait before sending them."""
        with self._lock:
            now = time.monotonic()
            self._tat = max(self._tat, now) + n / self.rate
            return self._tat - self._burst_s - now


@dataclass(frozen=True)
class Throttle:
    per_connection_bps: float | None
    total: TokenBucket | None

    @property
    def chunk_size(self) -> int:
        rates = [r for r in (self.per_connection_bps, self.total.rate if self.total else None) if r]
        # ~100 chunks a second per rate keeps the pacing smooth without burning CPU on tiny writes.
        return max(16 * 1024, min(256 * 1024, int(min(rates) / 100))) if rates else 8 * 1024 * 1024
