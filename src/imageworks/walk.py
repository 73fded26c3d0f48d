"""The folder walk: which folders under a base hold a model, and which files each holds.

Layout (relative to the location root that holds the scanned folder, or to `--base` itself when it lies
outside every configured location):

  <owner>/<repo>/...           an HF repo as `download` lays it out: provider hf, repo id owner/repo
  <owner>/<repo>@<rev>/...     the same at revision <rev> (the folder name's part after the last '@')
  <publisher>/<model-folder>/  LM Studio's layout under its root: the same two levels, so the same rule
  <folder>/<weights>           weight files one level down (or in --base itself): provider local,
                               named local/<parent>/<folder>
  url/<host>/<file stem>/      what `download URL` writes: provider url, matched to its entry by folder
  a/b/.../<folder>/            deeper trees: an <owner>/<repo> level that holds only folders (no file of
                               its own, no weights one level down) just groups them; below it the folder
                               holding weights (or config.json / model_index.json) is a local model,
                               named local/<parent>/<folder>

Everything below an `<owner>/<repo>` folder belongs to that model (GGUF quants in subfolders, split parts).
Hidden files and folders (`.git`, `.cache`, `.<name>.imageworks-partial` downloads in progress) are not
part of any model.

Used by `scan` (to find models) and `normalize-formats` (to list an entry's folder again); both list a
folder by the same rules `imageworks.inspect.inspect_folder` reads it with.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imageworks.errors import UsageError

# Hidden files a download leaves beside its target (transfer.base.PartialPaths; aria2's control file;
# the resume record's temp name while it is replaced), and huggingface_hub's blob in progress.
PARTIAL_SUFFIX = ".imageworks-partial"
_LEFTOVER_SUFFIXES = (
    PARTIAL_SUFFIX,
    PARTIAL_SUFFIX + ".json",
    PARTIAL_SUFFIX + ".json.tmp",
    PARTIAL_SUFFIX + ".aria2",
)
_HF_INCOMPLETE = ".incomplete"

# Folders that are never model folders of their own: Hugging Face's cache layout stores blobs under
# content hashes, so its names say nothing about the model (use `hf cache scan` for it).
_HF_CACHE_PREFIXES = ("models--", "datasets--", "spaces--")

# Files that make the folder holding them a model even when its weights lie in subfolders (diffusers'
# unet/, vae/; a transformers model with onnx/ beside it).
_MODEL_CONFIGS = frozenset({"config.json", "model_index.json"})
MAX_WALK_DEPTH = 8  # folders below the layout root; deeper trees are reported, not walked


@dataclass(frozen=True)
class FileStat:
    """One regular file of a model folder: POSIX path relative to the folder, size, mtime."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class ModelFolder:
    """A folder that holds (or, by its place in the layout, should hold) one model."""

    path: Path  # absolute, as reached from the base (symlinks kept, so the user's layout shows)
    layout: tuple[str, ...]  # components below the layout root, e.g. ("Qwen", "Qwen2-7B@dev")
    files: list[FileStat]
    partials: list[str] = field(default_factory=list)  # hidden downloads in progress (relative paths)
    problem: str | None = None  # set when the folder cannot be read completely
    notes: list[str] = field(default_factory=list)

    @property
    def partial_files(self) -> int:
        return len(self.partials)


@dataclass
class FolderListing:
    files: list[FileStat]
    problem: str | None
    notes: list[str]
    partials: list[str] = field(default_factory=list)  # downloads in progress or interrupted
    stale: list[str] = field(default_factory=list)  # resume records of downloads that completed


