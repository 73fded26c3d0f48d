"""`verify NAME… | --all`: the same command under imageworks-download and imageworks-loader."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from imageworks.cli.app import AppContext, json_option, no_backup_option, pass_app
from imageworks.cli.render import byte_progress, console, emit_json, human_size, operation_failed
from imageworks.errors import EXIT_FAILED, EXIT_OK, UsageError

if TYPE_CHECKING:
    from rich.progress import TaskID

    from imageworks.verify import FileCheck, ProgressFn, VerifyReport, VerifyRun

_STYLE = {"ok": "green", "recorded": "green", "skipped": "dim"}


@click.command()
@click.argument("names", nargs=-1, metavar="NAME…")
@click.option("--all", "all_models", is_flag=True, help="Verify every model in the registry.")
@click.option(
    "--quick", is_flag=True, help="Compare size and mtime with what was recorded at hashing time; no hashing."
)
@click.option(
    "--remote",
    is_flag=True,
    help="Also compare the recorded SHA-256s with the Hub's for the recorded commit.",
)
@click.option("--record", is_flag=True, help="Hash and store the digests an entry lacks.")
@click.option(
    "--remote-store",
    metavar="REMOTE",
    help="Check a team store's objects instead (HEAD + sha256 metadata; default: every model it holds).",
)
@click.option("--deep", is_flag=True, help="With --remote-store: read every object and hash it.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Files hashed at once (default: cores, at most 4).",
)
@no_backup_option
@json_option
@pass_app
def verify(
    app: AppContext,
    names: tuple[str, ...],
    all_models: bool,
    quick: bool,
    remote: bool,
    record: bool,
    jobs: int | None,
    remote_store: str | None,
    deep: bool,
    no_backup: bool,
    as_json: bool,
) -> int:
    """Check that each file of NAME… is present, the recorded size and the recorded SHA-256, and list
    files in the model's folder that the entry does not know.

    \b
    NAME is the registry name, an alias, the HF repo id or a unique part of the name.
    Exit status: 0 all match, 1 something differs, is missing or extra, 2 bad name or usage.
    --quick catches truncated or replaced files, not a byte changed in place with its mtime restored.
    """
    if remote_store is not None or deep:
        from imageworks.cli.remote_cmds import verify_store_cmd

        if remote_store is None:
            raise UsageError("--deep goes with --remote-store REMOTE")
        return verify_store_cmd(app, remote_store, () if all_models else names, deep, as_json)
    ahead = None
    if not quick and bool(names) != all_models:  # a valid selection: start hashing before the imports
        from imageworks import verify_ahead

        ahead = verify_ahead.start(app.config.registry_path, None if all_models else names, jobs=jobs)
    try:
        with _yielding_gil(ahead is not None):
            from imageworks.verify import run_verify, selection

            chosen = selection(names, all_models)
            with _progress_bar(enabled=not quick) as progress:
                run = run_verify(
                    app.store(),
                    chosen,
                    quick=quick,
                    remote=remote,
                    record=record,
                    jobs=jobs,
                    progress=progress,
                    config=app.config if remote else None,
                    command=sys.argv,
                    backup=not no_backup,
                    ahead=ahead,
                )
    finally:
        if ahead is not None:
            ahead.close()
    if as_json:
        bad = [r.name for r in run.reports if not r.ok]
        error = operation_failed(
            f"{len(bad)} of {len(run.reports)} model(s) did not verify: {', '.join(bad[:5])}",
            "see each model's files in data",
        )
        emit_json("verify", run.as_dict(), ok=run.ok, error=error)
    else:
        _render(run)
    return EXIT_OK if run.ok else EXIT_FAILED


@contextlib.contextmanager
def _yielding_gil(enabled: bool) -> Iterator[None]:
    """While files are hashed ahead, the imports and the registry load that follow hold the GIL in 5 ms
    slices, and each 4 MiB chunk a hashing thread finishes waits for it: a 0.5 ms interval for the rest
    of the command saves ~15 ms of a 2 GB verify (benchmarks/verify.py)."""
    if not enabled:
        yield
        return
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@contextlib.contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[ProgressFn | None]:
    """A byte progress bar on stderr when it is a terminal; nothing otherwise (logs, pipes, tests)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with byte_progress("hashing", transient=True) as bar:
        task: TaskID | None = None
        created = threading.Lock()

        def advance(n: int, total: int) -> None:
            nonlocal task
            if task is None:
                with created:  # two hashing threads may report their first chunk at once
                    if task is None:
                        task = bar.add_task("hashing", total=total)
            bar.update(task, advance=n)  # rich's Progress locks internally

        yield advance


