"""`remote add|list|remove|ls`, `push`, `pull`, and the `verify --remote-store` renderer."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from imageworks.cli.app import AppContext, json_option, no_backup_option, pass_app
from imageworks.cli.render import byte_progress, console, emit_json, human_size, operation_failed, table
from imageworks.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from imageworks.remote.config import Remote


@click.group()
def remote() -> None:
    """Object stores (S3, MinIO, R2, Ceph, SeaweedFS) the team shares models through.

    \b
    Credentials come from the standard AWS chain only (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    ~/.aws/credentials, --profile, instance roles); imageworks never stores them.
    """


@remote.command("add")
@click.argument("name")
@click.argument("url", metavar="s3://BUCKET/PREFIX")
@click.option("--endpoint-url", help="S3-compatible endpoint (MinIO, R2, Ceph, ...); default: AWS S3.")
@click.option("--region", help="Region (default: the profile's, else us-east-1).")
@click.option("--profile", help="AWS profile whose credentials to use (~/.aws/credentials).")
@click.option("--chunk-size", help="Multipart part and ranged-GET size, e.g. 8MiB (default 8MiB).")
@click.option("--concurrency", type=click.IntRange(1, 64), help="Parallel requests (default 10).")
@click.option("--replace", is_flag=True, help="Overwrite a remote of that name.")
@json_option
@pass_app
def add(
    app: AppContext,
    name: str,
    url: str,
    endpoint_url: str | None,
    region: str | None,
    profile: str | None,
    chunk_size: str | None,
    concurrency: int | None,
    replace: bool,
    as_json: bool,
) -> None:
    """Add a remote NAME at s3://BUCKET/PREFIX (stored in imageworks.toml)."""
    from imageworks.remote.config import (
        DEFAULT_CHUNK_SIZE,
        DEFAULT_CONCURRENCY,
        Remote,
        add_remote,
        parse_s3_url,
        parse_size,
    )

    bucket, prefix = parse_s3_url(url)
    if endpoint_url and not endpoint_url.startswith(("http://", "https://")):
        raise click.BadParameter("must start with http:// or https://", param_hint="--endpoint-url")
    if endpoint_url and "@" in endpoint_url.split("/")[2]:
        raise click.BadParameter(
            "no credentials in the URL: they come from the AWS chain (AWS_ACCESS_KEY_ID, ~/.aws, --profile)",
            param_hint="--endpoint-url",
        )
    spec = Remote(
        name=name,
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
        region=region,
        profile=profile,
        chunk_size=parse_size(chunk_size, "--chunk-size") if chunk_size else DEFAULT_CHUNK_SIZE,
        concurrency=concurrency or DEFAULT_CONCURRENCY,
    )
    path = add_remote(app.config, spec, replace=replace)
    if as_json:
        emit_json("remote.add", {**spec.as_dict(), "config_file": str(path)})
    else:
        click.echo(f"added remote {name} -> {spec.url} (in {path})")


@remote.command("list")
@json_option
@pass_app
def list_remotes(app: AppContext, as_json: bool) -> None:
    """List the configured remotes."""
    from imageworks.remote.config import load_remotes

    remotes = load_remotes(app.config)
    if as_json:
        emit_json("remote.list", [r.as_dict() for r in remotes.values()])
        return
    if not remotes:
        click.echo("no remotes configured (remote add NAME s3://BUCKET/PREFIX)")
        return
    rows = [
        [r.name, r.url, r.endpoint_url or "AWS S3", r.region or "-", r.profile or "-"]
        for r in remotes.values()
    ]
    table(None, ["name", "url", "endpoint", "region", "profile"], rows)


@remote.command("remove")
@click.argument("name")
@pass_app
def remove_remote_cmd(app: AppContext, name: str) -> None:
    """Forget remote NAME (the store itself is not touched)."""
    from imageworks.remote.config import remove_remote

    path = remove_remote(app.config, name)
    click.echo(f"removed remote {name} (from {path})")


@remote.command("ls")
@click.argument("name", metavar="REMOTE")
@json_option
@pass_app
def ls(app: AppContext, name: str, as_json: bool) -> None:
    """List the models REMOTE holds, their sizes, and which are present locally."""
    from imageworks.remote.check import list_store
    from imageworks.remote.config import get_remote

    spec = get_remote(app.config, name)
    models = list_store(app.store().load(), spec)
    if as_json:
        emit_json(
            "remote.ls", {"remote": spec.name, "url": spec.url, "models": [m.as_dict() for m in models]}
        )
        return
    if not models:
        click.echo(f"{spec.url} holds no models")
        return
    rows = [
        [
            m.name,
            m.format or "-",
            m.quantization or "-",
            human_size(m.size_bytes),
            str(m.files),
            "yes" if m.local else "no",
            m.error or (m.pushed_at or "-"),
        ]
        for m in models
    ]
    table(spec.url, ["name", "format", "quant", "size", "files", "local", "pushed"], rows)


