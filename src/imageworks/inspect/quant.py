"""The one quantisation vocabulary. Every label imageworks records comes from here.

GGUF (llama.cpp), upper case as llama.cpp and the publishers write them:
  from `general.file_type` (llama.cpp `llama_ftype`, gguf.LlamaFileType in gguf-py 0.19):
     0 F32      1 F16      2 Q4_0     3 Q4_1     7 Q8_0     8 Q5_0     9 Q5_1
    10 Q2_K    11 Q3_K_S  12 Q3_K_M  13 Q3_K_L  14 Q4_K_S  15 Q4_K_M  16 Q5_K_S  17 Q5_K_M  18 Q6_K
    19 IQ2_XXS 20 IQ2_XS  21 Q2_K_S  22 IQ3_XS  23 IQ3_XXS 24 IQ1_S   25 IQ4_NL  26 IQ3_S   27 IQ3_M
    28 IQ2_S   29 IQ2_M   30 IQ4_XS  31 IQ1_M   32 BF16    36 TQ1_0   37 TQ2_0   38 MXFP4   39 NVFP4
    40 Q1_0
    legacy files: 4 Q4_1_SOME_F16, 33 Q4_0_4_4, 34 Q4_0_4_8, 35 Q4_0_8_8 (no longer written)
  from the filename only (publishers' variants that llama.cpp records under a base ftype):
    UD-<label> (Unsloth Dynamic, e.g. UD-Q4_K_XL, UD-IQ1_S), <K quant>_XL (Q4_K_XL, Q8_K_XL),
    <K quant>_L (Q6_K_L, Q5_K_L: bartowski's Q8_0 embeddings/output), and the table above.
  A filename label replaces the header label only when it *refines* it (same bit width, e.g. header
  Q4_K_M + file UD-Q4_K_XL); a contradicting filename (header Q8_0, file "...Q4_K_M.gguf") loses, and the
  evidence records both.

Transformers-style checkpoints, lower case:
  awq-<b>bit-g<group>      AutoAWQ / llm-compressor AWQ        (awq-4bit-g128; "awq-4bit" without groups)
  gptq-<b>bit-g<group>     AutoGPTQ / GPTQModel                (gptq-4bit-g128, gptq-8bit-g32)
  exl2-<bpw>bpw            ExLlamaV2                           (exl2-4.0bpw, exl2-6.5bpw, exl2-4.25bpw)
  exl3-<bpw>bpw            ExLlamaV3
  mlx-<b>bit               MLX `quantization` (mlx-4bit, mlx-8bit); unquantised MLX weights use the dtype
  bnb-4bit, bnb-8bit       bitsandbytes (nf4/fp4 detail in the evidence)
  fp8                      compressed-tensors float8, fbgemm_fp8, HF `fp8`, F8_E4M3/F8_E5M2 weights
  int8, int4, int4-g128    compressed-tensors integer schemes (w8a8, w4a16)
  nvfp4, mxfp4             4-bit floats (compressed-tensors nvfp4, gpt-oss mxfp4)
  hqq-<b>bit, eetq-int8    other transformers quantisers; unknown methods keep their quant_method name
  bf16, f16, f32, f64      unquantised weights, from the tensor dtypes or torch_dtype
"""

from __future__ import annotations

import re

# llama.cpp llama_ftype -> label. Keep in sync with gguf.LlamaFileType (tests compare the two).
GGUF_FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "Q4_1_SOME_F16",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
    39: "NVFP4",
    40: "Q1_0",
}
GGUF_LABELS: frozenset[str] = frozenset(GGUF_FILE_TYPES.values())

# ggml tensor types: id -> (name, elements per block, bytes per block); mirrors gguf.GGML_QUANT_SIZES.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# Nominal bits per weight of a label: the number the quant is named after, not the measured average.
_NOMINAL_GGUF_BITS = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "TQ1_0": 1.58,
    "TQ2_0": 2.0,
    "MXFP4": 4.0,
    "NVFP4": 4.0,
}

