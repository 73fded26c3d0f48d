"""Output: rich tables for people, a versioned JSON envelope for scripts (STYLE.md #2)."""

from __future__ import annotations

import json
import sys
from typing import Any

JSON_SCHEMA_VERSION = 1


def human_size(num: int | None) -> str:
    if num is None:
        return "-"
    size = float(num)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{num} B"


def emit_json(kind: str, data: Any, *, ok: bool = True) -> None:
    """`{"schema": "imageworks.<kind>", "version": 1, "ok": ..., "data": ...}` on stdout."""
    _write_envelope({"schema": f"imageworks.{kind}", "version": JSON_SCHEMA_VERSION, "ok": ok, "data": data})


def emit_error_json(kind: str, error: dict[str, Any]) -> None:
    """The same envelope for a command that failed (pipx `result.py::error_envelope`): `"ok": false`,
    `"data": null` and `"error": {"type", "message", "hint", "exit_code"}`."""
    _write_envelope(
        {
            "schema": f"imageworks.{kind}",
            "version": JSON_SCHEMA_VERSION,
            "ok": False,
            "data": None,
            "error": error,
        }
    )


def _write_envelope(envelope: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(envelope, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def console(stderr: bool = False):  # -> rich.console.Console
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by scripts and grep: never fold a model name across lines to fit 80 columns.
    width = None if stream.isatty() else 400
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    """A table that never breaks a word inside a cell: each column is at least as wide as its longest
    word. When the terminal is too narrow for that, each row is printed as its first cell on a line
    of its own and the other cells, labelled, below it."""
    from rich.table import Table
    from rich.text import Text

    out = console()
    cells = [[Text.from_markup(c) for c in row] for row in rows]
    longest = [
        max([len(columns[i]), *(_longest_word(row[i].plain) for row in cells)]) for i in range(len(columns))
    ]
    # Borders and padding of rich's default box: one bar per column plus one, one space each side.
    if sum(longest) + 3 * len(columns) + 1 > out.width:
        _stacked(out, columns, cells)
        return
    t = Table(title=title, show_lines=False, header_style="bold")
    for col, width in zip(columns, longest, strict=True):
        t.add_column(col, min_width=width, no_wrap=col in {"name", "path"})
    for row in cells:
        t.add_row(*row)
    out.print(t)


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=0)


def _stacked(out: Any, columns: list[str], cells: list[list[Any]]) -> None:
    """Each row as its first cell, then `label: value` pairs filled into indented lines (a pair is
    never split)."""
    from rich.text import Text

    indent = "    "
    for row in cells:
        out.print(Text(row[0].plain, style="bold"), soft_wrap=True)
        line = Text(indent)
        for col, cell in zip(columns[1:], row[1:], strict=True):
            pair = Text(f"{col}: ", style="dim")
            pair.append_text(cell)
            if line.cell_len > len(indent) and line.cell_len + 2 + pair.cell_len > out.width:
                out.print(line, soft_wrap=True)
                line = Text(indent)
            elif line.cell_len > len(indent):
                line.append("  ")
            line.append_text(pair)
        out.print(line, soft_wrap=True)


def byte_progress(description_column: str = "{task.description}", *, transient: bool = False):  # -> Progress
    """A rich progress display in bytes with speed and ETA on stderr (download and verify share it)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn(description_column, markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=transient,
    )
