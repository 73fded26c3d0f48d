"""The decision: what a set of files (a folder on disk or a remote listing) holds.

Both `inspect_folder` and `inspect_remote` build a listing and a `RepoAccess` (how to read a small file or
a header) and call `analyse`, so a folder and the repo it was downloaded from get the same answer.

Format precedence:
  1. a quantisation config (config.json quantization_config / MLX `quantization` / quantize_config.json /
     quant_config.json / hf_quant_config.json), when non-GGUF weights are present: awq, gptq, exl2, exl3,
     bnb, fp8 (compressed-tensors float8, fbgemm_fp8, fp8, ModelOpt FP8), mlx; other methods keep the file
     format with their own label (int8, int4-g128, nvfp4, mxfp4, hqq-4bit, ...);
  2. GGUF weights (mmproj projectors do not count as weights);
  3. safetensors: a quantiser's tensor layout (GPTQ/AWQ qweight, EXL2 q_weight, bitsandbytes, MLX packed)
     or MLX by __metadata__/README, else the dtype of the weights (bf16, f16, f32, fp8 for float8 linears);
  4. pytorch, then onnx, tflite, h5, msgpack, openvino.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

from imageworks.formats import GGUF_SPLIT
from imageworks.inspect.config import CONFIG_FILES, ConfigInfo, QuantConfig, library_from_readme, read_configs
from imageworks.inspect.formats import WEIGHT_FORMATS, classify_weight_file
from imageworks.inspect.quant import bpw_from_name, bpw_label, dtype_label, gguf_label_from_name, nominal_bits
from imageworks.inspect.types import Evidence, FileInspection, ModelInspection, Offer
from imageworks.listing import RepoFile

README_PREFIX = 16 * 1024
_SHARD = re.compile(r"^(?P<stem>.+?)-\d{5}-of-\d{5}$")
_SIGNATURE_FORMATS = {"gptq": "gptq", "awq": "awq", "exl2": "exl2", "mlx": "mlx", "bnb": "bnb"}
PREFERRED_GGUF = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q8_0", "Q6_K")  # which quant's header describes the model


class RepoAccess(Protocol):
    bytes_read: int

    def small(self, path: str) -> bytes | None:
        """A whole small file (config, tokenizer config, index), None when it cannot be read."""
        ...

    def prefix(self, path: str, n: int) -> bytes | None: ...

    def gguf(self, f: RepoFile) -> FileInspection: ...

    def safetensors(self, f: RepoFile) -> FileInspection: ...


HeaderPolicy = Callable[[list[RepoFile]], set[str]]
"""Given the GGUF files, the paths whose headers to read (the rest are judged by name)."""


def read_all(files: list[RepoFile]) -> set[str]:
    return {f.path for f in files}


def gguf_split_stem(path: str) -> tuple[str, int, int] | None:
    m = GGUF_SPLIT.search(path)
    return (path[: m.start()], int(m.group("no")), int(m.group("count"))) if m and m.start() else None


def gguf_by_name(f: RepoFile) -> FileInspection:
    """What a GGUF file's name says, for files whose header we chose not to read."""
    result = FileInspection(path=f.path, size=f.size, format="gguf")
    label = gguf_label_from_name(f.path)
    result.quantization = label
    result.is_projector = "mmproj" in PurePosixPath(f.path).name.lower()
    split = gguf_split_stem(f.path)
    if split and split[2] > 1:
        result.split = (split[1], split[2])
    result.evidence.append(Evidence("filename", f"{label or 'no quant label'} (header not read)"))
    return result


