"""Weight-file formats by name: the `--format` vocabulary and the file classifier the planner uses."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# The `--format` vocabulary, and every `format` a ModelInspection can report besides "unknown".
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

# File formats (what classify_weight_file returns); the others live inside safetensors files.
FILE_FORMATS: tuple[str, ...] = (
    "safetensors",
    "gguf",
    "pytorch",
    "onnx",
    "tflite",
    "h5",
    "msgpack",
    "openvino",
)

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
