"""list, show, remove, history."""

from __future__ import annotations

import json
import sys

import click

from imageworks.cli.app import AppContext, json_option, no_backup_option, pass_app
from imageworks.cli.render import console, emit_json, human_size, table
from imageworks.errors import EXIT_FAILED, EXIT_OK, UsageError
from imageworks.units import plural


@click.command("list")
@click.option("--format", "format_", help="Only this format (gguf, safetensors, awq, ...).")
@click.option("--location", help="Only this location (linux_wsl, windows_lmstudio, ...).")
@click.option("--backend", help="Only models with serve hints for it (vllm, ollama, lmstudio).")
@json_option
@pass_app
def list_cmd(
    app: AppContext, format_: str | None, location: str | None, backend: str | None, as_json: bool
) -> None:
    """List the models in the registry."""
    from imageworks.inventory import list_models

    models = list_models(app.store().load(), format=format_, location=location, backend=backend)
    if as_json:
        emit_json("list", [m.as_dict() for m in models])
        return
    if not models:
        click.echo(
            "no models in the registry" + (" match those filters" if (format_ or location or backend) else "")
        )
        return
    rows = [
        [
            m.name,
            m.format or "-",
            m.quantization or "-",
            ", ".join(m.copies) or m.location or "-",  # stores: every copy's place, the primary first
            human_size(m.size_bytes),
            "yes" if m.installed else "no",
        ]
        for m in models
    ]
    table(None, ["name", "format", "quant", "location", "size", "installed"], rows)


@click.command()
@click.argument("name")
@json_option
@pass_app
def show(app: AppContext, name: str, as_json: bool) -> None:
    """Show NAME's merged entry, which layer each field came from, and how to serve it."""
    from imageworks.inventory import show_model

    shown = show_model(app.store().load(), name)
    if as_json:
        emit_json("show", shown.as_dict())
        return
    out = console()
    out.print(f"[bold]{shown.entry.name}[/bold]  ({'installed' if shown.installed else 'not on disk'})")
    for key, value, origin in shown.fields():
        rendered = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
        out.print(f"  {key:<16} {rendered}  [dim]({origin})[/dim]", markup=True)
    files = shown.entry.files
    if files:
        out.print(f"  files            {len(files)} ({human_size(sum(f.size for f in files))})")
        for record in files[:50]:
            out.print(f"    {record.path}  {human_size(record.size)}  {record.sha256 or 'no sha256'}")
    from imageworks.stores.copies import render_copies

    render_copies(out, shown.entry)  # stores: each copy with its tool and files
    for backend, hint in sorted(shown.entry.serve.items()):
        out.print(f"[bold]serve with {backend}[/bold]")
        for key, value in sorted(hint.items()):
            text = str(value).rstrip("\n")
            if "\n" in text:
                out.print(f"  {key}:")
                for line in text.splitlines():
                    out.print(f"    {line}", markup=False)
            else:
                out.print(f"  {key}: {text}", markup=False)


@click.command()
@click.argument("name")
@click.option(
    "--copy", "copy", metavar="WHERE", help="Only this copy (primary, its number, tool, location or folder)."
)
@click.option("--delete-files", is_flag=True, help="Also delete the copy's own files (shared files stay).")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@no_backup_option
@json_option
@pass_app
def remove(
    app: AppContext,
    name: str,
    copy: str | None,
    delete_files: bool,
    dry_run: bool,
    yes: bool,
    no_backup: bool,
    as_json: bool,
) -> int:
    """Remove NAME (or one of its copies) from the registry; --delete-files deletes only files nothing
    else uses (curated entries are edited by hand)."""
    from imageworks.stores.remove import execute_remove, plan_remove

    store = app.store()
    roots = list(app.config.location_roots().values())
    plan = plan_remove(store.load(), name, delete_files=delete_files, roots=roots, copy=copy)
    if plan.delete and not (yes or dry_run) and not sys.stdin.isatty():
        raise UsageError("--delete-files without a terminal needs --yes", hint="add --yes to confirm")
    if not as_json or dry_run:
        _print_remove_plan(plan, err=not dry_run or as_json)
    if dry_run:
        if as_json:
            emit_json("remove", {**plan.as_dict(), "dry_run": True, "removed_from_registry": False})
        else:
            if plan.copy:
                what = f"copy {plan.copy} of {plan.name} from the registry"
            elif plan.updated is not None:
                what = f"our copies of {plan.name} (it stays registered with its other copies)"
            else:
                what = f"{plan.name} from the registry"
            click.echo(f"dry run: would remove {what}; nothing changed")
        return EXIT_OK
    if plan.delete and not yes:
        click.confirm(
            f"delete {plural(len(plan.delete), 'file')} ({human_size(plan.delete_bytes)} freed)?",
            abort=True,
            err=True,
        )
    changed = execute_remove(store, plan, sys.argv, roots=roots, backup=not no_backup)
    result = {
        **plan.as_dict(),
        "removed_from_registry": changed and plan.updated is None,
        "copy_removed": changed and plan.updated is not None,
        "deleted_path": str(plan.delete_path) if plan.delete_path and not plan.delete_path.exists() else None,
        "deleted_bytes": plan.delete_bytes,
    }
    if as_json:
        emit_json("remove", result)
    else:
        _print_removed(plan, changed)
    if not changed and not plan.delete and plan.curated:
        return EXIT_FAILED
    return EXIT_OK


def _print_removed(plan, changed: bool) -> None:  # plan: RemovePlan
    if changed:
        if plan.copy:
            click.echo(f"removed copy {plan.copy} of {plan.name} from the registry")
        elif plan.updated is not None:
            click.echo(f"removed our copies of {plan.name}; it stays registered with the copies kept above")
        else:
            click.echo(f"removed {plan.name} from the registry")
    if plan.delete:
        click.echo(f"deleted {plural(len(plan.delete), 'file')} ({human_size(plan.delete_bytes)} freed)")


def _print_remove_plan(plan, *, err: bool) -> None:  # plan: RemovePlan
    for note in plan.notes:
        click.echo(note, err=True)
    if not plan.delete and not plan.keep:
        return
    click.echo(
        f"plan: delete {plural(len(plan.delete), 'file')}, {human_size(plan.delete_bytes)} freed", err=err
    )
    for action in plan.delete:
        freed = "" if action.freed == action.size else f" ({human_size(action.freed)} freed)"
        click.echo(f"  delete {action.path}  {human_size(action.size)}{freed}", err=err)
    for action in plan.keep:
        click.echo(f"  keep   {action.path}  ({action.reason})", err=err)


@click.command()
@click.option(
    "-n", "limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many lines."
)
@json_option
@pass_app
def history(app: AppContext, limit: int, as_json: bool) -> None:
    """Show the newest change-log lines (one per command that changed the registry's content)."""
    records = app.store().changes(limit)
    if as_json:
        emit_json("history", [r.as_dict() for r in records])
        return
    if not records:
        click.echo("the change log is empty")
        return
    for record in records:
        click.echo(f"{record.time}  {record.command}")
        names = record.names
        for name in names[:10]:
            click.echo(f"    {name}")
        if len(names) > 10:
            click.echo(f"    … {len(names) - 10} more")
