"""`imageworks-download`: the command group. Each command lives in its own module and is imported only
when it runs."""

from __future__ import annotations

from pathlib import Path

import click

from imageworks.cli.app import AppContext, LazyGroup, run_script

COMMANDS: dict[str, tuple[str, str]] = {
    "download": (
        "imageworks.cli.download_cmd:download",
        "Download a model from the Hub or a URL, verify it, record it.",
    ),
    "analyze": (
        "imageworks.cli.download_cmd:analyze",
        "Show the formats and quants a Hub repo or a folder offers (headers only).",
    ),
    "scan": ("imageworks.cli.scan_cmd:scan", "Add the models found in a folder tree to the registry."),
    "normalize-formats": (
        "imageworks.cli.scan_cmd:normalize_formats",
        "Recompute formats/quants (and files) from disk.",
    ),
    "verify": (
        "imageworks.cli.verify_cmd:verify",
        "Check that the files on disk match the recorded checksums.",
    ),
    "list": ("imageworks.cli.registry_cmds:list_cmd", "List the models in the registry."),
    "show": (
        "imageworks.cli.registry_cmds:show",
        "Show one model's merged entry and where each field came from.",
    ),
    "remove": (
        "imageworks.cli.registry_cmds:remove",
        "Remove a model or one copy (--delete-files: only files nothing else uses).",
    ),
    "history": ("imageworks.cli.registry_cmds:history", "Show the registry's change log."),
    "link": ("imageworks.cli.stores_cmds:link", "Put a model on another tool's shelf without copying."),
    "du": (
        "imageworks.cli.stores_cmds:du",
        "Disk usage of every copy: logical, physical, shared, duplicated.",
    ),
    "dedupe": (
        "imageworks.cli.stores_cmds:dedupe",
        "Replace identical files by hardlinks to one verified file.",
    ),
    "import": (
        "imageworks.cli.stores_cmds:import_cmd",
        "Register what the HF cache, Ollama, LM Studio or llama.cpp hold.",
    ),
    "config": ("imageworks.cli.setup_cmds:config", "Print every resolved setting and where it came from."),
    "doctor": ("imageworks.cli.setup_cmds:doctor", "Check that everything needed for downloads is ready."),
    "outdated": ("imageworks.cli.update_cmd:outdated", "Tell which Hub models moved on and what changed."),
    "update": ("imageworks.cli.update_cmd:update", "Fetch only what changed since a model's commit."),
    "remote": ("imageworks.cli.remote_cmds:remote", "Team stores (S3): add, list, remove, ls."),
    "push": ("imageworks.cli.remote_cmds:push", "Upload verified models to a team store (S3)."),
    "pull": ("imageworks.cli.remote_cmds:pull", "Download models from a team store, verify, record."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--registry-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar=None,
    help="Registry folder (default: $IMAGEWORKS_REGISTRY_DIR, ./configs, or the user data folder).",
)
@click.version_option(package_name="imageworks", prog_name="imageworks")
@click.pass_context
def cli(ctx: click.Context, registry_dir: Path | None) -> None:
    """Fetch, check and keep track of local AI model weights."""
    ctx.obj = AppContext(registry_dir=registry_dir)


def main() -> None:
    run_script(cli, "imageworks-download")


if __name__ == "__main__":
    main()
