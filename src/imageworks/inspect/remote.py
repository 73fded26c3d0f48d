"""Inspect a remote repo from its file listing, reading small files whole and weight headers with Range
reads. The transport is the caller's: `read_range(path, start, end)` returns bytes [start, end) of a file
(an HTTP `Range: bytes=start-(end-1)`), `read_small(path)` a whole small file. Errors they raise (network,
auth) propagate: a repo we cannot read is the caller's error to report, not an "unknown" model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from imageworks.inspect.gguf import inspect_gguf_source
from imageworks.inspect.quant import gguf_label_from_name
from imageworks.inspect.repo import PREFERRED_GGUF, analyse
from imageworks.inspect.safetensors import REMOTE_PREFETCH, inspect_safetensors_source
from imageworks.inspect.source import RangeSource, ReadRange
from imageworks.inspect.types import FileInspection, ModelInspection
from imageworks.listing import RepoFile

ReadSmall = Callable[[str], bytes]
MAX_REMOTE_SMALL = 16 * 1024 * 1024


class _RemoteAccess:
    def __init__(self, sizes: dict[str, int], read_range: ReadRange, read_small: ReadSmall) -> None:
        self.sizes = sizes
        self.read_range = read_range
        self.read_small = read_small
        self.bytes_read = 0

    def small(self, path: str) -> bytes | None:
        if self.sizes.get(path, 0) > MAX_REMOTE_SMALL:
            return None
        data = self.read_small(path)
        self.bytes_read += len(data)
        return data

    def prefix(self, path: str, n: int) -> bytes | None:
        data = self.read_range(path, 0, min(n, self.sizes.get(path, n)))
        self.bytes_read += len(data)
        return data

    def gguf(self, f: RepoFile) -> FileInspection:
        src = RangeSource(f.path, f.size, self.read_range)
        result = inspect_gguf_source(src, f.path)
        self.bytes_read += src.bytes_read
        return result

    def safetensors(self, f: RepoFile) -> FileInspection:
        src = RangeSource(f.path, f.size, self.read_range)
        result = inspect_safetensors_source(src, f.path, prefetch=REMOTE_PREFETCH)
        self.bytes_read += src.bytes_read
        return result


def _gguf_policy(quants: int) -> Callable[[list[RepoFile]], set[str]]:
    """Read the headers of every part of `quants` quant(s), preferred ones first, and of the projectors:
    a modern GGUF stores general.file_type after the tokenizer (megabytes in), so a header per quant
    would cost a full KV read each; the other quants are named by their filenames (the evidence says so)."""

    def choose(files: list[RepoFile]) -> set[str]:
        by_label: dict[str, list[RepoFile]] = {}
        chosen: set[str] = set()
        for f in files:
            if "mmproj" in f.path.lower():
                chosen.add(f.path)
                continue
            by_label.setdefault(gguf_label_from_name(f.path) or "", []).append(f)
        order = sorted(
            by_label,
            key=lambda lb: (
                lb not in PREFERRED_GGUF,
                PREFERRED_GGUF.index(lb) if lb in PREFERRED_GGUF else 0,
                lb,
            ),
        )
        for label in order[:quants]:
            chosen.update(f.path for f in by_label[label])
        return chosen

    return choose


def inspect_remote(
    files: Sequence[RepoFile],
    read_range: ReadRange,
    read_small: ReadSmall,
    *,
    gguf_headers: int = 1,
    all_safetensors: bool = False,
    name_hint: str = "",
) -> ModelInspection:
    """What a remote repo offers: formats and GGUF quants with sizes (`offers`), and the dtype and
    parameter count of its safetensors weights, from headers read with Range requests.

    `gguf_headers`: how many GGUF quants get their headers read (the rest are labelled by filename).
    `all_safetensors`: also read the headers of alternative safetensors sets (consolidated.safetensors...).
    `name_hint`: the repo id or revision, searched for an EXL2 "4.0bpw" when no config gives the bits.
    """
    listing = list(files)
    access = _RemoteAccess({f.path: f.size for f in files}, read_range, read_small)
    return analyse(
        listing,
        access,
        gguf_headers=_gguf_policy(gguf_headers),
        read_alternatives=all_safetensors,
        name_hint=name_hint,
    )
