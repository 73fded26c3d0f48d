"""Output: rich tables for people, a versioned JSON envelope for scripts (STYLE.md #2)."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from imageworks.units import human_size, plural  # noqa: F401  (re-exported: byte sizes live in units.py)

JSON_SCHEMA_VERSION = 1


def emit_json(kind: str, data: Any, *, ok: bool = True, error: dict[str, Any] | None = None) -> None:
    """`{"schema": "imageworks.<kind>", "version": 1, "ok": ..., "data": ...}` on stdout. A command that
    ran but failed (a verify mismatch, doctor not ready) has `"ok": false`, its data, and an `error`
    object as every failure does (exit code 1 unless `error` says otherwise)."""
    envelope = {"schema": f"imageworks.{kind}", "version": JSON_SCHEMA_VERSION, "ok": ok, "data": data}
    if not ok:
        envelope["error"] = error or operation_failed(f"{kind} reported problems: see data")
    _write_envelope(envelope)


def operation_failed(message: str, hint: str | None = None) -> dict[str, Any]:
    """The error object of a command that ran and found problems (exit code 1)."""
    return {"type": "OperationFailed", "message": message, "hint": hint, "exit_code": 1}


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
    # orjson: the stdlib encoder is pure Python when indenting (`list --json` of 10,000 models).
    import orjson

    options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    sys.stdout.write(orjson.dumps(envelope, default=str, option=options).decode("utf-8") + "\n")
    sys.stdout.flush()


def console(stderr: bool = False):  # -> rich.console.Console
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by scripts and grep: never fold a model name across lines to fit 80 columns.
    width = None if stream.isatty() else 400
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    """A boxed table on stdout that never breaks a word inside a cell: each column is at least as wide
    as its longest word and longer text wraps at spaces. When the terminal is too narrow even for that,
    each row is printed as its first cell on a line of its own and the other cells, labelled, below it.

    Written by hand rather than with rich's Table: rich lays out 10,000 rows in ~15 s, and `list` of a
    10,000-entry registry must take well under a second."""
    tty = sys.stdout.isatty()
    width = shutil.get_terminal_size((80, 24)).columns if tty else 400
    rows = [[_plain(cell) for cell in row] for row in rows]
    widths = _column_widths(columns, rows, width - (3 * len(columns) + 1))
    out: list[str] = [title] if title else []
    if widths is None:
        out.extend(_stacked(columns, rows, width))
    else:
        bold = ("\x1b[1m", "\x1b[0m") if tty and not os.environ.get("NO_COLOR") else ("", "")
        out.append("┏" + "┳".join("━" * (w + 2) for w in widths) + "┓")
        out.extend(_box_row(["".join((bold[0], c, bold[1])) for c in columns], widths, "┃", columns))
        out.append("┡" + "╇".join("━" * (w + 2) for w in widths) + "┩")
        plain_row = "│ " + " │ ".join(f"{{:<{w}}}" for w in widths) + " │"
        for row in rows:  # the common case, one line per row, formatted in one call
            fits = all(len(c) <= w for c, w in zip(row, widths, strict=True))
            out.extend([plain_row.format(*row)] if fits else _box_row(row, widths, "│"))
        out.append("└" + "┴".join("─" * (w + 2) for w in widths) + "┘")
    sys.stdout.write("\n".join(out) + "\n")


def _plain(cell: str) -> str:
    """Cells are plain text (a stray `[` is not markup); newlines and tabs become spaces."""
    text = str(cell)
    return " ".join(text.split()) if ("\n" in text or "\t" in text) else text


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=0)


def _column_widths(columns: list[str], rows: list[list[str]], room: int) -> list[int] | None:
    """Natural widths when they fit; else at least the longest word each, the rest of the room shared
    in proportion to what each column would like; None when not even the words fit."""
    natural = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    if sum(natural) <= room:
        return natural
    least = [max([len(c), *(_longest_word(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    if sum(least) > room:
        return None
    spare, wants = room - sum(least), [n - m for n, m in zip(natural, least, strict=True)]
    total = sum(wants) or 1
    return [m + spare * w // total for m, w in zip(least, wants, strict=True)]


def _box_row(cells: list[str], widths: list[int], bar: str, lengths: list[str] | None = None) -> list[str]:
    import textwrap

    if lengths is not None:  # styled header cells: pad by the visible text
        return [
            bar
            + "".join(
                f" {c}{' ' * (w - len(p))} {bar}" for c, p, w in zip(cells, lengths, widths, strict=True)
            )
        ]
    wrapped = [
        textwrap.wrap(c, w, break_long_words=False, break_on_hyphens=False) or [""] if len(c) > w else [c]
        for c, w in zip(cells, widths, strict=True)
    ]
    lines = []
    for n in range(max(len(w) for w in wrapped)):
        parts = [(w[n] if n < len(w) else "").ljust(width) for w, width in zip(wrapped, widths, strict=True)]
        lines.append(bar + "".join(f" {p} {bar}" for p in parts))
    return lines


def _stacked(columns: list[str], rows: list[list[str]], width: int) -> list[str]:
    """Each row as its first cell, then `label: value` pairs filled into indented lines (a pair is
    never split)."""
    indent = "    "
    out = []
    for row in rows:
        out.append(row[0])
        line = indent
        for col, cell in zip(columns[1:], row[1:], strict=True):
            pair = f"{col}: {cell}"
            if line != indent and len(line) + 2 + len(pair) > width:
                out.append(line)
                line = indent
            line += ("  " if line != indent else "") + pair
        out.append(line)
    return out


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
