"""Registry and start-up speed (issues 2 and 13).

  uv run python benchmarks/registry_speed.py [--entries 10000] [--reps 5]

Prints medians of whole commands, each a fresh process timed by the wall clock with
PYTHONDONTWRITEBYTECODE unset (as a user's shell): `imageworks-download list` and `list --json` of a
registry with N entries (target <= 0.5 s), `--help` and `list` on an empty registry (target <= 0.3 s),
beside `hf --help` and `python -c pass` measured in the same run. In-process, as a second column:
load + merge + save of the N-entry registry (target <= 0.5 s).
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


def seed_registry(folder: Path, entries: list[ModelEntry]) -> RegistryStore:
    import json

    store = RegistryStore(folder)
    with store.transaction(["seed"], backup=False) as reg:
        for entry in entries:
            reg.put(entry)
    # a curated layer touching 1 % of entries, so the merge does real work
    curated = {e.name: {"display_name": f"Curated {e.name}", "tags": ["pinned"]} for e in entries[::100]}
    (folder / "model_registry.curated.json").write_text(json.dumps({"schema_version": 1, "models": curated}))
    return store


def time_registry(store: RegistryStore, entries: list[ModelEntry], reps: int) -> list[float]:
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
        f"(for reference: validating every entry as a typed model, as `show` of one does not need to: "
        f"{time.perf_counter() - start:.3f} s)"
    )
    return times


def time_command(argv: list[str], reps: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    """(wall clock, CPU time) of each run. CPU time (user + system of the child) is what the command
    costs when a core is free: on a machine others share, wall clock also counts waiting for a core."""
    import resource

    walls, cpus = [], []
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def user_env(registry_dir: Path) -> dict[str, str]:
    env = {**os.environ, "IMAGEWORKS_REGISTRY_DIR": str(registry_dir), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # users' shells let Python use its bytecode cache
    return env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    entries = make_entries(args.entries)
    full = Path(tempfile.mkdtemp(prefix="iw-bench-reg-"))
    empty = Path(tempfile.mkdtemp(prefix="iw-bench-empty-"))
    try:
        store = seed_registry(full, entries)
        med = statistics.median(time_registry(store, entries, args.reps))
        verdict = "OK" if med <= 0.5 else "MISSED"
        print(
            f"in process: registry load+merge+save, {args.entries} entries: median {med:.3f} s (target <= 0.5 s) {verdict}"
        )
        bindir = Path(sys.executable).parent
        ours = str(bindir / "imageworks-download")
        commands = [
            (f"list, {args.entries} entries", [ours, "list"], user_env(full), 0.5),
            (f"list --json, {args.entries} entries", [ours, "list", "--json"], user_env(full), 0.5),
            ("--help", [ours, "--help"], user_env(empty), 0.3),
            ("list, empty registry", [ours, "list"], user_env(empty), 0.3),
            ("hf --help (anchor)", [str(bindir / "hf"), "--help"], user_env(empty), None),
            ("python -c pass (floor)", [sys.executable, "-c", "pass"], user_env(empty), None),
        ]
        rows = []
        for label, argv, env, target in commands:
            if not Path(argv[0]).exists():
                print(f"{label}: not installed, skipped")
                continue
            time_command(argv, 1, env)  # warm the page cache and the bytecode cache
            walls, cpus = time_command(argv, max(args.reps, 5), env)
            rows.append((label, statistics.median(walls), statistics.median(cpus), target))
        hf = next((wall for label, wall, _, _ in rows if label.startswith("hf")), None)
        print(f"whole commands (fresh process, medians; 1-min load average {os.getloadavg()[0]:.2f}):")
        for label, wall, cpu, target in rows:
            ratio = f"  ({wall / hf:.2f} x hf --help)" if hf else ""
            verdict = f"  target <= {target} s " + ("OK" if wall <= target else "MISSED") if target else ""
            print(f"  {label:<32} wall {wall:.3f} s  cpu {cpu:.3f} s{ratio}{verdict}")
    finally:
        shutil.rmtree(full, ignore_errors=True)
        shutil.rmtree(empty, ignore_errors=True)


if __name__ == "__main__":
    main()
