"""Which files of a repo listing one download takes: pure functions of the listing and the user's flags,
decided before any byte moves (the plan against the disk is `imageworks.plan`).

Rules (issue 3, "Choosing the files"):
- Weights of one format. `--format` names it (see `imageworks.formats`: awq/gptq/exl2/mlx/fp8/bnb are
  safetensors checkpoints). Without it the first file format present in FORMAT_PREFERENCE wins, so a repo
  holding the same weights several ways gets safetensors only, and the selection says what was skipped.
  Mistral-style `consolidated*.safetensors` beside an index-sharded copy of the same weights is skipped.
- GGUF: one quant (all its split parts, in subfolders too) and the mmproj projector when there is one.
  `--quant LABEL` picks it, `--quant all` takes every quant, and without it DEFAULT_QUANT_ORDER decides.
- Support files always come along: configs, tokenizer, chat template, README, licence, custom code (*.py),
  except inside a folder that only holds weights of a skipped format (`onnx/`, `original/`).
- `--include GLOB` adds any file of the repo, `--exclude GLOB` removes (exclude wins). A glob without '/'
  also matches a file's name in any folder; '*' matches across '/'.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from imageworks.errors import EntryNotFound, UsageError
from imageworks.formats import (
    FORMAT_PREFERENCE,
    GGUF_SPLIT,
    SAFETENSORS_FLAVOURS,
    WEIGHT_FORMATS,
    accepted_formats,
    canonical_format,
    classify_weight_file,
    file_format_of,
)
from imageworks.listing import RepoFile
from imageworks.units import human_size, plural

# The documented default when a GGUF repo holds several quants and no --quant is given: the usual
# quality/size sweet spot first, then the safest higher-quality ones, then smaller ones.
DEFAULT_QUANT_ORDER = (
    "Q4_K_M",
    "Q8_0",
    "Q5_K_M",
    "Q6_K",
    "UD-Q4_K_XL",
    "Q4_K_S",
    "Q4_K_L",
    "Q5_K_S",
    "Q4_0",
    "IQ4_XS",
    "IQ4_NL",
    "Q3_K_M",
    "Q3_K_L",
    "BF16",
    "F16",
    "F32",
)

_PROJECTOR_ORDER = ("F16", "BF16", "F32", "Q8_0")
_SUPPORT_EXTENSIONS = frozenset({".json", ".jinja", ".txt", ".md", ".py", ".tiktoken", ".yaml", ".yml"})
_SUPPORT_PREFIXES = ("license", "licence", "notice", "use_policy", "copying", "readme")
_TOKENIZER_MODELS = re.compile(r"^(tokenizer|spiece|sentencepiece.*|.*\.bpe|.*\.spm)\.model$", re.IGNORECASE)
# Index files of sharded checkpoints travel with their weights, not with the support files.
_INDEX_KINDS = (
    (re.compile(r"\.safetensors\.index\.json$", re.IGNORECASE), "safetensors"),
    (re.compile(r"\.bin\.index\.json$", re.IGNORECASE), "pytorch"),
    (re.compile(r"\.msgpack\.index\.json$", re.IGNORECASE), "msgpack"),
    (re.compile(r"\.h5\.index\.json$", re.IGNORECASE), "h5"),
)


def weight_kind(path: str) -> str | None:
    """The weight file format a repo path holds, from its name alone (the listing is all we have before
    the download; the inspection of the files afterwards decides the recorded format)."""
    kind = classify_weight_file(path)
    return kind if kind in FORMAT_PREFERENCE else None


def index_kind(path: str) -> str | None:
    name = PurePosixPath(path).name
    return next((kind for pattern, kind in _INDEX_KINDS if pattern.search(name)), None)


def is_support_file(path: str) -> bool:
    p = PurePosixPath(path)
    if any(part.startswith(".") for part in p.parts):
        return False
    name = p.name.lower()
    if name.startswith(_SUPPORT_PREFIXES):
        return True
    return p.suffix.lower() in _SUPPORT_EXTENSIONS or bool(_TOKENIZER_MODELS.match(name))


def gguf_label(path: str) -> str:
    """The quant a GGUF file belongs to: the label in its name (or folder), else its stem."""
    from imageworks.inspect.quant import gguf_label_from_name

    label = gguf_label_from_name(path)
    if label:
        return label
    stem = GGUF_SPLIT.sub("", PurePosixPath(path).name)
    return re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)


def is_projector(path: str) -> bool:
    return "mmproj" in PurePosixPath(path).name.lower()


def glob_match(path: str, pattern: str) -> bool:
    if fnmatch.fnmatchcase(path, pattern):
        return True
    return "/" not in pattern and fnmatch.fnmatchcase(PurePosixPath(path).name, pattern)


def _size(files: Sequence[RepoFile]) -> str:
    return f"{plural(len(files), 'file')}, {human_size(sum(f.size for f in files))}"


@dataclass(frozen=True)
class SelectedFile:
    file: RepoFile
    role: str  # "weights" | "projector" | "index" | "support" | "included"


@dataclass
class Selection:
    """What to fetch, decided from the listing alone. `format` is the file format chosen (gguf,
    safetensors, pytorch, ...; None without weights); `flavour` the safetensors checkpoint kind `--format`
    asked for (awq, gptq, ...), which only the files' configs can confirm."""

    files: list[SelectedFile]
    format: str | None
    quants: list[str] = field(default_factory=list)  # GGUF quants chosen
    available_quants: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # paths not fetched
    notes: list[str] = field(default_factory=list)
    formats_present: list[str] = field(default_factory=list)  # file formats of the repo's weights
    flavour: str | None = None


