"""Download speed benchmark (issue 3, "Speed"): our engines against plain aria2c and huggingface_hub.

    uv run python benchmarks/download.py                      # 1 GiB model, 3 repetitions
    uv run python benchmarks/download.py --size-mb 64 --reps 1   # quick

A model of two safetensors shards with random content (so digests mean something) is generated once
into the work folder and served by the fake Hub (tests/fakehub) in its own process, throttled to
20 MB/s per connection and 200 MB/s in total. Every download runs in a fresh child process (timed
around the download call itself, peak RSS read from the child and its children) into an empty
folder. Printed: medians per method, then the ratios the issue asks for.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPO_ID = "bench/model-shards"
MB = 1_000_000

SERVER = r"""
import json, sys
from pathlib import Path
from tests.fakehub import FakeHub
spec = json.loads(sys.argv[1])
hub = FakeHub()
files = {name: Path(path) for name, path in spec["files"].items()}
files["config.json"] = b'{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}\n'
hub.add_repo(spec["repo"], files)
hub.throttle(per_connection_bps=spec["per_conn"], total_bps=spec["total"])
hub.start()
out = {"endpoint": hub.endpoint, "files": []}
for name in sorted(files):
    entry = hub.file(spec["repo"], name)
    out["files"].append({
        "path": name, "size": entry.size, "sha256": entry.sha256 if name.endswith(".safetensors") else None,
        "cdn_url": hub.cdn_url_for(spec["repo"], name), "resolve_url": hub.resolve_url(spec["repo"], name),
    })
print(json.dumps(out), flush=True)
sys.stdin.read()
hub.stop()
"""

ENGINE_CHILD = r"""
import json, resource, sys, time, logging, os
if os.environ.get("BENCH_DEBUG"): logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(relativeCreated)6d %(name)s %(message)s")
from pathlib import Path
from imageworks.transfer import FileJob, NullProgress
from imageworks.transfer.aria2 import Aria2Engine
from imageworks.transfer.native import NativeEngine
spec = json.loads(sys.argv[1])
jobs = [FileJob(f["cdn_url"], Path(spec["dest"]) / f["path"], f["size"], f["sha256"], label=f["path"]) for f in spec["files"]]
opts = dict(connections=spec["connections"], max_files=4, verify=spec["verify"])
engine = Aria2Engine("aria2c", **opts) if spec["engine"] == "aria2" else NativeEngine(**opts)
began = time.perf_counter()
results = engine.fetch(jobs, NullProgress())
seconds = time.perf_counter() - began
ok = all(r.sha256 == f["sha256"] for r, f in zip(results, spec["files"]) if f["sha256"] and spec["verify"])
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "ok": ok, "rss_self": me.ru_maxrss, "rss_children": kids.ru_maxrss,
    "cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime}))
"""

HF_CHILD = r"""
import json, os, resource, sys, time
spec = json.loads(sys.argv[1])
from huggingface_hub import snapshot_download
began = time.perf_counter()
snapshot_download(spec["repo"], local_dir=spec["dest"], endpoint=spec["endpoint"])
seconds = time.perf_counter() - began
me = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "ok": True, "rss_self": me.ru_maxrss, "rss_children": 0,
    "cpu": me.ru_utime + me.ru_stime}))
