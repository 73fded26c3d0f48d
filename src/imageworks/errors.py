"""The exception hierarchy. The CLI maps these to a one-line message and an exit code in one place
(`imageworks.cli.app.run_command`); library callers catch them by type."""

from __future__ import annotations

# Named exit codes (STYLE.md #4).
EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran but failed: verification mismatch, download failed, ...
EXIT_USAGE = 2  # bad usage, bad input, not found


class ImageworksError(Exception):
    """Base class. `hint` says how to fix it; `exit_code` is what the CLI returns."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ImageworksError, ValueError):
    """Bad flags, bad references, bad values given by the user."""

    exit_code = EXIT_USAGE


class ConfigError(ImageworksError, ValueError):
    exit_code = EXIT_USAGE


class RegistryError(ImageworksError):
    """The registry files cannot be read, parsed, validated or written."""

    exit_code = EXIT_USAGE


class RegistryWriteError(RegistryError, OSError):
    """A save failed (read-only folder, full disk): nothing was half-written."""

    exit_code = EXIT_FAILED


class ModelNotFound(ImageworksError, LookupError):
    """A NAME that matches no registry entry."""

    exit_code = EXIT_USAGE


class AmbiguousName(ImageworksError, LookupError):
    exit_code = EXIT_USAGE

    def __init__(self, message: str, candidates: list[str], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.candidates = candidates


class HubError(ImageworksError):
    """Anything the Hub answered that stops us."""


class RepoNotFound(HubError, LookupError):
    exit_code = EXIT_USAGE


class RevisionNotFound(HubError, LookupError):
    exit_code = EXIT_USAGE


class EntryNotFound(HubError, LookupError):
    """A file that is not in the repo at that revision."""

    exit_code = EXIT_USAGE


class GatedRepo(HubError, PermissionError):
    exit_code = EXIT_USAGE


class AuthError(HubError, PermissionError):
    exit_code = EXIT_USAGE


class HubUnavailable(HubError, ConnectionError):
    """5xx / connection refused after our retries."""


class TransferError(ImageworksError, OSError):
    """A download failed after retries (network, disk full, stalled)."""


class IntegrityError(ImageworksError, ValueError):
    """Bytes on disk do not match the expected digest or size."""

    def __init__(
        self, message: str, *, path: str = "", expected: str = "", actual: str = "", hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.expected = expected
        self.actual = actual


class UnsafePathError(ImageworksError, ValueError):
    """A path from a server or a registry that would land outside its target folder."""


class InsufficientSpace(ImageworksError, OSError):
    pass


class InspectionError(ImageworksError, ValueError):
    """A file header that cannot be parsed (only raised by strict callers; inspection itself
    degrades to 'unknown' with a reason)."""
