"""Inspection speed on big weights (issue 4): headers only, <= 0.5 s for a folder of ~10 GB.

  uv run python benchmarks/inspect_speed.py [--reps 5] [--keep]

Builds two ~10 GB model folders as sparse files (a real header, then a hole: no disk is used):
  - a Llama-shaped bf16 checkpoint in 4 safetensors shards (183 tensors) + index + config + tokenizer config;
  - a Q8_0 GGUF with a 128k-token vocabulary in its KV section (the real cost of a GGUF header).
Prints, per folder, the median and first inspect_folder() time, the bytes read and the disk actually used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests import modelfiles as mf  # noqa: E402

from imageworks.inspect import ModelInspection, inspect_folder  # noqa: E402

TARGET_S = 0.5
HIDDEN, INTER, VOCAB, KV = 4096, 14336, 128_256, 1024


def llama_tensors(layers: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    t: dict[str, tuple[str, tuple[int, ...]]] = {
        "model.embed_tokens.weight": ("BF16", (VOCAB, HIDDEN)),
        "model.norm.weight": ("BF16", (HIDDEN,)),
        "lm_head.weight": ("BF16", (VOCAB, HIDDEN)),
    }
    for i in range(layers):
        p = f"model.layers.{i}"
        t |= {
            f"{p}.self_attn.q_proj.weight": ("BF16", (HIDDEN, HIDDEN)),
            f"{p}.self_attn.k_proj.weight": ("BF16", (KV, HIDDEN)),
            f"{p}.self_attn.v_proj.weight": ("BF16", (KV, HIDDEN)),
            f"{p}.self_attn.o_proj.weight": ("BF16", (HIDDEN, HIDDEN)),
            f"{p}.mlp.gate_proj.weight": ("BF16", (INTER, HIDDEN)),
            f"{p}.mlp.up_proj.weight": ("BF16", (INTER, HIDDEN)),
            f"{p}.mlp.down_proj.weight": ("BF16", (HIDDEN, INTER)),
            f"{p}.input_layernorm.weight": ("BF16", (HIDDEN,)),
            f"{p}.post_attention_layernorm.weight": ("BF16", (HIDDEN,)),
        }
    return t


def build_safetensors(folder: Path) -> None:
    tensors = llama_tensors(layers=20)
    names = list(tensors)
    shards = 4
    weight_map: dict[str, str] = {}
    total = 0
    for s in range(shards):
        part = names[s::shards]
        shard = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        mf.write_safetensors(
            folder / shard, {n: tensors[n] for n in part}, metadata={"format": "pt"}, sparse=True
        )
        for n in part:
            weight_map[n] = shard
        total += (folder / shard).stat().st_size
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    config = mf.llama_config(
        "bfloat16", hidden_size=HIDDEN, intermediate_size=INTER, vocab_size=VOCAB, num_hidden_layers=20
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": mf.CHAT_TEMPLATE}))


def build_gguf(folder: Path) -> None:
    params = 9_400_000_000
    params -= params % 256
    mf.write_gguf(
        folder / "Big-Llama-Q8_0.gguf",
        sparse=True,
        file_type="Q8_0",
        parameters=params,
        n_tensors=300,
        vocab=VOCAB,
        chat_template=mf.CHAT_TEMPLATE,
        context_length=131072,
    )


def measure(folder: Path, reps: int) -> tuple[list[float], ModelInspection]:
    times = []
    result = ModelInspection(format="unknown")
    for _ in range(reps):
        t0 = time.perf_counter()
        result = inspect_folder(folder)
        times.append(time.perf_counter() - t0)
    return times, result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="iw-bench-inspect-"))
    ok = True
    try:
        for label, build in (
            ("safetensors (4 shards)", build_safetensors),
            ("gguf Q8_0 (128k vocab)", build_gguf),
        ):
            folder = base / label.split()[0]
            folder.mkdir()
            build(folder)
            files = [p for p in folder.rglob("*") if p.is_file()]
            apparent = sum(p.stat().st_size for p in files)
            on_disk = sum(p.stat().st_blocks * 512 for p in files)
            times, result = measure(folder, args.reps)
            median = statistics.median(times)
            ok &= median <= TARGET_S
            print(f"{label}:")
            print(
                f"  weights           {apparent / 1e9:6.2f} GB apparent, {on_disk / 1e6:.1f} MB on disk (sparse)"
            )
            print(
                f"  inspect_folder    median {median * 1000:7.1f} ms, first {times[0] * 1000:.1f} ms"
                f" over {args.reps} runs (target <= {TARGET_S * 1000:.0f} ms) {'OK' if median <= TARGET_S else 'SLOW'}"
            )
            print(
                f"  bytes read        {result.bytes_read:,} ({result.bytes_read / apparent:.2e} of the weights)"
            )
            print(
                f"  result            format={result.format} quant={result.quantization}"
                f" params={result.parameters:,} ctx={result.context_length}"
            )
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
