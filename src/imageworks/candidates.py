"""From a model folder found by the walk to the candidate entries a scan matches against the registry.

One entry per GGUF quant (`imageworks.entries.split_variants`, the split `download` records with).

Placeholders are skipped unless `include_testing` (the entries then carry `testing: true`):
  - a layout component (owner or repo, revision stripped; a direct download's folder, not its host)
    matching one of PLACEHOLDER_PATTERNS (case-insensitive shell patterns)
  - a model folder with no weight files, or an empty one.
A folder with a download in progress, one that cannot be read completely, and weight files that cannot
be used (truncated, corrupt, hostile headers) are skips with a reason, never an error that stops a scan.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

from imageworks.entries import entry_for_folder, folder_variants
from imageworks.hashing import aggregate_sha256
from imageworks.registry.schema import ModelEntry
from imageworks.walk import ModelFolder, Skip, is_weight

PLACEHOLDER_PATTERNS: tuple[str, ...] = (
    "test*",
    "*-test",
    "*-testing",
    "demo*",
    "dummy*",
    "example*",
    "tmp*",
    "*placeholder*",
    "tiny-random-*",
)


def placeholder_pattern(name: str) -> str | None:
    """The first placeholder pattern `name` matches, or None."""
    low = name.lower()
    for pattern in PLACEHOLDER_PATTERNS:
        if fnmatch.fnmatchcase(low, pattern):
            return pattern
    return None


@dataclass
class Candidate:
    """One entry a scanned folder yields, before it is matched against the registry."""

    entry: ModelEntry
    folder: ModelFolder
    weight_files: frozenset[str]
    notes: list[str] = field(default_factory=list)
    rejected: str | None = None  # set when a later step (hashing) finds the candidate unusable


def _placeholder_reason(folder: ModelFolder) -> str | None:
    """Why a folder looks like a placeholder by name: its owner or repo name (revision stripped), or the
    folder's own name outside the <owner>/<repo> layout (and of a direct download's folder, not its host)."""
    layout = folder.layout[-1:] if folder.layout[:1] == ("url",) else folder.layout[-2:]
    names = [part.rpartition("@")[0] if "@" in part else part for part in layout]
    for name in names or [folder.path.name]:
        pattern = placeholder_pattern(name)
        if pattern:
            return f"placeholder name {name!r} (pattern {pattern})"
    return None


def candidates_for_folder(
    folder: ModelFolder, *, location: str, include_testing: bool
) -> tuple[list[Candidate], list[Skip]]:
    """Inspect one model folder and build its entries (see the module docstring for the rules)."""
    from imageworks.inspect import inspect_folder

    where = str(folder.path)
    if folder.problem:
        return [], [Skip(where, folder.problem)]
    if folder.partials:
        # `download` records the model when it finishes; recording it now would list part of it.
        shown = ", ".join(folder.partials[:3]) + (", ..." if len(folder.partials) > 3 else "")
        return [], [
            Skip(
                where,
                f"a download is in progress or was interrupted ({folder.partial_files} partial file(s)):"
                f" {shown}; run the download again to finish it, or delete those hidden files",
            )
        ]
    testing_reason = _placeholder_reason(folder)
    weights = [f.path for f in folder.files if is_weight(f.path)]
    if testing_reason is None and not folder.files:
        # Nothing usable, but something was there (a symlink loop, a dangling link): say what.
        testing_reason = "; ".join(folder.notes) if folder.notes else "empty folder"
    elif testing_reason is None and not weights:
        testing_reason = "no weight files"
    if testing_reason and not include_testing:
        return [], [Skip(where, testing_reason)]
    testing = testing_reason is not None
    by_path = {f.path: f for f in folder.files}

    all_files = [f.path for f in folder.files]
    inspection = inspect_folder(folder.path, files=all_files)
    if not weights:
        entry = entry_for_folder(folder, inspection, all_files, by_path, location=location, testing=testing)
        return [Candidate(entry, folder, frozenset(), [testing_reason or "", *folder.notes])], []
    variants = folder_variants(folder.path, all_files, inspection)
    candidates: list[Candidate] = []
    skips: list[Skip] = []
    for variant, insp in variants:
        unusable = [(p, e) for p, e in insp.errors if p in variant.files]
        label = where if len(variants) == 1 else f"{where} [{insp.quantization or insp.format}]"
        if unusable:
            path, error = unusable[0]
            more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
            skips.append(Skip(label, f"unusable weight file {path}: {error}{more}"))
            continue
        if insp.format == "unknown" and not include_testing:
            skips.append(Skip(label, f"cannot tell the weight format: {insp.reason or 'no usable header'}"))
            continue
        entry = entry_for_folder(
            folder, insp, list(variant.files), by_path, location=location, testing=testing
        )
        notes = _folder_notes(folder, insp.problems)
        candidates.append(Candidate(entry, folder, variant.weight_files, notes))
    return candidates, skips


def _folder_notes(folder: ModelFolder, problems: Sequence[str]) -> list[str]:
    """What the listing ignored plus what the inspection could not use, each file said once."""
    noted = {n.removeprefix("ignored ").split(":", 1)[0] for n in folder.notes}
    return [*folder.notes, *(p for p in problems if p.split(":", 1)[0] not in noted)]


def merge_candidates(cands: Sequence[Candidate]) -> Candidate:
    """One candidate holding the files of several variants of the same folder."""
    from imageworks.inspect import inspect_folder

    folder = cands[0].folder
    files = sorted({r.path for c in cands for r in c.entry.files})
    stats = {f.path: f for f in folder.files}
    inspection = inspect_folder(folder.path, files=files)
    entry = entry_for_folder(
        folder,
        inspection,
        files,
        stats,
        location=cands[0].entry.location or "path",
        testing=any(c.entry.testing for c in cands),
    )
    hashed = {r.path: r for c in cands for r in c.entry.files if r.sha256}
    records = [hashed.get(r.path, r) for r in entry.files]
    entry = entry.model_copy(
        update={"files": records, "aggregate_sha256": aggregate_sha256((r.path, r.sha256) for r in records)}
    )
    notes = list(dict.fromkeys(n for c in cands for n in c.notes))
    return Candidate(entry, folder, frozenset().union(*(c.weight_files for c in cands)), notes)
