"""config.json and friends: quantisation configs, dtype, architecture, context length, vision, chat template.

Reads the small files a repo ships beside its weights through a `read_small(path) -> bytes | None`
callable, so the same code serves a folder on disk and a remote repo.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imageworks import untrusted_json
from imageworks.inspect.quant import bpw_label, group_label, torch_dtype_label
from imageworks.inspect.types import Evidence

MAX_SMALL_FILE = 16 * 1024 * 1024  # tokenizer_config.json with many added tokens reaches a few MB
README_PREFIX = 16 * 1024

CONFIG_FILES = (
    "config.json",
    "quantize_config.json",  # AutoGPTQ (TheBloke-era repos)
    "quant_config.json",  # AutoAWQ before quantization_config moved into config.json
    "hf_quant_config.json",  # NVIDIA ModelOpt
    "tokenizer_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "processor_config.json",
    "preprocessor_config.json",
)

ReadSmall = Callable[[str], "bytes | None"]

_CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "max_sequence_length",
    "seq_length",
    "n_ctx",
)
_NESTED_TEXT_CONFIGS = ("text_config", "llm_config", "language_config", "thinker_config")
_VISION_ARCH = re.compile(
    r"Vision|VL|Llava|LLaVA|Vlm|VLM|ImageText|Pixtral|Idefics|PaliGemma|Mllama", re.IGNORECASE
)


@dataclass
class QuantConfig:
    """A quantisation declared by config: `format` is the WEIGHT_FORMATS word it implies."""

    method: str
    format: str
    label: str
    bits: float | None
    group_size: int | None
    source: str
    detail: str = ""


@dataclass
class ConfigInfo:
    architectures: list[str] = field(default_factory=list)
    model_type: str | None = None
    dtype: str | None = None  # label from torch_dtype / dtype
    context_length: int | None = None
    quant: QuantConfig | None = None
    vision: str | None = None  # why we think it sees images
    audio: str | None = None
    chat_template_source: str | None = None
    evidence: list[Evidence] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    found: bool = False  # a config.json was there


def load_json(raw: bytes | None, name: str, problems: list[str]) -> dict[str, Any] | None:
    if raw is None:
        return None
    if len(raw) > MAX_SMALL_FILE:
        problems.append(f"{name}: larger than {MAX_SMALL_FILE >> 20} MiB, ignored")
        return None
    try:
        data = untrusted_json.loads(raw)
    except untrusted_json.UntrustedJSONError as exc:
        problems.append(f"{name}: {exc}"[:200])
        return None
    if not isinstance(data, dict):
        problems.append(f"{name}: not a JSON object")
        return None
    return data


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    n = _num(value)
    return int(n) if n is not None and n.is_integer() else None


def parse_quantization(qc: dict[str, Any], source: str) -> QuantConfig | None:
    """One quantization_config (or quantize_config.json / quant_config.json / MLX `quantization`)."""
    method = str(qc.get("quant_method") or "").lower().replace("_", "-")
    bits = _num(qc.get("bits", qc.get("w_bit")))
    group = _int(qc.get("group_size", qc.get("q_group_size")))
    method = method or _implied_method(qc, bits) or ""
    if not method:
        return None
    if method in ("awq", "gptq"):
        detail = ", ".join(f"{k}={qc[k]}" for k in ("version", "desc_act", "sym", "zero_point") if k in qc)
        return QuantConfig(method, method, group_label(method, bits, group), bits, group, source, detail)
    if method in ("exl2", "exl3"):
        detail = f"head_bits={qc.get('head_bits')}"
        return QuantConfig(method, method, bpw_label(method, bits), bits, None, source, detail)
    if method == "mlx":
        mode = qc.get("mode")
        custom = isinstance(mode, str) and mode not in ("affine", "")
        label = f"mlx-{mode}" if custom else group_label("mlx", bits, None)
        return QuantConfig("mlx", "mlx", label, bits, group, source, f"group_size={group}")
    if method == "bitsandbytes":
        return _bitsandbytes(qc, source)
    if method in ("fbgemm-fp8", "fp8"):
        detail = ", ".join(
            f"{k}={qc[k]}" for k in ("fmt", "weight_block_size", "activation_scheme") if k in qc
        )
        return QuantConfig(method, "fp8", "fp8", 8.0, None, source, detail)
    if method == "compressed-tensors":
        return _compressed_tensors(qc, source)
    if method == "modelopt" or "quant_algo" in qc:
        return _modelopt(qc, method, source)
    if method == "hqq":
        return _hqq(qc, source)
    if method == "eetq":
        return QuantConfig(method, "safetensors", "eetq-int8", 8.0, None, source, "")
    if method == "mxfp4":
        return QuantConfig(method, "safetensors", "mxfp4", 4.0, 32, source, "")
    return QuantConfig(
        method, "safetensors", method, bits, group, source, "quant_method not in the vocabulary"
    )


def _implied_method(qc: dict[str, Any], bits: float | None) -> str | None:
    """The method of a config that does not name one (older AutoGPTQ/AutoAWQ files, bitsandbytes, MLX)."""
    if "load_in_4bit" in qc or "load_in_8bit" in qc:
        return "bitsandbytes"
    if "w_bit" in qc:
        return "awq"
    if "desc_act" in qc or "damp_percent" in qc:
        return "gptq"
    if bits is not None and ("group_size" in qc or "mode" in qc):
        return "mlx"
    return None


def _bitsandbytes(qc: dict[str, Any], source: str) -> QuantConfig:
    method = "bitsandbytes"
    if qc.get("load_in_4bit") or qc.get("_load_in_4bit"):
        detail = f"bnb_4bit_quant_type={qc.get('bnb_4bit_quant_type', 'fp4')}"
        return QuantConfig(method, "bnb", "bnb-4bit", 4.0, None, source, detail)
    if qc.get("load_in_8bit") or qc.get("_load_in_8bit"):
        return QuantConfig(method, "bnb", "bnb-8bit", 8.0, None, source, "llm.int8")
    return QuantConfig(method, "bnb", "bnb", None, None, source, "neither load_in_4bit nor load_in_8bit set")


def _modelopt(qc: dict[str, Any], method: str, source: str) -> QuantConfig:
    method = method or "modelopt"
    algo = str(qc.get("quant_algo") or "").upper()
    if algo.startswith("FP8"):
        return QuantConfig(method, "fp8", "fp8", 8.0, None, source, f"quant_algo={algo}")
    if "NVFP4" in algo:
        return QuantConfig(method, "safetensors", "nvfp4", 4.0, None, source, f"quant_algo={algo}")
    return QuantConfig(method, "safetensors", (algo or "modelopt").lower(), None, None, source, "")


def _hqq(qc: dict[str, Any], source: str) -> QuantConfig:
    nested = qc.get("quant_config")
    params = (
        (nested.get("weight_quant_params") if isinstance(nested, dict) else None)
        or qc.get("weight_quant_params")
        or qc
    )
    hbits = _num(params.get("nbits")) if isinstance(params, dict) else None
    hgroup = _int(params.get("group_size")) if isinstance(params, dict) else None
    return QuantConfig("hqq", "safetensors", group_label("hqq", hbits, None), hbits, hgroup, source, "")


def _compressed_tensors(qc: dict[str, Any], source: str) -> QuantConfig:
    fmt = str(qc.get("format") or "")
    groups = qc.get("config_groups") or {}
    weights: dict[str, Any] = {}
    acts: dict[str, Any] = {}
    if isinstance(groups, dict):
        for key in sorted(groups):
            group = groups[key]
            if isinstance(group, dict) and isinstance(group.get("weights"), dict):
                weights = group["weights"]
                acts = group.get("input_activations") or {}
                break
    nbits = _num(weights.get("num_bits"))
    wtype = str(weights.get("type") or ("float" if "float" in fmt else "int"))
    gsize = _int(weights.get("group_size"))
    detail = f"format={fmt}, weights={wtype}{int(nbits) if nbits else '?'} strategy={weights.get('strategy')}"
    if isinstance(acts, dict) and acts.get("num_bits"):
        detail += f", activations={acts.get('type')}{acts.get('num_bits')}"
    if "nvfp4" in fmt or (wtype == "float" and nbits == 4 and gsize == 16):
        return QuantConfig("compressed-tensors", "safetensors", "nvfp4", 4.0, gsize, source, detail)
    if "mxfp4" in fmt or (wtype == "float" and nbits == 4):
        return QuantConfig("compressed-tensors", "safetensors", "mxfp4", 4.0, gsize, source, detail)
    if wtype == "float" and nbits == 8:
        return QuantConfig("compressed-tensors", "fp8", "fp8", 8.0, None, source, detail)
    if nbits is not None:
        label = f"int{int(nbits)}" + (f"-g{gsize}" if gsize and weights.get("strategy") == "group" else "")
        return QuantConfig("compressed-tensors", "safetensors", label, nbits, gsize, source, detail)
    return QuantConfig("compressed-tensors", "safetensors", "compressed-tensors", None, None, source, detail)


def _context_length(config: dict[str, Any]) -> tuple[int, str] | None:
    for scope, conf in [("", config)] + [(f"{k}.", config.get(k)) for k in _NESTED_TEXT_CONFIGS]:
        if not isinstance(conf, dict):
            continue
        for key in _CONTEXT_KEYS:
            n = _int(conf.get(key))
            if n and n > 0:
                return n, scope + key
    return None


def _dtype(config: dict[str, Any]) -> tuple[str, str] | None:
    for scope, conf in [("", config)] + [(f"{k}.", config.get(k)) for k in _NESTED_TEXT_CONFIGS]:
        if not isinstance(conf, dict):
            continue
        for key in ("torch_dtype", "dtype"):
            value = conf.get(key)
            if isinstance(value, str) and torch_dtype_label(value):
                return torch_dtype_label(value) or value, f"{scope}{key}={value}"
    return None


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, list) and any(isinstance(t, dict) and t.get("template") for t in value)


def library_from_readme(readme: bytes) -> str | None:
    """The model card's `library_name` ("mlx", "transformers", ...), or "mlx" when only its tags say so."""
    fm = _front_matter(readme)
    lib = fm.get("library_name")
    if lib is None and "mlx" in fm.get("tags", []):
        lib = "mlx"
    return lib if isinstance(lib, str) else None


