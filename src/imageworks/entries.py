"""Build registry entries from a model folder, and find the entry each should update.

Shared by `download` and by `scan`/`normalize-formats`, so that downloading a model and later scanning its
folder yields the same entries with the same names. The API:

    for variant, inspection in folder_variants(folder, paths):   # one per GGUF quant, see below
        entry = build_entry(folder, source=Source(...), location="linux_wsl",
                            files=[FileRecord, ...], inspection=inspection)
    existing = find_existing(registry, entry)      # same identity, or same folder + same variant
    stored = record_entry(registry, entry)         # merge into `existing` (keeping its name) and put

`files` are the entry's own files (relative POSIX paths with size, sha256, mtime_ns): a folder may hold
several GGUF quants, each its own entry (`owner/repo:<quant>`), so the folder alone does not say what
belongs to an entry. `split_variants` decides that: each quant's files (all split parts) plus the files
every variant shares (mmproj projectors, config, tokenizer, README); non-GGUF weights beside GGUF files
form one more variant without a quant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from imageworks.clock import utc_now  # noqa: F401  (re-exported: the downloader stamps with it)
from imageworks.formats import canonical_format
from imageworks.hashing import aggregate_sha256, trusted_digest
from imageworks.naming import entry_identity, model_name, path_key, serve_hints
from imageworks.registry.schema import FileRecord, ModelEntry, Source
from imageworks.stores.copies import carry_copies

if TYPE_CHECKING:
    from imageworks.inspect.types import ModelInspection
    from imageworks.registry import Registry
    from imageworks.walk import FileStat, ModelFolder

MAX_EVIDENCE = 12
# Fields people set by hand (or other commands set) that a re-download or re-scan must not reset.
_KEPT_FIELDS = ("aliases", "tags", "display_name", "family", "deprecated", "testing", "verified_at")


def entry_variant(inspection: ModelInspection) -> str | None:
    """The GGUF quant that goes into the name: only when the files hold exactly one quant."""
    if inspection.format == "gguf" and len(inspection.gguf_quants) == 1:
        return inspection.gguf_quants[0]
    return None


@dataclass(frozen=True)
class Variant:
    """The files one entry of a folder holds: `weight_files` are its own weights, `files` adds what it
    shares with the folder's other variants."""

    files: tuple[str, ...]
    weight_files: frozenset[str]


def split_variants(inspection: ModelInspection, all_files: Sequence[str]) -> list[Variant]:
    """One variant per GGUF quant (+ shared files), plus one for non-GGUF weights; a folder with a single
    kind of weights is one variant holding every file."""
    weight_offers = [o for o in inspection.offers if o.role == "weights"]
    gguf_offers = [o for o in weight_offers if o.format == "gguf"]
    other_weights = sorted({f for o in weight_offers if o.format != "gguf" for f in o.files})
    projectors = sorted({f for o in inspection.offers if o.role == "projector" for f in o.files})
    in_offers = {f for o in inspection.offers for f in o.files}
    if len(gguf_offers) <= 1 and not (gguf_offers and other_weights):
        weights = frozenset(f for o in weight_offers for f in o.files)
        return [Variant(tuple(all_files), weights)]
    shared = [f for f in all_files if f not in in_offers]
    variants = [
        Variant(tuple(sorted({*o.files, *projectors, *shared})), frozenset(o.files)) for o in gguf_offers
    ]
    if other_weights:
        variants.append(Variant(tuple(sorted({*other_weights, *shared})), frozenset(other_weights)))
    return variants


def folder_variants(
    folder: Path, files: Sequence[str], inspection: ModelInspection | None = None
) -> list[tuple[Variant, ModelInspection]]:
    """The entries `files` of `folder` make (`split_variants`), each with the inspection of its own
    files, which `build_entry` takes. `inspection` is that of all `files`, when the caller has it."""
    from imageworks.inspect import inspect_folder

    if inspection is None:
        inspection = inspect_folder(folder, files=list(files))
    variants = split_variants(inspection, files)
    if len(variants) == 1:
        return [(variants[0], inspection)]
    return [(v, inspect_folder(folder, files=list(v.files))) for v in variants]