# Filename tokens. The lookarounds make "Q4_K_M" match in "model.Q4_K_M.gguf", "model-q4_k_m-00001-of-00002"
# and "Q4_K_M/part.gguf", but not inside a longer word.
_GGUF_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(?P<ud>UD-)?(?P<q>"
    r"IQ[1-4]_(?:XXS|XS|NL|S|M)"
    r"|Q[1-8]_K(?:_(?:XL|XXS|S|M|L))?"
    r"|Q[1-8]_[01](?:_[48]_[48])?(?:_(?:XL|L))?"
    r"|TQ[12]_0|MXFP4(?:_MOE)?|NVFP4|BF16|F16|F32|FP16|FP32"
    r")(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_BITS_PREFIX = re.compile(r"^(?:UD-)?I?Q(\d)")
_BPW = re.compile(r"(?<![0-9.])(\d{1,2}(?:[._]\d{1,2})?)\s*bpw(?![a-z])", re.IGNORECASE)

SAFETENSORS_DTYPE_LABELS: dict[str, str] = {
    "BF16": "bf16",
    "F16": "f16",
    "F32": "f32",
    "F64": "f64",
    "F8_E4M3": "fp8",
    "F8_E5M2": "fp8",
    "F8_E4M3FN": "fp8",
    "I8": "int8",
    "U8": "uint8",
}
TORCH_DTYPE_LABELS: dict[str, str] = {
    "bfloat16": "bf16",
    "float16": "f16",
    "half": "f16",
    "float32": "f32",
    "float": "f32",
    "float64": "f64",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
    "int8": "int8",
}
_DTYPE_BITS = {"bf16": 16.0, "f16": 16.0, "f32": 32.0, "f64": 64.0, "fp8": 8.0, "int8": 8.0, "uint8": 8.0}


def gguf_file_type_label(file_type: int) -> str | None:
    return GGUF_FILE_TYPES.get(file_type)


def gguf_label_from_name(path: str) -> str | None:
    """The GGUF quant label a path carries, or None. The file name wins over folder names (big repos put
    splits under "Q4_K_M/"); the last match in a name wins ("Llama-3-8B-Q4_K_M" has no earlier match, but
    "Q8_0-distill-Q4_K_M" means the last one)."""
    for part in reversed(path.replace("\\", "/").split("/")):
        stem = re.sub(r"(?:-\d{5}-of-\d{5})?\.gguf$", "", part, flags=re.IGNORECASE)
        matches = list(_GGUF_TOKEN.finditer(stem))
        if matches:
            m = matches[-1]
            label = normalize_gguf_label(m.group("q"))
            return ("UD-" if m.group("ud") else "") + label
    return None


def normalize_gguf_label(text: str) -> str:
    """Canonical spelling of a GGUF label a user or a filename wrote: "q4_k_m" -> "Q4_K_M", "fp16" -> "F16",
    "ud-q4_k_xl" -> "UD-Q4_K_XL", "MXFP4_MOE" -> "MXFP4"."""
    label = text.strip().upper()
    prefix = ""
    if label.startswith("UD-"):
        prefix, label = "UD-", label[3:]
    label = {"FP16": "F16", "FP32": "F32", "MXFP4_MOE": "MXFP4"}.get(label, label)
    return prefix + label


def gguf_bits_prefix(label: str) -> str | None:
    """The bit-width family of a GGUF label ("Q4" for Q4_K_M, UD-Q4_K_XL and Q4_0; "IQ2" for IQ2_XXS)."""
    if label.removeprefix("UD-") in ("F16", "BF16", "F32"):
        return label.removeprefix("UD-")
    m = re.match(r"^(?:UD-)?(I?Q\d)", label)
    return m.group(1) if m else None


def refines(filename_label: str, header_label: str) -> bool:
    """True when a filename label is a finer name for the header's ftype rather than a contradiction: a
    publisher variant (UD-, _XL, _L, not itself an ftype name) of the same bit width."""
    if filename_label == header_label:
        return False
    is_variant = filename_label.startswith("UD-") or filename_label not in GGUF_LABELS
    return is_variant and gguf_bits_prefix(filename_label) == gguf_bits_prefix(header_label)


def nominal_bits(label: str | None) -> float | None:
    """The bits a label is named after: Q4_K_M -> 4, IQ2_XXS -> 2, awq-4bit-g128 -> 4, exl2-6.5bpw -> 6.5,
    bf16 -> 16, fp8 -> 8. None when the label carries no width."""
    if not label:
        return None
    base = label.removeprefix("UD-")
    if base in _NOMINAL_GGUF_BITS:
        return _NOMINAL_GGUF_BITS[base]
    m = _BITS_PREFIX.match(label)
    if m and label.upper() == label:
        return float(m.group(1))
    m = re.search(r"-(\d+(?:\.\d+)?)(?:bit|bpw)", label)
    if m:
        return float(m.group(1))
    if label in _DTYPE_BITS:
        return _DTYPE_BITS[label]
    if label in ("int4", "nvfp4", "mxfp4") or label.startswith("int4-"):
        return 4.0
    if label.endswith("int8"):
        return 8.0
    return None


def _fmt_bits(bits: float) -> str:
    return str(int(bits)) if float(bits).is_integer() else f"{bits:g}"


def group_label(method: str, bits: float | None, group_size: int | None) -> str:
    """awq-4bit-g128 / gptq-8bit / mlx-4bit; group -1 or None means per-channel and is left out."""
    label = method
    if bits is not None:
        label += f"-{_fmt_bits(bits)}bit"
    if group_size is not None and group_size > 0:
        label += f"-g{group_size}"
    return label


def bpw_label(method: str, bits: float | None) -> str:
    """exl2-4.0bpw, exl2-6.5bpw, exl2-4.25bpw: always one decimal at least, as the exl2 branches are named."""
    if bits is None:
        return method
    text = f"{bits:.2f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return f"{method}-{text}bpw"


def bpw_from_name(path: str) -> float | None:
    """ "4.0bpw", "6_5bpw", "8bpw" in a path (exl2 repos put the bpw in the branch or folder name)."""
    m = _BPW.search(path)
    return float(m.group(1).replace("_", ".")) if m else None


def dtype_label(safetensors_dtype: str) -> str:
    return SAFETENSORS_DTYPE_LABELS.get(safetensors_dtype.upper(), safetensors_dtype.lower())


def torch_dtype_label(torch_dtype: str) -> str | None:
    return TORCH_DTYPE_LABELS.get(torch_dtype.removeprefix("torch.").lower())
