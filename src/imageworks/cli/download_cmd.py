"""download, analyze: thin commands over `imageworks.downloader.download` and `imageworks.analysis.analyze_repo`."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from imageworks.cli.app import AppContext, engine_options, json_option, no_backup_option, pass_app
from imageworks.cli.render import byte_progress, emit_json, table
from imageworks.units import human_size, plural

if TYPE_CHECKING:
    from collections.abc import Callable

    from imageworks.downloader import DownloadResult
    from imageworks.plan import DownloadPlan
    from imageworks.transfer import FileJob, FileResult, NullProgress

PLAIN_INTERVAL_S = 5.0


def _err(text: str) -> None:
    click.echo(text, err=True)


class RichProgress:
    """Per-file bars and a total bar with speed and ETA, on stderr (a terminal)."""

    def __init__(self, total: int) -> None:
        self._progress = byte_progress()
        self._total = self._progress.add_task("total", total=total or None)
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def file_started(self, job: FileJob, total: int | None, already: int) -> None:
        self._tasks[job.name] = self._progress.add_task(job.name, total=total, completed=already)
        self._not_fetched(already)

    def _not_fetched(self, n: int) -> None:
        """Bytes already on disk (resumed, or a file already complete) leave the total bar's goal
        instead of advancing it: rich counts every advance in the speed, and so in the ETA."""
        if n:
            task = next(t for t in self._progress.tasks if t.id == self._total)
            if task.total is not None:
                self._progress.update(self._total, total=max(task.completed, task.total - n))

    def advance(self, job: FileJob, n: int) -> None:
        task = self._tasks.get(job.name)
        if task is not None:
            self._progress.advance(task, n)
        self._progress.advance(self._total, n)

    def file_done(self, job: FileJob, result: FileResult) -> None:
        task = self._tasks.pop(job.name, None)
        if task is not None:
            self._progress.remove_task(task)
        if result.skipped:
            self._not_fetched(result.size)
        self._progress.console.print(f"  done {job.name} ({human_size(result.size)})", markup=False)

    def message(self, text: str) -> None:
        self._progress.console.print(text, markup=False)


class PlainProgress:
    """Periodic one-line reports for logs and pipes (no terminal control codes)."""

    def __init__(self, total: int, interval: float = PLAIN_INTERVAL_S) -> None:
        self.total = total
        self.done = 0
        self.resumed = 0  # bytes that were already on disk: counted as done, not in the speed
        self.interval = interval
        self._started = time.monotonic()
        self._last = self._started

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def file_started(self, job: FileJob, total: int | None, already: int) -> None:
        self.done += already
        self.resumed += already
        resumed = f", resuming at {human_size(already)}" if already else ""
        _err(f"  fetching {job.name} ({human_size(total)}{resumed})")

    def advance(self, job: FileJob, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            elapsed = max(now - self._started, 1e-6)
            speed = (self.done - self.resumed) / elapsed
            pct = f"{100 * self.done / self.total:.0f}% " if self.total else ""
            eta = f", ETA {max(0.0, (self.total - self.done) / speed):.0f} s" if self.total and speed else ""
            _err(
                f"  {pct}{human_size(self.done)} of {human_size(self.total)} at {human_size(int(speed))}/s{eta}"
            )

    def file_done(self, job: FileJob, result: FileResult) -> None:
        if result.skipped:
            self.done += result.size
            self.resumed += result.size
        _err(f"  done {job.name} ({human_size(result.size)})")

    def message(self, text: str) -> None:
        _err(text)


def progress_display(total: int, *, quiet: bool) -> NullProgress | RichProgress | PlainProgress:
    """The one choice of display: nothing (--quiet), a rich bar on a terminal, plain lines otherwise."""
    if quiet:
        from imageworks.transfer import NullProgress

        return NullProgress()
    return RichProgress(total) if sys.stderr.isatty() else PlainProgress(total)


class _LazyProgress:
    """The sink download() gets: the display is chosen once the plan says how much there is to fetch."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.inner: Any = None

    def open(self, total: int) -> None:
        self.inner = progress_display(total, quiet=self.quiet)
        self.inner.__enter__()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.__exit__(None, None, None)

    def file_started(self, job: FileJob, total: int | None, already: int) -> None:
        if self.inner is None:
            self.open(0)
        self.inner.file_started(job, total, already)

    def advance(self, job: FileJob, n: int) -> None:
        self.inner.advance(job, n)

    def file_done(self, job: FileJob, result: FileResult) -> None:
        self.inner.file_done(job, result)

    def message(self, text: str) -> None:
        if self.inner is not None:
            self.inner.message(text)
        elif not self.quiet:
            _err(text)


