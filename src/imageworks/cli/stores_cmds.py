"""import, link, du, dedupe: other tools' shelves and the bytes they share (issue 11)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from imageworks.cli.app import AppContext, json_option, no_backup_option, pass_app
from imageworks.cli.render import emit_json, human_size
from imageworks.errors import UsageError
from imageworks.units import plural

TOOLS = ["hf-cache", "ollama", "lmstudio", "llama.cpp"]


@click.command("import")
@click.argument("tool", type=click.Choice(TOOLS))
@click.argument("path", required=False, type=click.Path(path_type=Path, file_okay=False))
@no_backup_option
@json_option
@pass_app
def import_cmd(app: AppContext, tool: str, path: Path | None, no_backup: bool, as_json: bool) -> None:
    """Register the models TOOL already holds (in PATH, else where TOOL keeps them), in place."""
    from imageworks.stores.importing import import_shelf

    results = import_shelf(tool, app.store(), path, command=sys.argv, backup=not no_backup)
    if as_json:
        emit_json("import", [r.as_dict() for r in results])
        return
    render_imports(tool, results)


def scan_shelf(
    app: AppContext, tool: str, path: Path, *, dry_run: bool, no_backup: bool, as_json: bool
) -> None:
    """`scan` of a folder that is another tool's shelf: imported in place, exactly as `import` does."""
    from imageworks.stores.importing import import_shelf, preview_shelf

    if dry_run:
        results = [preview_shelf(tool, app.store(), path)]
    else:
        results = import_shelf(tool, app.store(), path, command=sys.argv, backup=not no_backup)
    if as_json:
        emit_json(
            "scan",
            {"base": str(path), "shelf": tool, "dry_run": dry_run, "import": [r.as_dict() for r in results]},
        )
        return
    click.echo(
        f"{path} is {tool}'s layout: {'would import' if dry_run else 'imported'} in place (as `import {tool} PATH`)"
    )
    render_imports(tool, results)


def render_imports(tool: str, results: list) -> None:  # list[ImportResult]
    for result in results:
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(
            f"{tool} {result.shelf}: {len(result.added)} added, {len(result.copies)} gained a copy,"
            f" {len(result.unchanged)} unchanged ({plural(result.files, 'file')}, {human_size(result.bytes)},"
            f" {human_size(result.bytes_hashed)} hashed)"
        )
        for name in result.added:
            click.echo(f"  + {name}")
        for name in result.copies:
            click.echo(f"  + copy of {name}")


@click.command()
@click.argument("name")
@click.option(
    "--to", "targets", multiple=True, required=True, metavar="WHERE",
    help="hf-cache, ollama, lmstudio or a folder (repeat for several).",
)  # fmt: skip
@no_backup_option
@json_option
@pass_app
def link(app: AppContext, name: str, targets: tuple[str, ...], no_backup: bool, as_json: bool) -> None:
    """Put NAME on other tools' shelves without copying (hardlinks; a verified copy across filesystems)."""
    from imageworks.stores.linking import link_model

    results = link_model(app.store(), name, targets, command=sys.argv, backup=not no_backup)
    if as_json:
        emit_json("link", [r.as_dict() for r in results])
        return
    for result in results:
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        how = {
            "hardlink": "hardlinked",
            "copy": "copied (another filesystem) and verified",
            "server": "created through the server",
            "present": "already there",
        }[result.method]
        click.echo(f"{result.name} -> {result.target}: {plural(result.files, 'file')} {how} at {result.path}")


@click.command()
@click.option(
    "--by", "by", type=click.Choice(["model", "location", "tool"]), default="model", show_default=True
)
@json_option
@pass_app
def du(app: AppContext, by: str, as_json: bool) -> None:
    """Disk usage of every copy: logical, physical (by inode), shared by hardlinks, duplicated."""
    from imageworks.stores.usage import disk_usage

    report = disk_usage(app.store().load(), by)
    if as_json:
        emit_json("du", report.as_dict())
        return
    if not report.rows:
        click.echo("no models in the registry")
        return
    _render_usage(report)


def _bar(value: int, top: int, width: int = 24) -> str:
    filled = round(width * value / top) if top else 0
    return "█" * filled + "·" * (width - filled)


def _copies(row) -> str:  # row: UsageRow; `missing` counts files, not copies
    return str(row.copies) + (f" ({plural(row.missing, 'file')} missing)" if row.missing else "")


def _render_usage(report) -> None:  # report: UsageReport
    from imageworks.cli.render import table

    top = max((r.logical for r in report.rows), default=0)
    rows = [
        [
            r.key,
            _bar(r.physical, top),
            human_size(r.logical),
            human_size(r.physical),
            human_size(r.shared),
            human_size(r.duplicated),
            _copies(r),
        ]
        for r in report.rows
    ]
    t = report.total
    rows.append(
        [
            "total",
            "",
            human_size(t.logical),
            human_size(t.physical),
            human_size(t.shared),
            human_size(t.duplicated),
            _copies(t),
        ]
    )
    table(None, [report.by, "on disk", "logical", "physical", "shared", "duplicated", "copies"], rows)
    for dev, row in sorted(report.filesystems.items()):
        where = report.mounts.get(dev, "")
        click.echo(
            f"filesystem of {where}: {human_size(row.physical)} held, {human_size(row.reclaimable)} reclaimable by dedupe"
        )
    if t.reclaimable:
        click.echo(
            f"run `imageworks-download dedupe --dry-run` to see how {human_size(t.reclaimable)} would be freed"
        )


@click.command()
@click.option("--dry-run", is_flag=True, help="Show the plan (pairs, bytes freed); change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@no_backup_option
@json_option
@pass_app
def dedupe(app: AppContext, dry_run: bool, yes: bool, no_backup: bool, as_json: bool) -> None:
    """Replace identical files (same SHA-256, same filesystem) by hardlinks to one verified file."""
    from imageworks.stores.dedupe import execute_dedupe, plan_dedupe, record_identities

    store = app.store()
    plan = plan_dedupe(store.load())
    out = sys.stdout if not as_json else sys.stderr
    print(
        f"plan: {plural(len(plan.pairs), 'file')} to replace by hardlinks, {human_size(plan.bytes_planned)} to free",
        file=out,
    )
    for pair in plan.pairs[:50]:
        print(f"  {pair.replace}  ->  {pair.keep}  ({human_size(pair.size)})", file=out)
    if len(plan.pairs) > 50:
        print(f"  … {len(plan.pairs) - 50} more", file=out)
    if dry_run or not plan.pairs:
        if as_json:
            emit_json("dedupe", {**plan.as_dict(), "dry_run": dry_run})
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "dedupe without a terminal needs --yes", hint="add --yes, or --dry-run to see the plan"
            )
        click.confirm(f"link {plural(len(plan.pairs), 'file')}?", abort=True, err=True)
    execute_dedupe(plan)
    record_identities(store, sys.argv, backup=not no_backup)
    if as_json:
        emit_json("dedupe", {**plan.as_dict(), "dry_run": False})
        return
    for pair in plan.pairs:
        if pair.status == "skipped":
            click.echo(f"skipped {pair.replace}: {pair.reason}", err=True)
    linked = sum(1 for p in plan.pairs if p.status == "linked")
    click.echo(
        f"linked {plural(linked, 'file')}, {human_size(plan.bytes_freed)} freed;"
        f" hashed {plural(plan.files_hashed, 'file')} ({human_size(plan.bytes_hashed)}), each once"
    )
