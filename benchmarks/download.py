"""Download speed as the user feels it (issue 13): the whole `imageworks-download download` command,
side by side with its anchor in the same run.

    uv run python benchmarks/download.py                                  # every case, 3 repetitions
    uv run python benchmarks/download.py --size-mb 64 --small-files 300 --reps 1   # quick

Cases (each with its own fake Hub from tests/fakehub, in its own process, on loopback):
- shards: a model of two safetensors shards (random bytes, --size-mb in all) + config, the Hub capped
  at 20 MB/s per connection and 200 MB/s in total. Anchor: plain `aria2c -x16 -s16` on the same CDN URLs.
- unthrottled: the same files with no cap (CPU-bound: hashing and copying show). Anchor: plain aria2c.
  Also `hf download --local-dir` for its MB/s: plain HTTP here, as the fake Hub has no Xet storage for
  hf_xet, and huggingface_hub 2.x no longer uses hf_transfer.
- small: --small-files small (non-LFS) files + config. Anchor: `huggingface_hub.snapshot_download`.

Every run is a fresh process into an empty folder with a fresh registry, timed by wall clock from
spawn to exit (start-up, Hub calls, fetch, verification, inspection, registry write), bytecode caching
on as users have it (PYTHONDONTWRITEBYTECODE is removed). The command is the virtualenv's
`imageworks-download` script (what `uv run imageworks-download` runs, minus uv's own start-up).
The second column, "engine only", times the engine's fetch() alone inside a child process (the same
files, CDN URLs given), as the earlier benchmark did. Peak RSS is the command's process and its
children (aria2c). The machine is shared: the load average is printed with the results.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARDS_REPO = "bench/model-shards"
SMALL_REPO = "bench/many-small"
MB = 1_000_000

SERVER = r"""
import json, os, sys
from pathlib import Path
from tests.fakehub import FakeHub
spec = json.loads(sys.argv[1])
hub = FakeHub()
config = b'{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}\n'
if spec["small"]:
    files = {f"shards/part-{i:05d}.json": json.dumps({"i": i, "pad": os.urandom(spec["small_size"] // 2).hex()}).encode()
             for i in range(spec["small"])}
else:
    files = {name: Path(path) for name, path in spec["files"].items()}
files["config.json"] = config
hub.add_repo(spec["repo"], files)
if spec["per_conn"] or spec["total"]:
    hub.throttle(per_connection_bps=spec["per_conn"] or None, total_bps=spec["total"] or None)
hub.start()
out = {"endpoint": hub.endpoint, "files": []}
for name in sorted(files):
    entry = hub.file(spec["repo"], name)
    out["files"].append({
        "path": name, "size": entry.size, "sha256": entry.sha256 if entry.lfs else None,
        "git_sha1": None if entry.lfs else entry.oid,
        "cdn_url": hub.cdn_url_for(spec["repo"], name) if entry.lfs else hub.resolve_url(spec["repo"], name),
    })
print(json.dumps(out), flush=True)
sys.stdin.read()
hub.stop()
"""

ENGINE_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from imageworks.transfer import FileJob, NullProgress, choose_engine
spec = json.loads(sys.argv[1])
jobs = [FileJob(f["cdn_url"], Path(spec["dest"]) / f["path"], f["size"], f["sha256"], f["git_sha1"], label=f["path"])
        for f in spec["files"]]
engine = choose_engine(spec["engine"], connections=spec["connections"])
began = time.perf_counter()
results = engine.fetch(jobs, NullProgress())
seconds = time.perf_counter() - began
ok = all(r.sha256 == f["sha256"] for r, f in zip(results, spec["files"]) if f["sha256"])
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "ok": ok, "rss": max(me.ru_maxrss, kids.ru_maxrss)}))
"""

HF_CHILD = r"""
import json, sys
spec = json.loads(sys.argv[1])
from huggingface_hub import snapshot_download
snapshot_download(spec["repo"], local_dir=spec["dest"], endpoint=spec["endpoint"])
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


def child_env(work: Path, endpoint: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}",
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(work / "hf_home"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_ENABLE_HF_TRANSFER": "0",
        "IMAGEWORKS_REGISTRY_DIR": str(work / "registry"),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # users keep their bytecode caches
    env.pop("HF_TOKEN", None)
    return env


def run_command(argv: list[str], env: dict[str, str]) -> dict:
    """Wall clock from spawn to exit, and the peak RSS of the command and its children (aria2c), both
    measured by a small wrapper process around just this command."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "began = time.perf_counter()\n"
        "rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "seconds = time.perf_counter() - began\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'rc': rc, 'seconds': seconds, 'rss': rss}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, *argv], env=env, capture_output=True, cwd=env["HF_HOME"]
    )
    data = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if data["rc"] != 0:
        raise RuntimeError(f"{argv[:4]} failed ({data['rc']}): {proc.stderr.decode()[-2000:]}")
    return {"seconds": data["seconds"], "rss": data["rss"]}