def _safetensors_sets(
    paths: list[str], index_sets: dict[str, set[str]]
) -> tuple[list[list[str]], list[list[str]]]:
    """(chosen sets, alternative sets) of safetensors files. A set is the shards of one checkpoint
    (same folder, same stem before -0000N-of-0000M). Within a folder only one set counts: the one an
    index names, else "model", else the largest; Mistral's consolidated.safetensors beside model-*.safetensors
    is an alternative. Sub-folders count only when the root has none (diffusers pipelines)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in paths:
        pp = PurePosixPath(p)
        stem = pp.name[: -len(".safetensors")]
        m = _SHARD.match(stem)
        groups.setdefault((str(pp.parent), m.group("stem") if m else stem), []).append(p)
    by_dir: dict[str, list[list[str]]] = {}
    for (d, _), members in sorted(groups.items()):
        by_dir.setdefault(d, []).append(sorted(members))
    chosen: list[list[str]] = []
    alternatives: list[list[str]] = []
    for sets in by_dir.values():
        indexed = [s for s in sets if any(set(s) & names for names in index_sets.values())]
        named_model = [s for s in sets if PurePosixPath(s[0]).name.startswith("model")]
        pick = (indexed or named_model or sets)[0]
        chosen.append(pick)
        alternatives += [s for s in sets if s is not pick]
    if "." in by_dir and len(chosen) > 1:
        root = [s for s in chosen if str(PurePosixPath(s[0]).parent) == "."]
        alternatives += [s for s in chosen if s not in root]
        chosen = root
    return chosen, alternatives


@dataclass
class _Weights:
    """The weight files of a repo, grouped by kind, with what their headers say."""

    kinds: dict[str, list[RepoFile]]
    gguf: list[FileInspection]
    safetensors: dict[str, FileInspection]
    chosen: list[list[str]]  # the safetensors set(s) that make the model
    alternatives: list[list[str]]  # other complete sets (a second precision, consolidated copies)
    results: list[FileInspection]  # every weight file, sorted by path


def analyse(
    files: list[RepoFile],
    access: RepoAccess,
    *,
    gguf_headers: HeaderPolicy = read_all,
    read_alternatives: bool = True,
    name_hint: str = "",
) -> ModelInspection:
    root_names = {f.path for f in files if "/" not in f.path}
    problems: list[str] = []
    config = read_configs(access.small, root_names & set(CONFIG_FILES))
    problems += config.problems
    weights = _read_weights(files, access, problems, gguf_headers, read_alternatives)

    model = ModelInspection(format="unknown", files=weights.results, problems=problems, evidence=[])
    model.total_size = sum(f.size for members in weights.kinds.values() for f in members)
    model.architecture = config.architectures[0] if config.architectures else None
    model.model_type = config.model_type
    model.context_length = config.context_length
    model.chat_template_source = config.chat_template_source
    model.evidence += config.evidence

    good_gguf = [
        r for r in weights.gguf if r.format == "gguf" and not (r.error and r.error.startswith("unreadable"))
    ]
    gguf_weights = [r for r in good_gguf if not r.is_projector]
    projectors = [r for r in good_gguf if r.is_projector]
    chosen_st = [weights.safetensors[p] for s in weights.chosen for p in s if p in weights.safetensors]
    good_st = [r for r in chosen_st if r.format == "safetensors"]
    _decide(model, config, weights.kinds, gguf_weights, good_st, access, root_names, name_hint)
    if model.dtype is None and config.dtype and model.format not in _NO_CONFIG_DTYPE:
        model.dtype = {"bf16": "BF16", "f16": "F16", "f32": "F32", "f64": "F64"}.get(config.dtype)
    if model.bits is None:
        model.bits = nominal_bits(model.quantization)
    _fill_from_gguf(model, gguf_weights)
    model.capabilities = _capabilities(model, config, projectors)
    model.offers = _offers(
        model, weights.kinds, weights.gguf, weights.chosen, weights.alternatives, weights.safetensors, config
    )
    model.bytes_read = access.bytes_read
    return model


# Formats whose weights carry their own dtype (or none worth taking from config.json).
_NO_CONFIG_DTYPE = ("gguf", "onnx", "tflite", "h5", "openvino", "unknown")


def _read_weights(
    files: list[RepoFile],
    access: RepoAccess,
    problems: list[str],
    gguf_headers: HeaderPolicy,
    read_alternatives: bool,
) -> _Weights:
    by_path = {f.path: f for f in files}
    kinds: dict[str, list[RepoFile]] = {}
    for f in files:
        kind = classify_weight_file(f.path)
        if kind:
            kinds.setdefault(kind, []).append(f)

    gguf_files = kinds.get("gguf", [])
    to_read = gguf_headers(gguf_files) if gguf_files else set()
    gguf_results = [access.gguf(f) if f.path in to_read else gguf_by_name(f) for f in gguf_files]
    _settle_splits(gguf_results, problems)

    st_files = kinds.get("safetensors", [])
    index_sets: dict[str, set[str]] = {}
    for f in files:
        if f.path.endswith(".safetensors.index.json"):
            shards = _read_index(f.path, access, problems)
            if shards is not None:
                index_sets[f.path] = shards
                missing = sorted(s for s in shards if s not in by_path)
                if missing:
                    problems.append(f"{f.path}: {len(missing)} shard(s) missing: {', '.join(missing[:5])}")
    chosen, alternatives = _safetensors_sets([f.path for f in st_files], index_sets)
    chosen_paths = {p for s in chosen for p in s}
    st_results = {
        f.path: access.safetensors(f) for f in st_files if f.path in chosen_paths or read_alternatives
    }

    results = gguf_results + list(st_results.values())
    problems += [f"{r.path}: {r.error}" for r in results if r.error]
    for kind, members in kinds.items():
        if kind not in ("gguf", "safetensors"):
            results += [
                FileInspection(
                    path=f.path,
                    size=f.size,
                    format=kind,
                    evidence=[Evidence("filename", f"{kind} by extension")],
                )
                for f in members
            ]
    results.sort(key=lambda r: r.path)
    return _Weights(kinds, gguf_results, st_results, chosen, alternatives, results)


def _decide(
    model: ModelInspection,
    config: ConfigInfo,
    kinds: dict[str, list[RepoFile]],
    gguf_weights: list[FileInspection],
    good_st: list[FileInspection],
    access: RepoAccess,
    root_names: set[str],
    name_hint: str,
) -> None:
    """Format and quantisation: a quantisation config (when non-GGUF weights are usable), else the GGUF
    headers, else the safetensors headers, else the first other kind of weights by extension."""
    # a quantisation config describes safetensors/pytorch weights: it decides only when some are usable
    non_gguf_weights = bool(good_st) or any(k not in ("gguf", "safetensors") for k in kinds)
    if config.quant and non_gguf_weights:
        _decide_by_config(model, config.quant, good_st)
    elif gguf_weights:
        _decide_gguf(model, gguf_weights)
    elif good_st:
        _decide_safetensors(model, good_st, config, access, root_names, name_hint)
    else:
        _decide_by_extension(model, config, kinds)
    if model.format == "unknown":
        if not kinds:
            model.reason = "no weight files"
        else:
            broken = [f"{r.path}: {r.error}" for r in model.files if r.error]
            model.reason = "no usable weight file" + (f" ({'; '.join(broken[:3])})" if broken else "")


def _decide_by_extension(
    model: ModelInspection, config: ConfigInfo, kinds: dict[str, list[RepoFile]]
) -> None:
    for kind in ("pytorch", "onnx", "tflite", "h5", "msgpack", "openvino"):
        if kind in kinds:
            model.format = kind
            if kind == "pytorch" and config.dtype:
                model.quantization = config.dtype
                why = f"{config.dtype} (pytorch weights carry no dtype in their name)"
                model.evidence.append(Evidence("config.torch_dtype", why))
            model.evidence.append(Evidence("filename", f"{len(kinds[kind])} {kind} file(s)"))
            return


def _fill_from_gguf(model: ModelInspection, gguf_weights: list[FileInspection]) -> None:
    """GGUF metadata fills what config did not give."""
    primary = _primary_gguf(gguf_weights, model.quantization)
    if primary is not None:
        model.architecture = model.architecture or primary.architecture
        model.context_length = model.context_length or primary.context_length
        model.name = primary.name
    if model.chat_template_source is None:
        with_template = next((r for r in gguf_weights if r.chat_template), None)
        if with_template:
            model.chat_template_source = f"gguf:{with_template.path}"


def _capabilities(model: ModelInspection, config: ConfigInfo, projectors: list[FileInspection]) -> list[str]:
    caps: set[str] = set()
    if config.vision:
        caps.add("vision")
    if config.audio:
        caps.add("audio")
    if projectors:
        caps.update({"projector", "vision"})
        model.evidence.append(Evidence("gguf.projector", ", ".join(r.path for r in projectors)))
    if model.chat_template_source:
        caps.add("chat_template")
    return sorted(caps)


def _read_index(path: str, access: RepoAccess, problems: list[str]) -> set[str] | None:
    from imageworks.inspect.config import load_json

    data = load_json(access.small(path), path, problems)
    if data is None:
        return None
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict):
        problems.append(f"{path}: no weight_map")
        return None
    folder = PurePosixPath(path).parent
    return {str(folder / v) if str(folder) != "." else v for v in weight_map.values() if isinstance(v, str)}


def _settle_splits(results: list[FileInspection], problems: list[str]) -> None:
    """Parts 2+ of a split GGUF carry no metadata: they take part 1's quant. Report missing parts."""
    sets: dict[str, dict[int, FileInspection]] = {}
    counts: dict[str, int] = {}
    for r in results:
        split = gguf_split_stem(r.path)
        if split:
            sets.setdefault(split[0], {})[split[1]] = r
            counts[split[0]] = split[2]
    for stem, parts in sets.items():
        first = parts.get(1)
        missing = [i for i in range(1, counts[stem] + 1) if i not in parts]
        if missing:
            problems.append(
                f"{stem}: split parts missing: {', '.join(str(i) for i in missing)} of {counts[stem]}"
            )
        if first is None or first.quantization is None:
            continue
        for no, r in parts.items():
            has_header_type = any(e.signal == "gguf.general.file_type" for e in r.evidence)
            if no != 1 and not has_header_type and r.quantization != first.quantization:
                r.quantization = first.quantization
                r.evidence.append(Evidence("gguf.split", f"quant {first.quantization} from part 1"))
            if no != 1 and r.architecture is None:
                r.architecture = first.architecture


