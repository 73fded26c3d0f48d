"""The exception hierarchy. The CLI maps these to a one-line message and an exit code in one place
(`imageworks.cli.app.run_group`, the error boundary of both console scripts); library callers catch them by type."""

from __future__ import annotations

import errno

# Named exit codes (STYLE.md #4).
EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran but failed: verification mismatch, download failed, ...
EXIT_USAGE = 2  # bad usage, bad input, not found
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


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


class FilesystemError(ImageworksError, OSError):
    """An OS error on a path we were asked to use (a location under a file, a read-only mount, a full
    disk): the user's to fix, not a bug. `errno` and `filename` are kept for callers."""

    def __init__(
        self, message: str, *, hint: str | None = None, errno_: int | None = None, filename: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.errno = errno_
        self.filename = filename


# What the user can do about each OS error, by errno. Anything else keeps the OS's own words.
_OS_HINTS: dict[int, tuple[str, str]] = {
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose a folder path (check --location)"),
    errno.EISDIR: ("is a folder where a file was expected", "remove or rename that folder"),
    errno.EROFS: ("the filesystem is read-only", "use a writable folder, or remount it read-write"),
    errno.EACCES: ("permission denied", "fix the folder's permissions or choose another folder"),
    errno.EPERM: ("operation not permitted", "fix the folder's permissions or choose another folder"),
    errno.ENOSPC: ("no space left on the device", "free some space and run the same command again"),
    errno.EDQUOT: ("disk quota exceeded", "free some space and run the same command again"),
    errno.EXDEV: (
        "cannot move a file across filesystems",
        "keep the model folder and its temporary files on one filesystem",
    ),
    errno.ENAMETOOLONG: ("the file name is too long for this filesystem", "choose a shorter folder or name"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ELOOP: ("too many levels of symbolic links", "fix the symlink loop in that path"),
}


def from_os_error(exc: OSError) -> ImageworksError:
    """One of our errors for an OSError that reached a boundary, with a hint chosen by errno."""
    if isinstance(exc, ImageworksError):
        return exc
    what, hint = _OS_HINTS.get(exc.errno or -1, (exc.strerror or str(exc), "check the path and re-run"))
    target = exc.filename if exc.filename is not None else None
    where = f"{target}: " if target is not None else ""
    if exc.filename2 is not None:
        where = f"{exc.filename} -> {exc.filename2}: "
    return FilesystemError(
        f"{where}{what}",
        hint=hint,
        errno_=exc.errno,
        filename=str(target) if target is not None else None,
    )
