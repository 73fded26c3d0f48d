"""One writer per model folder. `download`, `update` and `dedupe` all ask here, so a folder a download is
writing is never relinked or switched under it.

The lock is a file lock keyed by the folder (released by the OS when its holder dies, kill -9 included). Lock
files live in the user's state folder: not in the registry folder (kept under git) nor in the model folders
(which other tools list)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

from imageworks.errors import TransferError
from imageworks.naming import path_key


def lock_folder() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("imageworks", appauthor=False)) / "download-locks"


def lock_path(folder: Path) -> Path:
    key = hashlib.sha256(str(path_key(folder)).encode()).hexdigest()[:24]
    return lock_folder() / f"{key}.lock"


@contextlib.contextmanager
def hold(folder: Path, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold `folder`'s lock, waiting for another holder (after calling `on_wait`). Yields whether we
    had to wait."""
    from filelock import FileLock, Timeout

    try:
        lock_folder().mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path(folder)))
        waited = False
        try:
            lock.acquire(timeout=0)
        except Timeout:
            waited = True
            if on_wait is not None:
                on_wait()
            lock.acquire()
    except OSError as exc:
        raise TransferError(
            f"cannot lock {folder} ({exc.strerror} in {lock_folder()}): nothing was changed",
            hint="check that your home folder (XDG_STATE_HOME) is writable",
        ) from None
    try:
        yield waited
    finally:
        lock.release()


def is_held(folder: Path) -> bool:
    """Whether another process holds `folder`'s lock right now (a download or update is writing it)."""
    from filelock import FileLock, Timeout

    path = lock_path(folder)
    if not path.exists():
        return False
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False