def _metadata(inspection: ModelInspection) -> dict[str, Any]:
    evidence = [f"{e.signal}: {e.detail}" for e in inspection.evidence[:MAX_EVIDENCE]]
    data: dict[str, Any] = {
        "architecture": inspection.architecture,
        "model_type": inspection.model_type,
        "parameters": inspection.parameters,
        "context_length": inspection.context_length,
        "bits": inspection.bits,
        "dtype": inspection.dtype,
        "group_size": inspection.group_size,
        "chat_template": inspection.chat_template_source,
        "gguf_quants": inspection.gguf_quants if len(inspection.gguf_quants) > 1 else None,
        "evidence": evidence or None,
        "problems": inspection.problems or None,
        "reason": inspection.reason,
    }
    return {k: v for k, v in data.items() if v is not None and not _out_of_range(v)}


def _out_of_range(value: Any) -> bool:
    """An integer no registry file may hold (the layers are limited to 64 bits): a hostile or broken
    config.json claiming a context of 10**30 tokens must not make the registry unreadable."""
    return isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63


def build_entry(
    folder: Path,
    *,
    source: Source,
    location: str | None,
    files: Sequence[FileRecord],
    format_hint: str | None = None,
    downloaded_at: str | None = None,
    verified_at: str | None = None,
    inspection: ModelInspection | None = None,
) -> ModelEntry:
    """An entry for the model made of `files` inside `folder`.

    Format and quantisation come from the files' headers and configs (`inspect_folder`); `format_hint`
    (the user's `--format`) is used only when nothing is detectable. Pass `inspection` when the caller
    already ran it. The name follows `imageworks.naming.model_name`; a direct download is named after its
    file."""
    if inspection is None:
        from imageworks.inspect import inspect_folder

        inspection = inspect_folder(folder, files=[r.path for r in files])
    detected = inspection.format if inspection.format and inspection.format != "unknown" else None
    fmt = detected or (format_hint.lower() if format_hint else None)
    variant = entry_variant(inspection)
    quantization = variant or inspection.quantization
    name = _name(folder, source, files, variant)
    paths = [r.path for r in files]
    metadata = _metadata(inspection)
    if format_hint and detected and (canonical_format(format_hint) or format_hint.lower()) != detected:
        metadata["format_requested"] = format_hint
    return ModelEntry(
        name=name,
        family=inspection.model_type,
        source=source,
        format=fmt,
        quantization=quantization,
        location=location,
        path=str(folder),
        files=sorted(files, key=lambda r: r.path),
        size_bytes=sum(r.size for r in files),
        aggregate_sha256=aggregate_sha256((r.path, r.sha256) for r in files),
        downloaded_at=downloaded_at,
        verified_at=verified_at,
        capabilities=sorted(set(inspection.capabilities)),
        serve=serve_hints(
            name=name,
            format=fmt,
            quantization=quantization,
            path=str(folder),
            files=paths,
            context_length=metadata.get("context_length"),
            location=location,
        ),
        metadata=metadata,
    )


def _name(folder: Path, source: Source, files: Sequence[FileRecord], variant: str | None) -> str:
    # A direct download is named after its file: the URL's last segment may be a CDN hash or "download".
    name_url = files[0].path if source.provider == "url" and len(files) == 1 else source.url
    return model_name(
        source.provider,
        repo_id=source.repo_id,
        revision=source.revision,
        quant=variant,
        url=name_url,
        folder=folder,
    )


def find_existing(registry: Registry, entry: ModelEntry) -> ModelEntry | None:
    """The registry entry `entry` should update: the same identity (provider + repo id in any case +
    revision + GGUF variant), else an entry in the same folder with the same variant (a download of a
    folder that was scanned earlier, or the reverse). Two quants in one folder stay two entries."""
    ident = entry_identity(entry)
    entries = registry.entries()
    for candidate in entries:
        if entry_identity(candidate) == ident:
            return candidate
    key = path_key(entry.path)
    if key is None:
        return None
    for candidate in entries:
        if path_key(candidate.path) == key and entry_identity(candidate)[3] == ident[3]:
            return candidate
    return None


def merge_entry(previous: ModelEntry | None, new: ModelEntry) -> ModelEntry:
    """`new` as an update of `previous` (a discovered-layer entry): the previous name stays (so aliases and
    curated overrides keep applying), hand-set fields survive, metadata is updated key by key, and a
    `local` source does not replace a more specific one (a scan of a downloaded folder)."""
    if previous is None:
        return new
    data = new.model_dump()
    for key in _KEPT_FIELDS:
        value = getattr(previous, key)
        if value not in (None, [], False, ""):
            data[key] = value
    if new.source.provider == "local" and previous.source.provider != "local":
        data["source"] = previous.source.model_dump()
    data["metadata"] = {**previous.metadata, **new.metadata}
    carry_copies(previous, data)  # stores: copies survive; a moved primary becomes a copy
    if not new.downloaded_at:
        data["downloaded_at"] = previous.downloaded_at
    return renamed(ModelEntry.model_validate(data), previous.name)