def _describe_os_error(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _printable(path: Path | str) -> str | None:
    """None when a name cannot be stored as UTF-8 JSON (undecodable bytes from the filesystem)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


def _safe_str(path: Path | str) -> str:
    """A path for messages: undecodable bytes shown as \\xNN instead of breaking the output."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def list_model_files(folder: Path, *, recursive: bool = True) -> FolderListing:
    """Every regular file below `folder`, by the rules `inspect_folder` lists a folder with (so the two
    agree on what a model holds): hidden names skipped, symlinked files followed, symlinked subfolders
    not followed (noted, and called a loop when they point back up), at most MAX_DEPTH levels. A
    subfolder that cannot be read makes the listing incomplete: the caller reports it rather than record
    part of a model. Hidden download leftovers are sorted into downloads in progress and stale records
    (`_sort_partials`)."""
    from imageworks.inspect.folder import MAX_DEPTH

    listing = FolderListing([], None, [])
    try:
        top = os.stat(folder)
    except OSError as exc:
        listing.problem = f"cannot read {_safe_str(folder)}: {_describe_os_error(exc)}"
        return listing
    stack: list[tuple[Path, str, int, frozenset[tuple[int, int]]]] = [
        (folder, "", 0, frozenset({(top.st_dev, top.st_ino)}))
    ]
    while stack and listing.problem is None:
        current, prefix, depth, ancestors = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            listing.problem = f"cannot read {_safe_str(current)}: {_describe_os_error(exc)}"
            break
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            if _printable(rel) is None:
                listing.problem = f"name is not valid UTF-8: {_safe_str(current / entry.name)}"
                break
            try:
                st = entry.stat()  # follows symlinks
            except OSError as exc:
                listing.notes.append(f"ignored {rel}: {_link_problem(entry, exc)}")
                continue
            if statmod.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if entry.is_symlink():
                    why = (
                        "symlink loop (points back to a parent folder)"
                        if key in ancestors
                        else "symlinked folder (not followed)"
                    )
                    listing.notes.append(f"ignored {rel}: {why}")
                elif recursive and depth + 1 < MAX_DEPTH:
                    stack.append((Path(entry.path), rel + "/", depth + 1, ancestors | {key}))
            elif statmod.S_ISREG(st.st_mode):
                listing.files.append(FileStat(rel, st.st_size, st.st_mtime_ns))
        _sort_partials(listing, current, prefix, [e.name for e in entries if e.name.startswith(".")])
    listing.files.sort(key=lambda f: f.path)
    return listing


def _partial_target(name: str) -> tuple[str, bool] | None:
    """For a hidden download leftover: (the final file's name, whether it is the partial data itself
    rather than a record about it). None for any other hidden name."""
    if name.endswith(_HF_INCOMPLETE):
        return "", True  # huggingface_hub's blob in progress: always a download in progress
    for suffix in _LEFTOVER_SUFFIXES:
        if name.endswith(suffix):
            return name[1 : -len(suffix)], suffix == PARTIAL_SUFFIX
    return None


def _sort_partials(listing: FolderListing, folder: Path, prefix: str, hidden: Sequence[str]) -> None:
    """A partial data file (`.<name>.imageworks-partial`) is a download in progress or interrupted. A
    resume record (`.json`, aria2's `.aria2`) without its data file, beside a complete `<name>`, is
    stale: a finished download (files are renamed into place only once verified) whose record was left
    behind, e.g. by two downloads of one model at once. It is noted, not a reason to skip the folder."""
    leftovers = [(name, target) for name in hidden if (target := _partial_target(name)) is not None]
    with_data = {final for _, (final, is_data) in leftovers if is_data}
    for name, (final, is_data) in leftovers:
        rel = prefix + name
        if not is_data and final not in with_data and _complete(folder, name, final):
            listing.stale.append(rel)
        else:
            listing.partials.append(rel)


def _complete(folder: Path, record: str, final: str) -> bool:
    """Whether `final` is in place with the size its resume record expects (when the record says)."""
    try:
        st = os.stat(folder / final)
    except OSError:
        return False
    if not statmod.S_ISREG(st.st_mode):
        return False
    if record.endswith(".json"):
        import json

        try:
            with open(folder / record, "rb") as handle:
                size = json.loads(handle.read(64 * 1024)).get("size")
        except (OSError, ValueError, AttributeError, RecursionError):
            return True  # an unreadable record cannot resume anything either
        return not isinstance(size, int) or size == st.st_size
    return True


def _link_problem(entry: os.DirEntry[str], exc: OSError) -> str:
    if entry.is_symlink():
        import errno

        if exc.errno == errno.ELOOP:
            return "symlink loop"
        try:
            target = os.readlink(entry.path)
        except OSError:
            target = "?"
        return f"dangling symlink (-> {_safe_str(target)})"
    return _describe_os_error(exc)


def is_weight(name: str) -> bool:
    from imageworks.inspect import classify_weight_file

    return classify_weight_file(name) is not None


@dataclass
class Discovery:
    """The model folders found under a base, and what was skipped on the way. `layout_root` is the
    location root the layout is read from (None when the base lies outside every location: then the
    base itself is the root)."""

    base: Path
    layout_root: Path | None
    folders: list[ModelFolder]
    skipped: list[Skip]


def find_model_folders(base: Path, *, layout_roots: Sequence[Path] = ()) -> Discovery:
    """Walk `base` for model folders (see the module docstring for the layout)."""
    base = Path(base).expanduser().absolute()
    try:
        st = os.stat(base)
    except OSError as exc:
        raise UsageError(
            f"cannot scan {base}: {_describe_os_error(exc)}", hint="give an existing folder with --base"
        ) from None
    if not statmod.S_ISDIR(st.st_mode):
        raise UsageError(f"cannot scan {base}: not a folder", hint="give a folder with --base")

    layout_root, base_parts = _layout_root_for(base, layout_roots)
    discovery = Discovery(base, layout_root, [], [])
    # Loose weights in a location root belong to no model; in any other base, they are its model.
    is_location_root = layout_root is not None and not base_parts
    _walk(discovery, base, base_parts, frozenset({(st.st_dev, st.st_ino)}), is_location_root)
    discovery.folders.sort(key=lambda f: str(f.path))
    return discovery


def _layout_root_for(base: Path, layout_roots: Sequence[Path]) -> tuple[Path | None, tuple[str, ...]]:
    """The configured root holding `base` (the deepest one), and `base`'s components below it."""
    best: tuple[Path, tuple[str, ...]] | None = None
    for root in layout_roots:
        root = Path(root).expanduser().absolute()
        for candidate_base, candidate_root in ((base, root), (resolved_path(base), resolved_path(root))):
            try:
                parts = candidate_base.relative_to(candidate_root).parts
            except ValueError:
                continue
            if best is None or len(parts) < len(best[1]):
                best = (root, parts)
            break
    return best if best is not None else (None, ())


def resolved_path(path: Path) -> Path:
    """`path` with symlinks resolved, or as given (absolute) when it cannot be resolved (a loop, a
    folder that cannot be read): for comparing folders, never for opening them."""
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def _walk(
    discovery: Discovery,
    folder: Path,
    parts: tuple[str, ...],
    ancestors: frozenset[tuple[int, int]],
    is_location_root: bool,
) -> None:
    try:
        with os.scandir(folder) as it:
            visible = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        discovery.skipped.append(Skip(_safe_str(folder), f"unreadable folder: {_describe_os_error(exc)}"))
        return
    role = _role(parts, visible)
    if role == "model":
        _add_model_folder(discovery, folder, parts, recursive=True)
        return
    if not visible:
        if parts:  # an empty owner folder; an empty base is simply nothing to scan
            discovery.skipped.append(Skip(_safe_str(folder), "empty folder"))
        return
    if role == "owner":
        _loose_weights(discovery, folder, parts, visible, is_location_root)
    elif not any(_entry_is_dir(e) for e in visible):
        discovery.skipped.append(Skip(_safe_str(folder), "no weight files"))
        return
    if len(parts) >= MAX_WALK_DEPTH:
        discovery.skipped.append(Skip(_safe_str(folder), f"nested deeper than {MAX_WALK_DEPTH} folders"))
        return
    _walk_subfolders(discovery, folder, parts, ancestors, visible)


def _role(parts: tuple[str, ...], visible: Sequence[os.DirEntry[str]]) -> str:
    """What a folder is by its place in the layout and what it holds: "owner" (above the model level:
    loose weights there are a model of their own, subfolders are walked), "model", or "group" (a folder
    that only groups models further down, as `url/<host>/` or `misc/nested/` do: walked)."""
    if len(parts) < 2:
        return "owner"
    if parts[0] == "url" and len(parts) <= 3:
        # <root>/url/<host>/<file stem>/<file>: what `download URL` writes.
        return "model" if len(parts) == 3 else "group"
    if len(parts) == 2:
        # <owner>/<repo>: the repo's files may all lie in subfolders (GGUF quants), one level down.
        if not visible or any(not _entry_is_dir(e) for e in visible) or any(map(_holds_weights, visible)):
            return "model"
        return "group"
    # Deeper than the <owner>/<repo> layout: the folder that holds the weights (or a diffusers or
    # transformers config beside its subfolders) is the model, named local/<parent>/<folder>.
    if any((is_weight(e.name) or e.name in _MODEL_CONFIGS) and _entry_is_file(e) for e in visible):
        return "model"
    return "group"


def _holds_weights(entry: os.DirEntry[str]) -> bool:
    """Whether a (real, not symlinked) subfolder directly holds a weight file."""
    if not _entry_is_dir(entry) or entry.is_symlink():
        return False
    try:
        with os.scandir(entry.path) as it:
            return any(is_weight(e.name) and _entry_is_file(e) for e in it if not e.name.startswith("."))
    except OSError:
        return True  # unreadable: let the model folder's listing report it


def _loose_weights(
    discovery: Discovery,
    folder: Path,
    parts: tuple[str, ...],
    visible: Sequence[os.DirEntry[str]],
    is_location_root: bool,
) -> None:
    loose_weights = [e.name for e in visible if _entry_is_file(e) and is_weight(e.name)]
    if not loose_weights:
        return
    if is_location_root:
        for name in loose_weights:
            discovery.skipped.append(
                Skip(
                    _safe_str(folder / name),
                    "weight file directly in the location root: move it into <owner>/<repo>/",
                )
            )
    else:
        # Weights right here: a model folder of its own (its subfolders are still looked at, since
        # this level may also be an owner folder).
        _add_model_folder(discovery, folder, parts, recursive=False)


def _walk_subfolders(
    discovery: Discovery,
    folder: Path,
    parts: tuple[str, ...],
    ancestors: frozenset[tuple[int, int]],
    visible: Sequence[os.DirEntry[str]],
) -> None:
    for entry in visible:
        path = folder / entry.name
        if _printable(path) is None:
            discovery.skipped.append(Skip(_safe_str(path), "name is not valid UTF-8"))
            continue
        try:
            st = entry.stat()
        except OSError as exc:
            if entry.is_symlink():
                discovery.skipped.append(Skip(str(path), _link_problem(entry, exc)))
            else:
                discovery.skipped.append(Skip(str(path), f"unreadable: {_describe_os_error(exc)}"))
            continue
        if not statmod.S_ISDIR(st.st_mode):
            continue
        if entry.name.startswith(_HF_CACHE_PREFIXES):
            discovery.skipped.append(
                Skip(str(path), "Hugging Face cache folder (content-addressed): not a model folder")
            )
            continue
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            discovery.skipped.append(Skip(str(path), "symlink loop (points back to a parent folder)"))
            continue
        _walk(discovery, path, (*parts, entry.name), ancestors | {key}, False)


def _entry_is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _entry_is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _add_model_folder(discovery: Discovery, folder: Path, parts: tuple[str, ...], *, recursive: bool) -> None:
    listing = list_model_files(folder, recursive=recursive)
    discovery.folders.append(
        ModelFolder(
            path=folder,
            layout=parts,
            files=listing.files,
            partials=listing.partials,
            problem=listing.problem,
            notes=[
                *listing.notes,
                *(f"ignored {rel}: stale record of a completed download" for rel in listing.stale),
            ],
        )
    )


def layout_source(parts: tuple[str, ...]) -> tuple[str, str | None, str | None]:
    """(provider, repo_id, revision) that a folder's place in the layout implies."""
    if len(parts) == 3 and parts[0] == "url":
        return "url", None, None  # the URL itself is not in the path: matched by folder, named by file
    if len(parts) == 2:
        owner, repo = parts
        revision: str | None = None
        if "@" in repo:
            repo, _, revision = repo.rpartition("@")
            revision = revision or None
        if owner and repo:
            return "hf", f"{owner}/{repo}", revision
    return "local", None, None
