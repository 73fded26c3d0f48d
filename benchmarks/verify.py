"""verify speed (issue 6): a model of 4 files of random data, hashed several ways.

  uv run python benchmarks/verify.py [--size-mb 2048] [--files 4] [--reps 3] [--data-dir DIR] [--warm-only]

Prints the median of each method, warm cache (files in the page cache) and, when this process may write
/proc/sys/vm/drop_caches (root), cold cache (caches dropped before every timed run):

  imageworks verify (CLI)     `imageworks-loader verify NAME`, a subprocess, end to end (start-up,
                              registry, hashing, recording verified_at)
  hash_files (library)        imageworks.hashing.hash_files, default jobs, in process
  hash_files jobs=1           the same, one thread: what the parallelism buys
  hashlib single-threaded     hashlib.file_digest(f, "sha256") file after file, in process
  sha256sum                   coreutils, one process over all files (sequential)
  sha256sum -P<cores>         coreutils, one process per file, <cores> at a time (xargs -P)
  hf cache verify             huggingface_hub's CLI on an HF cache layout (blobs + snapshot symlinks),
                              against the fake Hub of tests/fakehub serving the same files

Targets: imageworks >= 1.6 x single-threaded hashlib, >= 3 x sha256sum. Ratios are printed for both
the library (against in-process hashlib) and the CLI (against the sha256sum process).
The data is generated once (random bytes) and reused across repetitions; with --data-dir it is also
kept and reused across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from imageworks.hashing import aggregate_sha256, default_jobs, hash_files  # noqa: E402
from imageworks.registry import FileRecord, ModelEntry, RegistryStore, Source  # noqa: E402

MiB = 1024 * 1024
REPO_ID = "Bench/Verify-Model"
NAME = "bench/verify-model"


def generate(folder: Path, total_mb: int, files: int) -> list[Path]:
    """`files` shards of random bytes (incompressible, no dedup anywhere), reused when already there."""
    folder.mkdir(parents=True, exist_ok=True)
    size = total_mb * MiB // files
    paths = []
    for index in range(files):
        path = folder / f"model-{index + 1:05d}-of-{files:05d}.safetensors"
        if not path.exists() or path.stat().st_size != size:
            print(f"generating {path.name} ({size // MiB} MiB)", file=sys.stderr)
            with open(path, "wb") as handle:
                left = size
                while left:
                    chunk = min(left, 64 * MiB)
                    handle.write(os.urandom(chunk))
                    left -= chunk
        paths.append(path)
    return paths


def can_drop_caches() -> bool:
    try:
        drop_caches()
    except OSError:
        return False
    return True


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as handle:
        handle.write("3\n")


def warm(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while handle.read(16 * MiB):
                pass


def hashlib_sequential(paths: list[Path]) -> list[str]:
    out = []
    for path in paths:
        with open(path, "rb") as handle:
            out.append(hashlib.file_digest(handle, "sha256").hexdigest())
    return out


def run(cmd: list[str], env: dict[str, str] | None = None, ok_codes: tuple[int, ...] = (0,)) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}: {result.stderr.strip()[-500:]}")
    return result.stdout


@contextlib.contextmanager
def fake_hub_with(paths: list[Path]) -> Iterator[tuple[str, str]]:
    """The fake Hub (tests/fakehub) serving the shards as one repo: (endpoint, commit)."""
    from tests.fakehub.server import FakeHub

    hub = FakeHub()
    commit = hub.add_repo(REPO_ID, {p.name: p for p in paths}, gitattributes=False)
    with hub:
        yield hub.endpoint, commit


def hf_cache_layout(cache: Path, paths: list[Path], digests: list[str], commit: str) -> None:
    """What `hf download` leaves: blobs named by SHA-256, a snapshot folder of relative symlinks, a ref.
    The blobs are hard links to the data (same bytes, no copy; a symlink would also do)."""
    repo = cache / ("models--" + REPO_ID.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for path, digest in zip(paths, digests, strict=True):
        blob = repo / "blobs" / digest
        if not blob.exists():
            try:
                os.link(path, blob)
            except OSError:
                blob.symlink_to(path)
        link = snapshot / path.name
        if not link.is_symlink():
            link.symlink_to(Path("../../blobs") / digest)


def registry_with_model(folder: Path, model_dir: Path, paths: list[Path], digests: list[str]) -> None:
    files = [
        FileRecord(path=p.name, size=p.stat().st_size, sha256=d, mtime_ns=p.stat().st_mtime_ns)
        for p, d in zip(paths, digests, strict=True)
    ]
    entry = ModelEntry(
        name=NAME,
        path=str(model_dir),
        files=files,
        format="safetensors",
        source=Source(provider="hf", repo_id=REPO_ID, commit="0" * 40),
        size_bytes=sum(f.size for f in files),
        aggregate_sha256=aggregate_sha256((f.path, f.sha256) for f in files),
    )
    with RegistryStore(folder).transaction(["benchmark"], backup=False) as registry:
        registry.put(entry)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=2048, help="total model size in MiB (default 2048)")
    parser.add_argument("--files", type=int, default=4, help="number of files (default 4)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per method (default 3)")
    parser.add_argument("--data-dir", type=Path, help="keep the generated files here and reuse them")
    parser.add_argument("--warm-only", action="store_true", help="skip the cold-cache runs")
    args = parser.parse_args()
    if args.reps < 1 or args.files < 1 or args.size_mb < 1:
        parser.error("--reps, --files and --size-mb must be positive")

    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="iw-bench-verify-"))
    data_dir = args.data_dir or work / "data"
    try:
        paths = generate(data_dir / "model", args.size_mb, args.files)
        model_dir = paths[0].parent
        total = sum(p.stat().st_size for p in paths)
        expected = hashlib_sequential(paths)  # also warms the cache once

        registry_dir = work / "registry"
        registry_with_model(registry_dir, model_dir, paths, expected)
        env = {**os.environ, "IMAGEWORKS_REGISTRY_DIR": str(registry_dir), "HF_HUB_DISABLE_TELEMETRY": "1"}
        cores = default_jobs()

        def ours_cli() -> None:
            out = run(
                [sys.executable, "-m", "imageworks.cli.loader", "verify", "--json", "--no-backup", NAME], env
            )
            doc = json.loads(out)
            assert doc["ok"] is True, doc

        def ours_lib() -> None:
            got = [d.sha256 for d in hash_files(paths)]
            assert got == expected

        def ours_lib_1() -> None:
            got = [d.sha256 for d in hash_files(paths, jobs=1)]
            assert got == expected

        def py_single() -> None:
            assert hashlib_sequential(paths) == expected

        def sha256sum() -> None:
            out = run(["sha256sum", *map(str, paths)])
            assert [line.split()[0] for line in out.splitlines()] == expected

        def sha256sum_parallel() -> None:
            listing = "\0".join(map(str, paths))
            result = subprocess.run(
                ["xargs", "-0", "-n1", f"-P{cores}", "sha256sum"],
                input=listing,
                capture_output=True,
                text=True,
            )
            got = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()}
            assert [got[str(p)] for p in paths] == expected, result.stderr

        methods: dict[str, Callable[[], None]] = {
            "imageworks verify (CLI)": ours_cli,
            "hash_files (library)": ours_lib,
            "hash_files jobs=1": ours_lib_1,
            "hashlib single-threaded": py_single,
            "sha256sum": sha256sum,
            f"sha256sum -P{cores}": sha256sum_parallel,
        }

        skip_notes: list[str] = []
        hf_bin = shutil.which("hf") or str(Path(sys.executable).parent / "hf")
        hub_context: contextlib.AbstractContextManager[tuple[str, str] | None] = contextlib.nullcontext(None)
        if not Path(hf_bin).exists():
            skip_notes.append("hf cache verify: no `hf` CLI installed")
        elif "verify" not in run([hf_bin, "cache", "--help"], ok_codes=(0, 1, 2)):
            skip_notes.append("hf cache verify: this huggingface_hub has no `hf cache verify`")
        else:
            try:
                hub_context = fake_hub_with(paths)
            except ImportError as exc:
                skip_notes.append(f"hf cache verify: the fake Hub (tests/fakehub) cannot be imported: {exc}")

        with hub_context as hub:
            if hub is not None:
                endpoint, commit = hub
                cache = work / "hf-cache"
                hf_cache_layout(cache, paths, expected, commit)
                hf_env = {**env, "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1", "NO_COLOR": "1"}
                hf_env.pop("HF_TOKEN", None)

                def hf_verify() -> None:
                    out = run(
                        [hf_bin, "cache", "verify", REPO_ID, "--cache-dir", str(cache), "--revision", commit,
                         "--fail-on-missing-files", "--fail-on-extra-files"],
                        hf_env,
                    )  # fmt: skip
                    assert f"Verified {len(paths)} file(s)" in out, out

                methods["hf cache verify"] = hf_verify

            modes = ["warm"]
            if args.warm_only:
                skip_notes.append("cold cache: skipped (--warm-only)")
            elif can_drop_caches():
                modes.append("cold")
            else:
                skip_notes.append(
                    "cold cache: cannot write /proc/sys/vm/drop_caches (not root?): warm numbers only"
                )

            results: dict[str, dict[str, list[float]]] = {m: {name: [] for name in methods} for m in modes}
            for fn in methods.values():  # one untimed run each: imports, the fake Hub's first hashes
                fn()
            for mode in modes:
                for _ in range(args.reps):
                    # Interleaved, so that drift (thermal, a neighbour VM) spreads over every method.
                    for name, fn in methods.items():
                        if mode == "cold":
                            drop_caches()
                        else:
                            warm(paths)
                        started = time.perf_counter()
                        fn()
                        results[mode][name].append(time.perf_counter() - started)

        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        if load_at_start[0] > 0.5:
            skip_notes.append(
                f"the machine was busy (1-min load {load_at_start[0]:.2f} at the start): other processes share "
                "the cores, so parallel hashing cannot show its gain; compare the 'best' figures"
            )
        print(
            f"\nverify benchmark: {len(paths)} files, {total / MiB:.0f} MiB in all, {args.reps} reps, "
            f"{os.cpu_count()} CPUs (hash_files jobs={cores}); load average at the end {load}"
        )
        for mode in results:
            print(f"\n{mode} cache:")
            medians = {name: statistics.median(times) for name, times in results[mode].items()}
            best = {name: min(times) for name, times in results[mode].items()}
            for name, median in medians.items():
                rate = total / MiB / median
                print(
                    f"  {name:<26} median {median:7.3f} s {rate:7.0f} MiB/s   best {best[name]:7.3f} s"
                    f"   (max {max(results[mode][name]):.3f})"
                )
            for label, figures in (("median", medians), ("best", best)):
                lib, cli = figures["hash_files (library)"], figures["imageworks verify (CLI)"]
                line = (
                    f"  ratios ({label}): library vs hashlib single-threaded "
                    f"{figures['hashlib single-threaded'] / lib:.2f}x (target >= 1.6); "
                    f"CLI vs sha256sum {figures['sha256sum'] / cli:.2f}x (target >= 3); "
                    f"library vs sha256sum {figures['sha256sum'] / lib:.2f}x"
                )
                if "hf cache verify" in figures:
                    line += f"; CLI vs hf cache verify {figures['hf cache verify'] / cli:.2f}x"
                print(line)
        for note in skip_notes:
            print(f"note: {note}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