"""


def generate(folder: Path, size: int) -> dict[str, Path]:
    """Two shards of random bytes, made once and reused while the size stays the same."""
    folder.mkdir(parents=True, exist_ok=True)
    half = size // 2
    files = {}
    for i, n in enumerate((half, size - half), start=1):
        path = folder / f"model-0000{i}-of-00002.safetensors"
        if not path.exists() or path.stat().st_size != n:
            print(f"generating {path.name} ({n / MB:.0f} MB)", file=sys.stderr)
            with open(path, "wb") as handle:
                left = n
                while left:
                    block = os.urandom(min(left, 8 << 20))
                    handle.write(block)
                    left -= len(block)
        files[path.name] = path
    return files


def child_env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}",
        "HF_HOME": str(work / "hf_home"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_ENABLE_HF_TRANSFER": "0",
    }


def run_child(code: str, spec: dict, env: dict[str, str]) -> dict:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out, err = proc.communicate(timeout=1800)
    if os.environ.get("BENCH_DEBUG"):
        sys.stderr.write(err.decode())
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


def run_plain_aria2c(files: list[dict], dest: Path, env: dict[str, str]) -> dict:
    listing = dest.parent / "aria2c-input.txt"
    listing.write_text("".join(f"{f['cdn_url']}\n  out={f['path']}\n" for f in files))
    argv = ["aria2c", "-x16", "-s16", "--no-conf", "-q", "-d", str(dest), "-i", str(listing)]
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"aria2c failed with {proc.returncode}")
    ok = all(
        not f["sha256"] or sha256_file(dest / f["path"]) == f["sha256"] for f in files
    )  # checked after timing: plain aria2c verifies nothing
    cpu = usage.ru_utime + usage.ru_stime
    return {"seconds": seconds, "ok": ok, "rss_self": usage.ru_maxrss, "rss_children": 0, "cpu": cpu}


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


METHODS = ["aria2", "aria2-noverify", "native", "native-noverify", "plain-aria2c", "hf-snapshot"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="model size in MiB (two shards)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--per-conn-mbps", type=float, default=20.0, help="MB/s per connection")
    parser.add_argument("--total-mbps", type=float, default=200.0, help="MB/s in total")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temp folder)")
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods: {sorted(unknown)}")

    work = args.work or Path(tempfile.gettempdir()) / "imageworks-bench-download"
    work.mkdir(parents=True, exist_ok=True)
    sources = generate(work / "source", args.size_mb * 1024 * 1024)
    env = child_env(work)
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVER,
            json.dumps(
                {
                    "repo": REPO_ID,
                    "files": {k: str(v) for k, v in sources.items()},
                    "per_conn": args.per_conn_mbps * MB,
                    "total": args.total_mbps * MB,
                }
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert server.stdout is not None and server.stdin is not None
    info = json.loads(server.stdout.readline())
    files = info["files"]
    total_bytes = sum(f["size"] for f in files)
    figures: dict[str, list[dict]] = {m: [] for m in methods}
    try:
        for rep in range(args.reps):
            for method in methods:
                server_cpu = process_cpu(server.pid)
                dest = work / "dest" / method
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                shutil.rmtree(work / "hf_home", ignore_errors=True)
                if method == "plain-aria2c":
                    result = run_plain_aria2c(files, dest, env)
                elif method == "hf-snapshot":
                    spec = {"repo": REPO_ID, "dest": str(dest), "endpoint": info["endpoint"]}
                    result = run_child(HF_CHILD, spec, env)
                else:
                    engine, _, flag = method.partition("-")
                    spec = {
                        "engine": engine,
                        "verify": flag != "noverify",
                        "dest": str(dest),
                        "files": files,
                        "connections": args.connections,
                    }
                    result = run_child(ENGINE_CHILD, spec, env)
                result["server_cpu"] = process_cpu(server.pid) - server_cpu
                figures[method].append(result)
                mbps = total_bytes / result["seconds"] / MB
                print(
                    f"rep {rep + 1}/{args.reps} {method:16s} {result['seconds']:7.2f} s {mbps:7.1f} MB/s"
                    f"  cpu {result['cpu']:5.2f} s, server cpu {result['server_cpu']:5.2f} s"
                    f"{'' if result['ok'] else '  DIGEST MISMATCH'}",
                    file=sys.stderr,
                )
                shutil.rmtree(dest, ignore_errors=True)
    finally:
        server.stdin.close()
        server.wait(timeout=30)

    report(figures, total_bytes, args)
    if args.json:
        print(json.dumps({"total_bytes": total_bytes, "figures": figures}, indent=2))


def report(figures: dict[str, list[dict]], total_bytes: int, args: argparse.Namespace) -> None:
    median = {m: statistics.median(r["seconds"] for r in runs) for m, runs in figures.items() if runs}
    cap = args.total_mbps
    print(
        f"\n{total_bytes / MB:.0f} MB in 2 shards + config; server capped at {args.per_conn_mbps:g} MB/s per "
        f"connection, {cap:g} MB/s total; median of {args.reps}\n"
    )
    print(f"{'method':18s} {'median s':>9s} {'MB/s':>8s} {'x cap':>6s} {'peak RSS MB':>12s}  ok")
    for method, runs in figures.items():
        if not runs:
            continue
        mbps = total_bytes / median[method] / MB
        rss = max(r["rss_self"] + r["rss_children"] for r in runs) / 1024
        ok = all(r["ok"] for r in runs)
        print(
            f"{method:18s} {median[method]:9.2f} {mbps:8.1f} {mbps / cap:6.2f} {rss:12.0f}  {'yes' if ok else 'NO'}"
        )
    print()

    def ratio(label: str, a: str, b: str, target: str) -> None:
        if a in median and b in median:
            print(f"{label:48s} {median[b] / median[a]:6.2f}  (target {target})")

    for engine in ("aria2", "native"):
        ratio(f"{engine} speed vs plain aria2c -x16 -s16", engine, "plain-aria2c", ">= 1.0")
        ratio(f"{engine} speed vs huggingface_hub.snapshot_download", engine, "hf-snapshot", ">= 4.0")
        if engine in median and f"{engine}-noverify" in median:
            overhead = median[engine] / median[f"{engine}-noverify"]
            print(f"{engine + ' time with / without verification':48s} {overhead:6.3f}  (target <= 1.05)")
    print("peak RSS: the engine's process plus its largest child (aria2c), target <= 150 MB")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    main()