def run_engine(argv: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run(argv, env=env, capture_output=True, cwd=env["HF_HOME"])
    if proc.returncode != 0:
        raise RuntimeError(f"engine child failed: {proc.stderr.decode()[-2000:]}")
    inner = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return {"seconds": inner["seconds"], "rss": inner["rss"]}


def cli_argv(repo: str, dest: Path, engine: str) -> list[str]:
    script = ROOT / ".venv" / "bin" / "imageworks-download"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "imageworks.cli.main"]
    return [*base, "download", repo, "--location", str(dest), "--engine", engine, "--quiet", "--no-backup"]


def hf_cli() -> str:
    """huggingface_hub's `hf` next to this interpreter. It fetches over plain HTTP here: the fake Hub has
    no Xet storage for hf_xet to use, and huggingface_hub 2.x no longer uses hf_transfer."""
    return shutil.which("hf") or str(Path(sys.executable).parent / "hf")


def plain_aria2c(files: list[dict], dest: Path, env: dict[str, str]) -> list[str]:
    listing = dest.parent / f"{dest.name}-aria2c-input.txt"
    listing.write_text("".join(f"{f['cdn_url']}\n  out={f['path']}\n" for f in files))
    return ["aria2c", "-x16", "-s16", "--no-conf", "-q", "-d", str(dest), "-i", str(listing)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def verified(dest: Path, files: list[dict]) -> bool:
    """Checked after timing (plain aria2c and snapshot_download check nothing themselves)."""
    found = {p.relative_to(dest).as_posix(): p for p in dest.rglob("*") if p.is_file()}
    for f in files:
        hits = [p for rel, p in found.items() if rel.endswith(f["path"])]
        if not hits or hits[0].stat().st_size != f["size"]:
            return False
        if f["sha256"] and sha256_file(hits[0]) != f["sha256"]:
            return False
    return True


CASES = {
    "shards": ["cli-aria2", "cli-native", "plain-aria2c", "engine-aria2", "engine-native", "hf-snapshot"],
    "unthrottled": [
        "cli-aria2",
        "cli-native",
        "plain-aria2c",
        "engine-aria2",
        "engine-native",
        "hf-download",
    ],
    "small": ["cli-auto", "cli-native", "hf-snapshot"],
}
ANCHOR = {"shards": "plain-aria2c", "unthrottled": "plain-aria2c", "small": "hf-snapshot"}


def run_case(
    case: str, args: argparse.Namespace, work: Path, sources: dict[str, Path]
) -> dict[str, list[dict]]:
    small = args.small_files if case == "small" else 0
    throttled = case == "shards"
    spec = {
        "repo": SMALL_REPO if small else SHARDS_REPO,
        "files": {k: str(v) for k, v in sources.items()},
        "small": small,
        "small_size": args.small_size,
        "per_conn": args.per_conn_mbps * MB if throttled else 0,
        "total": args.total_mbps * MB if throttled else 0,
    }
    server_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=server_env,
        cwd=ROOT,
    )
    assert server.stdout is not None and server.stdin is not None
    info = json.loads(server.stdout.readline())
    files = info["files"]
    env = child_env(work, info["endpoint"])
    methods = [m for m in CASES[case] if m in args.methods]
    figures: dict[str, list[dict]] = {m: [] for m in methods}
    total = sum(f["size"] for f in files)
    try:
        for rep in range(args.reps):
            for method in methods:
                dest = work / "dest" / method
                shutil.rmtree(dest, ignore_errors=True)
                shutil.rmtree(work / "registry", ignore_errors=True)
                shutil.rmtree(work / "hf_home", ignore_errors=True)
                dest.mkdir(parents=True)
                (work / "hf_home").mkdir()
                kind, _, engine = method.partition("-")
                if kind == "cli":
                    argv = cli_argv(spec["repo"], dest, engine)
                elif kind == "plain":
                    argv = plain_aria2c(files, dest, env)
                elif method == "hf-download":
                    argv = [hf_cli(), "download", spec["repo"], "--local-dir", str(dest)]
                elif kind == "hf":
                    argv = [
                        sys.executable,
                        "-c",
                        HF_CHILD,
                        json.dumps({"repo": spec["repo"], "dest": str(dest), "endpoint": info["endpoint"]}),
                    ]
                else:
                    child = {
                        "engine": engine,
                        "dest": str(dest),
                        "files": files,
                        "connections": args.connections,
                    }
                    argv = [sys.executable, "-c", ENGINE_CHILD, json.dumps(child)]
                result = run_engine(argv, env) if kind == "engine" else run_command(argv, env)
                result["ok"] = verified(dest, files)
                figures[method].append(result)
                print(
                    f"{case} rep {rep + 1}/{args.reps} {method:14s} {result['seconds']:7.2f} s"
                    f" {total / result['seconds'] / MB:8.1f} MB/s rss {result['rss'] / 1024:5.0f} MB"
                    f"{'' if result['ok'] else '  WRONG FILES'}",
                    file=sys.stderr,
                )
                shutil.rmtree(dest, ignore_errors=True)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    report(case, figures, total, len(files), args)
    return figures


