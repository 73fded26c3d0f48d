"""The layered registry on disk: load, merge, and mutate under a lock with backups and a change log.

Files in the registry folder:
  model_registry.curated.json     hand-edited, under git; never written by tools
  model_registry.discovered.json  written by tools
  model_registry.json             the merged view, regenerated on every write
  model_registry.history.jsonl    one JSON line per mutating command (time, command, JSON Patch)
  backups/                        timestamped copies taken before each mutating command
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imageworks.clock import utc_stamp
from imageworks.durable import atomic_write_text
from imageworks.errors import RegistryError, RegistryWriteError, from_os_error
from imageworks.registry import changelog
from imageworks.registry.merge import field_origins, merge_layers

if TYPE_CHECKING:
    from types import ModuleType

    from imageworks.registry.schema import ModelEntry

CURATED = "model_registry.curated.json"
DISCOVERED = "model_registry.discovered.json"
MERGED = "model_registry.json"
HISTORY = "model_registry.history.jsonl"
LOCK = ".model_registry.lock"
FINGERPRINT = ".model_registry.discovered.sha256"
BACKUPS = "backups"
DEFAULT_KEEP_BACKUPS = 20
LOCK_TIMEOUT_S = 60.0


@dataclass
class Registry:
    """A snapshot of the layers. Mutations touch only the discovered layer, and only through `put` and
    `remove`, which replace whole entries (so a shallow copy is a valid "before" snapshot)."""

    curated: dict[str, dict[str, Any]]
    discovered: dict[str, dict[str, Any]]
    _models: dict[str, ModelEntry] = field(default_factory=dict, repr=False)

    def merged_raw(self) -> dict[str, dict[str, Any]]:
        return merge_layers(self.discovered, self.curated)

    def merged(self) -> dict[str, ModelEntry]:
        """Every merged entry as a validated model (validated on first use and cached)."""
        raw = self.merged_raw()
        missing = {name: entry for name, entry in raw.items() if name not in self._models}
        if missing:
            self._models.update(_schema().validate_entries(missing, "merged registry"))
        return {name: self._models[name] for name in raw}

    def entries(self) -> list[ModelEntry]:
        merged = self.merged()
        return [merged[name] for name in sorted(merged)]

    def get(self, name: str) -> ModelEntry | None:
        if name in self._models:
            return self._models[name]
        if name not in self.discovered and name not in self.curated:
            return None
        raw = merge_layers(
            {name: self.discovered[name]} if name in self.discovered else {}, self.curated_subset(name)
        )
        model = _schema().validate_entries(raw, "merged registry")[name]
        self._models[name] = model
        return model

    def curated_subset(self, name: str) -> dict[str, dict[str, Any]]:
        return {name: self.curated[name]} if name in self.curated else {}

    def origins(self, name: str) -> dict[str, str]:
        return field_origins(name, self.discovered, self.curated)

    def is_curated(self, name: str) -> bool:
        return name in self.curated

    def put(self, entry: ModelEntry) -> None:
        """Insert or replace an entry in the discovered layer (a URL's secrets never reach the file)."""
        data = entry.to_layer_dict()
        source = data.get("source")
        if isinstance(source, dict) and isinstance(source.get("url"), str):
            from imageworks.redaction import redact_url

            source["url"] = redact_url(source["url"])
        self.discovered[entry.name] = data
        self._models.pop(entry.name, None)

    def remove(self, name: str) -> bool:
        self._models.pop(name, None)
        return self.discovered.pop(name, None) is not None

    def discovered_entry(self, name: str) -> ModelEntry | None:
        raw = self.discovered.get(name)
        if raw is None:
            return None
        return _schema().validate_entries({name: raw}, "discovered layer")[name]

    def merged_layer_dicts(self) -> dict[str, dict[str, Any]]:
        """The merged view as written to model_registry.json: discovered-only entries as stored (they
        were validated when loaded or put); entries touched by curated validated and filled with
        defaults, which also checks the merge result before anything is saved."""
        raw = self.merged_raw()
        touched = {name: raw[name] for name in self.curated}
        checked = _schema().validate_entries(touched, "merged registry") if touched else {}
        return {
            name: (checked[name].to_layer_dict() if name in checked else entry) for name, entry in raw.items()
        }


def _schema() -> ModuleType:
    # Imported on first use: pydantic is the bulk of start-up time (see registry/__init__.py).
    from imageworks.registry import schema

    return schema


class RegistryStore:
    """One registry folder. Reads are lock-free (files are replaced atomically); writes go through
    `transaction()`, which re-reads under the lock so concurrent writers never lose each other's work."""

    def __init__(self, folder: Path, *, keep_backups: int = DEFAULT_KEEP_BACKUPS) -> None:
        self.folder = Path(folder)
        self.keep_backups = keep_backups

    def path(self, name: str) -> Path:
        return self.folder / name

    # -- reading ---------------------------------------------------------------------------------
    def _read_bytes(self, name: str) -> bytes | None:
        path = self.path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            err = from_os_error(exc)
            raise RegistryError(f"cannot read the registry: {err.message}", hint=err.hint) from None

    def _parse(self, name: str, data: bytes) -> dict[str, dict[str, Any]]:
        path = self.path(name)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RegistryError(f"{path}: not UTF-8 text") from None
        return _schema().parse_layer_text(text, path)

    def load(self) -> Registry:
        """Read and validate both layers: a wrong type in either is reported with its file and entry.

        The discovered layer is validated in full unless its bytes carry the fingerprint of what this
        tool last wrote there (already validated before the write): validating 10k entries costs far
        more than hashing the file."""
        curated_bytes = self._read_bytes(CURATED)
        curated = self._parse(CURATED, curated_bytes) if curated_bytes is not None else {}
        _validate_partial(curated, str(self.path(CURATED)))

        discovered_bytes = self._read_bytes(DISCOVERED)
        if discovered_bytes is None:
            discovered: dict[str, dict[str, Any]] = {}
        elif self._fingerprint_matches(discovered_bytes):
            discovered = _schema().parse_trusted_layer(discovered_bytes, self.path(DISCOVERED))
        else:
            discovered = self._parse(DISCOVERED, discovered_bytes)
            _schema().validate_entries(discovered, str(self.path(DISCOVERED)))
        return Registry(curated=curated, discovered=discovered)

    def _current_bytes(self, name: str) -> bytes | None:
        try:
            return self.path(name).read_bytes()
        except OSError:
            return None

    def _fingerprint_matches(self, data: bytes) -> bool:
        try:
            recorded = self.path(FINGERPRINT).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return False
        return recorded == hashlib.sha256(data).hexdigest()

    # -- writing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(
        self, command: Sequence[str] | str | None = None, *, backup: bool = True
    ) -> Iterator[Registry]:
        """Read-modify-write under the lock. On normal exit, writes what changed (discovered + merged),
        after a backup, with one change-log line. Nothing is written if nothing changed."""
        from filelock import FileLock, Timeout

        self._ensure_folder()
        lock = FileLock(str(self.path(LOCK)), timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout:
            raise RegistryWriteError(
                f"{self.folder}: another imageworks command holds the registry lock",
                hint=f"wait for it to finish (lock file {self.path(LOCK)})",
            ) from None
        except OSError as exc:
            raise RegistryWriteError(f"{self.folder}: cannot lock the registry: {exc.strerror}") from None
        try:
            self._recover()
            registry = self.load()
            before = dict(registry.discovered)
            yield registry
            self._commit(registry, before, sys.argv if command is None else command, backup=backup)
        finally:
            lock.release()

    def _ensure_folder(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryWriteError(f"cannot create registry folder {self.folder}: {exc.strerror}") from None

    def _discovered_digest(self) -> str | None:
        data = self._current_bytes(DISCOVERED)
        return hashlib.sha256(data).hexdigest() if data is not None else None

    def _recover(self) -> None:
        """Under the lock, before reading: take back a change-log line whose layer was never saved (the
        process died between the two writes)."""
        try:
            tail = changelog.last_line(self.path(HISTORY))
            if tail is not None and changelog.is_orphan(tail[1], self._discovered_digest()):
                changelog.truncate_to(self.path(HISTORY), tail[0])
        except OSError as exc:
            raise _write_error(self.folder, exc, "nothing was changed") from None

    def _commit(
        self, registry: Registry, before: dict[str, Any], command: Sequence[str] | str, *, backup: bool
    ) -> None:
        """Write order: backup, change-log line, discovered layer, merged view. Every failure leaves the
        folder as it was (the line is taken back, the layer restored), or, if even that fails, says
        exactly what was saved."""
        discovered_text = _schema().dump_layer(registry.discovered)
        merged_text = _schema().dump_layer(registry.merged_layer_dicts())
        old_discovered = self._current_bytes(DISCOVERED)
        write_discovered = old_discovered != discovered_text
        write_merged = self._current_bytes(MERGED) != merged_text
        if not (write_discovered or write_merged):
            return
        patch = changelog.layer_patch(before, registry.discovered) if before != registry.discovered else []
        content = bool(patch) and not changelog.is_bookkeeping(patch)
        line_at: int | None = None
        copies: list[Path] = []
        old_fingerprint = self._current_bytes(FINGERPRINT)
        try:
            if backup and (content or not patch):
                changing = [n for n, w in ((DISCOVERED, write_discovered), (MERGED, write_merged)) if w]
                self._backup(changing, copies)
            if content:
                old_digest = (
                    hashlib.sha256(old_discovered).hexdigest() if old_discovered is not None else None
                )
                new_digest = hashlib.sha256(discovered_text).hexdigest()
                line = changelog.make_line(patch, command, before=old_digest, after=new_digest)
                line_at = changelog.append_line(self.path(HISTORY), line)
            if write_discovered:
                self._write_discovered(discovered_text)
        except OSError as exc:
            if write_discovered and old_fingerprint is not None and not self.path(FINGERPRINT).exists():
                # The layer was not replaced (the write is atomic): its fingerprint still holds.
                with contextlib.suppress(OSError):
                    atomic_write_text(self.path(FINGERPRINT), old_fingerprint)
            self._take_back(line_at, copies)
            raise _write_error(self.folder, exc, "nothing was changed") from None
        if write_merged:
            try:
                atomic_write_text(self.path(MERGED), merged_text)
            except OSError as exc:
                if write_discovered:
                    self._roll_back(exc, old_discovered, old_fingerprint)
                self._take_back(line_at, copies)
                raise _write_error(self.folder, exc, "nothing was changed") from None
        if copies:
            self._prune_backups(self.path(BACKUPS))

    def _write_discovered(self, text: bytes) -> None:
        # Invalidate first: a crash between the two writes must not vouch for other bytes.
        with contextlib.suppress(FileNotFoundError):
            self.path(FINGERPRINT).unlink()
        atomic_write_text(self.path(DISCOVERED), text)
        # Only a cache (a missing fingerprint means "validate in full"): its failure is no failed save.
        with contextlib.suppress(OSError):
            atomic_write_text(self.path(FINGERPRINT), hashlib.sha256(text).hexdigest() + "\n")

    def _take_back(self, line_at: int | None, copies: list[Path]) -> None:
        """Undo the change-log line and the backup copies of a commit that did not happen."""
        if line_at is not None:
            # If this fails too, `_recover` drops the line before the next write (its layer was not saved).
            with contextlib.suppress(OSError):
                changelog.truncate_to(self.path(HISTORY), line_at)
        for copy in copies:
            with contextlib.suppress(OSError):
                copy.unlink()
        if copies:
            with contextlib.suppress(OSError):
                copies[0].parent.rmdir()  # only if this commit's copies were all it held

    def _roll_back(self, exc: OSError, old_discovered: bytes | None, old_fingerprint: bytes | None) -> None:
        """The merged view could not be written after the discovered layer was: put the layer back (the
        caller then reports that nothing was changed). Raises the whole truth if even that fails."""
        try:
            with contextlib.suppress(FileNotFoundError):
                self.path(FINGERPRINT).unlink()
            if old_discovered is None:
                self.path(DISCOVERED).unlink()
            else:
                atomic_write_text(self.path(DISCOVERED), old_discovered)
            if old_fingerprint is not None:
                atomic_write_text(self.path(FINGERPRINT), old_fingerprint)
        except OSError:
            raise _write_error(
                self.folder,
                exc,
                f"the change was saved in {DISCOVERED} and the change log, but {MERGED} (the merged view)"
                " stays out of date until the next command that writes the registry",
                prefix=f"cannot write {MERGED} in",
            ) from None

    def _backup(self, names: list[str], copies: list[Path]) -> None:
        """Copy the files about to change into backups/ (pruned once the commit succeeded). `copies`
        collects what was made, even when a later copy fails, so a failed commit can take them back."""
        folder = self.path(BACKUPS)
        stamp = utc_stamp()
        existing = [n for n in names if self.path(n).exists()]
        if not existing:
            return
        folder.mkdir(exist_ok=True)
        for name in existing:
            copies.append(folder / f"{stamp}.{name}")
            shutil.copy2(self.path(name), copies[-1])

    def _prune_backups(self, folder: Path) -> None:
        for name in (DISCOVERED, MERGED):
            copies = sorted(folder.glob(f"*.{name}"))
            for old in copies[: max(0, len(copies) - self.keep_backups)]:
                with contextlib.suppress(OSError):
                    old.unlink()

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The change-log lines as written (oldest first), the newest `limit` of them."""
        return changelog.read_changes(self.path(HISTORY), self._discovered_digest(), limit)

    def changes(self, limit: int | None = None) -> list[changelog.ChangeRecord]:
        return [changelog.to_record(raw) for raw in self.history(limit)]


def _write_error(
    folder: Path, exc: OSError, state: str, *, prefix: str = "cannot save the registry in"
) -> RegistryWriteError:
    reason = (
        "the folder is read-only"
        if exc.errno in {errno.EACCES, errno.EROFS, errno.EPERM}
        else (exc.strerror or str(exc))
    )
    return RegistryWriteError(
        f"{prefix} {folder}: {reason}",
        hint=f"{state}; fix the folder's permissions or free space and re-run",
    )


# Importable from here too: the patch is part of the store's contract.
layer_patch = changelog.layer_patch


def _validate_partial(curated: dict[str, dict[str, Any]], origin: str) -> None:
    """Curated entries may be partial; check the types of the fields they do set by validating them
    over a neutral base (explicit nulls mean "no override" and are skipped)."""
    if not curated:
        return
    base: dict[str, Any] = {"source": {}}
    cleaned = {
        name: {**base, **{k: v for k, v in entry.items() if v is not None}} for name, entry in curated.items()
    }
    for entry in cleaned.values():
        if isinstance(entry.get("source"), dict):
            entry["source"] = {k: v for k, v in entry["source"].items() if v is not None}
    _schema().validate_entries(cleaned, origin)
