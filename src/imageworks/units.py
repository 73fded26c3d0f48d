"""Numbers as people read them: byte sizes and counted nouns. Used by the library (plan notes, errors)
and by the CLI alike, so neither imports the other for it."""

from __future__ import annotations


def human_size(num: int | None) -> str:
    """Decimal units, as disk vendors and the Hub show sizes: 1.5 GB is 1,500,000,000 bytes."""
    if num is None:
        return "-"
    size = float(num)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{num} B"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 file`, `2 files` (`nouns` for irregular plurals)."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"