def report(
    case: str, figures: dict[str, list[dict]], total: int, count: int, args: argparse.Namespace
) -> None:
    median = {m: statistics.median(r["seconds"] for r in runs) for m, runs in figures.items() if runs}
    anchor = ANCHOR[case]
    cap = (
        f", capped at {args.per_conn_mbps:g} MB/s per connection and {args.total_mbps:g} MB/s in all"
        if case == "shards"
        else ""
    )
    print(
        f"\n[{case}] {count} files, {total / MB:.1f} MB{cap}; median of {args.reps}; load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'method':14s} {'wall s':>8s} {'engine only s':>14s} {'MB/s':>8s} {'peak RSS MB':>12s} {'x ' + anchor:>18s}  ok"
    )
    for method, runs in figures.items():
        if not runs or method.startswith("engine-"):
            continue
        engine = f"engine-{method.partition('-')[2]}"
        inner = f"{median[engine]:14.2f}" if engine in median else f"{'-':>14s}"
        ratio = f"{median[anchor] / median[method]:18.2f}" if anchor in median else f"{'-':>18s}"
        rss = max(r["rss"] for r in runs) / 1024
        ok = "yes" if all(r["ok"] for r in runs) else "NO"
        print(
            f"{method:14s} {median[method]:8.2f} {inner} {total / median[method] / MB:8.1f} {rss:12.0f} {ratio}  {ok}"
        )
    target = {"shards": ">= 1.0, RSS <= 150 MB", "unthrottled": ">= 1.0", "small": ">= 3.0"}[case]
    print(f"target: the whole command {target} x {anchor} (ratio = anchor time / our time)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="model size in MiB (two shards)")
    parser.add_argument("--small-files", type=int, default=1500, help="files in the small-files case")
    parser.add_argument("--small-size", type=int, default=2048, help="bytes per small file (about)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--per-conn-mbps", type=float, default=20.0, help="MB/s per connection (shards case)")
    parser.add_argument("--total-mbps", type=float, default=200.0, help="MB/s in total (shards case)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {list(CASES)}")
    parser.add_argument("--methods", default=None, help="comma-separated subset of each case's methods")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temp folder)")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if set(cases) - set(CASES):
        parser.error(f"unknown cases: {sorted(set(cases) - set(CASES))}")
    every = {m for c in cases for m in CASES[c]}
    args.methods = set(args.methods.split(",")) if args.methods else every
    if args.methods - every:
        parser.error(f"unknown methods: {sorted(args.methods - every)}")
    work = args.work or Path(tempfile.gettempdir()) / "imageworks-bench-download"
    work.mkdir(parents=True, exist_ok=True)
    sources = generate(work / "source", args.size_mb * 1024 * 1024)
    for case in cases:
        run_case(case, args, work, sources)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    main()
