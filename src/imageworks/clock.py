"""The one way we write a point in time: UTC, ISO 8601, whole seconds, `Z` (registry fields such as
`downloaded_at` and `verified_at`, change-log lines)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc_stamp() -> str:
    """A sortable, filename-safe stamp with microseconds (backup file names)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