def _decide_by_config(model: ModelInspection, q: QuantConfig, st: list[FileInspection]) -> None:
    model.format = q.format
    model.quantization = q.label
    model.bits = q.bits
    model.group_size = q.group_size
    if st:
        model.parameters = _safetensors_parameters(st, q.bits)
        model.dtype = _dominant_dtype(st)


def _decide_gguf(model: ModelInspection, weights: list[FileInspection]) -> None:
    model.format = "gguf"
    labels = sorted({r.quantization for r in weights if r.quantization})
    model.gguf_quants = labels
    unlabelled = [r.path for r in weights if not r.quantization]
    if unlabelled:
        model.problems.append(f"no quant label for: {', '.join(unlabelled[:5])}")
    if len(labels) == 1:
        model.quantization = labels[0]
        model.evidence.append(Evidence("gguf", f"one quant: {labels[0]}"))
    elif labels:
        model.evidence.append(Evidence("gguf", f"{len(labels)} quants: {', '.join(labels)}"))
    primary = _primary_gguf(weights, model.quantization)
    if primary is not None and primary.quantization:
        members = [r for r in weights if r.quantization == primary.quantization]
        counted = [r.parameters for r in members if r.parameters is not None]
        # parameters only when every part of the quant was read: a partial sum would be wrong
        if counted and len(counted) == len(members):
            model.parameters = sum(counted)
        model.dtype = primary.dtype


