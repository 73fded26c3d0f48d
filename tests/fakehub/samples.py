"""Ready-made repos for the fake Hub, built from real (tiny) model files by tests/modelfiles.py.

Each `add_*` function adds one repo and returns a `SampleRepo` with the exact bytes served, so a test can
compare what it downloaded. File sets are generated once per process and reused.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests import modelfiles

from .server import FakeHub

SAFETENSORS_REPO = "TheOwner/Tiny-Llama"
SHARDED_REPO = "TheOwner/Tiny-Llama-Sharded"
AWQ_REPO = "TheBloke/Llama-3-8B-Instruct-AWQ"
GGUF_REPO = "TheOwner/Tiny-Llama-GGUF"
SPLIT_GGUF_REPO = "TheOwner/Big-Llama-GGUF"
GATED_REPO = "GatedOrg/Gated-Llama"
HOSTILE_REPO = "Evil/Traversal"

README = b"---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n\n# A tiny test model\n"
LICENSE = b"Apache License\nVersion 2.0, January 2004\n"


@dataclass(frozen=True)
class SampleRepo:
    repo_id: str
    commit: str
    files: dict[str, bytes | Path]  # path in repo -> content served (without the added .gitattributes)

    def bytes_of(self, path: str) -> bytes:
        content = self.files[path]
        return content.read_bytes() if isinstance(content, Path) else content


def _folder_files(build: Callable[[Path], object]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root)
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }


@functools.cache
def _safetensors_files() -> dict[str, bytes]:
    files = _folder_files(lambda d: modelfiles.write_hf_model(d, "plain-bf16"))
    # The same weights several ways, as many older repos ship them.
    files["pytorch_model.bin"] = _folder_files(lambda d: modelfiles.write_hf_model(d, "pytorch"))[
        "pytorch_model.bin"
    ]
    files["onnx/model.onnx"] = _folder_files(lambda d: modelfiles.write_hf_model(d, "onnx"))[
        "onnx/model.onnx"
    ]
    files["tf_model.h5"] = b"\x89HDF\r\n\x1a\n" + bytes(504)  # HDF5 superblock signature
    files["flax_model.msgpack"] = b"\x80"  # an empty msgpack map
    files["README.md"] = README
    files["LICENSE"] = LICENSE
    return files


@functools.cache
def _sharded_files() -> dict[str, bytes]:
    return {**_folder_files(lambda d: modelfiles.write_hf_model(d, "sharded")), "README.md": README}


@functools.cache
def _awq_files() -> dict[str, bytes]:
    files = _folder_files(lambda d: modelfiles.write_hf_model(d, "awq", bits=4, group_size=128))
    return {**files, "README.md": README.replace(b"transformers", b"transformers\ntags:\n- awq")}


@functools.cache
def _gguf_files() -> dict[str, bytes]:
    files = _folder_files(
        lambda d: modelfiles.write_gguf_repo(d, "Tiny-Llama-3B", ("Q4_K_M", "Q8_0", "Q5_K_S"), mmproj=True)
    )
    return {**files, "README.md": b"---\nlicense: apache-2.0\ntags:\n- gguf\n---\n\n# Tiny Llama GGUF\n"}


@functools.cache
def _split_gguf_files() -> dict[str, bytes]:
    def build(d: Path) -> None:
        modelfiles.write_gguf_repo(d / "Q8_0", "Big-Llama-70B", ("Q8_0",), split_parts=2)
        modelfiles.write_gguf_repo(d / "Q4_K_M", "Big-Llama-70B", ("Q4_K_M",), split_parts=3)
        modelfiles.write_gguf_repo(d, "Big-Llama-70B", ("Q2_K",))

    return {**_folder_files(build), "README.md": b"---\ntags:\n- gguf\n---\n\n# Big Llama GGUF\n"}


def _add(hub: FakeHub, repo_id: str, files: dict[str, bytes], **kw: object) -> SampleRepo:
    commit = hub.add_repo(repo_id, files, **kw)  # type: ignore[arg-type]
    return SampleRepo(repo_id, commit, dict(files))


def add_safetensors_model(hub: FakeHub, repo_id: str = SAFETENSORS_REPO) -> SampleRepo:
    """config/generation_config/tokenizer files, README, LICENSE, model.safetensors (BF16) and the same
    weights as pytorch_model.bin, onnx/model.onnx, tf_model.h5 and flax_model.msgpack."""
    return _add(hub, repo_id, _safetensors_files())


def add_sharded_model(hub: FakeHub, repo_id: str = SHARDED_REPO) -> SampleRepo:
    """model-00001-of-00002.safetensors, model-00002-of-00002.safetensors, model.safetensors.index.json,
    config and tokenizer files, README."""
    return _add(hub, repo_id, _sharded_files())


def add_awq_model(hub: FakeHub, repo_id: str = AWQ_REPO) -> SampleRepo:
    """AutoAWQ GEMM layout, config.json quantization_config {quant_method: awq, bits: 4, group_size: 128}."""
    return _add(hub, repo_id, _awq_files())


def add_gguf_model(hub: FakeHub, repo_id: str = GGUF_REPO) -> SampleRepo:
    """Tiny-Llama-3B-{Q4_K_M,Q8_0,Q5_K_S}.gguf, mmproj-Tiny-Llama-3B-F16.gguf, README.md."""
    return _add(hub, repo_id, _gguf_files())


def add_split_gguf_model(hub: FakeHub, repo_id: str = SPLIT_GGUF_REPO) -> SampleRepo:
    """Q8_0/Big-Llama-70B-Q8_0-0000{1,2}-of-00002.gguf, Q4_K_M/Big-Llama-70B-Q4_K_M-0000{1,2,3}-of-00003.gguf,
    Big-Llama-70B-Q2_K.gguf at the root, README.md."""
    return _add(hub, repo_id, _split_gguf_files())


def add_gated_model(hub: FakeHub, repo_id: str = GATED_REPO) -> SampleRepo:
    """The safetensors model's files behind a manual gate; `hub.grant(repo_id, user)` opens it."""
    files = {k: v for k, v in _safetensors_files().items() if k.split("/")[0] in _GATED_KEEP}
    return _add(hub, repo_id, files, gated="manual")