def _plan_header(plan: DownloadPlan) -> str:
    if plan.provider == "hf":
        what = f"{plan.repo_id}@{plan.revision} (commit {str(plan.commit)[:12]})"
    else:
        what = str(plan.url)
    quants = f", quant {', '.join(plan.quants)}" if plan.quants else ""
    return f"{what}: {plan.format or 'no weights'}{quants} -> {plan.folder}"


def _render_plan(plan: DownloadPlan) -> None:
    click.echo(_plan_header(plan))
    rows = []
    for f in plan.files:
        if f.present:
            state = "present, verified"
        elif f.stale:
            state = "changed on disk: fetch again"
        elif f.partial_bytes:
            state = f"resume ({human_size(f.partial_bytes)} on disk)"
        else:
            state = "fetch"
        rows.append([f.path, human_size(f.size), f.role, state, f.engine or "-"])
    table(None, ["file", "size", "role", "state", "engine"], rows)
    click.echo(
        f"total {human_size(plan.bytes_total)} in {plural(len(plan.files), 'file')}; present {human_size(plan.bytes_present)};"
        f" to fetch {human_size(plan.bytes_remaining)}; free {human_size(plan.free_bytes)}"
        f" on the target{'' if plan.enough_space else ' (NOT ENOUGH)'}"
    )
    for note in plan.notes:
        click.echo(f"note: {note}")


def _render_result(result: DownloadResult, seconds: float) -> None:
    plan = result.plan
    size = human_size(plan.bytes_total)
    names = ", ".join(result.names)
    if result.up_to_date:
        # Recorded now (taken from a local copy, or a complete folder not registered yet): not "up to date".
        state = "in place" if result.recorded else "up to date"
        click.echo(
            f"{names} {'is' if len(result.names) == 1 else 'are'} {state}"
            f" ({plural(len(plan.files), 'file')}, {size}) at {plan.folder}"
        )
        if result.recorded:
            click.echo("recorded in the registry")
        return
    speed = result.bytes_fetched / result.timings["fetch"] if result.timings.get("fetch") else 0
    resumed = f", {human_size(result.bytes_resumed)} resumed from disk" if result.bytes_resumed else ""
    if result.unverified:
        digests = ", ".join(result.unverified.values())
        checked = f"no published digest to check (SHA-256 recorded: {digests})"
    else:
        checked = "all verified"
    click.echo(
        f"downloaded {names}: {plural(result.files_fetched, 'file')}, {human_size(result.bytes_fetched)} fetched"
        f"{resumed} in {seconds:.1f} s ({human_size(int(speed))}/s, {result.engine}), {checked}"
    )
    if result.replaced:
        click.echo(f"  fetched again (the copy on disk had changed): {', '.join(result.replaced)}")
    for entry in result.entries:
        quant = f" {entry.quantization}" if entry.quantization else ""
        label = f"{entry.name}: " if len(result.entries) > 1 else ""
        click.echo(
            f"  {label}{entry.format or 'no weights'}{quant}, {human_size(entry.size_bytes)} at {plan.folder}"
        )