def _front_matter(readme: bytes) -> dict[str, Any]:
    """library_name and tags from a model card's YAML front matter (no YAML parser needed for these)."""
    text = readme.decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    block = text[3:end] if end > 0 else ""
    out: dict[str, Any] = {"tags": []}
    in_tags = False
    for line in block.splitlines():
        if m := re.match(r"^library_name:\s*['\"]?([\w.-]+)", line):
            out["library_name"] = m.group(1).lower()
        if re.match(r"^tags:\s*$", line):
            in_tags = True
            continue
        if in_tags and (m := re.match(r"^\s*-\s*['\"]?([^'\"\s]+)", line)):
            out["tags"].append(m.group(1).lower())
        elif in_tags and not line.startswith(" "):
            in_tags = False
        if m := re.match(r"^tags:\s*\[(.*)\]", line):
            out["tags"] += [t.strip(" '\"").lower() for t in m.group(1).split(",")]
    return out


def read_configs(read_small: ReadSmall, present: set[str]) -> ConfigInfo:
    """Everything the small files of a model say. `present` is the set of root-level file names there;
    only those are read."""
    info = ConfigInfo()

    def get(name: str) -> dict[str, Any] | None:
        return load_json(read_small(name), name, info.problems) if name in present else None

    config = get("config.json")
    if config is not None:
        _read_config(info, config)
    if info.quant is None:
        _read_quant_files(info, get)
    if info.quant:
        q = info.quant
        info.evidence.append(
            Evidence(q.source, f"{q.method} -> {q.label}" + (f" ({q.detail})" if q.detail else ""))
        )
    _find_chat_template(info, read_small, present, get)
    if info.vision is None and config is not None:
        pre = get("preprocessor_config.json")
        if pre is not None and ("image_processor_type" in pre or "image_mean" in pre):
            info.vision = "preprocessor_config.json: image processor"
    if info.vision:
        info.evidence.append(Evidence("vision", info.vision))
    return info


