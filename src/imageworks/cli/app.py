"""Shared CLI plumbing: the per-invocation context, the one place errors become exit codes (`run_group`,
the error boundary both console scripts run through), and the lazy command group that keeps `--help`
instant."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from imageworks.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    AmbiguousName,
    ImageworksError,
)

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.registry import RegistryStore


@dataclass
class AppContext:
    """What every command needs, resolved on first use (never at import)."""

    registry_dir: Path | None = None
    token: str | None = None
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            from imageworks.config import resolve_config

            self._config = resolve_config(registry_dir=self.registry_dir, token=self.token)
            for warning in self._config.warnings:
                _err(f"warning: {warning}")
        return self._config

    def store(self, *, keep_backups: int | None = None) -> RegistryStore:
        from imageworks.registry import RegistryStore

        if keep_backups is None:
            return RegistryStore(self.config.registry_path)
        return RegistryStore(self.config.registry_path, keep_backups=keep_backups)


pass_app = click.make_pass_decorator(AppContext, ensure=True)

# Options every command spells the same way.
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
no_backup_option = click.option("--no-backup", is_flag=True, help="Skip the registry backup.")


F = TypeVar("F", bound=Callable[..., Any])


def engine_options(func: F) -> F:
    """The transfer flags `download` and `update` share, spelled once."""
    options = [
        click.option(
            "--engine",
            type=click.Choice(["auto", "aria2", "native"]),
            default="auto",
            show_default=True,
            help="Download engine.",
        ),
        click.option(
            "--connections",
            type=click.IntRange(1, 64),
            default=16,
            show_default=True,
            help="Connections per file.",
        ),
        click.option(
            "--no-aria2",
            is_flag=True,
            help="Native engine, one stream per file (networks that block parallel connections).",
        ),
        click.option(
            "--stall-timeout",
            type=click.FloatRange(min=0.1),
            default=30.0,
            show_default=True,
            help="Seconds without a byte before a connection is restarted.",
        ),
    ]
    for option in reversed(options):
        func = option(func)  # type: ignore[assignment]
    return func


def _err(text: str) -> None:
    click.echo(text, err=True)


class LazyGroup(click.Group):
    """Subcommands are imported only when invoked, so `--help` does not pay for httpx, rich or pydantic.
    `lazy` maps command name -> ("module:attr", short help)."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            target, _ = self.lazy[cmd_name]
            module_name, attr = target.split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in self.lazy.items()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# ------------------------------------------------------------------------------------ the boundary
# True of every command: a download, update, pull or push resumes; a verify or scan starts over.
_RESUME_HINT = "run the same command again: downloads resume from the bytes kept on disk"


@dataclass(frozen=True)
class Failure:
    """What the boundary tells the user about an error: one line, a hint, an exit code (and the type name
    for the JSON envelope)."""

    type: str
    message: str
    hint: str | None
    exit_code: int
    candidates: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "hint": self.hint, "exit_code": self.exit_code}


def _failure(exc: BaseException, prog_name: str) -> Failure:
    """Map anything that reached the boundary to a Failure: our errors as they are, OS errors through
    `from_os_error` (a hint by errno), Ctrl-C as 130 with the resume hint, anything else as a bug."""
    from imageworks.errors import from_os_error
    from imageworks.redaction import redact_text

    if isinstance(exc, click.exceptions.Abort) and isinstance(exc.__cause__, KeyboardInterrupt):
        exc = exc.__cause__
    if isinstance(exc, KeyboardInterrupt):
        return Failure("Interrupted", "interrupted", _RESUME_HINT, EXIT_INTERRUPTED)
    if isinstance(exc, click.exceptions.Abort):  # "no" to a confirmation, or end of input
        return Failure("Aborted", "aborted: nothing was changed", None, EXIT_FAILED)
    if isinstance(exc, click.UsageError):
        command = exc.ctx.command_path if exc.ctx else prog_name
        return Failure("UsageError", exc.format_message(), f"see `{command} --help`", EXIT_USAGE)
    if isinstance(exc, click.ClickException):
        return Failure(type(exc).__name__, exc.format_message(), None, exc.exit_code)
    if isinstance(exc, OSError) and not isinstance(exc, ImageworksError):
        exc = from_os_error(exc)
    if isinstance(exc, ImageworksError):
        candidates = tuple(exc.candidates) if isinstance(exc, AmbiguousName) else ()
        return Failure(
            type(exc).__name__,
            redact_text(exc.message),
            redact_text(exc.hint) if exc.hint else None,
            exc.exit_code,
            candidates,
        )
    return Failure(
        "InternalError",
        f"internal error: {type(exc).__name__}: {redact_text(str(exc))}",
        "re-run with IMAGEWORKS_DEBUG=1 for the traceback and report it",
        EXIT_FAILED,
    )


