"""config, doctor."""

from __future__ import annotations

import click

from imageworks.cli.app import AppContext, json_option, pass_app
from imageworks.cli.render import emit_json, operation_failed, table
from imageworks.errors import EXIT_FAILED, EXIT_OK


@click.command()
@json_option
@pass_app
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
def doctor(app: AppContext, as_json: bool) -> int:
    """Check aria2c, the registry files, the model roots, the Hub and the token. Exit 1 if something is
    blocked."""
    from imageworks.doctor import run_doctor

    report = run_doctor(app.config)
    if as_json:
        failed = [c.name for c in report.checks if c.status == "fail"]
        error = operation_failed(
            f"not ready: {', '.join(failed)} failed", "fix the checks whose status is fail"
        )
        emit_json("doctor", report.as_dict(), ok=report.ready, error=error)
    else:
        marks = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
        table(
            None,
            ["check", "status", "detail", "fix"],
            [[c.name, marks[c.status], c.detail, c.fix] for c in report.checks],
        )
        click.echo("ready to download" if report.ready else "not ready: fix the FAIL lines")
    return EXIT_OK if report.ready else EXIT_FAILED