def _primary_gguf(weights: list[FileInspection], label: str | None) -> FileInspection | None:
    read = [r for r in weights if r.architecture is not None and (r.split is None or r.split[0] == 1)]
    if not read:
        return None
    for want in (label, *PREFERRED_GGUF):
        for r in read:
            if want and r.quantization == want:
                return r
    return sorted(read, key=lambda r: r.path)[0]


def _dominant_dtype(st: list[FileInspection]) -> str | None:
    totals: dict[str, int] = {}
    for r in st:
        if r.dtype:
            totals[r.dtype] = totals.get(r.dtype, 0) + (r.parameters or 0) - r.packed_bits // 4
    return max(totals, key=lambda d: totals[d]) if totals else None


def _safetensors_parameters(st: list[FileInspection], bits: float | None) -> int | None:
    if any(r.parameters is None for r in st):
        return None
    plain = sum((r.parameters or 0) - r.packed_bits // 4 for r in st)
    packed = sum(r.packed_bits for r in st)
    return plain + (round(packed / bits) if packed and bits else packed // 4)


def _decide_safetensors(
    model: ModelInspection,
    st: list[FileInspection],
    config: ConfigInfo,
    access: RepoAccess,
    root_names: set[str],
    name_hint: str,
) -> None:
    ev = model.evidence
    model.dtype = _dominant_dtype(st)
    signature = next(
        (r.quantization for r in st if r.quantization and r.quantization.split("-")[0] in _SIGNATURE_FORMATS),
        None,
    )
    mlx_meta = any(r.metadata.get("format") == "mlx" for r in st)
    library = None
    if not mlx_meta and signature is None and "README.md" in root_names:
        raw = access.prefix("README.md", README_PREFIX)
        library = library_from_readme(raw) if raw else None
        if library:
            ev.append(Evidence("README.library_name", library))
    bits: float | None = None
    if signature:
        fmt = _SIGNATURE_FORMATS[signature.split("-")[0]]
        label = signature
        if fmt == "exl2":
            bpw = bpw_from_name(name_hint) or bpw_from_name(" ".join(r.path for r in st))
            label = bpw_label("exl2", bpw)
            bits = bpw
            ev.append(
                Evidence(
                    "name",
                    f"{bpw} bpw in {name_hint!r}" if bpw else "bpw unknown (no config, no NNbpw in the name)",
                )
            )
        model.format = fmt
        model.quantization = label
        ev.append(
            Evidence("safetensors.tensors", f"{fmt} tensor layout without a quantization config -> {label}")
        )
    elif mlx_meta or library == "mlx":
        model.format = "mlx"
        model.quantization = dtype_label(model.dtype) if model.dtype else None
        ev.append(
            Evidence("mlx", "safetensors __metadata__ format=mlx" if mlx_meta else "README library_name: mlx")
        )
    else:
        labels = [r.quantization for r in st if r.quantization]
        common = "fp8" if "fp8" in labels else (max(set(labels), key=labels.count) if labels else None)
        model.format = "fp8" if common == "fp8" else "safetensors"
        model.quantization = common
        ev.append(
            Evidence(
                "safetensors",
                f"weights stored as {model.dtype}" + (" (float8 linears)" if common == "fp8" else ""),
            )
        )
    bits = bits if bits is not None else nominal_bits(model.quantization)
    model.bits = bits
    model.parameters = _safetensors_parameters(st, bits)


def _offers(
    model: ModelInspection,
    kinds: dict[str, list[RepoFile]],
    gguf_results: list[FileInspection],
    chosen: list[list[str]],
    alternatives: list[list[str]],
    st_results: dict[str, FileInspection],
    config: ConfigInfo,
) -> list[Offer]:
    offers: list[Offer] = []
    sizes = {f.path: f.size for members in kinds.values() for f in members}
    groups: dict[tuple[str, str | None], list[FileInspection]] = {}
    for r in gguf_results:
        if r.format == "gguf":
            groups.setdefault(("projector" if r.is_projector else "weights", r.quantization), []).append(r)
    for (role, label), members in sorted(
        groups.items(), key=lambda kv: (kv[0][0] != "weights", kv[0][1] or "")
    ):
        counted = [r.parameters for r in members if r.parameters is not None]
        params = sum(counted) if counted and len(counted) == len(members) else None
        first = min(members, key=lambda r: r.path)
        paths = tuple(sorted(r.path for r in members))
        offers.append(Offer("gguf", label, paths, sum(sizes[p] for p in paths), role, params, first.dtype))

    st_format = model.format if model.format not in ("gguf", "unknown", "pytorch", "onnx") else "safetensors"
    for role, sets in (("weights", chosen), ("alternative", alternatives)):
        for s in sets:
            members = [st_results[p] for p in s if p in st_results]
            readable = len(members) == len(s) and all(r.format == "safetensors" for r in members)
            if role == "weights" and st_format == model.format:
                fmt, label, bits = st_format, model.quantization, model.bits
            else:
                labels = [r.quantization for r in members if r.quantization]
                label = max(set(labels), key=labels.count) if labels else None
                fmt, bits = "safetensors", nominal_bits(label)
            params = _safetensors_parameters(members, bits) if readable else None
            dtype = _dominant_dtype(members) if readable else None
            offers.append(Offer(fmt, label, tuple(s), sum(sizes[p] for p in s), role, params, dtype))

    for kind in WEIGHT_FORMATS:
        if kind in ("gguf", "safetensors") or kind not in kinds:
            continue
        paths = tuple(sorted(f.path for f in kinds[kind]))
        label = config.dtype if kind == "pytorch" else None
        offers.append(Offer(kind, label, paths, sum(sizes[p] for p in paths)))
    order = {model.format: 0}
    offers.sort(key=lambda o: (order.get(o.format, 1), o.role != "weights"))
    return offers
