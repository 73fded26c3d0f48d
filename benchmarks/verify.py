"""verify speed (issue 13): a model of 4 files of random data, checked by whole commands.

  uv run python benchmarks/verify.py [--size-mb 2048] [--files 4] [--reps 3] [--data-dir DIR] [--warm-only]

Every method is a fresh process timed by the wall clock, as a user runs it (PYTHONDONTWRITEBYTECODE is
unset, so start-up uses the bytecode cache as on a user's machine). Medians, warm cache (files in the
page cache) and, when this process may write /proc/sys/vm/drop_caches (root), cold cache:

  imageworks-loader verify    the console script, end to end (start-up, registry, hashing, recording)
  python hashlib process      `python -c ...` hashing the files one after the other with hashlib
  sha256sum                   coreutils, one process over all files (sequential)
  sha256sum -P<cores>         coreutils, one process per file, <cores> at a time (xargs -P)
  hf cache verify             huggingface_hub's CLI on an HF cache layout (blobs + snapshot symlinks),
                              against the fake Hub of tests/fakehub serving the same files

and, as a second column, the hashing engine alone in this process (imageworks.hashing.hash_files, and
hashlib file after file).

Targets: the verify command >= 1.6 x the single-threaded hashlib process, >= 3 x sha256sum.
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


HASHLIB_PROCESS = (
    "import hashlib, sys\n"
    "for p in sys.argv[1:]:\n"
    "    with open(p, 'rb') as f:\n"
    "        print(hashlib.file_digest(f, 'sha256').hexdigest(), p)\n"
)


def parse_args() -> argparse.Namespace:
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
    return args


def user_env(registry_dir: Path) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONDONTWRITEBYTECODE (start-up reads cached bytecode)."""
    env = {**os.environ, "IMAGEWORKS_REGISTRY_DIR": str(registry_dir), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def command_methods(
    paths: list[Path], expected: list[str], env: dict[str, str]
) -> dict[str, Callable[[], None]]:
    """The whole commands, each a fresh process."""
    cores = default_jobs()
    loader = Path(sys.executable).parent / "imageworks-loader"

    def ours_cli() -> None:
        doc = json.loads(run([str(loader), "verify", "--json", "--no-backup", NAME], env))
        assert doc["ok"] is True, doc

    def hashlib_process() -> None:
        out = run([sys.executable, "-c", HASHLIB_PROCESS, *map(str, paths)], env)
        assert [line.split()[0] for line in out.splitlines()] == expected

    def sha256sum() -> None:
        out = run(["sha256sum", *map(str, paths)])
        assert [line.split()[0] for line in out.splitlines()] == expected

    def sha256sum_parallel() -> None:
        listing = "\0".join(map(str, paths))
        result = subprocess.run(
            ["xargs", "-0", "-n1", f"-P{cores}", "sha256sum"], input=listing, capture_output=True, text=True
        )
        got = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()}
        assert [got[str(p)] for p in paths] == expected, result.stderr

    return {
        "imageworks-loader verify": ours_cli,
        "python hashlib process": hashlib_process,
        "sha256sum": sha256sum,
        f"sha256sum -P{cores}": sha256sum_parallel,
    }


def engine_methods(paths: list[Path], expected: list[str]) -> dict[str, Callable[[], None]]:
    """The hashing alone, in this process (second column)."""

    def ours_lib() -> None:
        assert [d.sha256 for d in hash_files(paths)] == expected

    def py_single() -> None:
        assert hashlib_sequential(paths) == expected

    return {"hash_files (engine)": ours_lib, "hashlib in process": py_single}


def hf_verify_method(
    work: Path, paths: list[Path], expected: list[str], env: dict[str, str], hub: tuple[str, str]
) -> Callable[[], None]:
    endpoint, commit = hub
    hf_bin = hf_binary()
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

    return hf_verify


def hf_binary() -> str:
    return shutil.which("hf") or str(Path(sys.executable).parent / "hf")


