"""Team-store speed (issue 14): `push` and `pull` against boto3's own `upload_file`/`download_file`.

    uv run python benchmarks/s3_speed.py                        # 1 GiB model, 3 repetitions
    uv run python benchmarks/s3_speed.py --size-mb 64 --reps 1  # quick

A model of two safetensors-named shards of random bytes plus a config is generated and recorded as
verified in a registry. A real S3 server (`rclone serve s3`, tests/s3server.py) runs on 127.0.0.1 twice
over the same folder: uncapped, and capped with `--bwlimit` at 200 MB/s. Each measurement is a whole
command in a fresh process, wall clock, into an empty bucket or folder:

  push          `imageworks-download push NAME --to R`   vs  a fresh `python -c` doing client.upload_file
  push again    the same push once more (must upload 0 bytes)
  pull          `imageworks-download pull NAME --from R` vs  a fresh `python -c` doing client.download_file

Both sides use the same boto3 client settings (path style, checksums when_required). Printed: medians,
ratios (ours / plain, higher is better), x cap, and the peak RSS of our process.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.s3server import aws_env, start_server  # noqa: E402

MB = 1_000_000
REPO = "bench/s3-model"
NAME = "bench/s3-model"
CAP_MBPS = 200

PLAIN = r"""
import json, sys, time
import boto3
from botocore.config import Config
spec = json.loads(sys.argv[1])
began = time.perf_counter()
client = boto3.client("s3", endpoint_url=spec["endpoint"], region_name="us-east-1", config=Config(
    s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
    response_checksum_validation="when_required"))
for item in spec["items"]:
    if spec["op"] == "upload":
        client.upload_file(item["local"], spec["bucket"], item["key"])
    else:
        client.download_file(spec["bucket"], item["key"], item["local"])
print(json.dumps({"seconds": time.perf_counter() - began}))
"""


def generate(folder: Path, size: int) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "model-00001-of-00002.safetensors": size // 2,
        "model-00002-of-00002.safetensors": size - size // 2,
    }
    (folder / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}\n')
    for name, length in parts.items():
        with open(folder / name, "wb") as handle:
            left = length
            while left:
                block = os.urandom(min(left, 8 << 20))
                handle.write(block)
                left -= len(block)
    records = []
    for path in sorted(folder.iterdir()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(8 << 20), b""):
                digest.update(block)
        st = path.stat()
        records.append(
            {"path": path.name, "size": st.st_size, "sha256": digest.hexdigest(), "mtime_ns": st.st_mtime_ns}
        )
    return records


def seed_registry(registry: Path, folder: Path, records: list[dict]) -> None:
    from imageworks.registry import FileRecord, ModelEntry, RegistryStore, Source

    entry = ModelEntry(
        name=NAME,
        source=Source(provider="hf", repo_id=REPO, revision="main", commit="a" * 40),
        format="safetensors",
        location="linux_wsl",
        path=str(folder),
        files=[FileRecord(**r) for r in records],
        size_bytes=sum(r["size"] for r in records),
    )
    with RegistryStore(registry).transaction(["bench seed"]) as reg:
        reg.put(entry)


def timed(cmd: list[str], env: dict[str, str]) -> dict:
    """Run a fresh process; wall clock and its peak RSS (KB -> MB)."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} failed: {err.decode()[-2000:]}")
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "stdout": out.decode()}


def cli(args: list[str], env: dict[str, str]) -> dict:
    return timed([sys.executable, "-m", "imageworks.cli.main", *args], env)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="model size in MiB (default 1024)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, help="work folder (default: a temp folder, removed after)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="s3bench-"))
    size = args.size_mb * 1024 * 1024
    env = {**os.environ, **aws_env(), "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        {"AWS_CONFIG_FILE": str(work / "aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(work / "aws-cred")}
    )
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    source = work / "machine1" / "models" / REPO
    records = generate(source, size)
    registry1 = work / "machine1" / "registry"
    seed_registry(registry1, source, records)
    # rclone's K is KiB: 200 MB/s = 195312 KiB/s.
    servers = {
        "uncapped": start_server(work / "store", log=work / "rclone-fast.log"),
        "capped": start_server(
            work / "store", bwlimit=f"{CAP_MBPS * MB // 1024}K", log=work / "rclone-cap.log"
        ),
    }
    figures: dict[str, list[dict]] = {}
    try:
        import boto3

        for rep in range(args.reps):
            for label, server in servers.items():
                # Buckets are made through the server that uses them: each rclone caches the folder list.
                admin = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
                run_round(work, label, server.endpoint, rep, records, registry1, env, admin, figures)
    finally:
        for server in servers.values():
            server.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report(figures, sum(r["size"] for r in records), args)


