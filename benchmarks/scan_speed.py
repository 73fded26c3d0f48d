"""scan / normalize-formats speed (issue 5).

  uv run python benchmarks/scan_speed.py [--models 1000] [--reps 3] [--profile]

Builds N small model folders (half single-quant GGUF repos, half safetensors repos with config and
tokenizer files, spread over 50 owners) in a temp folder, then times, through the real CLI:
  scan                                   first scan into an empty registry        (target <= 10 s)
  scan (again)                           nothing new                               (target <= 3 s)
  normalize-formats --rebuild            after `scan --hash`, on unchanged files: must hash nothing
side by side with the anchor in the same run, `find TREE -type f -printf '%s %p'` (the bare walk of the
same tree, also a fresh process). Prints medians, ratios to the anchor and the bytes hashed by the rebuild. `--profile` prints a cProfile of one library scan.
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

OWNERS = 50


def build_tree(models: Path, count: int) -> None:
    """`count` model folders. Each kind is written once by the real libraries, then copied (the files'
    bytes are what matters to the scan, not how they were made)."""
    from tests.modelfiles import write_gguf, write_hf_model

    templates = models.parent / "templates"
    write_gguf(templates / "gguf" / "Model-Q4_K_M.gguf", file_type="Q4_K_M")
    (templates / "gguf" / "README.md").write_text("# a GGUF model\n")
    write_hf_model(templates / "safetensors", "plain-bf16")
    for i in range(count):
        kind = "gguf" if i % 2 else "safetensors"
        folder = models / f"owner-{i % OWNERS:02d}" / f"Model-{i:04d}-{kind.upper()}"
        shutil.copytree(templates / kind, folder)
    shutil.rmtree(templates)


def run_cli(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    return run_command(env, [sys.executable, "-m", "imageworks.cli.main", *args])


def run_command(env: dict[str, str], argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall clock of one fresh process."""
    args = argv[1:]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return elapsed, proc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one library scan")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="iw-bench-scan-"))
    try:
        models = work / "models"
        started = time.perf_counter()
        build_tree(models, args.models)
        print(f"built {args.models} model folders in {time.perf_counter() - started:.1f} s under {models}")
        env = {
            **os.environ,
            "HOME": str(work / "home"),
            "IMAGEWORKS_MODEL_ROOT": str(models),
            "IMAGEWORKS_LMSTUDIO_ROOT": str(work / "lmstudio"),
            "PYTHONPATH": str(ROOT / "src"),
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # users have bytecode caches: time what they run

        first: list[float] = []
        again: list[float] = []
        rebuild: list[float] = []
        hashed_bytes: list[int] = []
        walk: list[float] = []
        for rep in range(args.reps):
            walk.append(run_command(env, ["find", str(models), "-type", "f", "-printf", "%s %p\n"])[0])
            env["IMAGEWORKS_REGISTRY_DIR"] = str(work / f"registry-{rep}")
            t, proc = run_cli(env, "scan", "--json")
            data = json.loads(proc.stdout)["data"]
            assert data["summary"]["added"] == args.models, data["summary"]
            first.append(t)
            t, proc = run_cli(env, "scan", "--json")
            data = json.loads(proc.stdout)["data"]
            summary = data["summary"]
            assert summary["unchanged"] == args.models and not summary["added"], summary
            again.append(t)

            env["IMAGEWORKS_REGISTRY_DIR"] = str(work / f"registry-hash-{rep}")
            run_cli(env, "scan", "--hash", "--no-backup")
            t, proc = run_cli(env, "normalize-formats", "--rebuild", "--json")
            data = json.loads(proc.stdout)["data"]
            assert data["summary"]["update"] == 0, data["summary"]
            rebuild.append(t)
            hashed_bytes.append(data["hashed_bytes"])
            print(
                f"rep {rep + 1}: scan {first[-1]:.2f} s, re-scan {again[-1]:.2f} s, "
                f"rebuild {rebuild[-1]:.2f} s ({data['hashed_files']} files / {data['hashed_bytes']} bytes hashed, "
                f"{data['reused_digests']} digests reused)"
            )

        print()
        print(
            f"{args.models} model folders, medians of {args.reps} runs through the CLI (start-up included):"
        )
        anchor = statistics.median(walk)
        print(f"  find -type f (anchor)             {anchor:6.2f} s")
        print(
            f"  scan (empty registry)             {statistics.median(first):6.2f} s   target <= 10 s"
            f"   {statistics.median(first) / anchor:6.1f} x find"
        )
        print(
            f"  re-scan (nothing new)             {statistics.median(again):6.2f} s   target <= 3 s"
            f"   {statistics.median(again) / anchor:6.1f} x find"
        )
        print(
            f"  normalize-formats --rebuild       {statistics.median(rebuild):6.2f} s   "
            f"bytes hashed {max(hashed_bytes)} (target 0)"
        )

        if args.profile:
            import cProfile
            import pstats

            from imageworks.registry import RegistryStore
            from imageworks.scan import ScanOptions, scan

            os.environ["IMAGEWORKS_REGISTRY_DIR"] = str(work / "registry-profile")
            profiler = cProfile.Profile()
            profiler.enable()
            scan(RegistryStore(work / "registry-profile"), models, ScanOptions(location="linux_wsl"), "bench")
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
