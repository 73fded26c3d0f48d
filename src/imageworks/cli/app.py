"""Shared CLI plumbing: the per-invocation context, the one place errors become exit codes, and the
lazy command group that keeps `--help` instant."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from imageworks.errors import EXIT_FAILED, EXIT_USAGE, AmbiguousName, ImageworksError

if TYPE_CHECKING:
    from imageworks.config import Config
    from imageworks.registry import RegistryStore

F = TypeVar("F", bound=Callable[..., Any])


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


def _err(text: str) -> None:
    click.echo(text, err=True)


def handle_errors(func: F) -> F:
    """Translate our exceptions into one line (+ hint) and a named exit code. IMAGEWORKS_DEBUG=1 shows
    the traceback instead."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = os.environ.get("IMAGEWORKS_DEBUG", "") not in {"", "0"}
        try:
            return func(*args, **kwargs)
        except ImageworksError as exc:
            if debug:
                raise
            _err(f"error: {exc.message}")
            if isinstance(exc, AmbiguousName):
                for name in exc.candidates[:20]:
                    _err(f"  {name}")
                if len(exc.candidates) > 20:
                    _err(f"  … {len(exc.candidates) - 20} more")
            if exc.hint:
                _err(f"hint: {exc.hint}")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            _err("interrupted: partial downloads are kept; run the same command again to resume")
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort):
            # Abort: the user answered "no" to a confirmation; click prints "Aborted!" and exits 1.
            raise
        except click.ClickException:
            raise
        except BrokenPipeError:
            sys.exit(EXIT_FAILED)
        except Exception as exc:  # a bug: still one line for the user, the traceback on demand
            if debug:
                raise
            _err(f"internal error: {type(exc).__name__}: {exc}")
            _err("hint: re-run with IMAGEWORKS_DEBUG=1 for the traceback and report it")
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


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

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            raise


def usage_exit(message: str) -> None:
    _err(f"error: {message}")
    sys.exit(EXIT_USAGE)


def run_group(group: click.Group, prog_name: str) -> None:
    """Run a command group with click's usage errors in our format: `error: ...` and a `hint:` line,
    exit 2 (click's default prints a usage block and `Error:`)."""
    try:
        code = group.main(prog_name=prog_name, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare command: help, as click would
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else prog_name
        _err(f"error: {exc.format_message()}")
        _err(f"hint: see `{command} --help`")
        sys.exit(EXIT_USAGE)
    except click.Abort:
        _err("aborted")
        sys.exit(EXIT_FAILED)
    except click.ClickException as exc:
        _err(f"error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