def _read_config(info: ConfigInfo, config: dict[str, Any]) -> None:
    """What config.json says: architecture, context, dtype, quantisation, vision and audio."""
    info.found = True
    archs = config.get("architectures")
    if isinstance(archs, list):
        info.architectures = [a for a in archs if isinstance(a, str)]
    if isinstance(config.get("model_type"), str):
        info.model_type = config["model_type"]
    ctx = _context_length(config)
    if ctx:
        info.context_length = ctx[0]
        info.evidence.append(Evidence(f"config.{ctx[1]}", str(ctx[0])))
    dt = _dtype(config)
    if dt:
        info.dtype = dt[0]
        info.evidence.append(Evidence("config.torch_dtype", dt[1]))
    qc = config.get("quantization_config")
    if isinstance(qc, dict):
        info.quant = parse_quantization(qc, "config.json:quantization_config")
    mlx_q = config.get("quantization")
    if isinstance(mlx_q, dict) and (info.quant is None or info.quant.method == "mlx"):
        q = parse_quantization(
            {k: v for k, v in mlx_q.items() if k != "quant_method"}, "config.json:quantization"
        )
        if q is not None:
            label = q.label if q.method == "mlx" else "mlx"
            info.quant = QuantConfig("mlx", "mlx", label, q.bits, q.group_size, q.source, q.detail)
    vision = _vision(config)
    if vision:
        info.vision = vision
    for key in ("audio_config", "audio_token_index", "audio_token_id"):
        if config.get(key) is not None:
            info.audio = f"config.{key}"
            break


