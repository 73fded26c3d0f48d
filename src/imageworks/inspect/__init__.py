"""Format and quantisation detection from file headers and configs: pure functions over bytes and paths.

    inspect_folder(path)            a model folder on disk (configs + weight headers only)
    inspect_remote(files, ...)      a remote repo from its listing + Range reads of the headers
    inspect_gguf(data_or_path)      one GGUF file (KV + tensor infos)
    inspect_safetensors(...)        one safetensors file (the JSON header)
    classify_weight_file(path)      a weight file's format by name (the download planner's view)

The quantisation vocabulary is documented in `imageworks.inspect.quant`; the format precedence in
`imageworks.inspect.repo`. Hostile or broken files never raise: they come back with format "unknown" (or
an `error` on the file) and a reason.
"""

from imageworks.inspect.folder import inspect_folder
from imageworks.inspect.formats import FILE_FORMATS, WEIGHT_FORMATS, classify_weight_file
from imageworks.inspect.gguf import inspect_gguf
from imageworks.inspect.quant import gguf_label_from_name, nominal_bits, normalize_gguf_label
from imageworks.inspect.remote import inspect_remote
from imageworks.inspect.safetensors import inspect_safetensors
from imageworks.inspect.types import Evidence, FileInspection, ModelInspection, Offer
from imageworks.listing import RepoFile

__all__ = [
    "FILE_FORMATS",
    "WEIGHT_FORMATS",
    "Evidence",
    "FileInspection",
    "ModelInspection",
    "Offer",
    "RepoFile",
    "classify_weight_file",
    "gguf_label_from_name",
    "inspect_folder",
    "inspect_gguf",
    "inspect_remote",
    "inspect_safetensors",
    "nominal_bits",
    "normalize_gguf_label",
]