@click.command()
@click.argument("reference")
@click.option(
    "--format",
    "format_",
    help="Weights to fetch: safetensors, gguf, awq, gptq, exl2, mlx, fp8, pytorch, onnx, ...",
)
@click.option("--quant", help="GGUF quant (Q4_K_M, Q8_0, ...; several comma-separated, or 'all').")
@click.option("--location", help="linux_wsl, windows_lmstudio, another configured name, or a folder path.")
@click.option("--include", multiple=True, metavar="GLOB", help="Also fetch files matching GLOB (repeatable).")
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="Do not fetch files matching GLOB (repeatable)."
)
@engine_options
@click.option(
    "--dry-run", is_flag=True, help="Show the plan (files, sizes, what is on disk) and fetch nothing."
)
@click.option("--force", is_flag=True, help="Fetch every file again, even verified ones.")
@click.option("--sha256", metavar="HEX", help="Expected SHA-256 of a direct-URL download.")
@click.option("--token", help="Hugging Face token (default: HF_TOKEN, then the `hf auth login` token file).")
@click.option("--json", "as_json", is_flag=True, help="Print the result (or the plan) as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output; errors only.")
@no_backup_option
@pass_app
def download(
    app: AppContext,
    reference: str,
    format_: str | None,
    token: str | None,
    as_json: bool,
    quiet: bool,
    no_backup: bool,
    **flags: Any,
) -> None:
    """Download REFERENCE, verify every file and record the model.

    REFERENCE is OWNER/REPO, OWNER/REPO@REVISION, a huggingface.co URL (.../tree/REV, .../blob/REV/FILE),
    hf://OWNER/REPO@REV, or any other http(s) URL for a direct download of one file."""
    from imageworks.downloader import DownloadOptions
    from imageworks.downloader import download as run_download
    from imageworks.errors import UsageError

    dry_run = flags["dry_run"]
    if flags["no_aria2"] and flags["engine"] == "aria2":
        raise UsageError("--no-aria2 contradicts --engine aria2")
    if token:
        app.token = token
    progress = _LazyProgress(quiet)
    started = time.monotonic()

    try:
        result = run_download(
            reference,
            DownloadOptions(format=format_, backup=not no_backup, **flags),
            config=app.config,
            progress=progress,
            on_plan=None if dry_run else _plan_announcer(progress),
            command=["imageworks-download", *sys.argv[1:]],
        )
    finally:
        progress.close()
    if as_json:
        emit_json("download", result.as_dict())
    elif dry_run:
        _render_plan(result.plan)
    elif not quiet:
        _render_result(result, time.monotonic() - started)


def _plan_announcer(progress: _LazyProgress) -> Callable[[DownloadPlan], None]:
    """What a real download prints once its plan is known: the header, the notes, and the byte bar."""

    def on_plan(plan: DownloadPlan) -> None:
        progress.message(_plan_header(plan))
        for note in plan.notes:
            progress.message(f"note: {note}")
        if plan.to_fetch:
            # Whole sizes, not what remains: the engines report resumed bytes as already done.
            progress.open(sum(f.size or 0 for f in plan.to_fetch))

    return on_plan


@click.command()
@click.argument("reference")
@click.option("--token", help="Hugging Face token (default: HF_TOKEN, then the `hf auth login` token file).")
@json_option
@pass_app
def analyze(app: AppContext, reference: str, token: str | None, as_json: bool) -> None:
    """Show the formats and GGUF quants OWNER/REPO[@REV] (or a model folder on disk) offers, with sizes,
    and what its weights are (dtype, parameters, quantisation) from their headers only: nothing is
    downloaded."""
    from pathlib import Path

    from imageworks.analysis import analyze_folder, analyze_repo
    from imageworks.errors import UsageError

    if token:
        app.token = token
    local = Path(reference).expanduser()
    if not local.is_dir() and reference.startswith(("/", "./", "../", "~", ".\\", "..\\")):
        raise UsageError(f"no folder {local}", hint="give an existing model folder, or OWNER/REPO of the Hub")
    analysis = analyze_folder(local) if local.is_dir() else analyze_repo(reference, config=app.config)
    data = analysis.as_dict()
    if as_json:
        emit_json("analyze", data)
        return
    where = (
        f"{analysis.repo_id}@{analysis.revision} (commit {analysis.commit[:12]})"
        if analysis.commit
        else f"{analysis.repo_id} (folder on disk)"
    )
    click.echo(f"{where}: {plural(analysis.files, 'file')}, {human_size(analysis.total_size)}")
    rows = [
        [o["format"], o["quantization"] or "-", o["role"], str(len(o["files"])), human_size(o["size"])]
        for o in data["offers"]
    ]
    if rows:
        table(None, ["format", "quant", "role", "files", "size"], rows)
    params = f"{data['parameters']:,}" if data["parameters"] else "-"
    quant = data["quantization"] or ("(several quants)" if len(data["gguf_quants"]) > 1 else "")
    click.echo(
        f"weights: {data['format']} {quant} (dtype {data['dtype'] or '-'}), parameters {params},"
        f" architecture {data['architecture'] or '-'}, context {data['context_length'] or '-'}"
    )
    if len(data["gguf_quants"]) > 1:
        click.echo(f"GGUF quants: {', '.join(data['gguf_quants'])} (pick one with download --quant)")
    if data["capabilities"]:
        click.echo(f"capabilities: {', '.join(data['capabilities'])}")
    for problem in data["problems"]:
        click.echo(f"note: {problem}")
    click.echo(f"read {human_size(data['bytes_read'])} of headers in {data['seconds']:.2f} s")
