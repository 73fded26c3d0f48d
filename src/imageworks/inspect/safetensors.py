"""safetensors header reader: an 8-byte little-endian length, then that many bytes of JSON.

Only the header is read (the same parser serves a local file and a remote Range read, as huggingface_hub's
`_parse_safetensors_header` does), with a cap on the length against hostile input. From the tensor table we
derive dtypes, the parameter count and the signatures of quantised checkpoints (GPTQ/AWQ `qweight`, EXL2
`q_weight`, MLX packed U32 + scales/biases, bitsandbytes quant_state, FP8 weights).
"""

from __future__ import annotations

import os
import struct
from math import prod
from typing import Any

from imageworks import untrusted_json
from imageworks.inspect.quant import dtype_label, group_label
from imageworks.inspect.source import ByteSource, inspect_input
from imageworks.inspect.types import Evidence, FileInspection

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_DIMS = 16
_MAX_INT = 1 << 63  # the format's offsets are u64; a bigger dimension or offset is not a real file
REMOTE_PREFETCH = 100_000  # one Range request holds most headers (huggingface_hub uses the same figure)

# Bits per element of every safetensors dtype (safetensors 0.5+ names; F4/F6 are packed sub-byte floats).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
_FLOAT8 = ("F8_E4M3", "F8_E5M2")

# Tensors that belong to a quantised weight but are not parameters of the model.
_AUX_SUFFIXES = (
    ".qzeros",
    ".scales",
    ".g_idx",
    ".biases",
    ".q_scale",
    ".q_scale_max",
    ".q_groups",
    ".q_invperm",
    ".q_perm",
    ".absmax",
    ".quant_map",
    ".nested_absmax",
    ".nested_quant_map",
    ".SCB",
    ".weight_format",
    ".weight_scale",
    ".weight_scale_inv",
    ".weight_scale_2",
    ".weight_global_scale",
    ".input_global_scale",
    ".input_scale",
    ".output_scale",
    ".weight_zero_point",
    ".weight_g_idx",
    ".weight_shape",
    ".k_scale",
    ".v_scale",
)
_PACKED_SUFFIXES = (".qweight", ".q_weight", ".weight_packed")


class SafetensorsError(ValueError):
    """The header cannot be parsed."""


