"""The one format vocabulary: what `--format` accepts, which file format each name is, how a weight file
is recognised by its name, and which file format wins when a repo holds the same weights several ways.

Used by the file selection (`select`), the inspection (`inspect`), the entries (`entries`) and the
planner alike, so a name means the same thing everywhere.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# Every `format` a ModelInspection can report besides "unknown", and the canonical `--format` values.
# safetensors/gguf/pytorch/onnx/tflite/h5/msgpack/openvino are file formats; awq/gptq/exl2/exl3/mlx/fp8/bnb
# are safetensors checkpoints that a quantisation config (or tensor layout) marks as such.
WEIGHT_FORMATS: tuple[str, ...] = (
    "safetensors",
    "gguf",
    "awq",
    "gptq",
    "exl2",
    "mlx",
    "fp8",
    "pytorch",
    "onnx",
    "tflite",
    "h5",
    "msgpack",
    "openvino",
    "bnb",
    "exl3",
)

# File formats (what classify_weight_file returns), in the order a repo's copies of the same weights are
# preferred when no --format is given.
FILE_FORMATS: tuple[str, ...] = (
    "safetensors",
    "gguf",
    "pytorch",
    "onnx",
    "h5",
    "msgpack",
    "openvino",
    "tflite",
)
FORMAT_PREFERENCE = FILE_FORMATS

# Checkpoint flavours stored as safetensors files (a config or the tensors say which).
SAFETENSORS_FLAVOURS: tuple[str, ...] = tuple(f for f in WEIGHT_FORMATS if f not in FILE_FORMATS) + (
    "compressed-tensors",
    "hqq",
    "eetq",
)

# Other spellings users type for a canonical format.
SPELLINGS: dict[str, str] = {
    "bitsandbytes": "bnb",
    "pt": "pytorch",
    "bin": "pytorch",
    "tf": "h5",
    "tensorflow": "h5",
    "keras": "h5",
    "flax": "msgpack",
}


def canonical_format(name: str) -> str | None:
    """The canonical name of a `--format` value (any case, any spelling), None when unknown."""
    key = name.strip().lower()
    key = SPELLINGS.get(key, key)
    return key if key in WEIGHT_FORMATS or key in SAFETENSORS_FLAVOURS else None


def file_format_of(fmt: str) -> str:
    """The file format a canonical format is stored in (awq -> safetensors, gguf -> gguf)."""
    return fmt if fmt in FILE_FORMATS else "safetensors"


def accepted_formats() -> list[str]:
    """Every `--format` value, for error hints."""
    return sorted({*WEIGHT_FORMATS, *SAFETENSORS_FLAVOURS, *SPELLINGS})


# Split GGUF parts: `<stem>-00001-of-00003.gguf`.
GGUF_SPLIT = re.compile(r"-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)

# Checkpoint byproducts that share weight extensions but are not model weights.
_NOT_WEIGHTS = re.compile(
    r"^(training_args|optimizer|scheduler|scaler|rng_state(_\d+)?|trainer_state|random_states_\d+)\.(bin|pt|pth)$"
)
_EXTENSIONS = {
    ".gguf": "gguf",
    ".safetensors": "safetensors",
    ".bin": "pytorch",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".ckpt": "pytorch",
    ".onnx": "onnx",
    ".onnx_data": "onnx",
    ".ort": "onnx",
    ".tflite": "tflite",
    ".h5": "h5",
    ".keras": "h5",
    ".msgpack": "msgpack",
}


def classify_weight_file(path: str) -> str | None:
    """The file format of a weight file judged by its name, or None for anything that is not weights
    (configs, tokenizers, READMEs, optimizer states). Works on repo-relative or local paths."""
    p = PurePosixPath(path.replace("\\", "/"))
    name = p.name.lower()
    if _NOT_WEIGHTS.match(name):
        return None
    if (
        name.startswith("openvino")
        and name.endswith((".xml", ".bin"))
        or ("openvino" in (part.lower() for part in p.parts[:-1]) and name.endswith((".xml", ".bin")))
    ):
        return "openvino"
    if name.endswith((".onnx.data", ".onnx_data")):
        return "onnx"
    if name.endswith(".bin") and (name.startswith("ggml-") or "ggml" in name.split(".")):
        return None  # pre-GGUF llama.cpp files: no tool we serve still reads them
    return _EXTENSIONS.get(PurePosixPath(name).suffix)


def weight_stem(name: str) -> str:
    """A weight file's name without its weight extension (`model.Q8_0.gguf` -> `model.Q8_0`)."""
    suffix = PurePosixPath(name).suffix
    return name[: -len(suffix)] if suffix and suffix.lower() in _EXTENSIONS else name
