"""`imageworks-loader`: checks on models before serving them. `verify` is the same command as
`imageworks-download verify`."""

from __future__ import annotations

from pathlib import Path

import click

from imageworks.cli.app import AppContext, LazyGroup, run_script

COMMANDS: dict[str, tuple[str, str]] = {
    "verify": (
        "imageworks.cli.verify_cmd:verify",
        "Check that the files on disk match the recorded checksums.",
    ),
    "list": ("imageworks.cli.registry_cmds:list_cmd", "List the models in the registry."),
    "show": ("imageworks.cli.registry_cmds:show", "Show one model's merged entry."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--registry-dir", type=click.Path(path_type=Path, file_okay=False), help="Registry folder.")
@click.version_option(package_name="imageworks", prog_name="imageworks")
@click.pass_context
def cli(ctx: click.Context, registry_dir: Path | None) -> None:
    """Check models before serving them."""
    ctx.obj = AppContext(registry_dir=registry_dir)


def main() -> None:
    run_script(cli, "imageworks-loader")


if __name__ == "__main__":
    main()