class _Listing:
    """A repo listing with each path's weight format, and the chosen files as they accumulate."""

    def __init__(self, files: Sequence[RepoFile], folder: str | None) -> None:
        self.files = list(files)
        self.by_path = {f.path: f for f in files}
        self.weights = {f.path: kind for f in files if (kind := weight_kind(f.path))}
        self.scope = [f for f in files if f.path in self.weights]
        if folder:
            self.scope = [f for f in self.scope if f.path.startswith(folder.rstrip("/") + "/")]
            if not self.scope:
                raise EntryNotFound(f"no weight files under {folder}/ in this repo")
        self.chosen: dict[str, SelectedFile] = {}
        self.notes: list[str] = []
        self.quants: list[str] = []
        self.labels: list[str] = []

    def take(self, f: RepoFile, role: str) -> None:
        self.chosen[f.path] = SelectedFile(f, role)

    def present_formats(self) -> list[str]:
        return sorted({self.weights[f.path] for f in self.scope}, key=FORMAT_PREFERENCE.index)


def _requested(format: str | None) -> str | None:
    """The canonical format `--format` names (UsageError for an unknown one)."""
    if format is None:
        return None
    canonical = canonical_format(format)
    if canonical is None:
        raise UsageError(f"unknown --format {format!r}", hint=f"use one of: {', '.join(accepted_formats())}")
    return canonical


def _choose_quants(labels: Sequence[str], quant: str | None) -> tuple[list[str], str | None]:
    """(chosen labels, a note when the choice was a default)."""
    from imageworks.inspect.quant import normalize_gguf_label

    if quant is not None and quant.strip().lower() == "all":
        return list(labels), None
    if quant is not None:
        chosen: list[str] = []
        for want in (normalize_gguf_label(q) for q in quant.split(",") if q.strip()):
            match = [lab for lab in labels if lab.upper() == want.upper()]
            if not match:
                raise UsageError(
                    f"this repo has no GGUF quant {want}",
                    hint=f"available: {', '.join(labels)} (or --quant all)",
                )
            chosen.extend(m for m in match if m not in chosen)
        return chosen, None
    if len(labels) == 1:
        return list(labels), None
    by_upper = {lab.upper(): lab for lab in labels}
    pick = next((by_upper[c] for c in DEFAULT_QUANT_ORDER if c in by_upper), sorted(labels)[0])
    others = ", ".join(lab for lab in labels if lab != pick)
    return (
        [pick],
        f"chose quant {pick} (the default order starts Q4_K_M, Q8_0, ...); also available: {others};"
        " use --quant LABEL or --quant all",
    )


