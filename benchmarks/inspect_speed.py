"""Inspection speed on big weights (issue 4): headers only, <= 0.5 s for a folder of ~10 GB.

  uv run python benchmarks/inspect_speed.py [--reps 5] [--keep]

Builds two ~10 GB model folders as sparse files (a real header, then a hole: no disk is used):
  - a Llama-shaped bf16 checkpoint in 4 safetensors shards (183 tensors) + index + config + tokenizer config;
  - a Q8_0 GGUF with a 128k-token vocabulary in its KV section (the real cost of a GGUF header).
Times, per folder, the whole command a user runs (`imageworks-download analyze FOLDER --json`, a fresh
process, wall clock) side by side with the anchor in the same run: the format's own reader in a fresh
process (`gguf-dump --no-tensors`; safetensors' `safe_open` over every shard), printed as ratios of
medians. Also prints the library call alone (inspect_folder, in process), the bytes read and the disk used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
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


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # users have bytecode caches: time what they run
    return env


def time_command(argv: list[str], reps: int) -> list[float]:
    """Wall clock of `argv` as a fresh process, `reps` times (after one untimed warm-up run)."""
    env = _env()
    times = []
    for rep in range(reps + 1):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        if rep:
            times.append(elapsed)
    return times


def anchor_command(folder: Path) -> tuple[str, list[str]]:
    """The format's own reader over the same files, as a command of its own."""
    ggufs = sorted(str(p) for p in folder.glob("*.gguf"))
    if ggufs:
        dump = Path(sys.executable).with_name("gguf-dump")
        return "gguf-dump --no-tensors", [str(dump), "--no-tensors", *ggufs]
    shards = sorted(str(p) for p in folder.glob("*.safetensors"))
    code = (
        "import sys\nfrom safetensors import safe_open\n"
        "for f in sys.argv[1:]:\n    with safe_open(f, 'np') as h: h.metadata(); list(h.keys())"
    )
    return "safetensors safe_open", [sys.executable, "-c", code, *shards]


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
            cli = time_command(
                [sys.executable, "-m", "imageworks.cli.main", "analyze", str(folder), "--json"], args.reps
            )
            anchor_label, anchor_argv = anchor_command(folder)
            anchor = time_command(anchor_argv, args.reps)
            cli_median, anchor_median = statistics.median(cli), statistics.median(anchor)
            ok &= cli_median <= TARGET_S
            print(f"{label}:")
            print(
                f"  weights               {apparent / 1e9:6.2f} GB apparent, {on_disk / 1e6:.1f} MB on disk (sparse)"
            )
            print(
                f"  analyze (CLI)         median {cli_median * 1000:7.1f} ms over {args.reps} runs, fresh process"
                f" (target <= {TARGET_S * 1000:.0f} ms) {'OK' if cli_median <= TARGET_S else 'SLOW'}"
            )
            print(f"  {anchor_label:<21} median {anchor_median * 1000:7.1f} ms (anchor, same run)")
            print(f"  ratio                 analyze / anchor = {cli_median / anchor_median:.2f}")
            print(
                f"  inspect_folder        median {median * 1000:7.1f} ms in process, first {times[0] * 1000:.1f} ms"
            )
            print(
                f"  bytes read            {result.bytes_read:,} ({result.bytes_read / apparent:.2e} of the weights)"
            )
            print(
                f"  result                format={result.format} quant={result.quantization}"
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
