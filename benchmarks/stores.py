"""Other tools' shelves (issue 11), as whole commands in fresh processes, wall clock.

  uv run python benchmarks/stores.py [--repos 1000] [--pairs 200] [--reps 3]

- `import hf-cache` of a Hugging Face cache of N repos (sparse safetensors weights + a config.json each):
  target <= 5 s and 0 bytes of weights hashed; beside it huggingface_hub's own `scan_cache_dir()`.
- `du --json` over the N imported models: target <= 1 s; beside it coreutils `du -s` of the cache.
- `dedupe --yes` of P duplicated pairs: each candidate hashed once; beside it `sha256sum` of the same files.
"""

from __future__ import annotations

import argparse
import hashlib
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

CLI = [sys.executable, "-m", "imageworks.cli.main"]


def build_cache(cache: Path, repos: int) -> None:
    """The layout huggingface_hub writes: refs/main, snapshots/COMMIT/* as relative symlinks to blobs/."""
    from tests import modelfiles

    template = cache.parent / "template.safetensors"
    modelfiles.write_safetensors(template, modelfiles.dense_tensors("BF16"), sparse=True)
    header = template.read_bytes().rstrip(b"\0")[: 1 << 20]
    weight_size = template.stat().st_size
    for i in range(repos):
        repo = cache / f"models--Owner{i % 50}--Model-{i}"
        commit = hashlib.sha1(f"commit {i}".encode()).hexdigest()
        snapshot = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True)
        snapshot.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        config = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "i": i}).encode()
        config_id = hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()
        (repo / "blobs" / config_id).write_bytes(config)
        weight_id = hashlib.sha256(f"weights {i}".encode()).hexdigest()  # a blob is named by its SHA-256
        with open(repo / "blobs" / weight_id, "wb") as handle:
            handle.write(header)
            handle.truncate(weight_size * 64)  # sparse: a large file that uses no disk
        os.symlink(f"../../blobs/{config_id}", snapshot / "config.json")
        os.symlink(f"../../blobs/{weight_id}", snapshot / "model.safetensors")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, proc


def bench_import_and_du(work: Path, repos: int, reps: int, env: dict[str, str]) -> None:
    cache = work / "hub"
    build_cache(cache, repos)
    scan = [
        sys.executable,
        "-c",
        f"from huggingface_hub import scan_cache_dir; scan_cache_dir({str(cache)!r})",
    ]
    imports, anchors, hashed = [], [], []
    for rep in range(reps):
        registry = work / f"registry-{rep}"
        run_env = {**env, "IMAGEWORKS_REGISTRY_DIR": str(registry)}
        seconds, proc = timed([*CLI, "import", "hf-cache", str(cache), "--json", "--no-backup"], run_env)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        data = json.loads(proc.stdout)["data"][0]
        imports.append(seconds)
        hashed.append(data["bytes_hashed"])
        anchors.append(timed(scan, env)[0])
    registry = work / "registry-0"
    run_env = {**env, "IMAGEWORKS_REGISTRY_DIR": str(registry)}
    again = statistics.median(
        timed([*CLI, "import", "hf-cache", str(cache), "--json"], run_env)[0] for _ in range(reps)
    )
    med, anchor = statistics.median(imports), statistics.median(anchors)
    weights_hashed = max(hashed)
    small = sum(p.stat().st_size for p in cache.glob("*/blobs/*") if len(p.name) == 40)
    print(
        f"import hf-cache, {repos} repos: median {med:.2f} s (target <= 5 s) {'OK' if med <= 5 else 'MISSED'}"
    )
    print(
        f"  bytes hashed: {weights_hashed} (weights: {weights_hashed - small}, small files named by git id: {small});"
        f" scan_cache_dir {anchor:.2f} s, ratio {med / anchor:.1f}x; re-import (no-op) {again:.2f} s"
    )
    dus, anchors = [], []
    for _ in range(reps):
        seconds, proc = timed([*CLI, "du", "--json"], run_env)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        dus.append(seconds)
        anchors.append(timed(["du", "-s", str(cache)], env)[0])
    med, anchor = statistics.median(dus), statistics.median(anchors)
    print(
        f"du over {repos} models: median {med:.2f} s (target <= 1 s) {'OK' if med <= 1 else 'MISSED'};"
        f" coreutils du -s {anchor:.3f} s"
    )


def bench_dedupe(work: Path, pairs: int, env: dict[str, str]) -> None:
    from imageworks.registry import FileRecord, ModelEntry, RegistryStore, Source
    from imageworks.registry.schema import Copy
    from imageworks.stores.copies import copy_file

    registry = work / "registry-dedupe"
    first, second = work / "a", work / "b"
    entries = []
    for i in range(pairs):
        data = os.urandom(64 * 1024)
        for folder in (first, second):
            (folder / f"m{i}").mkdir(parents=True)
            (folder / f"m{i}" / "model.safetensors").write_bytes(data)
        record = FileRecord(path="model.safetensors", size=len(data), sha256=hashlib.sha256(data).hexdigest())
        copy = Copy(
            path=str(second / f"m{i}"),
            method="download",
            files=[copy_file("model.safetensors", second / f"m{i}" / "model.safetensors", second / f"m{i}")],
        )
        entries.append(
            ModelEntry(
                name=f"bench/m{i}",
                source=Source(provider="local"),
                path=str(first / f"m{i}"),
                files=[record],
                copies=[copy],
            )
        )
    with RegistryStore(registry).transaction(["seed"], backup=False) as reg:
        for entry in entries:
            reg.put(entry)
    run_env = {**env, "IMAGEWORKS_REGISTRY_DIR": str(registry)}
    files = [str(p) for p in sorted(work.glob("[ab]/m*/model.safetensors"))]
    anchor, _ = timed(["sha256sum", *files], env)
    seconds, proc = timed([*CLI, "dedupe", "--yes", "--json", "--no-backup"], run_env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    data = json.loads(proc.stdout)["data"]
    linked = sum(1 for p in data["pairs"] if p["status"] == "linked")
    print(
        f"dedupe {pairs} pairs: {seconds:.2f} s, {linked} linked, {data['files_hashed']} files hashed for"
        f" {2 * pairs} candidates ({data['files_hashed'] / (2 * pairs):.2f} hashes per candidate);"
        f" sha256sum of the same files {anchor:.2f} s, ratio {seconds / anchor:.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as users run it
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["PYTHONPATH"] = str(ROOT / "src")
    work = Path(tempfile.mkdtemp(prefix="iw-bench-stores-"))
    try:
        bench_import_and_du(work, args.repos, args.reps, env)
        bench_dedupe(work, args.pairs, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
