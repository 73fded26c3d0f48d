"""outdated, update: thin commands over `imageworks.outdated` and `imageworks.update`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from imageworks.cli.app import AppContext, engine_options, json_option, no_backup_option, pass_app
from imageworks.cli.render import emit_json, human_size, table
from imageworks.errors import EXIT_FAILED, EXIT_OK
from imageworks.units import plural

if TYPE_CHECKING:
    from imageworks.outdated import FileChange, ModelStatus, OutdatedReport
    from imageworks.update import UpdateReport


def _commits(old: str | None, new: str | None) -> str:
    if not new or old == new:
        return (old or "-")[:12]
    return f"{(old or '?')[:12]} -> {new[:12]}"


def _change_line(change: FileChange) -> str:
    size = human_size(change.size)
    if change.change == "changed":
        size = f"{human_size(change.old_size)} -> {size}"
    doc = " (documentation)" if change.documentation else ""
    return f"    {change.change:<8} {change.path}  {size}{doc}"


def _summary(status: ModelStatus) -> str:
    if status.state in ("outdated", "metadata only") and 0 < len(status.changes) <= 3:
        return ", ".join(f"{c.change} {c.path}" for c in status.changes)
    if status.state in ("outdated", "metadata only") and status.changes:
        counts: dict[str, int] = {}
        for c in status.changes:
            counts[c.change] = counts.get(c.change, 0) + 1
        return ", ".join(f"{n} {kind}" for kind, n in counts.items())
    return status.reason or ""


def _render_outdated(report: OutdatedReport, *, every_row: bool) -> None:
    """A table of the models (with --all only those whose commit moved or that need attention: the
    summary line counts the rest), then the changed files of each outdated one."""
    shown = [m for m in report.models if every_row or m.state not in ("current", "pinned")]
    rows = [
        [
            m.name,
            m.state,
            _commits(m.commit, m.new_commit),
            _summary(m),
            human_size(m.bytes_to_fetch) if m.bytes_to_fetch else "-",
        ]
        for m in shown
    ]
    if rows:
        table(None, ["name", "state", "commit", "changes", "to fetch"], rows)
    for m in report.models:
        if m.state == "outdated":
            click.echo(f"{m.name}: {human_size(m.bytes_to_fetch)} to fetch")
            for change in m.changes:
                click.echo(_change_line(change))
        for note in m.notes:
            click.echo(f"note: {m.name}: {note}")
        if m.hint and m.state in ("gone", "unchecked"):
            click.echo(f"hint: {m.name}: {m.hint}")
    counts = ", ".join(f"{n} {state}" for state, n in sorted(report.counts().items()))
    click.echo(
        f"{len(report.models)} checked in {report.seconds:.1f} s ({report.requests} Hub requests): {counts or 'nothing'}"
    )


# `outdated` and `update` pick their models the same way.
all_hub_models_option = click.option(
    "--all",
    "all_",
    is_flag=True,
    help="Every model that came from the Hub (a recorded commit; scanned folders are not).",
)


@click.command()
@click.argument("names", nargs=-1)
@all_hub_models_option
@click.option("--token", help="Hugging Face token (default: HF_TOKEN, then the `hf auth login` token file).")
@json_option
@pass_app
def outdated(app: AppContext, names: tuple[str, ...], all_: bool, token: str | None, as_json: bool) -> int:
    """Tell which models' branches moved on the Hub and what changed for the files they selected.

    Exit 0 when nothing is outdated, 1 when a model is outdated, gone or could not be checked."""
    from imageworks.outdated import check_outdated

    if token:
        app.token = token
    report = check_outdated(app.store().load(), names=names, all_=all_, config=app.config)
    if as_json:
        emit_json("outdated", report.as_dict())
    else:
        _render_outdated(report, every_row=not all_)
    return EXIT_FAILED if report.needs_attention else EXIT_OK


def _render_update(report: UpdateReport) -> None:
    for m in report.models:
        commits = _commits(m.commit, m.new_commit)
        if m.state == "updated":
            click.echo(
                f"updated {m.name}: {commits}, {plural(m.files_fetched, 'file')} ({human_size(m.bytes_fetched)}) fetched,"
                f" {m.files_reused} reused, all verified"
            )
        elif m.state == "would update":
            click.echo(
                f"would update {m.name}: {commits}, {human_size(m.bytes_to_fetch)} to fetch,"
                f" {plural(m.files_reused, 'file')} reused"
            )
        else:
            reason = f": {m.reason}" if m.reason else ""
            click.echo(f"{m.state} {m.name} ({m.check}){reason}")
        if m.state in ("updated", "would update"):
            for change in m.changes:
                click.echo(_change_line(change))
        if m.kept_as:
            click.echo(f"  the previous revision is kept as {m.kept_as}")
        for copy in m.copies_updated:
            click.echo(f"  copy updated: {copy}")
        for copy in m.stale_copies:
            click.echo(f"  stale: {copy}")
        if m.hint and m.state in ("failed", "stale"):
            click.echo(f"  hint: {m.hint}")


@click.command()
@click.argument("names", nargs=-1)
@all_hub_models_option
@click.option("--dry-run", is_flag=True, help="Show what would be fetched and fetch nothing.")
@click.option(
    "--keep-old", is_flag=True, help="Keep the previous revision as NAME@<commit> (hardlinks, no copies)."
)
@engine_options
@click.option("--token", help="Hugging Face token (default: HF_TOKEN, then the `hf auth login` token file).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@json_option
@no_backup_option
@pass_app
def update(
    app: AppContext,
    names: tuple[str, ...],
    all_: bool,
    dry_run: bool,
    keep_old: bool,
    engine: str,
    connections: int,
    no_aria2: bool,
    stall_timeout: float,
    token: str | None,
    quiet: bool,
    as_json: bool,
    no_backup: bool,
) -> int:
    """Bring outdated models to their branch's new commit, fetching only the files that changed.

    Old files stay in place until every new file is verified; an interrupted update resumes when run
    again. Exit 1 when a model could not be updated."""
    from imageworks.cli.download_cmd import progress_display
    from imageworks.errors import UsageError
    from imageworks.update import UpdateOptions, update_models

    if no_aria2 and engine == "aria2":
        raise UsageError("--no-aria2 contradicts --engine aria2")
    if token:
        app.token = token
    sink = progress_display(0, quiet=quiet or as_json or dry_run)
    with sink:
        report = update_models(
            names=names,
            all_=all_,
            config=app.config,
            options=UpdateOptions(
                dry_run=dry_run,
                keep_old=keep_old,
                engine=engine,
                connections=connections,
                no_aria2=no_aria2,
                stall_timeout=stall_timeout,
                backup=not no_backup,
            ),
            progress=sink,
            command=["imageworks-download", *sys.argv[1:]],
        )
    if as_json:
        emit_json("update", report.as_dict(), ok=not report.failed)
    elif not quiet:
        _render_update(report)
    return EXIT_FAILED if report.failed else EXIT_OK