def run_round(work, label, endpoint, rep, records, registry1, env, admin, figures) -> None:
    bucket = f"bench-{label}-{rep}"
    plain_bucket = f"plain-{label}-{rep}"
    for b in (bucket, plain_bucket):
        admin.create_bucket(Bucket=b)
    env1 = {**env, "IMAGEWORKS_REGISTRY_DIR": str(registry1)}
    remote = f"{label}{rep}"
    cli(["remote", "add", remote, f"s3://{bucket}/team", "--endpoint-url", endpoint], env1)
    source = registry1.parent / "models" / REPO
    upload_items = [{"local": str(source / r["path"]), "key": f"plain/{r['sha256']}"} for r in records]

    def plain(op: str, items: list[dict]) -> dict:
        spec = {"endpoint": endpoint, "bucket": plain_bucket, "op": op, "items": items}
        return timed([sys.executable, "-c", PLAIN, json.dumps(spec)], env)

    order = ["ours", "plain"] if rep % 2 == 0 else ["plain", "ours"]
    for who in order:
        if who == "ours":
            figures.setdefault(f"push ours {label}", []).append(cli(["push", NAME, "--to", remote], env1))
            again = cli(["push", NAME, "--to", remote, "--json"], env1)
            again["bytes"] = json.loads(again["stdout"])["data"]["bytes_uploaded"]
            figures.setdefault(f"push again {label}", []).append(again)
        else:
            figures.setdefault(f"push plain {label}", []).append(plain("upload", upload_items))
    machine2 = work / f"machine2-{label}-{rep}"
    env2 = {
        **env,
        "IMAGEWORKS_REGISTRY_DIR": str(machine2 / "registry"),
        "IMAGEWORKS_MODEL_ROOT": str(machine2 / "models"),
    }
    cli(["remote", "add", remote, f"s3://{bucket}/team", "--endpoint-url", endpoint], env2)
    plain_dest = work / f"plain-dest-{label}-{rep}"
    plain_dest.mkdir()
    download_items = [
        {"local": str(plain_dest / r["path"]), "key": i["key"]}
        for r, i in zip(records, upload_items, strict=True)
    ]
    for who in order:
        if who == "ours":
            figures.setdefault(f"pull ours {label}", []).append(cli(["pull", NAME, "--from", remote], env2))
        else:
            figures.setdefault(f"pull plain {label}", []).append(plain("download", download_items))
    shutil.rmtree(machine2, ignore_errors=True)
    shutil.rmtree(plain_dest, ignore_errors=True)
    for b in (bucket, plain_bucket):
        shutil.rmtree(work / "store" / b, ignore_errors=True)


def report(figures: dict[str, list[dict]], total: int, args: argparse.Namespace) -> None:
    median = {k: statistics.median(r["seconds"] for r in runs) for k, runs in figures.items()}
    rss = {k: max(r["rss_mb"] for r in runs) for k, runs in figures.items()}
    print(f"\nmodel {total / MB:.0f} MB in 3 files; rclone serve s3 on 127.0.0.1; median of {args.reps}")
    print(f"{'command':26s} {'median s':>9s} {'MB/s':>8s} {'peak RSS MB':>12s}  every run (s)")
    for key in sorted(median):
        rate = total / median[key] / MB if not key.startswith("push again") else 0.0
        runs = " ".join(f"{r['seconds']:.2f}" for r in figures[key])
        print(f"{key:26s} {median[key]:9.2f} {rate:8.1f} {rss[key]:12.0f}  {runs}")
    print("\nratios (median)")
    for label in ("uncapped", "capped"):
        for op in ("push", "pull"):
            ours, plain = median.get(f"{op} ours {label}"), median.get(f"{op} plain {label}")
            if ours and plain:
                line = f"{op} {label}: ours / plain boto3 {plain / ours:5.2f} (target >= 0.9)"
                if label == "capped":
                    line += f", x cap {total / ours / MB / CAP_MBPS:5.2f} (target >= 0.9)"
                print(line)
        again = figures.get(f"push again {label}", [])
        if again:
            print(
                f"second push {label}: {max(r['bytes'] for r in again)} bytes uploaded, "
                f"{median[f'push again {label}']:.2f} s (target 0 bytes, <= 1 s)"
            )
    ours_rss = max((v for k, v in rss.items() if "ours" in k or "again" in k), default=0.0)
    print(f"peak RSS of push/pull: {ours_rss:.0f} MB (target <= 200 MB)")


if __name__ == "__main__":
    main()
