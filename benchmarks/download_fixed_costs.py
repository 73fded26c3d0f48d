"""Fixed costs of `download` as a user feels them (issue 13): whole commands, fresh processes, wall clock.

  uv run python benchmarks/download_fixed_costs.py [--reps 7]

Against the local fake Hub (loopback), with a small safetensors model already downloaded, prints medians
of: `download OWNER/REPO` when the model is up to date (target <= 0.4 s), `download OWNER/REPO --dry-run`
(target <= 0.5 s), and `imageworks-download --help` (the floor: interpreter + CLI start-up) in the same run.
Bytecode caching is on (PYTHONDONTWRITEBYTECODE unset), as for users.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.fakehub import FakeHub, samples  # noqa: E402


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall clock, CPU seconds) of one fresh process. On a shared machine the CPU time is the steadier
    figure: the wall clock also counts waiting for a core."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="iw-bench-fixed-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "HF_TOKEN")}
    with FakeHub() as hub:
        repo = samples.add_safetensors_model(hub)
        env.update(
            HF_ENDPOINT=hub.endpoint,
            HOME=str(work / "home"),
            IMAGEWORKS_REGISTRY_DIR=str(work / "registry"),
            IMAGEWORKS_MODEL_ROOT=str(work / "models"),
            IMAGEWORKS_LMSTUDIO_ROOT=str(work / "lmstudio"),
            HF_HOME=str(work / "hf_home"),
        )
        cli = [sys.executable, "-m", "imageworks.cli.main"]
        timed([*cli, "download", repo.repo_id, "--engine", "native", "--quiet"], env)  # the first download
        rows = {
            "--help": [*cli, "--help"],
            "up to date": [*cli, "download", repo.repo_id, "--quiet"],
            "--dry-run": [*cli, "download", repo.repo_id, "--dry-run"],
        }
        timed(rows["up to date"], env)  # warm the bytecode cache
        runs = {name: [timed(cmd, env) for _ in range(args.reps)] for name, cmd in rows.items()}
    wall = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(r[1] for r in rs) for name, rs in runs.items()}
    for name in rows:
        print(f"{name:12s} median wall {wall[name]:.3f} s, CPU {cpu[name]:.3f} s")
    floor = wall["--help"]
    print(f"up to date: {wall['up to date']:.3f} s (target 0.4), {wall['up to date'] / floor:.2f} x --help")
    print(f"--dry-run:  {wall['--dry-run']:.3f} s (target 0.5), {wall['--dry-run'] / floor:.2f} x --help")


if __name__ == "__main__":
    main()
