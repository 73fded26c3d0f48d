"""Registry and start-up speed (issue 2).

  uv run python benchmarks/registry_speed.py [--entries 10000] [--reps 5]

Prints medians: load + merge + save of a registry with N entries (target <= 0.5 s), and the start-up
time of `imageworks-download --help` and `list` on an empty registry (target <= 0.3 s) beside
`hf --help` measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from imageworks.registry import FileRecord, ModelEntry, RegistryStore, Source  # noqa: E402


def make_entries(n: int) -> list[ModelEntry]:
    entries = []
    for i in range(n):
        entries.append(
            ModelEntry(
                name=f"owner{i % 97}/model-{i}",
                source=Source(
                    provider="hf", repo_id=f"Owner{i % 97}/Model-{i}", revision="main", commit="a" * 40
                ),
                format="gguf" if i % 2 else "safetensors",
                quantization="Q4_K_M" if i % 2 else "bf16",
                location="linux_wsl",
                path=f"/models/owner{i % 97}/model-{i}",
                files=[
                    FileRecord(path=f"model-{k}.safetensors", size=1000 + k, sha256="b" * 64, mtime_ns=1)
                    for k in range(3)
                ],
                size_bytes=3003,
                aggregate_sha256="c" * 64,
                tags=["bench"],
                serve={"vllm": {"command": f"vllm serve /models/m{i}"}},
            )
        )
    return entries


def time_registry(entries: list[ModelEntry], reps: int) -> list[float]:
    folder = Path(tempfile.mkdtemp(prefix="iw-bench-reg-"))
    store = RegistryStore(folder)
    with store.transaction(["seed"], backup=False) as reg:
        for entry in entries:
            reg.put(entry)
    # a curated layer touching 1 % of entries, so the merge does real work
    curated = {e.name: {"display_name": f"Curated {e.name}", "tags": ["pinned"]} for e in entries[::100]}
    import json

    (folder / "model_registry.curated.json").write_text(json.dumps({"schema_version": 1, "models": curated}))
    times = []
    for rep in range(reps):
        start = time.perf_counter()
        with store.transaction(["bench"], backup=False) as reg:
            reg.merged_raw()
            first = entries[rep]
            reg.put(first.model_copy(update={"size_bytes": rep}))
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    store.load().merged()
    print(
        f"(for reference: validating every entry as a typed model, as `list` does: {time.perf_counter() - start:.3f} s)"
    )
    shutil.rmtree(folder)
    return times


def time_command(argv: list[str], reps: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    entries = make_entries(args.entries)
    reg_times = time_registry(entries, args.reps)
    med = statistics.median(reg_times)
    print(
        f"registry load+merge+save, {args.entries} entries: median {med:.3f} s (target <= 0.5 s) {'OK' if med <= 0.5 else 'MISSED'}"
    )

    bindir = Path(sys.executable).parent
    empty = Path(tempfile.mkdtemp(prefix="iw-bench-empty-"))
    env = {**os.environ, "IMAGEWORKS_REGISTRY_DIR": str(empty), "HF_HUB_DISABLE_TELEMETRY": "1"}
    rows = []
    for label, argv in [
        ("imageworks-download --help", [str(bindir / "imageworks-download"), "--help"]),
        ("imageworks-download list", [str(bindir / "imageworks-download"), "list"]),
        ("hf --help", [str(bindir / "hf"), "--help"]),
        ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
    ]:
        if not Path(argv[0]).exists():
            print(f"{label}: not installed, skipped")
            continue
        time_command(argv, 1, env)  # warm the page cache
        rows.append((label, statistics.median(time_command(argv, max(args.reps, 5), env))))
    hf = dict(rows).get("hf --help")
    for label, value in rows:
        ratio = f"  ({value / hf:.2f} x hf --help)" if hf else ""
        target = (
            "  target <= 0.3 s " + ("OK" if value <= 0.3 else "MISSED")
            if label.startswith("imageworks")
            else ""
        )
        print(f"{label:<28} median {value:.3f} s{ratio}{target}")
    shutil.rmtree(empty)


if __name__ == "__main__":
    main()