def _report(failure: Failure, json_kind: str | None) -> None:
    if json_kind is not None:
        from imageworks.cli.render import emit_error_json

        # stdout closed or full: the envelope cannot be written, the line on stderr still is
        with contextlib.suppress(OSError, ValueError):
            emit_error_json(json_kind, failure.as_dict())
    message = failure.message
    _err(message if message.startswith(("internal error", "interrupted", "aborted")) else f"error: {message}")
    for name in failure.candidates[:20]:
        _err(f"  {name}")
    if len(failure.candidates) > 20:
        _err(f"  … {len(failure.candidates) - 20} more")
    if failure.hint:
        _err(f"hint: {failure.hint}")


def _json_kind(group: click.Group, args: list[str]) -> str | None:
    """The command of a `--json` invocation (its envelope's schema), read from the arguments so that even
    a usage error found before the command ran is answered in JSON."""
    if "--json" not in args:
        return None
    commands = set(group.list_commands(click.Context(group)))
    for arg in args:
        if arg == "--":
            break
        if arg in commands:
            return arg
    return None


def _install_logging() -> None:
    """Our warnings on stderr as bare lines (as Python's last-resort handler prints them), through the
    redaction filter: a log line never shows a token or a signed URL's signature."""
    import logging

    from imageworks.redaction import RedactingFilter

    class StderrHandler(logging.Handler):
        """Writes to whatever sys.stderr is when a record arrives (not the stream of the first call)."""

        def emit(self, record: logging.LogRecord) -> None:
            try:
                sys.stderr.write(self.format(record) + "\n")
            except Exception:
                self.handleError(record)

    logger = logging.getLogger("imageworks")
    if any(isinstance(f, RedactingFilter) for h in logger.handlers for f in h.filters):
        return
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if _debug() else logging.WARNING)


def _debug() -> bool:
    return os.environ.get("IMAGEWORKS_DEBUG", "") not in {"", "0"}


def run_script(group: click.Group, prog_name: str) -> NoReturn:
    """A console script's whole life: `run_group`, then out without Python's own shutdown.

    Tearing down the interpreter (some 600 modules, pydantic's among them, and their objects) costs
    20-40 ms that a finished command has no use for: 3% of verifying a 2 GB model, 10% of an
    up-to-date download. Everything a command writes is written and closed before it returns (the
    registry is durable by then); what is left is our stdout and stderr, flushed here.

    pydantic looks up the plugin entry points of every installed distribution when it builds its first
    validator (10-15 ms of every command that reads the registry); this CLI uses no pydantic plugin, so
    the lookup is switched off for its own process, unless the user set the variable."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        run_group(group, prog_name)
        code: int | str | None = EXIT_OK
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # as Python would: the message on stderr, status 1
        print(code, file=sys.stderr)
        code = EXIT_FAILED
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # the reader went away (`| head`) after the command was done: its outcome stands
    except (OSError, ValueError) as exc:  # the output was lost (a full disk, a closed stream)
        with contextlib.suppress(OSError, ValueError):
            _err(f"error: cannot write the output: {getattr(exc, 'strerror', None) or exc}")
        code = code or EXIT_FAILED
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code or EXIT_OK)


def run_group(group: click.Group, prog_name: str, args: list[str] | None = None) -> None:
    """The one error boundary of a console script: every command's errors become one line (+ hint) on
    stderr, the versioned JSON envelope with `"ok": false` on stdout for `--json`, and a named exit
    code. Commands return their exit code (None = 0); they never call sys.exit."""
    args = sys.argv[1:] if args is None else list(args)
    _install_logging()
    try:
        code = group.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare command: help, as click would
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing to tell it. Point stdout at /dev/null so Python's
        # final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)
    except (Exception, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt) or isinstance(exc.__cause__, KeyboardInterrupt)
        if _debug() and not interrupted and not isinstance(exc, click.ClickException | click.Abort):
            raise
        failure = _failure(exc, prog_name)
        _report(failure, _json_kind(group, args))
        sys.exit(failure.exit_code)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
