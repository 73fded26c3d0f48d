"""`outdated --all` over many models against the fake Hub (issue 12).

  uv run python benchmarks/outdated_speed.py [--models 200] [--reps 3]

Builds N small Hub models on the fake Hub, records them in a registry as a download would (files on disk,
SHA-256, commit), then moves the branch of a quarter of them to a commit with new weights and of another
quarter to a README-only commit. Times the whole command a user runs, `imageworks-download outdated --all
--json` (fresh process, wall clock), beside the anchor in the same run: a fresh Python process asking
huggingface_hub's `model_info(files_metadata=True)` for the same N repos one after another (what a plain
script does). The fake Hub answers each API request after `--latency` seconds (default 50 ms, a Hub
across the internet; 0 for bare loopback). Prints medians and the ratio, and checks the counts of states.
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

from tests.fakehub import FakeHub  # noqa: E402

from imageworks.registry import FileRecord, ModelEntry, RegistryStore, Source  # noqa: E402

README = b"# a model\n"

ANCHOR = """
import sys
from huggingface_hub import HfApi
api = HfApi(endpoint=sys.argv[1], token=False)
for repo in sys.argv[2:]:
    api.model_info(repo, files_metadata=True)
"""


def model_files(i: int, generation: int = 0) -> dict[str, bytes]:
    return {
        "config.json": json.dumps({"model_type": "llama", "i": i}).encode(),
        "model.safetensors": b"\x08" + bytes(7) + b"{}" + f"{i}-{generation}".encode().ljust(64, b" "),
        "README.md": README,
    }


def build(hub: FakeHub, root: Path, registry: Path, n: int) -> list[str]:
    repos = []
    store = RegistryStore(registry)
    with store.transaction(["seed"], backup=False) as reg:
        for i in range(n):
            repo = f"Owner{i % 13}/Model-{i}"
            files = model_files(i)
            commit = hub.add_repo(repo, files)
            folder = root / repo
            records = []
            for path, content in files.items():
                target = folder / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                st = target.stat()
                records.append(
                    FileRecord(
                        path=path,
                        size=st.st_size,
                        sha256=hashlib.sha256(content).hexdigest(),
                        mtime_ns=st.st_mtime_ns,
                    )
                )
            source = Source.model_validate(
                {
                    "provider": "hf",
                    "repo_id": repo,
                    "revision": "main",
                    "commit": commit,
                    "selection": {"format": None, "quant": None, "include": [], "exclude": []},
                }
            )
            reg.put(
                ModelEntry(
                    name=repo.lower(),
                    source=source,
                    format="safetensors",
                    path=str(folder),
                    files=records,
                    size_bytes=sum(r.size for r in records),
                )
            )
            repos.append(repo)
    return repos


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return time.perf_counter() - started, proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--latency", type=float, default=0.05, help="seconds the fake Hub waits per API request (0: loopback)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="iw-bench-outdated-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "HF_TOKEN")}
    try:
        with FakeHub() as hub:
            hub.api_latency = args.latency
            repos = build(hub, work / "models", work / "registry", args.models)
            quarter = args.models // 4
            for i, repo in enumerate(repos[:quarter]):
                hub.push(repo, {"model.safetensors": model_files(i, 1)["model.safetensors"]})
            for repo in repos[quarter : 2 * quarter]:
                hub.push(repo, {"README.md": README + b"more\n"})
            env.update(
                HF_ENDPOINT=hub.endpoint,
                HF_HOME=str(work / "hf_home"),
                IMAGEWORKS_REGISTRY_DIR=str(work / "registry"),
                HF_HUB_DISABLE_TELEMETRY="1",
            )
            ours_cmd = [sys.executable, "-m", "imageworks.cli.main", "outdated", "--all", "--json"]
            anchor_cmd = [sys.executable, "-c", ANCHOR, hub.endpoint, *repos]
            timed(ours_cmd, env)  # warm the bytecode cache and the page cache
            ours, anchor = [], []
            for _ in range(args.reps):
                seconds, proc = timed(ours_cmd, env)
                if proc.returncode not in (0, 1):
                    raise SystemExit(proc.stderr)
                ours.append(seconds)
                seconds, aproc = timed(anchor_cmd, env)
                if aproc.returncode:
                    raise SystemExit(aproc.stderr)
                anchor.append(seconds)
            data = json.loads(proc.stdout)["data"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counts = data["counts"]
    expected = {"outdated": quarter, "metadata only": quarter, "current": args.models - 2 * quarter}
    assert counts == expected, (counts, expected)
    ours_s, anchor_s = statistics.median(ours), statistics.median(anchor)
    print(
        f"models: {args.models}; states {counts}; Hub requests {data['requests']};"
        f" fake Hub API latency {args.latency * 1000:.0f} ms"
    )
    print(f"imageworks-download outdated --all: median {ours_s:.2f} s over {args.reps} runs")
    print(f"huggingface_hub model_info loop (anchor): median {anchor_s:.2f} s")
    print(f"ratio outdated/anchor: {ours_s / anchor_s:.2f}")


if __name__ == "__main__":
    main()