def hub_for_hf(
    paths: list[Path], notes: list[str]
) -> contextlib.AbstractContextManager[tuple[str, str] | None]:
    """The fake Hub for `hf cache verify`, or nothing (with a note saying why)."""
    hf_bin = hf_binary()
    if not Path(hf_bin).exists():
        notes.append("hf cache verify: no `hf` CLI installed")
    elif "verify" not in run([hf_bin, "cache", "--help"], ok_codes=(0, 1, 2)):
        notes.append("hf cache verify: this huggingface_hub has no `hf cache verify`")
    else:
        try:
            return fake_hub_with(paths)
        except ImportError as exc:
            notes.append(f"hf cache verify: the fake Hub (tests/fakehub) cannot be imported: {exc}")
    return contextlib.nullcontext(None)


def cache_modes(warm_only: bool, notes: list[str]) -> list[str]:
    if warm_only:
        notes.append("cold cache: skipped (--warm-only)")
        return ["warm"]
    if can_drop_caches():
        return ["warm", "cold"]
    notes.append("cold cache: cannot write /proc/sys/vm/drop_caches (not root?): warm numbers only")
    return ["warm"]


def time_methods(
    methods: dict[str, Callable[[], None]], paths: list[Path], modes: list[str], reps: int
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {m: {name: [] for name in methods} for m in modes}
    for fn in methods.values():  # one untimed run each: imports, bytecode cache, the fake Hub's hashes
        fn()
    for mode in modes:
        for _ in range(reps):
            # Interleaved, so that drift (thermal, a neighbour VM) spreads over every method.
            for name, fn in methods.items():
                drop_caches() if mode == "cold" else warm(paths)
                started = time.perf_counter()
                fn()
                results[mode][name].append(time.perf_counter() - started)
    return results


def report(results: dict[str, dict[str, list[float]]], engines: set[str], total: int) -> None:
    ours = "imageworks-loader verify"
    for mode, timings in results.items():
        print(f"\n{mode} cache (medians, wall clock):")
        medians = {name: statistics.median(times) for name, times in timings.items()}
        for name, median in medians.items():
            column = "engine only " if name in engines else "command     "
            print(
                f"  {column}{name:<26} {median:7.3f} s {total / MiB / median:7.0f} MiB/s"
                f"   (best {min(timings[name]):.3f}, max {max(timings[name]):.3f})"
            )
        cli = medians[ours]
        line = (
            f"  ratios (median): verify command vs python hashlib process "
            f"{medians['python hashlib process'] / cli:.2f}x (target >= 1.6); "
            f"vs sha256sum {medians['sha256sum'] / cli:.2f}x (target >= 3); "
            f"engine: hash_files vs hashlib in process "
            f"{medians['hashlib in process'] / medians['hash_files (engine)']:.2f}x"
        )
        if "hf cache verify" in medians:
            line += f"; verify command vs hf cache verify {medians['hf cache verify'] / cli:.2f}x"
        print(line)


def main() -> None:
    args = parse_args()
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="iw-bench-verify-"))
    data_dir = args.data_dir or work / "data"
    notes: list[str] = []
    try:
        paths = generate(data_dir / "model", args.size_mb, args.files)
        total = sum(p.stat().st_size for p in paths)
        expected = hashlib_sequential(paths)  # also warms the cache once
        registry_dir = work / "registry"
        registry_with_model(registry_dir, paths[0].parent, paths, expected)
        env = user_env(registry_dir)
        methods = command_methods(paths, expected, env)
        engines = engine_methods(paths, expected)
        with hub_for_hf(paths, notes) as hub:
            if hub is not None:
                methods["hf cache verify"] = hf_verify_method(work, paths, expected, env, hub)
            methods.update(engines)
            results = time_methods(methods, paths, cache_modes(args.warm_only, notes), args.reps)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        if load_at_start[0] > 0.5:
            notes.append(
                f"the machine was busy (1-min load {load_at_start[0]:.2f} at the start): other processes share "
                "the cores, so parallel hashing cannot show its full gain"
            )
        print(
            f"\nverify benchmark: {len(paths)} files, {total / MiB:.0f} MiB in all, {args.reps} reps, "
            f"{os.cpu_count()} CPUs (hash_files jobs={default_jobs()}); load average at the end {load}"
        )
        report(results, set(engines), total)
        for note in notes:
            print(f"note: {note}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
