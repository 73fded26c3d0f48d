"""The change log, `model_registry.history.jsonl`: one JSON line per command that changed the registry's
content, with the time, the command line (secrets redacted) and an RFC 6902 JSON Patch of the discovered
layer.

The log must never miss a change the registry holds, even when the process dies between two writes.
So the line is written *first*, and it carries the fingerprints (SHA-256) of the discovered layer before
and after the change. A line whose layer was never saved is recognisable afterwards: its `before` is
what the file still holds. `RegistryStore` drops such a line under the lock before the next write, and
`read_changes` hides it meanwhile.

Bookkeeping fields (when a model was last verified, the mtimes recorded at hashing time) are not
content: changing only those writes no line and no backup (twenty verifies must not push every real
backup out of the rotation).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageworks.clock import utc_now
from imageworks.errors import RegistryError, from_os_error
from imageworks.redaction import redact_argv, redact_obj, redact_text

# JSON pointers of fields that record when something was checked, not what a model is.
_BOOKKEEPING = re.compile(r"^/models/[^/]+/(?:verified_at|files/\d+/mtime_ns)$")
_TAIL_CHUNK = 1 << 16


def pointer_for(name: str) -> str:
    """The JSON pointer of an entry (RFC 6901 escapes: `~` -> `~0`, `/` -> `~1`)."""
    return "/models/" + name.replace("~", "~0").replace("/", "~1")


def decode_token(token: str) -> str:
    """One RFC 6901 reference token back to text (`~1` first would turn `~01` into `/`: wrong)."""
    return token.replace("~1", "/").replace("~0", "~")


def layer_patch(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """An RFC 6902 patch from one discovered layer to the next. Diffed entry by entry: entries that did
    not change are skipped by a C-speed equality test, so a 10k-entry registry costs milliseconds."""
    import jsonpatch

    ops: list[dict[str, Any]] = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        pointer = pointer_for(name)
        if old is None:
            ops.append({"op": "add", "path": pointer, "value": new})
        elif new is None:
            ops.append({"op": "remove", "path": pointer})
        else:
            for op in jsonpatch.make_patch(old, new).patch:
                op = dict(op)
                op["path"] = pointer + op["path"]
                if "from" in op:
                    op["from"] = pointer + op["from"]
                ops.append(op)
    return ops


def is_bookkeeping(patch: list[dict[str, Any]]) -> bool:
    """Whether a patch only touches bookkeeping fields (no backup, no change-log line)."""
    return bool(patch) and all(
        op.get("op") in {"add", "replace", "remove"} and _BOOKKEEPING.match(op.get("path", ""))
        for op in patch
    )


@dataclass(frozen=True)
class ChangeRecord:
    """One line of the change log."""

    time: str
    command: str
    patch: list[dict[str, Any]]

    @property
    def names(self) -> list[str]:
        """The entry names the patch touches, decoded from their JSON pointers."""
        touched = set()
        for op in self.patch:
            parts = str(op.get("path", "")).split("/")
            if len(parts) >= 3 and parts[1] == "models":
                touched.add(decode_token(parts[2]))
        return sorted(touched)

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "command": self.command, "patch": self.patch, "names": self.names}


def command_text(command: Sequence[str] | str) -> str:
    """The command line as the change log records it: the program's name, not wherever the venv put it
    (the log is shared through git), and every secret redacted."""
    if isinstance(command, str):
        return redact_text(command)
    if command:
        command = [os.path.basename(command[0]), *command[1:]]
    return redact_argv(command)


def make_line(
    patch: list[dict[str, Any]], command: Sequence[str] | str, *, before: str | None, after: str
) -> bytes:
    line = {
        "time": utc_now(),
        "command": command_text(command),
        "patch": redact_obj(patch),
        "before": before,
        "after": after,
    }
    return (json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def append_line(path: Path, line: bytes) -> int:
    """Append one line durably; returns the offset it starts at (to take it back with `truncate_to`).
    A failed append takes back whatever part of it reached the file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        offset = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, offset)
            raise
    finally:
        os.close(fd)
    return offset


def truncate_to(path: Path, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def last_line(path: Path) -> tuple[int, dict[str, Any]] | None:
    """(offset, record) of the file's last complete line, read from the end (the log grows without
    bound; a recovery check must not read all of it)."""
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            if end == 0:
                return None
            tail = b""
            pos = end
            while True:
                step = min(_TAIL_CHUNK, pos)
                pos -= step
                handle.seek(pos)
                tail = handle.read(step) + tail
                body = tail[:-1] if tail.endswith(b"\n") else tail
                cut = body.rfind(b"\n")
                if cut >= 0 or pos == 0:
                    start = cut + 1 if cut >= 0 else 0
                    offset = pos + start
                    text = body[start:]
                    break
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return (offset, record) if isinstance(record, dict) else None


def is_orphan(record: dict[str, Any], discovered_digest: str | None) -> bool:
    """A line written for a change whose layer was never saved: the layer still holds `before`."""
    if "after" not in record:  # a line from before lines carried fingerprints
        return False
    return record.get("after") != discovered_digest and record.get("before") == discovered_digest


def read_changes(path: Path, discovered_digest: str | None, limit: int | None = None) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise RegistryError(f"{path}: the change log is not UTF-8 text") from None
    except OSError as exc:
        err = from_os_error(exc)
        raise RegistryError(f"cannot read the change log: {err.message}", hint=err.hint) from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (ValueError, RecursionError):
            raise RegistryError(
                f"{path}: line {number} is not valid JSON",
                hint="the change log is append-only text: fix or delete that line by hand",
            ) from None
    if records and is_orphan(records[-1], discovered_digest):
        records.pop()
    return records[-limit:] if limit else records


def to_record(raw: dict[str, Any]) -> ChangeRecord:
    patch = raw.get("patch")
    return ChangeRecord(
        time=str(raw.get("time", "")),
        command=str(raw.get("command", "")),
        patch=[op for op in patch if isinstance(op, dict)] if isinstance(patch, list) else [],
    )
