"""The result types of inspection (the contract other modules code against)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Evidence:
    """One signal that contributed to a decision, e.g. ("gguf.general.file_type", "15 -> Q4_K_M") or
    ("filename", "Q4_K_M in 'model-Q4_K_M.gguf' (header has no general.file_type)")."""

    signal: str
    detail: str


@dataclass
class FileInspection:
    """What one weight file's header says.

    `format` is the file format ("gguf", "safetensors", "pytorch", ...) or "unknown" when the header could
    not be parsed; `error` is then the reason. A file whose header parsed but whose data is cut short keeps
    its format and gets an `error` ("truncated: ..."): callers treat any `error` as "unusable file".
    `split` is (index, count), 1-based like the `-00001-of-00003` filename suffix.
    `dtypes` maps a tensor dtype (safetensors "BF16", ggml "Q4_K") to its element count.
    `packed_bits` is the storage of packed quantised weights (GPTQ/AWQ qweight, MLX U32, bnb 4-bit U8); the
    parameter count of a file with packed weights assumes 4-bit packing until the folder's config says
    otherwise.
    """

    path: str
    size: int
    format: str
    quantization: str | None = None
    dtype: str | None = None
    dtypes: dict[str, int] = field(default_factory=dict)
    parameters: int | None = None
    architecture: str | None = None
    name: str | None = None
    context_length: int | None = None
    split: tuple[int, int] | None = None
    is_projector: bool = False
    chat_template: bool = False
    tensor_count: int | None = None
    packed_bits: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    evidence: list[Evidence] = field(default_factory=list)
    bytes_read: int = 0


@dataclass(frozen=True)
class Offer:
    """One way a repo or folder holds its weights: a format + quant and the files that make it up.
    `role` is "weights", "projector" (a GGUF mmproj) or "alternative" (a second copy of the same weights,
    e.g. Mistral's consolidated.safetensors beside model-*.safetensors). `parameters` and `dtype` are
    known when the headers of all its files were read."""

    format: str
    quantization: str | None
    files: tuple[str, ...]
    size: int
    role: str = "weights"
    parameters: int | None = None
    dtype: str | None = None


@dataclass
class ModelInspection:
    """What a folder (or a remote repo) holds, decided from headers and configs.

    `format` is one of WEIGHT_FORMATS or "unknown" (then `reason` says why). `quantization` is a label of
    the vocabulary in `imageworks.inspect.quant` (None for a GGUF folder holding several quants: see
    `gguf_quants`). `bits` is the nominal width (4 for Q4_K_M and awq-4bit). `offers` lists every format /
    quant present with its files and size; `problems` lists unusable files, missing shards and unreadable
    configs (the decision was made without them).
    """

    format: str
    quantization: str | None = None
    bits: float | None = None
    parameters: int | None = None
    architecture: str | None = None
    model_type: str | None = None
    context_length: int | None = None
    capabilities: list[str] = field(default_factory=list)
    gguf_quants: list[str] = field(default_factory=list)
    files: list[FileInspection] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    bytes_read: int = 0
    reason: str | None = None
    dtype: str | None = None
    name: str | None = None
    group_size: int | None = None
    chat_template_source: str | None = None
    offers: list[Offer] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    total_size: int = 0

    @property
    def errors(self) -> list[tuple[str, str]]:
        """(path, error) of every weight file that cannot be used as it is."""
        return [(f.path, f.error) for f in self.files if f.error]