_GATED_KEEP = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors",
    "README.md",
    "LICENSE",
}


def add_hostile_model(hub: FakeHub, repo_id: str = HOSTILE_REPO) -> SampleRepo:
    """A repo whose listing tries to escape the target folder: '../evil.txt', '/tmp/evil.txt',
    'sub/../../evil.txt' and a Windows drive path, next to a normal config.json and model.safetensors."""
    files = {
        "config.json": _safetensors_files()["config.json"],
        "model.safetensors": _safetensors_files()["model.safetensors"],
        "../evil.txt": b"escaped\n",
        "/tmp/evil.txt": b"absolute\n",
        "sub/../../evil.txt": b"nested escape\n",
        "C:\\evil.txt": b"drive\n",
    }
    return _add(hub, repo_id, files)


def add_all(hub: FakeHub) -> dict[str, SampleRepo]:
    """Every sample above except the hostile one, keyed by repo id."""
    repos = [
        add_safetensors_model(hub),
        add_sharded_model(hub),
        add_awq_model(hub),
        add_gguf_model(hub),
        add_split_gguf_model(hub),
        add_gated_model(hub),
    ]
    return {r.repo_id: r for r in repos}


def add_large_sharded_model(
    hub: FakeHub,
    folder: Path,
    *,
    total_bytes: int = 1 << 30,
    shards: int = 2,
    repo_id: str = "Bench/Large-Model",
) -> SampleRepo:
    """A `total_bytes` model in `shards` safetensors files for benchmarks: real headers, data left as
    holes (sparse files: no disk used, zeros served). Files are written once into `folder` and reused."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes | Path] = {}
    weight_map: dict[str, str] = {}
    per_shard = total_bytes // shards
    for i in range(1, shards + 1):
        name = f"model-{i:05d}-of-{shards:05d}.safetensors"
        tensor = f"model.layers.{i - 1}.weight"
        path = folder / name
        # Header + data is a little over per_shard; what matters is a real file of about that size.
        if not path.exists() or path.stat().st_size < per_shard:
            modelfiles.write_safetensors(path, {tensor: ("U8", (per_shard,))}, sparse=True)
        files[name] = path
        weight_map[tensor] = name
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": per_shard * shards}, "weight_map": weight_map}, indent=2
    ).encode()
    files["config.json"] = _safetensors_files()["config.json"]
    commit = hub.add_repo(repo_id, files)
    return SampleRepo(repo_id, commit, files)
