"""Builders of real, tiny model files for the tests (and the benchmarks).

Everything here is written by the real libraries where they can (gguf.GGUFWriter, safetensors.numpy) so the
inspection code is tested against what the ecosystem actually produces, not against our own idea of it.
Files are a few KB; `sparse_size`/`sparse=True` variants write a real header and then extend the file with a
hole, which gives a multi-GB file that uses no disk.

Conventions other tests rely on:
- `split=(index, count)` is 1-based like the `-00001-of-00003` filename suffix; the file itself stores the
  0-based `split.no`, as llama.cpp's gguf-split does.
- Part 2+ of a split GGUF holds only the `split.*` keys, as gguf-split writes them (the metadata is in part 1).
- `arch="clip"` builds an mmproj projector (general.type = "mmproj", clip.* keys, no context length).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from math import prod
from pathlib import Path
from typing import Any

# llama.cpp `llama_ftype` names -> numbers (gguf.LlamaFileType in gguf 0.19); the keys are our labels.
FILE_TYPES: dict[str, int] = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q2_K": 10,
    "Q3_K_S": 11,
    "Q3_K_M": 12,
    "Q3_K_L": 13,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "IQ2_XXS": 19,
    "IQ2_XS": 20,
    "Q2_K_S": 21,
    "IQ3_XS": 22,
    "IQ3_XXS": 23,
    "IQ1_S": 24,
    "IQ4_NL": 25,
    "IQ3_S": 26,
    "IQ3_M": 27,
    "IQ2_S": 28,
    "IQ2_M": 29,
    "IQ4_XS": 30,
    "IQ1_M": 31,
    "BF16": 32,
    "TQ1_0": 36,
    "TQ2_0": 37,
    "MXFP4": 38,
    "NVFP4": 39,
    "Q1_0": 40,
}

# The tensor type a llama.cpp quantisation mostly uses (GGMLQuantizationType names).
_MAIN_TENSOR_TYPE: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q3_K",
    13: "Q3_K",
    14: "Q4_K",
    15: "Q4_K",
    16: "Q5_K",
    17: "Q5_K",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K",
    22: "IQ3_S",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_S",
    28: "IQ2_S",
    29: "IQ2_S",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
    39: "NVFP4",
    40: "Q1_0",
}
# _M quantisations keep the output tensor at Q6_K, as llama-quantize does.
_OUTPUT_TENSOR_TYPE: dict[int, str] = {12: "Q4_K", 15: "Q6_K", 17: "Q6_K", 27: "Q4_K", 29: "Q4_K"}

ROW = 256  # elements per row of the tensors we write: a multiple of every GGML block size


def _file_type_number(file_type: int | str) -> int:
    return FILE_TYPES[file_type.upper()] if isinstance(file_type, str) else int(file_type)


def _tensor_plan(
    arch: str, file_type: int | None, parameters: int | None, n_tensors: int
) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, element shape in numpy order, GGML type name) for the tensors of a tiny model."""
    main = _MAIN_TENSOR_TYPE.get(file_type if file_type is not None else 1, "F16")
    if arch == "clip":
        names = [
            "v.patch_embd.weight",
            *(f"v.blk.{i}.attn_q.weight" for i in range(n_tensors - 2)),
            "mm.0.bias",
        ]
    else:
        names = [
            "token_embd.weight",
            *(f"blk.{i}.attn_q.weight" for i in range(n_tensors - 2)),
            "output_norm.weight",
        ]
    if n_tensors == 1:
        names = names[:1]
    n_main = max(len(names) - 1, 1)
    norm_len = ROW
    if parameters is not None:
        norm_len = ROW + parameters % ROW if n_tensors > 1 else 0
        bulk = parameters - norm_len - (n_main - 1) * ROW
        if bulk <= 0 or bulk % ROW:
            raise ValueError(f"parameters={parameters} too small for {n_tensors} tensors")
        rows = [bulk // ROW] + [1] * (n_main - 1)
    else:
        rows = [4] * n_main
    plan: list[tuple[str, tuple[int, ...], str]] = []
    for i, name in enumerate(names[:n_main]):
        ggml = main
        if i == n_main - 1 and n_main > 1 and file_type in _OUTPUT_TENSOR_TYPE:
            ggml = _OUTPUT_TENSOR_TYPE[file_type]
        plan.append((name, (rows[i], ROW), ggml))
    if len(names) > 1:
        plan.append((names[-1], (norm_len,), "F32"))
    return plan


def _build_gguf(
    path: Path,
    *,
    arch: str,
    name: str | None,
    file_type: int | None,
    context_length: int | None,
    split: tuple[int, int] | None,
    chat_template: str | None,
    parameters: int | None,
    n_tensors: int,
    vocab: int,
    kv: Mapping[str, Any] | None,
    sparse: bool,
) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    first_part = split is None or split[0] == 1
    if not first_part:
        # gguf-split puts the metadata in part 1 only: later parts carry just the split keys.
        writer.kv_data[0].clear()
    if split is not None:
        index, count = split
        writer.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_NO, index - 1)
        writer.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_COUNT, count)
        writer.add_int32(gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, n_tensors * count)
    if first_part:
        if arch == "clip":
            writer.add_type(gguf.GGUFType.MMPROJ)
            writer.add_bool(gguf.Keys.Clip.HAS_VISION_ENCODER, True)
            writer.add_string(gguf.Keys.Clip.PROJECTOR_TYPE, "mlp")
            writer.add_uint32(gguf.Keys.ClipVision.IMAGE_SIZE, 336)
        else:
            writer.add_type(gguf.GGUFType.MODEL)
        if name is not None:
            writer.add_name(name)
        if context_length is not None and arch != "clip":
            writer.add_context_length(context_length)
            writer.add_block_count(max(n_tensors - 2, 1))
        if vocab and arch != "clip":
            writer.add_tokenizer_model("gpt2")
            writer.add_token_list([f"tok{i}" for i in range(vocab)])
            writer.add_token_types([1] * vocab)
        if chat_template is not None:
            writer.add_chat_template(chat_template)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if file_type is not None:
            writer.add_file_type(file_type)
    for key, value in (kv or {}).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)

    total = 0
    for tname, shape, ggml_name in _tensor_plan(arch, file_type, parameters, n_tensors):
        qtype = gguf.GGMLQuantizationType[ggml_name]
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes = prod(shape) // block * type_size
        total += gguf.GGUFWriter.ggml_pad(nbytes, gguf.GGUF_DEFAULT_ALIGNMENT)
        if sparse:
            writer.add_tensor_info(tname, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        else:
            byte_shape = (*shape[:-1], shape[-1] // block * type_size)
            writer.add_tensor(tname, np.zeros(byte_shape, dtype=np.uint8), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    if sparse:
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        fout = writer.fout[0]
        data_start = gguf.GGUFWriter.ggml_pad(fout.tell(), gguf.GGUF_DEFAULT_ALIGNMENT)
        writer.close()
        with open(path, "r+b") as f:
            f.truncate(data_start + total)
    else:
        writer.write_tensors_to_file()
        writer.close()


def gguf_bytes(
    *,
    arch: str = "llama",
    name: str | None = "Tiny Llama",
    file_type: int | str | None = 15,  # MOSTLY_Q4_K_M
    context_length: int | None = 4096,
    split: tuple[int, int] | None = None,
    chat_template: str | None = None,
    parameters: int | None = None,
    n_tensors: int = 2,
    vocab: int = 32,
    kv: Mapping[str, Any] | None = None,
) -> bytes:
    """A complete GGUF file (header, KV, tensor infos, zeroed tensor data) written by gguf.GGUFWriter.

    `file_type` is a llama.cpp ftype number or label ("Q4_K_M"), None to omit `general.file_type`.
    `parameters` sets the exact element count over all tensors (a multiple of 256 plus the norm tensor).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.gguf"
        _build_gguf(
            path,
            arch=arch,
            name=name,
            file_type=None if file_type is None else _file_type_number(file_type),
            context_length=context_length,
            split=split,
            chat_template=chat_template,
            parameters=parameters,
            n_tensors=n_tensors,
            vocab=vocab,
            kv=kv,
            sparse=False,
        )
        return path.read_bytes()


def write_gguf(path: str | os.PathLike[str], *, sparse: bool = False, **kw: Any) -> Path:
    """Write `gguf_bytes(**kw)` to `path`. `sparse=True` writes the header and leaves the tensor data as a
    hole, so `parameters=8_000_000_000` gives a real-looking ~4.5 GB Q4_K_M file that uses no disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not sparse:
        path.write_bytes(gguf_bytes(**kw))
        return path
    args: dict[str, Any] = {
        "arch": "llama",
        "name": "Tiny Llama",
        "file_type": 15,
        "context_length": 4096,
        "split": None,
        "chat_template": None,
        "parameters": None,
        "n_tensors": 2,
        "vocab": 32,
        "kv": None,
    }
    args.update(kw)
    if args["file_type"] is not None:
        args["file_type"] = _file_type_number(args["file_type"])
    _build_gguf(path, sparse=True, **args)
    return path


def gguf_split_name(stem: str, index: int, count: int) -> str:
    return f"{stem}-{index:05d}-of-{count:05d}.gguf"


def write_gguf_repo(
    folder: str | os.PathLike[str],
    stem: str = "Tiny-Llama-3B",
    quants: Sequence[str] = ("Q4_K_M",),
    *,
    split_parts: int | None = None,
    mmproj: bool = False,
    chat_template: str | None = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
    **kw: Any,
) -> list[Path]:
    """A GGUF repo as the usual publishers lay it out: `<stem>-<QUANT>.gguf` per quant (a label from
    FILE_TYPES, or an extended filename label like "UD-Q4_K_XL"/"Q6_K_L", written with the base ftype),
    optionally split in parts, plus `mmproj-<stem>-F16.gguf`."""
    folder = Path(folder)
    written: list[Path] = []
    for quant in quants:
        ftype = _file_type_for_filename_label(quant)
        if split_parts:
            for i in range(1, split_parts + 1):
                path = folder / gguf_split_name(f"{stem}-{quant}", i, split_parts)
                written.append(
                    write_gguf(
                        path, file_type=ftype, split=(i, split_parts), chat_template=chat_template, **kw
                    )
                )
        else:
            written.append(
                write_gguf(
                    folder / f"{stem}-{quant}.gguf", file_type=ftype, chat_template=chat_template, **kw
                )
            )
    if mmproj:
        written.append(
            write_gguf(folder / f"mmproj-{stem}-F16.gguf", arch="clip", name=f"{stem} mmproj", file_type=1)
        )
    return written


def _file_type_for_filename_label(label: str) -> int:
    """The ftype llama-quantize records for a publisher's extended label: Unsloth's UD-Q4_K_XL is a Q4_K_M
    file with some tensors kept at higher precision, bartowski's Q6_K_L a Q6_K with a Q8_0 output tensor."""
    base = label.upper().removeprefix("UD-")
    candidates = [base]
    if base.endswith("_XL"):
        stem = base[:-3]
        candidates += [stem + "_M", stem, stem[:-2] + "_0"]  # Q3_K_XL->Q3_K_M, Q2_K_XL->Q2_K, Q8_K_XL->Q8_0
    elif base.endswith("_L"):
        stem = base[:-2]
        candidates += [stem, stem + "_M"]
    for candidate in candidates:
        if candidate in FILE_TYPES:
            return FILE_TYPES[candidate]
    raise ValueError(f"no ftype for quant label {label!r}")


# ---------------------------------------------------------------------------------------------- safetensors

_NUMPY_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
# Widths for the dtypes numpy lacks (safetensors' own names); F4 is packed two per byte.
_DTYPE_BITS = {
    "BF16": 16,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}

DEFAULT_TENSORS_SHAPES: dict[str, tuple[int, ...]] = {
    "model.embed_tokens.weight": (64, 128),
    "model.layers.0.self_attn.q_proj.weight": (128, 128),
    "model.layers.0.input_layernorm.weight": (128,),
    "model.norm.weight": (128,),
    "lm_head.weight": (64, 128),
}


def _nbytes(dtype: str, shape: Sequence[int]) -> int:
    if dtype in _NUMPY_DTYPES:
        import numpy as np

        return prod(shape) * np.dtype(_NUMPY_DTYPES[dtype]).itemsize
    return prod(shape) * _DTYPE_BITS[dtype] // 8


def safetensors_header(
    tensors: Mapping[str, tuple[str, tuple[int, ...]]], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, int]:
    """Header bytes (length prefix + JSON, space-padded to 8 like the Rust writer) and the data length
    that must follow: serve the header then zeros to fake a file of any size."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in sorted(tensors):
        dtype, shape = tensors[name]
        n = _nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def safetensors_bytes(
    tensors: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
    dtype: str = "BF16",
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """A safetensors file. `tensors` maps name -> (dtype, shape); default: a tiny llama-ish set in `dtype`.
    Files whose dtypes numpy knows are written by safetensors.numpy.save; BF16/F8 ones get a hand-built
    header laid out as the Rust writer lays it out (sorted names, contiguous offsets, 8-byte padding)."""
    if tensors is None:
        tensors = {name: (dtype, shape) for name, shape in DEFAULT_TENSORS_SHAPES.items()}
    if all(d in _NUMPY_DTYPES for d, _ in tensors.values()):
        import numpy as np
        from safetensors.numpy import save

        arrays = {name: np.zeros(shape, dtype=_NUMPY_DTYPES[d]) for name, (d, shape) in tensors.items()}
        return save(arrays, metadata=dict(metadata) if metadata else None)
    head, data_len = safetensors_header(tensors, metadata)
    return head + bytes(data_len)


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
    dtype: str = "BF16",
    metadata: Mapping[str, str] | None = None,
    *,
    sparse: bool = False,
) -> Path:
    """Write a safetensors file; `sparse=True` writes the header and leaves the data as a hole (for GB-sized
    benchmark files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not sparse:
        path.write_bytes(safetensors_bytes(tensors, dtype, metadata))
        return path
    if tensors is None:
        tensors = {name: (dtype, shape) for name, shape in DEFAULT_TENSORS_SHAPES.items()}
    head, data_len = safetensors_header(tensors, metadata)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + data_len)
    return path


# ------------------------------------------------------------------------------------------- HF model repos

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

HF_KINDS = (
    "plain-bf16",
    "sharded",
    "awq",
    "gptq",
    "exl2",
    "mlx",
    "fp8-compressed-tensors",
    "fbgemm-fp8",
    "bnb-4bit",
    "bnb-8bit",
    "pytorch",
    "onnx",
    "vision",
)

HIDDEN = 128
VOCAB = 64
LAYERS = 2


def llama_config(torch_dtype: str = "bfloat16", **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_attention_heads": 4,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": 4,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "vocab_size": VOCAB,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
        "transformers_version": "4.46.0",
    }
    config.update(extra)
    return config


def _linear_names() -> list[str]:
    return [
        f"model.layers.{i}.self_attn.{p}"
        for i in range(LAYERS)
        for p in ("q_proj", "k_proj", "v_proj", "o_proj")
    ]


def dense_tensors(dtype: str, *, with_linears: bool = True) -> dict[str, tuple[str, tuple[int, ...]]]:
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {
        "model.embed_tokens.weight": (dtype, (VOCAB, HIDDEN)),
        "model.norm.weight": (dtype, (HIDDEN,)),
        "lm_head.weight": (dtype, (VOCAB, HIDDEN)),
    }
    for i in range(LAYERS):
        tensors[f"model.layers.{i}.input_layernorm.weight"] = (dtype, (HIDDEN,))
    if with_linears:
        for name in _linear_names():
            tensors[f"{name}.weight"] = (dtype, (HIDDEN, HIDDEN))
    return tensors


def dense_parameter_count() -> int:
    """Parameters of the tiny llama that every `write_hf_model` kind describes (before packing)."""
    return sum(prod(shape) for _, shape in dense_tensors("F32").values())


def _write_tokenizer(folder: Path, chat_template: str | None, *, template_file: str | None = None) -> None:
    vocab = {f"tok{i}": i for i in range(VOCAB)}
    tokenizer: dict[str, Any] = {
        "version": "1.0",
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    tok_config: dict[str, Any] = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "model_max_length": 8192,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if chat_template is not None and template_file is None:
        tok_config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    if chat_template is not None and template_file == "chat_template.json":
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": chat_template}))
    elif chat_template is not None and template_file == "chat_template.jinja":
        (folder / "chat_template.jinja").write_text(chat_template)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2))


def _pytorch_zip(path: Path) -> None:
    """The zip layout torch.save writes (archive/data.pkl, archive/version, archive/data/0); the pickle is an
    empty dict, which is all we need to be a real, loadable-looking .bin without torch installed."""
    import pickle

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", bytes(HIDDEN * 4))


def _onnx_bytes() -> bytes:
    """A minimal ONNX ModelProto: ir_version 8, producer name, opset 17 (protobuf wire format)."""

    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    opset = bytes([0x10, 17])  # OperatorSetIdProto.version = 17
    return bytes([0x08, 8]) + field(2, b"imageworks-tests") + field(7, b"\x0a\x01g") + field(8, opset)


def write_hf_model(
    folder: str | os.PathLike[str],
    kind: str,
    *,
    bits: int | float | None = None,
    group_size: int | None = None,
    chat_template: str | None = CHAT_TEMPLATE,
    template_file: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    with_config: bool = True,
) -> Path:
    """A tiny model folder shaped like a real Hub repo of `kind` (see HF_KINDS): config.json (with the
    quantization_config the real quantisers write), tokenizer files, chat template and weights.

    `template_file` puts the chat template in "chat_template.json" or "chat_template.jinja" instead of
    tokenizer_config.json; `chat_template=None` writes none. Returns the folder.
    """
    if kind not in HF_KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(HF_KINDS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any]
    _write_tokenizer(folder, chat_template, template_file=template_file)
    _write_json(folder / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "do_sample": True})

    if kind == "plain-bf16":
        config = llama_config("bfloat16")
        write_safetensors(folder / "model.safetensors", dense_tensors("BF16"), metadata={"format": "pt"})
    elif kind == "sharded":
        config = llama_config("bfloat16")
        tensors = dense_tensors("BF16")
        names = sorted(tensors)
        halves = [names[: len(names) // 2], names[len(names) // 2 :]]
        weight_map: dict[str, str] = {}
        total = 0
        for i, part in enumerate(halves, start=1):
            shard = f"model-{i:05d}-of-00002.safetensors"
            write_safetensors(folder / shard, {n: tensors[n] for n in part}, metadata={"format": "pt"})
            for n in part:
                weight_map[n] = shard
                total += _nbytes(*tensors[n])
        _write_json(
            folder / "model.safetensors.index.json",
            {"metadata": {"total_size": total}, "weight_map": weight_map},
        )
    elif kind in ("awq", "gptq"):
        b = int(bits or 4)
        g = group_size or 128
        config = llama_config("float16")
        tensors = dense_tensors("F16", with_linears=False)
        pack = 32 // b
        groups = HIDDEN // g if g > 0 else 1
        for name in _linear_names():
            if kind == "awq":
                # AutoAWQ GEMM layout: qweight [in, out/pack], qzeros [groups, out/pack], scales [groups, out]
                tensors[f"{name}.qweight"] = ("I32", (HIDDEN, HIDDEN // pack))
                tensors[f"{name}.qzeros"] = ("I32", (groups, HIDDEN // pack))
                tensors[f"{name}.scales"] = ("F16", (groups, HIDDEN))
            else:
                # AutoGPTQ layout: qweight [in/pack, out], qzeros [groups, out/pack], scales [groups, out], g_idx
                tensors[f"{name}.qweight"] = ("I32", (HIDDEN // pack, HIDDEN))
                tensors[f"{name}.qzeros"] = ("I32", (groups, HIDDEN // pack))
                tensors[f"{name}.scales"] = ("F16", (groups, HIDDEN))
                tensors[f"{name}.g_idx"] = ("I32", (HIDDEN,))
        if kind == "awq":
            config["quantization_config"] = {
                "bits": b,
                "group_size": g,
                "modules_to_not_convert": None,
                "quant_method": "awq",
                "version": "gemm",
                "zero_point": True,
            }
        else:
            qc = {
                "bits": b,
                "group_size": g,
                "damp_percent": 0.1,
                "desc_act": True,
                "sym": True,
                "true_sequential": True,
                "model_name_or_path": None,
                "model_file_base_name": "model",
                "quant_method": "gptq",
            }
            config["quantization_config"] = qc
            # TheBloke-era repos also ship the AutoGPTQ file
            _write_json(folder / "quantize_config.json", {k: v for k, v in qc.items() if k != "quant_method"})
        write_safetensors(folder / "model.safetensors", tensors, metadata={"format": "pt"})
    elif kind == "exl2":
        bpw = float(bits or 4.0)
        config = llama_config("float16")
        config["quantization_config"] = {
            "quant_method": "exl2",
            "version": "0.2.3",
            "bits": bpw,
            "head_bits": 6,
            "calibration": {"rows": 115, "length": 2048, "dataset": "(default)"},
        }
        tensors = dense_tensors("F16", with_linears=False)
        for name in _linear_names():
            tensors[f"{name}.q_weight"] = ("I32", (HIDDEN * 4 // 32, HIDDEN))
            tensors[f"{name}.q_scale"] = ("I32", (HIDDEN // 32 * 4 // 8, HIDDEN // 8))
            tensors[f"{name}.q_scale_max"] = ("F16", (HIDDEN // 32,))
            tensors[f"{name}.q_groups"] = ("I16", (HIDDEN // 32 * 2,))
            tensors[f"{name}.q_invperm"] = ("I16", (HIDDEN,))
        write_safetensors(folder / "output.safetensors", tensors)
        _write_json(folder / "measurement.json", {"measurement": {}, "last_module_idx": LAYERS})
    elif kind == "mlx":
        b = int(bits or 4)
        g = group_size or 64
        q = {"group_size": g, "bits": b}
        config = llama_config("bfloat16", quantization=q, quantization_config=q)
        tensors = {"model.norm.weight": ("BF16", (HIDDEN,))}
        for i in range(LAYERS):
            tensors[f"model.layers.{i}.input_layernorm.weight"] = ("BF16", (HIDDEN,))
        for name, rows in [(n, HIDDEN) for n in _linear_names()] + [
            ("model.embed_tokens", VOCAB),
            ("lm_head", VOCAB),
        ]:
            tensors[f"{name}.weight"] = ("U32", (rows, HIDDEN * b // 32))
            tensors[f"{name}.scales"] = ("BF16", (rows, HIDDEN // g))
            tensors[f"{name}.biases"] = ("BF16", (rows, HIDDEN // g))
        write_safetensors(folder / "model.safetensors", tensors, metadata={"format": "mlx"})
        total = sum(_nbytes(*t) for t in tensors.values())
        _write_json(
            folder / "model.safetensors.index.json",
            {
                "metadata": {"total_size": total},
                "weight_map": dict.fromkeys(sorted(tensors), "model.safetensors"),
            },
        )
        (folder / "README.md").write_text(
            "---\nlibrary_name: mlx\nlicense: apache-2.0\ntags:\n- mlx\nbase_model: tiny/llama\n---\n\n# tiny-llama-4bit\n"
        )
    elif kind in ("fp8-compressed-tensors", "fbgemm-fp8"):
        config = llama_config("bfloat16")
        tensors = dense_tensors("BF16", with_linears=False)
        for name in _linear_names():
            tensors[f"{name}.weight"] = ("F8_E4M3", (HIDDEN, HIDDEN))
            tensors[f"{name}.weight_scale"] = (
                "BF16" if kind == "fp8-compressed-tensors" else "F32",
                (HIDDEN, 1),
            )
        if kind == "fp8-compressed-tensors":
            config["quantization_config"] = {
                "config_groups": {
                    "group_0": {
                        "input_activations": {
                            "actorder": None,
                            "block_structure": None,
                            "dynamic": True,
                            "group_size": None,
                            "num_bits": 8,
                            "observer": None,
                            "strategy": "token",
                            "symmetric": True,
                            "type": "float",
                        },
                        "output_activations": None,
                        "targets": ["Linear"],
                        "weights": {
                            "actorder": None,
                            "block_structure": None,
                            "dynamic": False,
                            "group_size": None,
                            "num_bits": 8,
                            "observer": "minmax",
                            "strategy": "channel",
                            "symmetric": True,
                            "type": "float",
                        },
                    }
                },
                "format": "float-quantized",
                "global_compression_ratio": 1.2,
                "ignore": ["lm_head"],
                "kv_cache_scheme": None,
                "quant_method": "compressed-tensors",
                "quantization_status": "compressed",
            }
        else:
            config["quantization_config"] = {
                "activation_scale_ub": 1200.0,
                "modules_to_not_convert": ["lm_head"],
                "quant_method": "fbgemm_fp8",
            }
        write_safetensors(folder / "model.safetensors", tensors, metadata={"format": "pt"})
    elif kind == "bnb-4bit":
        config = llama_config("bfloat16")
        config["quantization_config"] = {
            "_load_in_4bit": True,
            "_load_in_8bit": False,
            "bnb_4bit_compute_dtype": "bfloat16",
            "bnb_4bit_quant_storage": "uint8",
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "llm_int8_enable_fp32_cpu_offload": False,
            "llm_int8_has_fp16_weight": False,
            "llm_int8_skip_modules": None,
            "llm_int8_threshold": 6.0,
            "load_in_4bit": True,
            "load_in_8bit": False,
            "quant_method": "bitsandbytes",
        }
        tensors = dense_tensors("BF16", with_linears=False)
        for name in _linear_names():
            tensors[f"{name}.weight"] = ("U8", (HIDDEN * HIDDEN // 2, 1))
            tensors[f"{name}.weight.absmax"] = ("U8", (HIDDEN * HIDDEN // 64,))
            tensors[f"{name}.weight.quant_map"] = ("F32", (16,))
            tensors[f"{name}.weight.nested_absmax"] = ("F32", (1,))
            tensors[f"{name}.weight.nested_quant_map"] = ("F32", (256,))
            tensors[f"{name}.weight.quant_state.bitsandbytes__nf4"] = ("U8", (120,))
        write_safetensors(folder / "model.safetensors", tensors, metadata={"format": "pt"})
    elif kind == "bnb-8bit":
        config = llama_config("float16")
        config["quantization_config"] = {
            "_load_in_4bit": False,
            "_load_in_8bit": True,
            "llm_int8_threshold": 6.0,
            "llm_int8_has_fp16_weight": False,
            "load_in_4bit": False,
            "load_in_8bit": True,
            "quant_method": "bitsandbytes",
        }
        tensors = dense_tensors("F16", with_linears=False)
        for name in _linear_names():
            tensors[f"{name}.weight"] = ("I8", (HIDDEN, HIDDEN))
            tensors[f"{name}.SCB"] = ("F32", (HIDDEN,))
            tensors[f"{name}.weight_format"] = ("U8", ())
        write_safetensors(folder / "model.safetensors", tensors, metadata={"format": "pt"})
    elif kind == "pytorch":
        config = llama_config("float16")
        _pytorch_zip(folder / "pytorch_model.bin")
    elif kind == "onnx":
        config = llama_config("float32")
        (folder / "onnx").mkdir(exist_ok=True)
        (folder / "onnx" / "model.onnx").write_bytes(_onnx_bytes())
    else:  # vision
        text = llama_config("bfloat16")
        for key in ("architectures", "torch_dtype", "transformers_version"):
            text.pop(key)
        config = {
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "image_token_index": 32000,
            "projector_hidden_act": "gelu",
            "text_config": text,
            "vision_config": {
                "model_type": "clip_vision_model",
                "hidden_size": 64,
                "image_size": 336,
                "patch_size": 14,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 128,
            },
            "vision_feature_layer": -2,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.46.0",
        }
        tensors = {f"language_model.{k}": v for k, v in dense_tensors("BF16").items()}
        tensors["vision_tower.vision_model.embeddings.patch_embedding.weight"] = ("BF16", (64, 3, 14, 14))
        tensors["vision_tower.vision_model.post_layernorm.weight"] = ("BF16", (64,))
        tensors["multi_modal_projector.linear_1.weight"] = ("BF16", (HIDDEN, 64))
        write_safetensors(folder / "model.safetensors", tensors, metadata={"format": "pt"})
        _write_json(
            folder / "preprocessor_config.json",
            {"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 336, "width": 336}},
        )
        if chat_template is not None and template_file is None:
            # recent processors ship the template beside the tokenizer, not inside tokenizer_config.json
            tok_config = json.loads((folder / "tokenizer_config.json").read_text())
            tok_config.pop("chat_template", None)
            _write_json(folder / "tokenizer_config.json", tok_config)
            _write_json(folder / "chat_template.json", {"chat_template": chat_template})

    config.update(config_overrides or {})
    if with_config:
        _write_json(folder / "config.json", config)
    return folder
