"""`scan` and `normalize-formats`: bring folders into the registry and keep the registry true to the disk.
Each command validates its flags, calls one library function and renders the typed result."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from imageworks.cli.app import AppContext, json_option, no_backup_option, pass_app
from imageworks.cli.render import emit_json, human_size
from imageworks.errors import EXIT_FAILED, EXIT_OK, UsageError

if TYPE_CHECKING:
    from imageworks.normalize import EntryPlan, NormalizeResult
    from imageworks.scan import ScanResult


@click.command()
@click.option(
    "--base",
    type=click.Path(path_type=Path),
    help="Folder to scan (default: the --location root, else the linux_wsl root).",
)
@click.option("--location", help="Location name the entries record (linux_wsl, windows_lmstudio, ...).")
@click.option("--include-testing", is_flag=True, help="Also record placeholders (entries get testing=true).")
@click.option("--update-existing", is_flag=True, help="Refresh format, quant, size, files of known models.")
@click.option("--hash", "hash_", is_flag=True, help="Record the SHA-256 of every file added or updated.")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@no_backup_option
@json_option
@pass_app
def scan(
    app: AppContext,
    base: Path | None,
    location: str | None,
    include_testing: bool,
    update_existing: bool,
    hash_: bool,
    dry_run: bool,
    no_backup: bool,
    as_json: bool,
) -> None:
    """Add the models found under a folder to the registry.

    \b
    Layouts: <owner>/<repo>, <owner>/<repo>@<rev>, LM Studio's <publisher>/<model>/*.gguf,
    url/<host>/<file stem>/ (direct downloads); deeper folders are local/<parent>/<folder>.
    A folder holding several GGUF quants gives one entry per quant (<owner>/<repo>:<quant>).
    Placeholders (test*, demo*, dummy*, example*, tmp*, *placeholder*, folders without weights)
    are skipped unless --include-testing. Models already registered (same identity or folder)
    are left alone unless --update-existing.
    """
    from imageworks.scan import ScanOptions, resolve_scan_target
    from imageworks.scan import scan as run_scan

    config = app.config
    target, location_name = resolve_scan_target(config, base, location)
    from imageworks.stores.shelves import detect_shelf

    shelf = detect_shelf(target)
    if shelf is not None:  # stores (#11): another tool's shelf is registered in place, as `import` does
        from imageworks.cli.stores_cmds import scan_shelf

        return scan_shelf(app, shelf, target, dry_run=dry_run, no_backup=no_backup, as_json=as_json)
    roots = tuple(config.location_roots().values())
    options = ScanOptions(
        location=location_name,
        layout_roots=roots,
        include_testing=include_testing,
        update_existing=update_existing,
        hash=hash_,
        dry_run=dry_run,
        backup=not no_backup,
    )
    result = run_scan(app.store(), target, options, sys.argv)
    if as_json:
        emit_json("scan", result.as_dict())
    else:
        _render_scan(result)


def _render_scan(result: ScanResult) -> None:
    echo = click.echo
    verb = {
        "add": "would add" if result.dry_run else "added",
        "update": "would update" if result.dry_run else "updated",
    }
    echo(f"scan of {result.base} (location {result.location}){' - dry run' if result.dry_run else ''}")
    for item in [*result.added, *result.updated]:
        quant = f" {item.quantization}" if item.quantization else ""
        testing = "  [testing]" if item.testing else ""
        echo(f"  {verb[item.action]:<12} {item.name}  ({item.format or '-'}{quant}){testing}  {item.path}")
        for change in item.changes:
            echo(f"      {change.render()}")
        for note in item.notes:
            echo(f"      note: {note}")
    for item in result.unchanged:
        for note in item.notes:
            echo(f"  {'unchanged':<12} {item.name}: {note}")
    for skip in result.skipped:
        echo(f"  {'skipped':<12} {skip.path}: {skip.reason}")
    hashed = (
        f", hashed {result.hashed_files} files ({human_size(result.hashed_bytes)})"
        if result.hashed_files
        else ""
    )
    echo(
        f"{len(result.added)} {verb['add']}, {len(result.updated)} {verb['update']}, "
        f"{len(result.unchanged)} unchanged, {len(result.skipped)} skipped{hashed}"
    )


@click.command("normalize-formats")
@click.option("--dry-run", is_flag=True, help="Show the per-entry diff and write nothing (the default).")
@click.option("--apply", "apply_", is_flag=True, help="Write the changes (backup + one change-log line).")
@click.option("--rebuild", is_flag=True, help="Also recompute files, sizes and SHA-256; report drift.")
@click.option(
    "--full", is_flag=True, help="With --rebuild: hash every file, even those whose size+mtime match."
)
@click.option("--prune-missing", is_flag=True, help="Remove discovered entries whose folder is gone.")
@no_backup_option
@json_option
@pass_app
def normalize_formats(
    app: AppContext,
    dry_run: bool,
    apply_: bool,
    rebuild: bool,
    full: bool,
    prune_missing: bool,
    no_backup: bool,
    as_json: bool,
) -> int:
    """Recompute format and quantisation of every discovered entry from the files on disk.

    \b
    Without --apply this is a dry run: it prints, per entry, what would change (field: old -> new).
    Curated entries are never changed; those whose folder is missing are listed for a hand edit.
    """
    from imageworks.normalize import normalize

    if dry_run and apply_:
        raise UsageError(
            "--dry-run and --apply contradict each other: give one", hint="without --apply it is a dry run"
        )
    if full and not rebuild:
        raise UsageError("--full only applies to --rebuild (it re-hashes every file)", hint="add --rebuild")
    result = normalize(
        app.store(),
        apply=apply_,
        rebuild=rebuild,
        full=full,
        prune_missing=prune_missing,
        backup=not no_backup,
        command=sys.argv,
        location_roots=app.config.location_roots(),
    )
    if as_json:
        emit_json("normalize-formats", result.as_dict(), ok=result.ok)
    else:
        _render_normalize(result)
    return EXIT_OK if result.ok else EXIT_FAILED


_MARK = {"update": "~", "drift": "!", "prune": "-", "missing": "?", "curated-missing": "!", "skipped": "!"}
_SOURCE = {"hub": "the Hub", "url": "the URL download (--sha256)"}


def _render_normalize(result: NormalizeResult) -> None:
    echo = click.echo
    plan = result.plan
    for item in plan.entries:
        if item.action != "unchanged" or item.notes:
            _render_entry_plan(item)
    echo(", ".join(_normalize_summary(result)))
    if result.mismatches:
        echo(
            f"{len(result.mismatches)} file(s) differ from the digest recorded from the Hub or --sha256:"
            " kept as recorded; `imageworks-loader verify NAME` checks them, a re-download with --force"
            " fetches them again",
            err=True,
        )
    for name in result.conflicts:
        echo(
            f"not written: {name} changed in the registry since the plan was made; run the command again",
            err=True,
        )
    if not result.applied and plan.writes:
        echo("dry run: nothing written; re-run with --apply to write these changes")


def _render_entry_plan(item: EntryPlan) -> None:
    echo = click.echo
    label = {"prune": "remove", "curated-missing": "curated, missing"}.get(item.action, item.action)
    echo(f"{_MARK.get(item.action, ' ')} {item.name}  [{label}]  {item.path or '-'}")
    for change in item.changes:
        echo(f"    {change.render()}")
    if item.drift:
        for kind in ("changed", "added", "missing"):
            paths = getattr(item.drift, kind)
            if paths:
                shown = ", ".join(paths[:8]) + (f", … ({len(paths)} in all)" if len(paths) > 8 else "")
                echo(f"    files {kind}: {shown}")
    for m in item.mismatches:
        origin = _SOURCE.get(m.source, m.source)
        if item.drift and m.path in item.drift.missing:
            echo(
                f"    missing: {m.path}: recorded {m.expected} (from {origin}) is kept (re-download with --force)"
            )
            continue
        echo(
            f"    changed: {m.path}: expected {m.expected} (from {origin}),"
            f" got {m.actual or '-'}; the recorded digest is kept (re-download with --force)"
        )
    for note in item.notes:
        echo(f"    note: {note}")


def _normalize_summary(result: NormalizeResult) -> list[str]:
    plan = result.plan
    counts = plan.summary()
    written = set(result.written)
    if result.applied:
        parts = [
            f"{sum(1 for e in plan.of('update') if e.name in written)} updated",
            f"{counts['unchanged']} unchanged",
        ]
        if plan.prune_missing:
            parts.append(f"{sum(1 for e in plan.of('prune') if e.name in written)} removed")
    else:
        parts = [f"{counts['update']} to update", f"{counts['unchanged']} unchanged"]
        if plan.prune_missing:
            parts.append(f"{counts['prune']} to remove")
    for action, text in (
        ("drift", "differ from their recorded digests"),
        ("missing", "missing"),
        ("curated-missing", "curated (edit by hand)"),
        ("skipped", "skipped"),
    ):
        if counts[action]:
            parts.append(f"{counts[action]} {text}")
    if plan.rebuild:
        parts.append(
            f"hashed {plan.hashed_files} files ({human_size(plan.hashed_bytes)}), "
            f"{plan.reused_digests} unchanged by size+mtime"
        )
    return parts