def renamed(entry: ModelEntry, name: str) -> ModelEntry:
    """`entry` under another name; serve hints embed the name (served-model-name, ollama create), so they
    are regenerated."""
    if entry.name == name:
        return entry
    serve = serve_hints(
        name=name,
        format=entry.format,
        quantization=entry.quantization,
        path=entry.path,
        files=[f.path for f in entry.files],
        context_length=entry.metadata.get("context_length"),
        location=entry.location,
    )
    return entry.model_copy(update={"name": name, "serve": serve})


def disambiguated(entry: ModelEntry) -> ModelEntry:
    """`entry` renamed `<name>-<8 hex>`, the suffix derived from its identity (its folder for a local
    model), so the same model gets the same name next time."""
    digest = hashlib.sha1("\0".join(entry_identity(entry)).encode()).hexdigest()[:8]
    return renamed(entry, f"{entry.name}-{digest}")


def record_entry(registry: Registry, entry: ModelEntry) -> ModelEntry:
    """Put `entry` into the discovered layer, updating the entry it matches (see `find_existing`).
    Returns what was stored. Call inside `RegistryStore.transaction()`."""
    existing = find_existing(registry, entry)
    if existing is None and registry.get(entry.name) is not None:
        # Another model already has this name (two direct URLs ending in the same file name): keep both,
        # with a suffix derived from the identity so the same model gets the same name next time.
        entry = disambiguated(entry)
    previous = registry.discovered_entry(existing.name) if existing is not None else None
    if existing is not None and previous is None:
        # Only in curated: the discovered entry takes the curated name, so the curated fields apply.
        entry = renamed(entry, existing.name)
    stored = merge_entry(previous, entry)
    registry.put(stored)
    return stored


def same_content(a: ModelEntry, b: ModelEntry) -> bool:
    """Whether two entries describe the same files the same way (timestamps aside): a re-run that
    changes nothing must not write the registry."""
    ignore = {"downloaded_at", "verified_at"}
    return a.model_dump(exclude=ignore) == b.model_dump(exclude=ignore)


# ---------------------------------------------------------------------------------------------------
# Entries from a folder found on disk (scan, normalize-formats)


def entry_for_folder(
    folder: ModelFolder,
    inspection: ModelInspection,
    files: Sequence[str],
    stats: dict[str, FileStat],
    *,
    location: str,
    testing: bool,
) -> ModelEntry:
    """The entry for `files` of a folder found on disk, its source read from the folder's place in the
    layout (`imageworks.walk.layout_source`), built by `build_entry` (the builder `download` uses), so a
    scanned folder gets the name and serve hints that downloading the same repo gives."""
    from imageworks.walk import layout_source

    provider, repo_id, revision = layout_source(folder.layout)
    source = Source(provider=provider, repo_id=repo_id, revision=revision)  # type: ignore[arg-type]
    records = [FileRecord(path=p, size=stats[p].size) for p in files]
    entry = build_entry(folder.path, source=source, location=location, files=records, inspection=inspection)
    return entry.model_copy(update={"testing": True}) if testing else entry


# Where a recorded SHA-256 came from: the Hub's listing, the user's `--sha256` for a direct URL, or the
# bytes on disk (scan --hash, normalize-formats --rebuild, verify --record). Stored per file as the
# `digest_source` key of a file record.
DigestSource = Literal["hub", "url", "disk"]
DIGEST_SOURCES: tuple[DigestSource, ...] = ("hub", "url", "disk")
AUTHORITATIVE: frozenset[str] = frozenset({"hub", "url"})


def digest_source(entry: ModelEntry, record: FileRecord) -> DigestSource | None:
    """Where `record`'s SHA-256 came from (None without one). Records written before the field existed:
    a downloaded entry (download time or commit recorded) of the Hub or a URL got its digests from
    there; anything else (a scanned folder, even in the owner/repo layout) got them from disk."""
    if not record.sha256:
        return None
    explicit = (record.model_extra or {}).get("digest_source")
    if explicit in DIGEST_SOURCES:
        return explicit  # type: ignore[no-any-return]
    downloaded = bool(entry.downloaded_at or entry.source.commit)
    if downloaded and entry.source.provider == "hf":
        return "hub"
    if downloaded and entry.source.provider == "url":
        return "url"
    return "disk"


