"""GGUF header reader: the KV section and the tensor infos, never the tensor data.

A small streaming reader rather than gguf.GGUFReader: GGUFReader memory-maps a whole local file (it cannot
parse a bytes prefix fetched with a Range request) and imports numpy. This one reads through any
`ByteSource` in growing chunks, decodes only the keys it needs, skips the rest (tokenizer arrays of 150k
strings included) without allocating them, and caps every length against hostile input.
Format reference: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from math import prod
from pathlib import PurePosixPath

from imageworks.formats import GGUF_SPLIT
from imageworks.inspect.quant import (
    GGML_TYPES,
    GGUF_LABELS,
    gguf_file_type_label,
    gguf_label_from_name,
    refines,
)
from imageworks.inspect.source import ByteSource, inspect_input
from imageworks.inspect.types import Evidence, FileInspection

MAGIC = b"GGUF"
MAX_HEADER_BYTES = 128 * 1024 * 1024  # KV + tensor infos; real files stay under ~30 MB (big vocabularies)
MAX_KEY_BYTES = 64 * 1024
MAX_STRING_BYTES = 16 * 1024 * 1024  # any one string we decode (chat templates reach ~100 KB)
MAX_COUNT = 1 << 22  # KV pairs, tensors
MAX_DIMS = 8  # ggml has 4; anything above is garbage
MAX_ARRAY_DEPTH = 3
FIRST_CHUNK = 64 * 1024
MAX_CHUNK = 8 * 1024 * 1024

_T_STRING, _T_ARRAY = 8, 9
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_SCALAR_SIZE = {t: struct.calcsize(f) for t, f in _SCALARS.items()}

# Keys whose values we decode; everything else is skipped (chat templates are only tested for presence).
_WANTED = frozenset(
    {
        "general.architecture",
        "general.name",
        "general.type",
        "general.file_type",
        "general.alignment",
        "general.size_label",
        "general.basename",
        "general.finetune",
        "general.quantized_by",
        "general.quantization_version",
        "split.no",
        "split.count",
        "split.tensors.count",
        "clip.has_vision_encoder",
        "clip.has_audio_encoder",
        "clip.projector_type",
        "clip.vision.projector_type",
    }
)
_SPLIT_NAME = GGUF_SPLIT


class GGUFError(ValueError):
    """The header cannot be parsed."""


@dataclass
class GGUFHeader:
    version: int
    kv: dict[str, object] = field(default_factory=dict)
    kv_count: int = 0
    chat_template: bool = False
    tensor_count: int = 0
    tensor_types: dict[str, int] = field(default_factory=dict)  # ggml type name -> elements
    parameters: int | None = None
    data_end: int | None = None  # offset the file must reach for all tensor data to be present
    header_end: int = 0


class _Cursor:
    """Sequential reads over a ByteSource through a window that grows by doubling."""

    def __init__(self, src: ByteSource) -> None:
        self.src = src
        self.pos = 0
        self.buf = b""
        self.buf_start = 0
        self.chunk = FIRST_CHUNK
        self.endian = "<"

    def need(self, n: int) -> int:
        """Make [pos, pos+n) available; return its index in self.buf."""
        rel = self.pos - self.buf_start
        if rel >= 0 and rel + n <= len(self.buf):
            return rel
        if self.pos + n > MAX_HEADER_BYTES:
            raise GGUFError(f"header larger than the {MAX_HEADER_BYTES >> 20} MiB cap")
        size = self.src.size
        if size is not None and self.pos + n > size:
            raise GGUFError(f"truncated: the header runs past the end of the file ({size} bytes)")
        keep = self.buf[rel:] if 0 <= rel <= len(self.buf) else b""
        start = self.pos + len(keep)
        want = max(n - len(keep), self.chunk)
        if size is not None:
            want = min(want, size - start)
        self.chunk = min(self.chunk * 2, MAX_CHUNK)
        data = self.src.read_at(start, want) if want > 0 else b""
        self.buf = keep + data
        self.buf_start = self.pos
        if len(self.buf) < n:
            raise GGUFError(f"truncated: the header runs past the {self.pos + len(self.buf)} bytes available")
        return 0

    def skip(self, n: int) -> None:
        self.pos += n
        if self.pos > MAX_HEADER_BYTES:
            raise GGUFError(f"header larger than the {MAX_HEADER_BYTES >> 20} MiB cap")
        if self.src.size is not None and self.pos > self.src.size:
            raise GGUFError(f"truncated: the header runs past the end of the file ({self.src.size} bytes)")

    def scalar(self, fmt: str, size: int) -> object:
        i = self.need(size)
        (value,) = struct.unpack_from(self.endian + fmt, self.buf, i)
        self.pos += size
        return value

    def u32(self) -> int:
        return int(self.scalar("I", 4))  # type: ignore[call-overload]

    def u64(self) -> int:
        return int(self.scalar("Q", 8))  # type: ignore[call-overload]

    def string(self, limit: int, what: str) -> bytes:
        n = self.u64()
        if n > limit:
            raise GGUFError(f"absurd {what} length {n}")
        i = self.need(n)
        self.pos += n
        return self.buf[i : i + n]

    def skip_string(self) -> int:
        n = self.u64()
        if n > MAX_HEADER_BYTES:
            raise GGUFError(f"absurd string length {n}")
        self.skip(n)
        return n

    def skip_strings(self, count: int) -> None:
        """Skip `count` length-prefixed strings. The hot loop of a tokenizer array: walk the window
        directly and only fall back to need() when a string crosses its end."""
        fmt = struct.Struct(self.endian + "Q")
        while count:
            i = self.pos - self.buf_start
            buf = self.buf
            end = len(buf)
            if i >= 0:
                while count and i + 8 <= end:
                    (n,) = fmt.unpack_from(buf, i)
                    j = i + 8 + n
                    if j > end:
                        break
                    i = j
                    count -= 1
                self.pos = self.buf_start + i
            if count:
                self.skip_string()
                count -= 1


def _read_value(cur: _Cursor, vtype: int, depth: int, decode: bool) -> object:
    if vtype in _SCALARS:
        return cur.scalar(_SCALARS[vtype], _SCALAR_SIZE[vtype])
    if vtype == _T_STRING:
        if not decode:
            cur.skip_string()
            return None
        raw = cur.string(MAX_STRING_BYTES, "string")
        return raw.decode("utf-8", errors="replace")
    if vtype == _T_ARRAY:
        if depth >= MAX_ARRAY_DEPTH:
            raise GGUFError("arrays nested too deep")
        etype = cur.u32()
        count = cur.u64()
        min_size = _SCALAR_SIZE.get(etype, 8 if etype == _T_STRING else 12 if etype == _T_ARRAY else 0)
        if not min_size:
            raise GGUFError(f"unknown array element type {etype}")
        if count * min_size > MAX_HEADER_BYTES - cur.pos:
            raise GGUFError(f"array of {count} elements cannot fit in the header")
        if etype in _SCALARS:
            cur.skip(count * min_size)
        elif etype == _T_STRING:
            cur.skip_strings(count)
        else:
            for _ in range(count):
                _read_value(cur, etype, depth + 1, False)
        return None
    raise GGUFError(f"unknown value type {vtype}")


def _read_kv(cur: _Cursor, header: GGUFHeader, n_kv: int) -> None:
    """The key/value section: keep the keys we use, note a chat template, skip the rest (tokenizer
    arrays are most of a header and are skipped without decoding)."""
    for _ in range(n_kv):
        raw_key = cur.string(MAX_KEY_BYTES, "key")
        try:
            key = raw_key.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFError(f"key is not UTF-8 ({raw_key[:40]!r})") from exc
        vtype = cur.u32()
        if key == "tokenizer.chat_template" or key.startswith(
            ("tokenizer.chat_template.", "tokenizer.chat_templates")
        ):
            start = cur.pos
            _read_value(cur, vtype, 0, False)
            header.chat_template = header.chat_template or cur.pos - start > 8
            continue
        wanted = key in _WANTED or key.endswith(".context_length")
        value = _read_value(cur, vtype, 0, wanted)
        if wanted and value is not None:
            header.kv[key] = value


def _read_tensor_infos(cur: _Cursor, n_tensors: int) -> tuple[dict[str, int], int, int, bool]:
    """(elements per ggml type, parameters, end of the tensor data relative to the data section, whether
    every type's size is known)."""
    types: dict[str, int] = {}
    params = 0
    data_end = 0
    sizes_known = True
    for _ in range(n_tensors):
        cur.skip_string()  # tensor name
        n_dims = cur.u32()
        if n_dims > MAX_DIMS:
            raise GGUFError(f"tensor with {n_dims} dimensions")
        dims = [cur.u64() for _ in range(n_dims)]
        ttype = cur.u32()
        offset = cur.u64()
        elements = prod(dims)
        params += elements
        info = GGML_TYPES.get(ttype)
        name = info[0] if info else f"type{ttype}"
        types[name] = types.get(name, 0) + elements
        if info is None:
            sizes_known = False
            continue
        _, block, type_size = info
        data_end = max(data_end, offset + -(-elements // block) * type_size)
    return types, params, data_end, sizes_known


def read_header(src: ByteSource) -> GGUFHeader:
    """Parse a GGUF header from `src`; raises GGUFError with the reason."""
    cur = _Cursor(src)
    try:
        cur.need(4)
    except GGUFError as exc:
        raise GGUFError("empty or too short for a GGUF file") from exc
    magic = cur.buf[:4]
    if magic != MAGIC:
        raise GGUFError(f"not a GGUF file (magic {magic!r})")
    cur.pos = 4
    version = cur.u32()
    if version not in (2, 3) and version > 0 and (version & 0xFFFF) == 0:
        # A big-endian GGUF: the version reads byte-swapped.
        cur.endian = ">"
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version == 1:
        raise GGUFError("GGUF version 1 (2023, 32-bit lengths) is not supported")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    header = GGUFHeader(version=version)
    n_tensors = cur.u64()
    n_kv = cur.u64()
    if n_tensors > MAX_COUNT or n_kv > MAX_COUNT:
        raise GGUFError(f"absurd counts: {n_tensors} tensors, {n_kv} key/value pairs")
    header.kv_count = n_kv
    header.tensor_count = n_tensors
    _read_kv(cur, header, n_kv)
    types, params, data_end, sizes_known = _read_tensor_infos(cur, n_tensors)
    alignment = header.kv.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"invalid general.alignment {alignment!r}")
    header.header_end = cur.pos
    header.tensor_types = types
    header.parameters = params
    if not sizes_known:
        header.data_end = None
    elif data_end == 0:
        # No tensor data follows (a vocab-only file, as llama.cpp's converter writes with --vocab-only
        # and ships in models/ggml-vocab-*.gguf): the padding that aligns the data section is not written.
        header.data_end = cur.pos
    else:
        header.data_end = -(-cur.pos // alignment) * alignment + data_end
    return header


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def inspect_gguf(
    data_or_path: bytes | bytearray | memoryview | str | os.PathLike[str],
    *,
    size: int | None = None,
    path: str | None = None,
) -> FileInspection:
    """Inspect one GGUF file from its path, or from bytes. Bytes are the whole file unless `size` (the real
    file size) says they are a prefix; `path` names bytes input (its filename is the quant fallback)."""
    return inspect_input(data_or_path, size, path, inspect_gguf_source)


def inspect_gguf_source(src: ByteSource, path: str) -> FileInspection:
    size = src.size or 0
    result = FileInspection(path=path, size=size, format="gguf")
    try:
        header = read_header(src)
    except (GGUFError, OSError) as exc:
        result.format = "unknown"
        result.error = str(exc) if isinstance(exc, GGUFError) else f"unreadable: {exc}"
        result.bytes_read = src.bytes_read
        return result
    result.bytes_read = src.bytes_read
    _fill(result, header, path)
    if header.data_end is not None and src.size is not None and src.size < header.data_end:
        result.error = f"truncated: tensor data needs {header.data_end} bytes, the file has {src.size}"
    return result


def _fill(result: FileInspection, header: GGUFHeader, path: str) -> None:
    kv = header.kv
    ev = result.evidence
    arch = _str(kv.get("general.architecture"))
    result.architecture = arch
    result.name = _str(kv.get("general.name"))
    for key in (
        "general.type",
        "general.size_label",
        "general.basename",
        "general.finetune",
        "general.quantized_by",
    ):
        if _str(kv.get(key)):
            result.metadata[key] = str(kv[key])
    result.tensor_count = header.tensor_count
    result.dtypes = dict(sorted(header.tensor_types.items(), key=lambda kv_: -kv_[1]))
    result.dtype = next(iter(result.dtypes), None)
    result.parameters = header.parameters if header.tensor_count else None
    result.chat_template = header.chat_template
    if header.chat_template:
        ev.append(Evidence("gguf.tokenizer.chat_template", "present"))
    if arch:
        ctx = _int(kv.get(f"{arch}.context_length"))
        if ctx:
            result.context_length = ctx
            ev.append(Evidence(f"gguf.{arch}.context_length", str(ctx)))
    name = PurePosixPath(path.replace("\\", "/")).name
    _fill_projector(result, kv, arch, name)
    _fill_split(result, kv, name)
    _fill_quantization(result, kv, path)


def _fill_projector(result: FileInspection, kv: dict[str, object], arch: str | None, name: str) -> None:
    # mmproj: llama.cpp writes general.type "mmproj" and the dummy architecture "clip".
    projector_signals = [
        s
        for s, hit in (
            ("general.type=mmproj", kv.get("general.type") == "mmproj"),
            ("general.architecture=clip", arch == "clip"),
            ("filename contains mmproj", "mmproj" in name.lower()),
        )
        if hit
    ]
    if projector_signals:
        result.is_projector = True
        result.evidence.append(Evidence("gguf.projector", ", ".join(projector_signals)))


def _fill_split(result: FileInspection, kv: dict[str, object], name: str) -> None:
    split_no, split_count = _int(kv.get("split.no")), _int(kv.get("split.count"))
    if split_no is not None and split_count and split_count > 1:
        result.split = (split_no + 1, split_count)
        result.evidence.append(Evidence("gguf.split", f"split.no={split_no} split.count={split_count}"))
        return
    m = _SPLIT_NAME.search(name)
    if m and int(m.group(2)) > 1:
        result.split = (int(m.group(1)), int(m.group(2)))
        result.evidence.append(
            Evidence("filename", f"split part {m.group(1)} of {m.group(2)} (no split.* keys)")
        )


def _fill_quantization(result: FileInspection, kv: dict[str, object], path: str) -> None:
    """The header's general.file_type, refined by a publisher's file name label of the same bit width;
    else the file name; else the dominant tensor type."""
    ev = result.evidence
    file_type = _int(kv.get("general.file_type"))
    header_label = gguf_file_type_label(file_type) if file_type is not None else None
    name_label = gguf_label_from_name(path)
    if header_label:
        ev.append(Evidence("gguf.general.file_type", f"{file_type} -> {header_label}"))
        if name_label and refines(name_label, header_label):
            result.quantization = name_label
            why = f"{name_label} refines {header_label} (publisher variant, same bit width)"
            ev.append(Evidence("filename", why))
        else:
            result.quantization = header_label
            if name_label and name_label != header_label:
                ev.append(Evidence("filename", f"says {name_label}, header wins"))
        return
    if file_type is not None:
        ev.append(Evidence("gguf.general.file_type", f"{file_type} is not a known llama.cpp file type"))
    if name_label:
        result.quantization = name_label
        ev.append(Evidence("filename", f"{name_label} (fallback: header has no usable general.file_type)"))
        return
    dominant = result.dtype
    if dominant in GGUF_LABELS:
        result.quantization = dominant
        ev.append(Evidence("gguf.tensor_types", f"most weights are {dominant} (no general.file_type)"))
