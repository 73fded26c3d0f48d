"""The benchmark scripts in quick mode (`uv run pytest -m slow`): they run, measure and print their
ratio lines. Skipped by default; speed is reported by the scripts, never asserted by a timed test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

QUICK = {
    "registry_speed.py": (["--entries", "1000", "--reps", "1"], "load+merge+save"),
    "inspect_speed.py": (["--reps", "1"], "bytes read"),
    "scan_speed.py": (["--models", "50", "--reps", "1"], "re-scan"),
    "verify.py": (["--size-mb", "64", "--reps", "1", "--warm-only"], "ratios (median)"),
    "download.py": (["--size-mb", "64", "--small-files", "200", "--reps", "1"], "x hf-snapshot"),
    "download_fixed_costs.py": (["--reps", "1"], "up to date"),
    "stores.py": (["--repos", "50", "--pairs", "10", "--reps", "1"], "hashes per candidate"),
    "outdated_speed.py": (["--models", "40", "--reps", "1"], "ratio outdated/anchor"),
    "s3_speed.py": (["--size-mb", "32", "--reps", "1"], "ours / plain boto3"),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(QUICK))
def test_benchmark_runs_in_quick_mode(script: str, tmp_path: Path) -> None:
    args, expected = QUICK[script]
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expected in proc.stdout