def hashed_on_disk(record: FileRecord, sha256: str, size: int | None, mtime_ns: int | None) -> FileRecord:
    """`record` with a digest just computed from the file on disk."""
    update: dict[str, Any] = {"sha256": sha256, "mtime_ns": mtime_ns, "digest_source": "disk"}
    if size is not None:
        update["size"] = size
    return record.model_copy(update=update)


def carry_digests(
    base: ModelEntry, records: Sequence[FileRecord], stats: dict[str, FileStat]
) -> list[FileRecord]:
    """The files of `base` as found again on disk (`records`), keeping what was recorded about digests:
    a digest from the Hub or a `--sha256` stays with its size whatever the disk now holds (the disk is
    what may be wrong: `verify` reports it), and one from disk stays while the file is unchanged
    (`hashing.trusted_digest`). Anything else is recorded without a digest (verify/--hash/--rebuild
    compute it)."""
    known = {f.path: f for f in base.files}
    out = []
    for record in records:
        prev = known.get(record.path)
        stat = stats.get(record.path)
        if prev is not None and digest_source(base, prev) in AUTHORITATIVE:
            # Checked against it just now (normalize-formats --rebuild): the fresher size and mtime.
            record = record if record.sha256 == prev.sha256 else prev
        elif record.sha256 is None and stat is not None and trusted_digest(prev, stat.size, stat.mtime_ns):
            assert prev is not None
            record = prev
        out.append(record)
    return out


def refresh_entry(base: ModelEntry, fresh: ModelEntry, stats: dict[str, FileStat]) -> ModelEntry:
    """`base` (the discovered layer's entry) updated with the facts from disk in `fresh` (format,
    quantisation, files, size, capabilities, serve hints, inspection metadata) by the merge `download`
    uses. What was recorded about where the model came from stays: a folder name knows less than the
    download did (commit, canonical case). Digests are kept by `carry_digests`."""
    files = carry_digests(base, fresh.files, stats)
    fresh = fresh.model_copy(
        update={
            "files": files,
            "size_bytes": sum(f.size for f in files),
            "aggregate_sha256": aggregate_sha256((f.path, f.sha256) for f in files),
        }
    )
    merged = merge_entry(base, fresh)
    moved = path_key(base.path) != path_key(fresh.path)
    return merged.model_copy(
        update={
            "source": base.source,
            "path": fresh.path if moved or not base.path else base.path,
            "location": fresh.location if moved or not base.location else base.location,
        }
    )


class EntryIndex:
    """Identity and path lookups over a registry snapshot, built once per scan (not per folder)."""

    def __init__(self, entries: Iterable[ModelEntry]) -> None:
        self.by_name: dict[str, ModelEntry] = {}
        self.by_identity: dict[tuple[str, str, str, str], str] = {}
        self.by_path: dict[str, list[str]] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: ModelEntry) -> None:
        self.by_name[entry.name] = entry
        ident = entry_identity(entry)
        if ident[1]:
            self.by_identity.setdefault(ident, entry.name)
        key = path_key(entry.path)
        if key:
            self.by_path.setdefault(key, []).append(entry.name)

    def match(self, entry: ModelEntry, weight_files: frozenset[str]) -> ModelEntry | None:
        """The existing entry for the same model, by the rule of `find_existing` (same identity, else
        same folder and same variant), widened to "same folder and an overlap in the weight files
        recorded" so an entry whose quant label was decided differently (from a file name, by an older
        version) is still recognised by its files."""
        ident = entry_identity(entry)
        # A local entry has no repo id or URL: its identity is only its folder (naming.identity would
        # make every local model of one variant "the same").
        name = self.by_identity.get(ident) if ident[1] else None
        if name is not None:
            return self.by_name[name]
        key = path_key(entry.path)
        same_folder = [self.by_name[n] for n in self.by_path.get(key or "", [])]
        for other in same_folder:
            if entry_identity(other)[3] == ident[3]:
                return other
        for other in same_folder:
            if weight_files & {f.path for f in other.files}:
                return other
        return None
