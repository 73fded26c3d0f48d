"""Which files of a repo to fetch, and what of that is already on disk: a plan, computed before any byte
moves, that `--dry-run` prints and `download` executes.

Selection rules (issue 3, "Choosing the files"):
- Weights of one format. `--format` names it (safetensors, gguf, pytorch, onnx, ...; awq/gptq/exl2/mlx/
  fp8/bnb are safetensors checkpoints). Without it the first format present in FORMAT_PREFERENCE wins, so a
  repo holding the same weights several ways gets safetensors only, and the plan says what was skipped.
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
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from imageworks.errors import EntryNotFound, InsufficientSpace, UsageError
from imageworks.listing import RepoFile
from imageworks.locations import Location, safe_join

# Weight file formats (imageworks.inspect.formats.FILE_FORMATS), in the order a repo's copies of the same
# weights are preferred.
FORMAT_PREFERENCE = ("safetensors", "gguf", "pytorch", "onnx", "h5", "msgpack", "openvino", "tflite")

# `--format` values -> the file format to fetch. The checkpoint flavours that are safetensors files
# underneath map to it; the inspection after the download records the precise format (awq, gptq, ...).
FORMAT_ALIASES: dict[str, str] = {
    **{f: f for f in FORMAT_PREFERENCE},
    **dict.fromkeys(
        (
            "awq",
            "gptq",
            "exl2",
            "exl3",
            "mlx",
            "fp8",
            "bnb",
            "bitsandbytes",
            "compressed-tensors",
            "hqq",
            "eetq",
        ),
        "safetensors",
    ),
    "pt": "pytorch",
    "bin": "pytorch",
    "tf": "h5",
    "tensorflow": "h5",
    "keras": "h5",
    "flax": "msgpack",
}

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
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)

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
    from imageworks.inspect.formats import classify_weight_file

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
    stem = _SPLIT.sub("", PurePosixPath(path).name)
    return re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)


def is_projector(path: str) -> bool:
    return "mmproj" in PurePosixPath(path).name.lower()


def _glob_match(path: str, pattern: str) -> bool:
    if fnmatch.fnmatchcase(path, pattern):
        return True
    return "/" not in pattern and fnmatch.fnmatchcase(PurePosixPath(path).name, pattern)


def _human(num: int) -> str:
    from imageworks.cli.render import human_size

    return human_size(num)


@dataclass(frozen=True)
class SelectedFile:
    file: RepoFile
    role: str  # "weights" | "projector" | "index" | "support" | "included"


@dataclass
class Selection:
    """What to fetch, decided from the listing alone."""

    files: list[SelectedFile]
    format: str | None  # the weight format chosen (gguf, safetensors, pytorch, ...), None without weights
    quants: list[str] = field(default_factory=list)  # GGUF quants chosen
    available_quants: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # paths not fetched
    notes: list[str] = field(default_factory=list)


def _choose_quants(labels: Sequence[str], quant: str | None) -> tuple[list[str], str | None]:
    """(chosen labels, a note when the choice was a default)."""
    from imageworks.inspect.quant import normalize_gguf_label

    if quant is not None and quant.strip().lower() == "all":
        return list(labels), None
    if quant is not None:
        wanted = [normalize_gguf_label(q) for q in quant.split(",") if q.strip()]
        chosen: list[str] = []
        for want in wanted:
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
    for candidate in DEFAULT_QUANT_ORDER:
        if candidate in by_upper:
            pick = by_upper[candidate]
            break
    else:
        pick = sorted(labels)[0]
    others = ", ".join(lab for lab in labels if lab != pick)
    return (
        [pick],
        f"chose quant {pick} (the default order starts Q4_K_M, Q8_0, ...); also available: {others}; use --quant LABEL or --quant all",
    )


def _pick_projectors(projectors: Sequence[RepoFile], all_quants: bool) -> list[RepoFile]:
    if all_quants or len(projectors) <= 1:
        return list(projectors)
    by_label = {gguf_label(p.path).upper(): p for p in projectors}
    for label in _PROJECTOR_ORDER:
        if label in by_label:
            return [by_label[label]]
    return [sorted(projectors, key=lambda p: p.path)[0]]


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
    by_path = {f.path: f for f in files}
    kind_wanted: str | None = None
    if format is not None:
        kind_wanted = FORMAT_ALIASES.get(format.lower())
        if kind_wanted is None:
            raise UsageError(
                f"unknown --format {format!r}", hint=f"use one of: {', '.join(sorted(FORMAT_ALIASES))}"
            )

    weights = {f.path: kind for f in files if (kind := weight_kind(f.path))}
    scope = [f for f in files if f.path in weights]
    if folder:
        scope = [f for f in scope if f.path.startswith(folder.rstrip("/") + "/")]
        if not scope:
            raise EntryNotFound(f"no weight files under {folder}/ in this repo")
    notes: list[str] = []
    chosen: dict[str, SelectedFile] = {}
    quants: list[str] = []
    labels: list[str] = []
    selected_kind: str | None

    if path is not None:
        if quant is not None:
            raise UsageError("--quant cannot be combined with a URL naming one file")
        target = by_path.get(path)
        if target is None:
            raise EntryNotFound(f"this revision has no file {path!r}", hint="check the path in the URL")
        selected_kind = weights.get(path)
        if selected_kind == "gguf" and not is_projector(path) and _SPLIT.search(path):
            # A split GGUF cannot be loaded from one part: bring its siblings.
            stem = _SPLIT.sub("", path)
            parts = [f for f in scope if _SPLIT.sub("", f.path) == stem and _SPLIT.search(f.path)]
            for f in parts:
                chosen[f.path] = SelectedFile(f, "weights")
            if len(parts) > 1:
                notes.append(f"{path} is part of a split model: taking all {len(parts)} parts")
            quants = [gguf_label(path)]
        else:
            chosen[path] = SelectedFile(target, "weights" if selected_kind else "included")
            if selected_kind == "gguf":
                quants = [gguf_label(path)]
    else:
        present = sorted({weights[f.path] for f in scope}, key=FORMAT_PREFERENCE.index)
        if kind_wanted is not None and kind_wanted not in present:
            offered = ", ".join(present) or "none"
            raise UsageError(
                f"this repo has no {format} weights (formats present: {offered})",
                hint="pick one of the formats present with --format, or another repo/revision",
            )
        selected_kind = kind_wanted or (present[0] if present else None)
        if selected_kind is None:
            notes.append("no weight files found: fetching the configuration and documentation files only")
        if quant is not None and selected_kind != "gguf":
            raise UsageError(
                "--quant only applies to GGUF weights", hint="drop --quant, or add --format gguf"
            )
        skipped_kinds = [k for k in present if k != selected_kind]
        for kind in skipped_kinds:
            group = [f for f in scope if weights[f.path] == kind]
            notes.append(
                f"skipped {kind} weights ({len(group)} files, {_human(sum(f.size for f in group))}):"
                f" {selected_kind} preferred; use --format {kind} to get them"
            )
        kind_files = [f for f in scope if weights[f.path] == selected_kind]
        if selected_kind == "gguf":
            models = [f for f in kind_files if not is_projector(f.path)]
            projectors = [f for f in kind_files if is_projector(f.path)]
            labels = sorted({gguf_label(f.path) for f in models}, key=lambda lab: (lab.upper(), lab))
            if models:
                quants, note = _choose_quants(labels, quant)
                if note:
                    notes.append(note)
                for f in models:
                    if gguf_label(f.path) in quants:
                        chosen[f.path] = SelectedFile(f, "weights")
            for f in _pick_projectors(projectors, quant is not None and quant.lower() == "all"):
                chosen[f.path] = SelectedFile(f, "projector")
        elif selected_kind == "safetensors":
            sharded = any(index_kind(f.path) == "safetensors" for f in files)
            consolidated = [f for f in kind_files if PurePosixPath(f.path).name.startswith("consolidated")]
            if sharded and consolidated and len(consolidated) < len(kind_files):
                notes.append(
                    f"skipped {len(consolidated)} consolidated*.safetensors file(s)"
                    f" ({_human(sum(f.size for f in consolidated))}): the same weights as the sharded copy"
                )
                kind_files = [f for f in kind_files if f not in consolidated]
            for f in kind_files:
                chosen[f.path] = SelectedFile(f, "weights")
        else:
            for f in kind_files:
                chosen[f.path] = SelectedFile(f, "weights")

    # Index files and support files.
    selected_weights = [s.file.path for s in chosen.values() if s.role in ("weights", "projector")]
    weight_folders_selected = {str(PurePosixPath(p).parent) for p in selected_weights}
    skipped_weight_folders = {
        str(PurePosixPath(p).parent) for p in weights if p not in chosen
    } - weight_folders_selected
    for f in files:
        if f.path in chosen:
            continue
        kind = index_kind(f.path)
        if kind is not None:
            if kind == selected_kind and str(PurePosixPath(f.path).parent) in weight_folders_selected | {"."}:
                chosen[f.path] = SelectedFile(f, "index")
            continue
        if f.path in weights or not is_support_file(f.path):
            continue
        parent = PurePosixPath(f.path).parent
        ancestors = {str(a) for a in [parent, *parent.parents] if str(a) != "."}
        if ancestors & skipped_weight_folders and not ancestors & weight_folders_selected:
            continue
        if (path is not None or folder) and str(parent) != "." and not ancestors & weight_folders_selected:
            continue
        chosen[f.path] = SelectedFile(f, "support")

    for f in files:
        if f.path not in chosen and any(_glob_match(f.path, g) for g in include):
            chosen[f.path] = SelectedFile(f, "included")
    if include and not any(any(_glob_match(f.path, g) for f in files) for g in include):
        notes.append(f"--include {' '.join(include)} matched no file")
    if exclude:
        removed = [p for p in chosen if any(_glob_match(p, g) for g in exclude)]
        for p in removed:
            del chosen[p]
        if not removed:
            notes.append(f"--exclude {' '.join(exclude)} matched no selected file")

    others = [
        f
        for f in files
        if f.path not in chosen
        and f.path not in weights
        and index_kind(f.path) is None
        and not f.path.startswith(".")
        and not is_support_file(f.path)
    ]
    if others:
        notes.append(
            f"not fetched: {len(others)} other file(s) ({_human(sum(f.size for f in others))}), e.g."
            f" {others[0].path}; use --include GLOB to add them"
        )
    ordered = sorted(chosen.values(), key=lambda s: s.file.path)
    return Selection(
        files=ordered,
        format=selected_kind,
        quants=quants,
        available_quants=labels,
        skipped=sorted(p for p in by_path if p not in chosen),
        notes=notes,
    )


# ------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class KnownFile:
    """What a previous download recorded about a file: enough to trust it without re-hashing."""

    size: int
    sha256: str | None
    mtime_ns: int | None


@dataclass
class PlannedFile:
    path: str  # inside the model folder (POSIX)
    size: int | None
    sha256: str | None  # expected (LFS digest, or --sha256 for a direct URL)
    git_sha1: str | None  # expected git blob id of a small file
    dest: Path
    role: str
    present: bool = False  # on disk and verified: nothing to fetch
    local_sha256: str | None = None  # the digest of what is on disk, when known
    partial_bytes: int = 0  # bytes of an interrupted download on disk, kept for resuming
    engine: str | None = None  # which engine fetches it: "pool" (small files), "aria2" or "native"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "git_sha1": self.git_sha1,
            "dest": str(self.dest),
            "role": self.role,
            "present": self.present,
            "partial_bytes": self.partial_bytes,
            "engine": self.engine,
        }


@dataclass
class DownloadPlan:
    reference: str
    provider: str  # "hf" | "url"
    repo_id: str | None
    revision: str | None
    commit: str | None
    url: str | None
    location: Location
    folder: Path
    format: str | None
    quants: list[str]
    files: list[PlannedFile]
    notes: list[str] = field(default_factory=list)
    available_quants: list[str] = field(default_factory=list)
    free_bytes: int | None = None

    @property
    def bytes_total(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def to_fetch(self) -> list[PlannedFile]:
        return [f for f in self.files if not f.present]

    @property
    def bytes_present(self) -> int:
        return sum(f.size or 0 for f in self.files if f.present)

    @property
    def bytes_remaining(self) -> int:
        return sum(max(0, (f.size or 0) - f.partial_bytes) for f in self.to_fetch)

    @property
    def enough_space(self) -> bool:
        return self.free_bytes is None or self.free_bytes >= self.bytes_remaining

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "provider": self.provider,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "url": self.url,
            "location": self.location.name,
            "folder": str(self.folder),
            "format": self.format,
            "quants": self.quants,
            "available_quants": self.available_quants,
            "files": [f.as_dict() for f in self.files],
            "bytes_total": self.bytes_total,
            "bytes_present": self.bytes_present,
            "bytes_remaining": self.bytes_remaining,
            "free_bytes": self.free_bytes,
            "enough_space": self.enough_space,
            "notes": list(self.notes),
        }


def destination(folder: Path, path: str) -> Path:
    """Where a server path lands: refused (UnsafePathError) when it would leave the model folder."""
    return safe_join(folder, path)


def _allocated(path: Path) -> int:
    try:
        st = path.stat()
    except OSError:
        return 0
    # Partial files are sparse while segments are in flight: count what is really on disk.
    blocks = getattr(st, "st_blocks", None)
    return st.st_size if blocks is None else min(st.st_size, blocks * 512)


def check_present(planned: PlannedFile, known: KnownFile | None) -> None:
    """Fill `present`/`local_sha256`/`partial_bytes` from the disk. A file recorded by an earlier download
    (same size and mtime, same digest) is trusted without reading it, which keeps an up-to-date re-run
    under a second; anything else on disk is hashed and compared."""
    from imageworks.hashing import hash_file
    from imageworks.transfer.base import PartialPaths

    dest = planned.dest
    try:
        st = dest.stat()
    except OSError:
        st = None
    if st is not None and dest.is_file() and (planned.size is None or st.st_size == planned.size):
        if (
            known is not None
            and known.size == st.st_size
            and known.mtime_ns == st.st_mtime_ns
            and known.sha256
            and (planned.sha256 is None or known.sha256 == planned.sha256)
            and planned.git_sha1 is None
        ):
            planned.present = True
            planned.local_sha256 = known.sha256
            return
        if planned.sha256 or planned.git_sha1:
            on_disk = hash_file(dest, git_blob=planned.git_sha1 is not None).checked()
            sha256, sha1 = on_disk.sha256, on_disk.git_sha1
            ok = (planned.sha256 is None or sha256 == planned.sha256) and (
                planned.git_sha1 is None or sha1 == planned.git_sha1
            )
            if ok:
                planned.present = True
                planned.local_sha256 = sha256
                return
    planned.partial_bytes = min(planned.size or 0, _allocated(PartialPaths.for_dest(dest).temp))


def free_space(folder: Path) -> int | None:
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return None
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def check_space(plan: DownloadPlan) -> None:
    if not plan.enough_space:
        assert plan.free_bytes is not None
        raise InsufficientSpace(
            f"not enough free space in {plan.folder}: {_human(plan.bytes_remaining)} to fetch,"
            f" {_human(plan.free_bytes)} free",
            hint="free some space or choose another --location",
        )


def build_plan(
    *,
    reference: str,
    provider: str,
    location: Location,
    folder: Path,
    files: Iterable[tuple[str, int | None, str | None, str | None, str]],
    known: Mapping[str, KnownFile] | None = None,
    format: str | None = None,
    quants: Sequence[str] = (),
    available_quants: Sequence[str] = (),
    notes: Sequence[str] = (),
    repo_id: str | None = None,
    revision: str | None = None,
    commit: str | None = None,
    url: str | None = None,
    check_disk: bool = True,
) -> DownloadPlan:
    """`files` are (path, size, sha256, git_sha1, role). Every path is checked against the folder
    (UnsafePathError) before anything else, so a hostile listing fails the whole plan."""
    known = known or {}
    planned = [
        PlannedFile(path, size, sha256, git_sha1, destination(folder, path), role)
        for path, size, sha256, git_sha1, role in files
    ]
    if check_disk:
        for item in planned:
            check_present(item, known.get(item.path))
    return DownloadPlan(
        reference=reference,
        provider=provider,
        repo_id=repo_id,
        revision=revision,
        commit=commit,
        url=url,
        location=location,
        folder=folder,
        format=format,
        quants=list(quants),
        files=planned,
        notes=list(notes),
        available_quants=list(available_quants),
        free_bytes=free_space(folder),
    )


def known_files(records: Iterable[Any]) -> dict[str, KnownFile]:
    """KnownFile per relative path, from registry FileRecords (path, size, sha256, mtime_ns)."""
    return {r.path: KnownFile(r.size, r.sha256, r.mtime_ns) for r in records}