def _read_quant_files(info: ConfigInfo, get: Callable[[str], dict[str, Any] | None]) -> None:
    """The quantisation configs that live beside config.json (AutoGPTQ, AWQ, ModelOpt)."""
    for name in ("quantize_config.json", "quant_config.json", "hf_quant_config.json"):
        data = get(name)
        if data is None:
            continue
        if name == "hf_quant_config.json" and isinstance(data.get("quantization"), dict):
            data = {"quant_method": "modelopt", **data["quantization"]}
        info.quant = parse_quantization(data, name)
        if info.quant:
            return


def _find_chat_template(
    info: ConfigInfo, read_small: ReadSmall, present: set[str], get: Callable[[str], dict[str, Any] | None]
) -> None:
    tok = get("tokenizer_config.json")
    if tok is not None and _has_template(tok.get("chat_template")):
        info.chat_template_source = "tokenizer_config.json"
    if info.chat_template_source is None and "chat_template.jinja" in present:
        raw = read_small("chat_template.jinja")
        if raw and raw.strip():
            info.chat_template_source = "chat_template.jinja"
    for name in ("chat_template.json", "processor_config.json"):
        if info.chat_template_source is None:
            data = get(name)
            if data is not None and _has_template(data.get("chat_template")):
                info.chat_template_source = name
    if info.chat_template_source:
        info.evidence.append(Evidence("chat_template", f"in {info.chat_template_source}"))


def _vision(config: dict[str, Any]) -> str | None:
    for key in ("vision_config", "vision_tower", "mm_vision_tower", "visual", "vision_encoder"):
        if config.get(key):
            return f"config.{key}"
    for key in ("image_token_index", "image_token_id"):
        if config.get(key) is not None:
            return f"config.{key}"
    archs = config.get("architectures")
    if isinstance(archs, list):
        for arch in archs:
            if isinstance(arch, str) and _VISION_ARCH.search(arch):
                return f"config.architectures={arch}"
    return None