def _pick_projectors(projectors: Sequence[RepoFile], all_quants: bool) -> list[RepoFile]:
    if all_quants or len(projectors) <= 1:
        return list(projectors)
    by_label = {gguf_label(p.path).upper(): p for p in projectors}
    for label in _PROJECTOR_ORDER:
        if label in by_label:
            return [by_label[label]]
    return [sorted(projectors, key=lambda p: p.path)[0]]


def _select_one_file(listing: _Listing, path: str, quant: str | None) -> str | None:
    """A blob/resolve URL: that file, and all parts of a split GGUF. Returns its weight format."""
    if quant is not None:
        raise UsageError("--quant cannot be combined with a URL naming one file")
    target = listing.by_path.get(path)
    if target is None:
        raise EntryNotFound(f"this revision has no file {path!r}", hint="check the path in the URL")
    kind = listing.weights.get(path)
    if kind == "gguf" and not is_projector(path) and GGUF_SPLIT.search(path):
        # A split GGUF cannot be loaded from one part: bring its siblings.
        stem = GGUF_SPLIT.sub("", path)
        parts = [f for f in listing.scope if GGUF_SPLIT.sub("", f.path) == stem and GGUF_SPLIT.search(f.path)]
        for f in parts:
            listing.take(f, "weights")
        if len(parts) > 1:
            listing.notes.append(f"{path} is part of a split model: taking all {len(parts)} parts")
    else:
        listing.take(target, "weights" if kind else "included")
    if kind == "gguf":
        listing.quants = [gguf_label(path)]
    return kind


def _select_gguf(listing: _Listing, files: Sequence[RepoFile], quant: str | None) -> None:
    models = [f for f in files if not is_projector(f.path)]
    projectors = [f for f in files if is_projector(f.path)]
    listing.labels = sorted({gguf_label(f.path) for f in models}, key=lambda lab: (lab.upper(), lab))
    if models:
        listing.quants, note = _choose_quants(listing.labels, quant)
        if note:
            listing.notes.append(note)
        for f in models:
            if gguf_label(f.path) in listing.quants:
                listing.take(f, "weights")
    for f in _pick_projectors(projectors, quant is not None and quant.strip().lower() == "all"):
        listing.take(f, "projector")


def _select_safetensors(listing: _Listing, files: Sequence[RepoFile]) -> None:
    sharded = any(index_kind(f.path) == "safetensors" for f in listing.files)
    consolidated = [f for f in files if PurePosixPath(f.path).name.startswith("consolidated")]
    if sharded and consolidated and len(consolidated) < len(files):
        listing.notes.append(
            f"skipped consolidated*.safetensors ({_size(consolidated)}): the same weights as the sharded copy"
        )
        files = [f for f in files if f not in consolidated]
    for f in files:
        listing.take(f, "weights")


def _select_weights(listing: _Listing, requested: str | None, quant: str | None) -> str | None:
    """Weights of the requested (or preferred) file format; returns it."""
    present = listing.present_formats()
    wanted = file_format_of(requested) if requested else None
    if wanted is not None and wanted not in present:
        raise UsageError(
            f"this repo has no {requested} weights (formats present: {', '.join(present) or 'none'})",
            hint="pick one of the formats present with --format, or another repo/revision",
        )
    kind = wanted or (present[0] if present else None)
    if kind is None:
        listing.notes.append("no weight files found: fetching the configuration and documentation files only")
    if quant is not None and kind != "gguf":
        raise UsageError("--quant only applies to GGUF weights", hint="drop --quant, or add --format gguf")
    for other in (k for k in present if k != kind):
        group = [f for f in listing.scope if listing.weights[f.path] == other]
        listing.notes.append(
            f"skipped {other} weights ({_size(group)}): {kind} preferred; use --format {other} to get them"
        )
    files = [f for f in listing.scope if listing.weights[f.path] == kind]
    if kind == "gguf":
        _select_gguf(listing, files, quant)
    elif kind == "safetensors":
        _select_safetensors(listing, files)
    else:
        for f in files:
            listing.take(f, "weights")
    return kind