def _render(run: VerifyRun) -> None:
    from rich.text import Text

    reports, elapsed = run.reports, run.seconds
    out = console()
    if not reports:
        out.print("no models in the registry")
        return
    for report in reports:
        style = _STYLE.get(report.status, "bold red")
        line = Text()
        line.append(f"{report.status.upper() if not report.ok else report.status:<8}", style=style)
        line.append("  ")
        line.append(report.name, style="bold")
        line.append(f"  {_headline(report)}")
        out.print(line)
        for check in report.problem_files:
            for text in _file_lines(check):
                out.print(Text("    " + text))
        for note in report.notes:
            out.print(Text(f"    note: {note}", style="dim"))
    if len(reports) > 1 or any(r.hashed_bytes for r in reports):
        counts: dict[str, int] = {}
        for report in reports:
            counts[report.status] = counts.get(report.status, 0) + 1
        hashed = sum(r.hashed_bytes for r in reports)
        seconds = max((r.hash_seconds for r in reports), default=0.0)
        rate = f" ({human_size(int(hashed / seconds))}/s)" if hashed and seconds > 0 else ""
        parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        out.print(
            Text(
                f"{len(reports)} model(s): {parts}; {human_size(hashed)} hashed in {seconds:.1f} s{rate}, "
                f"{elapsed:.1f} s in all",
                style="dim",
            )
        )


def _headline(report: VerifyReport) -> str:
    if report.status == "skipped":
        return "nothing to verify"
    listed = [f for f in report.files if f.status != "extra"]
    size = sum(f.expected_size or 0 for f in listed)
    parts = [f"{len(listed)} file(s), {human_size(size)}"]
    if report.mode == "quick":
        parts.append("quick: size and mtime only")
    problems: dict[str, int] = {}
    for check in report.problem_files:
        problems[check.status] = problems.get(check.status, 0) + 1
    parts.extend(f"{n} {status}" for status, n in problems.items())
    if report.recorded_digests:
        parts.append(f"{report.recorded_digests} digest(s) recorded")
    if report.remote:
        parts.append(f"remote: {report.remote}")
    if report.verified_at:
        parts.append(f"verified_at {report.verified_at}")
    return ", ".join(parts)


def _file_lines(check: FileCheck) -> list[str]:
    label = f"{check.status:<13} {check.path}"
    if check.status == "changed":
        return [
            label,
            f"{'':<14}recorded sha256 {check.expected_sha256}",
            f"{'':<14}on disk  sha256 {check.actual_sha256}",
        ]
    if check.status == "size differs":
        return [f"{label}  recorded {check.expected_size} bytes, on disk {check.actual_size} bytes"]
    if check.status == "extra":
        return [f"{label}  ({human_size(check.actual_size)}, not in the entry)"]
    if check.status in {"remote mismatch", "not on hub"}:
        lines = [f"{label}  {check.detail or ''}".rstrip()]
        if check.remote_sha256:
            lines.append(f"{'':<14}recorded sha256 {check.expected_sha256}")
            lines.append(f"{'':<14}Hub      sha256 {check.remote_sha256}")
        return lines
    return [f"{label}  {check.detail}" if check.detail else label]