@contextlib.contextmanager
def _bar(label: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """Bytes moved and speed on stderr when it is a terminal (the total is known only to the library)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with byte_progress(transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda n: bar.update(task, advance=n)


@click.command()
@click.argument("names", nargs=-1, metavar="NAME…")
@click.option("--all", "all_models", is_flag=True, help="Every verified model in the registry.")
@click.option("--to", "to", required=True, metavar="REMOTE", help="The remote (see `remote list`).")
@click.option("--dry-run", is_flag=True, help="Show what would be uploaded; upload nothing.")
@click.option(
    "--layout",
    type=click.Choice(["blobs", "files"]),
    default="blobs",
    show_default=True,
    help="files: also lay files out as files/OWNER/REPO/COMMIT/PATH (vLLM's streamer, rclone mount).",
)
@no_backup_option
@json_option
@pass_app
def push(
    app: AppContext,
    names: tuple[str, ...],
    all_models: bool,
    to: str,
    dry_run: bool,
    layout: str,
    no_backup: bool,
    as_json: bool,
) -> None:
    """Upload verified models to REMOTE: each file once by content, the manifest last."""
    from imageworks.remote.config import get_remote
    from imageworks.remote.push import push_models

    spec = get_remote(app.config, to)
    with _bar("uploading", not dry_run and not as_json) as progress:
        result = push_models(
            app.store(),
            spec,
            names,
            all_models=all_models,
            dry_run=dry_run,
            layout_files=layout == "files",
            progress=progress,
            command=sys.argv,
            backup=not no_backup,
        )
    if as_json:
        emit_json("push", result.as_dict())
        return
    verb = "would upload" if dry_run else "uploaded"
    for model in result.models:
        click.echo(
            f"{model.name}: {model.files} file(s), {human_size(model.size_bytes)}; {verb} "
            f"{model.blobs_uploaded} object(s) ({human_size(model.bytes_uploaded)}), "
            f"{model.blobs_present} already in the store"
            + (f", {model.layout_files} laid out by path" if model.layout_files else "")
        )
    for name in result.skipped:
        click.echo(f"{name}: skipped (not verified: `imageworks-loader verify --record {name}`)", err=True)
    total = f"{human_size(result.bytes_uploaded)} in {result.objects_uploaded} object(s)"
    click.echo(f"{verb} {total} to {_where(spec)} in {result.seconds:.1f} s")


@click.command()
@click.argument("names", nargs=-1, metavar="NAME…")
@click.option(
    "--all", "all_models", is_flag=True, help="Every model of the curated registry the store holds."
)
@click.option("--from", "from_", required=True, metavar="REMOTE", help="The remote (see `remote list`).")
@click.option("--location", help="linux_wsl, windows_lmstudio, another configured name, or a folder.")
@no_backup_option
@json_option
@pass_app
def pull(
    app: AppContext,
    names: tuple[str, ...],
    all_models: bool,
    from_: str,
    location: str | None,
    no_backup: bool,
    as_json: bool,
) -> int:
    """Download models from REMOTE (verified, resumable) and record them."""
    from imageworks.remote.config import get_remote
    from imageworks.remote.pull import pull_models

    spec = get_remote(app.config, from_)
    with _bar("pulling", not as_json) as progress:
        result = pull_models(
            app.store(),
            app.config,
            spec,
            names,
            all_models=all_models,
            location=location,
            progress=progress,
            command=sys.argv,
            backup=not no_backup,
        )
    if as_json:
        failed = [m.name for m in result.models if m.error]
        error = operation_failed(
            f"{len(failed)} model(s) failed and were not recorded: {', '.join(failed[:5])}",
            "see each model's error in data; run the same pull again to resume",
        )
        emit_json("pull", result.as_dict(), ok=result.ok, error=None if result.ok else error)
    else:
        for model in result.models:
            if model.error:
                click.echo(f"FAILED  {model.name}: {model.error} (not recorded)", err=True)
                continue
            resumed = f", resumed {human_size(model.bytes_resumed)}" if model.bytes_resumed else ""
            click.echo(
                f"{model.name}: {model.files} file(s), {human_size(model.size_bytes)} -> {model.path}; "
                f"fetched {human_size(model.bytes_fetched)}{resumed}"
            )
        if not result.models:
            click.echo(f"{_where(spec)} holds none of the curated models")
        click.echo(f"done in {result.seconds:.1f} s")
    return EXIT_OK if result.ok else EXIT_FAILED


def _where(spec: Remote) -> str:
    return f"{spec.name} ({spec.url})"


def verify_store_cmd(
    app: AppContext, remote_name: str, names: tuple[str, ...], deep: bool, as_json: bool
) -> int:
    """`verify --remote-store REMOTE [NAME…] [--deep]` (called from the verify command)."""
    from rich.text import Text

    from imageworks.remote.check import verify_store
    from imageworks.remote.config import get_remote

    spec = get_remote(app.config, remote_name)
    reports = verify_store(app.store().load(), spec, names, deep=deep)
    ok = all(r.ok for r in reports)
    if as_json:
        bad = [r.name for r in reports if not r.ok]
        error = operation_failed(
            f"{len(bad)} of {len(reports)} model(s) in {spec.name} did not verify: {', '.join(bad[:5])}",
            "see each model's objects in data; push the model again to repair",
        )
        emit_json(
            "verify.remote_store",
            {"remote": spec.name, "url": spec.url, "models": [r.as_dict() for r in reports]},
            ok=ok,
            error=None if ok else error,
        )
        return EXIT_OK if ok else EXIT_FAILED
    out = console()
    if not reports:
        out.print(f"{spec.url} holds no models")
    for report in reports:
        style = "green" if report.ok else "bold red"
        line = Text()
        line.append(f"{report.status if report.ok else report.status.upper():<8}", style=style)
        line.append(f"  {report.name}", style="bold")
        line.append(f"  {len(report.files)} object(s) in {spec.name}, {report.mode} check")
        if report.detail:
            line.append(f": {report.detail}")
        out.print(line)
        for check in report.problems:
            out.print(Text(f"    {check.status:<18} {check.path}  {check.detail or check.key}"))
    return EXIT_OK if ok else EXIT_FAILED