def _add_companions(listing: _Listing, kind: str | None, narrowed: bool) -> None:
    """Index files of the chosen weights, and support files outside folders of skipped weights (only the
    top level and the chosen weights' folders when a URL `narrowed` the download to a file or folder)."""
    chosen_weights = [s.file.path for s in listing.chosen.values() if s.role in ("weights", "projector")]
    selected_folders = {str(PurePosixPath(p).parent) for p in chosen_weights}
    skipped_folders = {
        str(PurePosixPath(p).parent) for p in listing.weights if p not in listing.chosen
    } - selected_folders
    for f in listing.files:
        if f.path in listing.chosen:
            continue
        parent = PurePosixPath(f.path).parent
        index = index_kind(f.path)
        if index is not None:
            if index == kind and str(parent) in selected_folders | {"."}:
                listing.take(f, "index")
            continue
        if f.path in listing.weights or not is_support_file(f.path):
            continue
        ancestors = {str(a) for a in [parent, *parent.parents] if str(a) != "."}
        if ancestors & skipped_folders and not ancestors & selected_folders:
            continue
        if narrowed and str(parent) != "." and not ancestors & selected_folders:
            continue
        listing.take(f, "support")


def _apply_globs(listing: _Listing, include: Sequence[str], exclude: Sequence[str]) -> None:
    for f in listing.files:
        if f.path not in listing.chosen and any(glob_match(f.path, g) for g in include):
            listing.take(f, "included")
    if include and not any(any(glob_match(f.path, g) for f in listing.files) for g in include):
        listing.notes.append(f"--include {' '.join(include)} matched no file")
    if exclude:
        removed = [p for p in listing.chosen if any(glob_match(p, g) for g in exclude)]
        for p in removed:
            del listing.chosen[p]
        if not removed:
            listing.notes.append(f"--exclude {' '.join(exclude)} matched no selected file")


def _note_others(listing: _Listing) -> None:
    others = [
        f
        for f in listing.files
        if f.path not in listing.chosen
        and f.path not in listing.weights
        and index_kind(f.path) is None
        and not f.path.startswith(".")
        and not is_support_file(f.path)
    ]
    if others:
        listing.notes.append(
            f"not fetched: {plural(len(others), 'other file')} ({human_size(sum(f.size for f in others))}), e.g."
            f" {others[0].path}; use --include GLOB to add them"
        )


def select_files(
    files: Sequence[RepoFile],
    *,
    format: str | None = None,
    quant: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    path: str | None = None,
    folder: str | None = None,
) -> Selection:
    """Choose the files of one download from a repo listing (see the module docstring for the rules).
    `path` is a single file (blob/resolve URLs), `folder` restricts the weights to one folder."""
    requested = _requested(format)
    listing = _Listing(files, folder)
    if path is not None:
        kind = _select_one_file(listing, path, quant)
    else:
        kind = _select_weights(listing, requested, quant)
    _add_companions(listing, kind, narrowed=path is not None or bool(folder))
    _apply_globs(listing, include, exclude)
    _note_others(listing)
    return Selection(
        files=sorted(listing.chosen.values(), key=lambda s: s.file.path),
        format=kind,
        quants=listing.quants,
        available_quants=listing.labels,
        skipped=sorted(p for p in listing.by_path if p not in listing.chosen),
        notes=listing.notes,
        formats_present=listing.present_formats(),
        # Only the flavours inspection can recognise are checked (not compressed-tensors, hqq, eetq).
        flavour=requested if requested in SAFETENSORS_FLAVOURS and requested in WEIGHT_FORMATS else None,
    )
