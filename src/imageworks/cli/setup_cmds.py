"""config, doctor."""

from __future__ import annotations

import sys

import click

from imageworks.cli.app import AppContext, handle_errors, json_option, pass_app
from imageworks.cli.render import emit_json, table


@click.command()
@json_option
@pass_app
@handle_errors
def config(app: AppContext, as_json: bool) -> None:
    """Print every resolved setting and where it came from (flag > env > imageworks.toml > default)."""
    rows = app.config.as_rows()
    if as_json:
        emit_json("config", {key: {"value": value, "source": source} for key, value, source in rows})
        return
    table(None, ["setting", "value", "source"], [list(r) for r in rows])


@click.command()
@json_option
@pass_app
@handle_errors
def doctor(app: AppContext, as_json: bool) -> None:
    """Check aria2c, the registry folder, model roots, the Hub and the token. Exit 1 if downloads are blocked."""
    from imageworks.doctor import FAIL, run_doctor

    checks = run_doctor(app.config)
    blocked = any(c.status == FAIL for c in checks)
    if as_json:
        emit_json("doctor", [c.__dict__ for c in checks], ok=not blocked)
    else:
        marks = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}
        table(
            None,
            ["check", "status", "detail", "fix"],
            [[c.name, marks[c.status], c.detail, c.fix] for c in checks],
        )
        click.echo("downloads are blocked: fix the FAIL lines" if blocked else "ready to download")
    sys.exit(1 if blocked else 0)