def read_header(src: ByteSource, *, prefetch: int = 8) -> tuple[dict[str, Any], int]:
    """(parsed JSON header, bytes the header occupies including the length prefix)."""
    size = src.size
    first = src.read_at(0, max(8, prefetch) if size is None else min(max(8, prefetch), size))
    if len(first) < 8:
        raise SafetensorsError("too short for a safetensors file")
    (n,) = struct.unpack("<Q", first[:8])
    if n > MAX_HEADER_BYTES:
        raise SafetensorsError(f"absurd header length {n} (cap {MAX_HEADER_BYTES >> 20} MiB)")
    if n < 2:
        raise SafetensorsError(f"header length {n} is too small")
    if size is not None and 8 + n > size:
        raise SafetensorsError(f"truncated: header of {n} bytes, the file has {size}")
    raw = first[8 : 8 + n]
    if len(raw) < n:
        raw += src.read_at(len(first), 8 + n - len(first))
    if len(raw) < n:
        raise SafetensorsError(f"truncated: header of {n} bytes, only {len(raw)} available")
    if raw[:1] != b"{":
        raise SafetensorsError("not a safetensors file (header is not a JSON object)")
    try:
        header = untrusted_json.loads(bytes(raw))
    except untrusted_json.UntrustedJSONError as exc:
        raise SafetensorsError(f"header: {exc}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    return header, 8 + n


def inspect_safetensors(
    data_or_path: bytes | bytearray | memoryview | str | os.PathLike[str],
    *,
    size: int | None = None,
    path: str | None = None,
) -> FileInspection:
    """Inspect one safetensors file from its path or from bytes (the whole file unless `size`, the real
    file size, says they are a prefix)."""
    return inspect_input(data_or_path, size, path, inspect_safetensors_source)


def inspect_safetensors_source(src: ByteSource, path: str, *, prefetch: int = 8) -> FileInspection:
    result = FileInspection(path=path, size=src.size or 0, format="safetensors")
    try:
        header, header_len = read_header(src, prefetch=prefetch)
        _analyse(result, header, header_len, src.size)
    except (SafetensorsError, OSError) as exc:
        result.format = "unknown"
        result.error = str(exc) if isinstance(exc, SafetensorsError) else f"unreadable: {exc}"
    result.bytes_read = src.bytes_read
    return result


def _tensor_table(header: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise SafetensorsError(f"malformed entry for tensor {name!r}")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list):
            raise SafetensorsError(f"malformed entry for tensor {name!r}")
        if len(shape) > MAX_DIMS or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < _MAX_INT for d in shape
        ):
            raise SafetensorsError(f"tensor {name!r} has an invalid shape {shape!r}"[:200])
        if (
            len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] < _MAX_INT
        ):
            raise SafetensorsError(f"tensor {name!r} has invalid data_offsets {offsets!r}"[:200])
        bits = DTYPE_BITS.get(dtype)
        if bits is not None:
            needed = -(-prod(shape) * bits // 8)
            if offsets[1] - offsets[0] != needed:
                raise SafetensorsError(
                    f"tensor {name!r}: data_offsets span {offsets[1] - offsets[0]} bytes, {dtype}{shape} needs {needed}"
                )
        tensors[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    return tensors


def _analyse(result: FileInspection, header: dict[str, Any], header_len: int, size: int | None) -> None:
    meta = header.get("__metadata__")
    if isinstance(meta, dict):
        result.metadata = {
            str(k): v for k, v in list(meta.items())[:64] if isinstance(v, str) and len(v) <= 1024
        }
    tensors = _tensor_table(header)
    result.tensor_count = len(tensors)
    data_len = max((end for _, _, _, end in tensors.values()), default=0)
    if size is not None and header_len + data_len > size:
        result.error = f"truncated: tensor data needs {header_len + data_len} bytes, the file has {size}"

    names = set(tensors)
    dtypes: dict[str, int] = {}
    weights: dict[str, int] = {}  # dtype -> elements of tensors that are model parameters (unpacked)
    plain = 0
    packed_bits = 0
    for name, (dtype, shape, _, _) in tensors.items():
        elements = prod(shape)
        dtypes[dtype] = dtypes.get(dtype, 0) + elements
        if name.endswith(_AUX_SUFFIXES) or ".quant_state." in name:
            continue
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if (
            name.endswith(_PACKED_SUFFIXES)
            or (dtype == "U32" and base is not None and f"{base}.scales" in names)  # MLX
            or (dtype == "U8" and _bnb4_state(names, name))  # bitsandbytes 4-bit
        ):
            packed_bits += elements * DTYPE_BITS.get(dtype, 32)
            continue
        plain += elements
        weights[dtype] = weights.get(dtype, 0) + elements

    result.dtypes = dict(sorted(dtypes.items(), key=lambda kv: -kv[1]))
    result.dtype = max(weights, key=lambda d: weights[d]) if weights else None
    result.packed_bits = packed_bits
    result.parameters = plain + packed_bits // 4
    ev = result.evidence
    if result.dtype:
        ev.append(Evidence("safetensors.dtypes", ", ".join(f"{d}={n}" for d, n in result.dtypes.items())))
    if packed_bits:
        ev.append(
            Evidence("safetensors.parameters", "packed weights counted at 4 bits until the config says")
        )
    if result.metadata.get("format"):
        ev.append(Evidence("safetensors.__metadata__.format", result.metadata["format"]))

    label = _signature(tensors, names, ev)
    if label is None and result.dtype is not None:
        fp8 = sum(weights.get(d, 0) for d in _FLOAT8)
        if fp8 and fp8 * 4 >= plain:  # linear layers in FP8, embeddings and norms kept in 16 bits
            label = "fp8"
            ev.append(Evidence("safetensors.dtypes", f"{fp8} of {plain} parameters are float8"))
        else:
            label = dtype_label(result.dtype)
    result.quantization = label


def _bnb4_state(names: set[str], name: str) -> bool:
    # bitsandbytes 4-bit keeps "<name>.quant_state.bitsandbytes__nf4" (or __fp4) beside "<name>"
    return (
        f"{name}.quant_state.bitsandbytes__nf4" in names or f"{name}.quant_state.bitsandbytes__fp4" in names
    )


def _signature(
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]], names: set[str], ev: list[Evidence]
) -> str | None:
    """A quantiser's tensor layout, with bits and group size read off the shapes where they show."""
    for name in sorted(names):
        if name.endswith(".qweight"):
            base = name[: -len(".qweight")]
            q = tensors[name][1]
            scales = tensors.get(f"{base}.scales", ("", (), 0, 0))[1]
            g_idx = tensors.get(f"{base}.g_idx", ("", (), 0, 0))[1]
            if g_idx and len(q) == 2 and q[0]:
                # AutoGPTQ: qweight [in/pack, out], g_idx [in], scales [in/group, out]
                pack = g_idx[0] // q[0]
                bits = 32 // pack if pack and 32 % pack == 0 else None
                group = g_idx[0] // scales[0] if len(scales) == 2 and scales[0] else None
                ev.append(Evidence("safetensors.tensors", f"GPTQ layout ({name}, g_idx)"))
                return group_label("gptq", bits, group)
            if len(scales) == 2 and len(q) == 2 and q[1] and scales[0]:
                # AutoAWQ GEMM: qweight [in, out/pack], scales [in/group, out]
                pack = scales[1] // q[1]
                bits = 32 // pack if pack and 32 % pack == 0 else None
                group = q[0] // scales[0]
                ev.append(Evidence("safetensors.tensors", f"AWQ layout ({name}, qzeros/scales, no g_idx)"))
                return group_label("awq", bits, group)
            ev.append(Evidence("safetensors.tensors", f"packed qweight ({name})"))
            return "gptq"
        if name.endswith(".q_weight") and (
            name[: -len(".q_weight")] + ".q_invperm" in names
            or name[: -len(".q_weight")] + ".q_groups" in names
        ):
            ev.append(Evidence("safetensors.tensors", f"EXL2 layout ({name}, q_invperm/q_groups)"))
            return "exl2"
        if ".quant_state.bitsandbytes__" in name:
            kind = name.rsplit("__", 1)[-1]
            ev.append(Evidence("safetensors.tensors", f"bitsandbytes 4-bit quant_state ({kind})"))
            return "bnb-4bit"
        if name.endswith(".SCB"):
            ev.append(Evidence("safetensors.tensors", f"bitsandbytes int8 ({name})"))
            return "bnb-8bit"
        if name.endswith(".weight") and tensors[name][0] == "U32":
            base = name[: -len(".weight")]
            if f"{base}.scales" in names and f"{base}.biases" in names:
                ev.append(
                    Evidence("safetensors.tensors", f"MLX quantised layout ({name}: U32 + scales/biases)")
                )
                return "mlx"
        if name.endswith(".weight_packed"):
            ev.append(Evidence("safetensors.tensors", f"compressed-tensors packed weights ({name})"))
            return None
    return None
