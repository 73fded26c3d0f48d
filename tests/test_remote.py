"""The team store against a real S3 server (`rclone serve s3` on 127.0.0.1, see tests/s3server.py):
push, pull on a second machine, dedup, corruption, kill -9 and resume, credential and bucket errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from imageworks.config import resolve_config
from imageworks.registry import FileRecord, ModelEntry, RegistryStore, Source
from imageworks.remote.client import make_client
from imageworks.remote.config import Remote, add_remote, get_remote
from imageworks.remote.push import push_models
from tests.modelfiles import write_hf_model
from tests.s3server import ACCESS_KEY, AWS_CLEARED, SECRET_KEY, S3Server, aws_env, start_server

REPO = "Acme/Tiny-Chat"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
NAME = "acme/tiny-chat"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_server(tmp_path_factory.mktemp("s3") / "data")
    yield server
    server.stop()


class Team:
    """One test's bucket on the shared server, the AWS chain pointed at it, and a remote `team`."""

    def __init__(self, server: S3Server, dirs: dict[str, Path]) -> None:
        self.server = server
        self.dirs = dirs
        self.bucket = f"team-{uuid.uuid4().hex[:12]}"
        self.prefix = "models-store"
        self.remote = Remote(
            "team", self.bucket, self.prefix, endpoint_url=server.endpoint, chunk_size=64 * 1024
        )

    def client(self) -> Any:
        return make_client(self.remote)

    def add_remote(self, registry: Path, **changes: Any) -> Remote:
        remote = Remote(**{**self.remote.__dict__, **changes})
        add_remote(resolve_config(registry_dir=registry), remote, replace=True)
        return remote

    def key(self, *parts: str) -> str:
        return self.remote.key(*parts)


@pytest.fixture
def team(s3_server: S3Server, isolated_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Team:
    for var in AWS_CLEARED:
        monkeypatch.delenv(var, raising=False)
    for var, value in aws_env().items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(isolated_env["home"] / ".aws" / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(isolated_env["home"] / ".aws" / "credentials"))
    t = Team(s3_server, isolated_env)
    t.client().create_bucket(Bucket=t.bucket)
    t.add_remote(isolated_env["registry"])
    return t


def seed_model(registry: Path, root: Path, repo: str = REPO, *, extra: bytes | None = None) -> ModelEntry:
    """A verified model: a real tiny HF folder, every file hashed and recorded."""
    folder = root / repo
    write_hf_model(folder, "plain-bf16")
    if extra is not None:
        (folder / "extra.bin").write_bytes(extra)
    records = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        records.append(
            FileRecord(
                path=path.relative_to(folder).as_posix(),
                size=st.st_size,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                mtime_ns=st.st_mtime_ns,
            )
        )
    entry = ModelEntry(
        name=repo.lower(),
        source=Source(provider="hf", repo_id=repo, revision="main", commit=COMMIT),
        format="safetensors",
        quantization="bf16",
        location="linux_wsl",
        path=str(folder),
        files=records,
        size_bytes=sum(r.size for r in records),
        verified_at="2026-12-01T00:00:00Z",
    )
    with RegistryStore(registry).transaction(["seed"]) as reg:
        reg.put(entry)
    return entry


def second_machine(tmp_path: Path) -> dict[str, str]:
    return {
        "IMAGEWORKS_REGISTRY_DIR": str(tmp_path / "machine2" / "registry"),
        "IMAGEWORKS_MODEL_ROOT": str(tmp_path / "machine2" / "models"),
    }


def count_writes(client: Any) -> dict[str, int]:
    """PUT-type requests the client sends, counted by botocore's own event hooks."""
    counts = {"PutObject": 0, "CreateMultipartUpload": 0, "UploadPart": 0, "CopyObject": 0}

    def bump(model: Any, **kwargs: Any) -> None:
        counts[model.name] += 1

    for op in counts:
        client.meta.events.register(f"before-call.s3.{op}", bump)
    return counts


def assert_no_secret_in(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET_KEY.encode() not in data, path
            assert ACCESS_KEY.encode() not in data, path


# -- remote add / list / remove -------------------------------------------------------------------


def test_remote_add_list_remove_keeps_the_rest_of_the_toml(run_cli, isolated_env) -> None:
    toml = isolated_env["registry"] / "imageworks.toml"
    toml.parent.mkdir(parents=True)
    original = '# our settings\nhub_timeout = 12  # seconds\n\n[locations]\nnas = "/mnt/nas/models"\n'
    toml.write_text(original)
    out = run_cli(
        "remote",
        "add",
        "team",
        "s3://bucket-a/models",
        "--endpoint-url",
        "http://127.0.0.1:9",
        "--region",
        "eu-1",
    )
    assert out.returncode == 0, out.stderr
    text = toml.read_text()
    assert text.startswith(original) and '[remotes.team]\nurl = "s3://bucket-a/models"' in text
    assert "unknown key" not in run_cli("config").stderr  # [remotes] is a known table of imageworks.toml
    listed = json.loads(run_cli("remote", "list", "--json").stdout)["data"]
    assert listed[0]["name"] == "team" and listed[0]["endpoint_url"] == "http://127.0.0.1:9"
    assert listed[0]["region"] == "eu-1"
    again = run_cli("remote", "add", "team", "s3://bucket-a/models")
    assert again.returncode == 2 and "already exists" in again.stderr
    creds = run_cli("remote", "add", "other", "s3://bucket-a/m", "--endpoint-url", "http://ak:sk@127.0.0.1:9")
    assert (
        creds.returncode == 2
        and "no credentials in the URL" in creds.stderr
        and "ak:sk" not in toml.read_text()
    )
    bad = run_cli("remote", "add", "other", "https://bucket/models")
    assert bad.returncode == 2 and bad.stderr.startswith("error: not an s3:// URL")
    assert "Traceback" not in bad.stderr
    assert run_cli("remote", "remove", "team").returncode == 0
    assert toml.read_text() == original
    gone = run_cli("remote", "remove", "team")
    assert gone.returncode == 2 and "no remote named 'team'" in gone.stderr


# -- push and pull ----------------------------------------------------------------------------------


def test_push_then_pull_on_a_second_machine(run_cli, team: Team, tmp_path: Path) -> None:
    entry = seed_model(team.dirs["registry"], team.dirs["models"])
    pushed = run_cli("push", NAME, "--to", "team", "--json")
    assert pushed.returncode == 0, pushed.stderr
    data = json.loads(pushed.stdout)["data"]
    assert data["objects_uploaded"] == len(entry.files) and data["bytes_uploaded"] == entry.size_bytes

    client = team.client()
    for record in entry.files:
        assert record.sha256
        head = client.head_object(
            Bucket=team.bucket, Key=team.key("blobs/sha256", record.sha256[:2], record.sha256)
        )
        assert head["ContentLength"] == record.size
        assert {k.lower(): v for k, v in head["Metadata"].items()}["sha256"] == record.sha256
    manifest = json.loads(
        client.get_object(Bucket=team.bucket, Key=team.key(f"models/{NAME}.json"))["Body"].read()
    )
    assert manifest["source"]["repo_id"] == REPO and manifest["source"]["commit"] == COMMIT
    assert manifest["format"] == "safetensors" and manifest["quantization"] == "bf16"
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {f.path: f.sha256 for f in entry.files}

    shown = json.loads(run_cli("show", NAME, "--json").stdout)["data"]["entry"]
    assert shown["remotes"]["team"]["url"] == f"s3://{team.bucket}/{team.prefix}"

    # The second machine: its own registry and model root, the same store.
    env = second_machine(tmp_path)
    team.add_remote(Path(env["IMAGEWORKS_REGISTRY_DIR"]))
    listing = json.loads(run_cli("remote", "ls", "team", "--json", env=env).stdout)["data"]["models"]
    assert [(m["name"], m["local"], m["size_bytes"]) for m in listing] == [(NAME, False, entry.size_bytes)]
    pulled = run_cli("pull", REPO, "--from", "team", "--json", env=env)  # the Hub id as typed works too
    assert pulled.returncode == 0, pulled.stderr
    folder = Path(env["IMAGEWORKS_MODEL_ROOT"]) / REPO
    for record in entry.files:
        assert hashlib.sha256((folder / record.path).read_bytes()).hexdigest() == record.sha256
    got = RegistryStore(Path(env["IMAGEWORKS_REGISTRY_DIR"])).load().get(NAME)
    assert got is not None and got.path == str(folder)
    assert got.source.repo_id == REPO and got.source.commit == COMMIT
    assert got.model_dump()["pulled_from"]["remote"] == "team"
    assert got.aggregate_sha256 == entry.aggregate_sha256 or entry.aggregate_sha256 is None
    listing = json.loads(run_cli("remote", "ls", "team", "--json", env=env).stdout)["data"]["models"]
    assert listing[0]["local"] is True
    again = json.loads(run_cli("pull", NAME, "--from", "team", "--json", env=env).stdout)["data"]
    assert again["bytes_fetched"] == 0

    absent = run_cli("verify", "--remote-store", "team", "acme/never-pushed")
    assert absent.returncode == 1 and "not in store" in absent.stdout.lower()
    checked = run_cli("verify", "--remote-store", "team", "--deep", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["data"]["models"][0]["status"] == "ok"

    for folder_written in (team.dirs["registry"], Path(env["IMAGEWORKS_REGISTRY_DIR"]), folder):
        assert_no_secret_in(folder_written)
    for out in (pushed, pulled, checked):
        assert SECRET_KEY not in out.stdout + out.stderr


def test_dedup_counts_puts_and_a_second_push_uploads_nothing(team: Team) -> None:
    registry = team.dirs["registry"]
    first = seed_model(registry, team.dirs["models"])
    second = seed_model(registry, team.dirs["models"], "Acme/Tiny-Chat-Extra", extra=b"only here" * 100)
    store = RegistryStore(registry)
    client = team.client()
    counts = count_writes(client)

    result = push_models(store, team.remote, [first.name], client=client)
    objects = counts["PutObject"] + counts["CreateMultipartUpload"]
    assert objects == len(first.files) + 1  # every blob once, then the manifest
    # The weights are above the remote's 64 KiB threshold: a multipart upload (s3transfer's parts are
    # at least 5 MiB, so one part here; the benchmark's 1 GiB goes in parallel parts).
    assert counts["CreateMultipartUpload"] == 1 and counts["UploadPart"] >= 1
    assert result.bytes_uploaded == first.size_bytes

    for key in counts:
        counts[key] = 0
    started = time.monotonic()
    again = push_models(store, team.remote, [first.name], client=client)
    assert again.bytes_uploaded == 0 and sum(counts.values()) == 0
    assert time.monotonic() - started < 5  # generous under load; the benchmark reports the real figure

    shared = push_models(store, team.remote, [second.name], client=client)
    assert shared.objects_uploaded == 1 and counts["PutObject"] == 2  # extra.bin + the manifest
    assert shared.models[0].blobs_present == len(first.files)

    # An object whose metadata names another digest is damaged: the next push uploads it again.
    config = next(f for f in first.files if f.path == "config.json")
    assert config.sha256
    key = team.key("blobs/sha256", config.sha256[:2], config.sha256)
    client.put_object(Bucket=team.bucket, Key=key, Body=b"x" * config.size, Metadata={"sha256": "0" * 64})
    repaired = push_models(store, team.remote, [first.name], client=client)
    assert repaired.objects_uploaded == 1 and repaired.bytes_uploaded == config.size
    body = client.get_object(Bucket=team.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == config.sha256


def test_push_refuses_unverified_or_changed_files(run_cli, team: Team) -> None:
    entry = seed_model(team.dirs["registry"], team.dirs["models"])
    weights = Path(entry.path or "") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = run_cli("push", NAME, "--to", "team")
    assert out.returncode == 1 and "differs from the recorded sha256" in out.stderr
    with RegistryStore(team.dirs["registry"]).transaction(["strip"]) as reg:
        stripped = entry.model_copy(
            update={"files": [f.model_copy(update={"sha256": None}) for f in entry.files]}
        )
        reg.put(stripped)
    out = run_cli("push", NAME, "--to", "team")
    assert out.returncode == 2 and "not verified" in out.stderr and "verify --record" in out.stderr
    every = run_cli("push", "--all", "--to", "team", "--json")
    assert every.returncode == 0, every.stderr
    assert json.loads(every.stdout)["data"]["skipped"] == [NAME]  # --all skips what is not verified
    assert not team.client().list_objects_v2(Bucket=team.bucket).get("Contents")


def test_dry_run_and_files_layout(run_cli, team: Team) -> None:
    entry = seed_model(team.dirs["registry"], team.dirs["models"])
    dry = json.loads(run_cli("push", NAME, "--to", "team", "--dry-run", "--json").stdout)["data"]
    assert dry["dry_run"] and dry["objects_uploaded"] == len(entry.files)
    assert not team.client().list_objects_v2(Bucket=team.bucket).get("Contents")
    out = run_cli("push", NAME, "--to", "team", "--layout", "files")
    assert out.returncode == 0, out.stderr
    key = team.key("files", REPO, COMMIT, "config.json")
    body = team.client().get_object(Bucket=team.bucket, Key=key)["Body"].read()
    assert body == (Path(entry.path or "") / "config.json").read_bytes()


def test_push_a_model_imported_from_the_hf_cache(run_cli, team: Team, fake_hub) -> None:
    """Its snapshot files are symlinks into the cache's blobs/: read through them, not refused."""
    from huggingface_hub import snapshot_download

    from tests.fakehub import samples

    repo = samples.add_safetensors_model(fake_hub)
    snapshot_download(repo.repo_id, endpoint=fake_hub.endpoint, cache_dir=team.dirs["hf_home"] / "hub")
    assert run_cli("import", "hf-cache").returncode == 0
    out = run_cli("push", "theowner/tiny-llama", "--to", "team", "--json")
    assert out.returncode == 0, out.stderr
    manifest = team.key("models", "theowner/tiny-llama.json")
    assert team.client().head_object(Bucket=team.bucket, Key=manifest)["ContentLength"] > 0


def test_corrupted_object_is_detected_and_never_registered(run_cli, team: Team, tmp_path: Path) -> None:
    entry = seed_model(team.dirs["registry"], team.dirs["models"])
    assert run_cli("push", NAME, "--to", "team").returncode == 0
    weights = next(f for f in entry.files if f.path == "model.safetensors")
    assert weights.sha256
    on_disk = team.server.object_path(
        team.bucket, team.key("blobs/sha256", weights.sha256[:2], weights.sha256)
    )
    data = bytearray(on_disk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    on_disk.write_bytes(bytes(data))

    deep = run_cli("verify", "--remote-store", "team", "--deep")
    assert deep.returncode == 1 and "model.safetensors" in deep.stdout
    assert "content differs" in deep.stdout or "no digest metadata" in deep.stdout

    env = second_machine(tmp_path)
    team.add_remote(Path(env["IMAGEWORKS_REGISTRY_DIR"]))
    pulled = run_cli("pull", NAME, "--from", "team", env=env)
    assert pulled.returncode == 1 and "sha256 mismatch" in pulled.stderr, pulled.stderr
    assert RegistryStore(Path(env["IMAGEWORKS_REGISTRY_DIR"])).load().get(NAME) is None
    folder = Path(env["IMAGEWORKS_MODEL_ROOT"]) / REPO
    assert not (folder / "model.safetensors").exists()
    assert not list(folder.glob(".model.safetensors*"))  # the bad bytes were discarded

    config = next(f for f in entry.files if f.path == "config.json")
    assert config.sha256
    team.client().delete_object(
        Bucket=team.bucket, Key=team.key("blobs/sha256", config.sha256[:2], config.sha256)
    )
    head = run_cli("verify", "--remote-store", "team", "--json")
    assert head.returncode == 1
    files = {f["path"]: f["status"] for f in json.loads(head.stdout)["data"]["models"][0]["files"]}
    assert files["config.json"] == "missing" and files["tokenizer.json"] == "ok"


def _pull_until(env: dict[str, str], state: Path, at_least: int, sig: int) -> subprocess.Popen[bytes]:
    """Start a pull, wait until its record vouches for `at_least` bytes, then send `sig`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "imageworks.cli.main", "pull", NAME, "--from", "team"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = json.loads(state.read_text())["done"]
        except (OSError, ValueError, KeyError):
            done = []
        if sum(end - start for start, end in done) >= at_least:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    return proc


def test_ctrl_c_and_kill9_mid_pull_then_resume(team: Team, tmp_path: Path) -> None:
    registry = team.dirs["registry"]
    big = os.urandom(3 * 1024 * 1024)
    entry = seed_model(registry, team.dirs["models"], extra=big)
    push_models(RegistryStore(registry), team.remote, [entry.name], client=team.client())

    env = {**os.environ, **second_machine(tmp_path)}
    registry2 = Path(env["IMAGEWORKS_REGISTRY_DIR"])
    folder = Path(env["IMAGEWORKS_MODEL_ROOT"]) / REPO
    state = folder / ".extra.bin.imageworks-partial.s3.json"
    slow = start_server(team.server.data, bwlimit="600K")
    try:
        team.add_remote(registry2, endpoint_url=slow.endpoint, concurrency=2)
        interrupted = _pull_until(env, state, 128 * 1024, signal.SIGINT)
        assert interrupted.returncode == 130  # Ctrl-C: workers stop, the partial file stays
        assert state.exists() and not (folder / "extra.bin").exists()
        killed = _pull_until(env, state, 512 * 1024, signal.SIGKILL)
        assert killed.returncode == -signal.SIGKILL
    finally:
        slow.stop()
    assert (folder / ".extra.bin.imageworks-partial").exists() and state.exists()
    assert not (folder / "extra.bin").exists()
    assert RegistryStore(registry2).load().get(NAME) is None

    team.add_remote(registry2)  # the fast server again, same store
    done = subprocess.run(
        [sys.executable, "-m", "imageworks.cli.main", "pull", NAME, "--from", "team", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)["data"]["models"][0]
    assert model["bytes_resumed"] >= 512 * 1024 and model["recorded"]
    assert model["bytes_fetched"] <= model["size_bytes"] - model["bytes_resumed"]
    assert (folder / "extra.bin").read_bytes() == big
    assert not state.exists()
    assert RegistryStore(registry2).load().get(NAME) is not None


def test_pull_all_takes_the_curated_models_the_store_holds(run_cli, team: Team, tmp_path: Path) -> None:
    seed_model(team.dirs["registry"], team.dirs["models"])
    assert run_cli("push", NAME, "--to", "team").returncode == 0
    env = second_machine(tmp_path)
    registry2 = Path(env["IMAGEWORKS_REGISTRY_DIR"])
    team.add_remote(registry2)
    (registry2 / "model_registry.curated.json").write_text(
        json.dumps({"schema_version": 1, "models": {NAME: {"tags": ["team"]}, "acme/not-pushed": {}}})
    )
    out = run_cli("pull", "--all", "--from", "team", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert [m["name"] for m in json.loads(out.stdout)["data"]["models"]] == [NAME]


def test_hostile_manifest_paths_are_refused(run_cli, team: Team, tmp_path: Path) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    client = team.client()
    client.put_object(Bucket=team.bucket, Key=team.key("blobs/sha256", digest[:2], digest), Body=b"x")
    manifest = {
        "schema": "imageworks.model-manifest",
        "version": 1,
        "name": "acme/evil",
        "source": {"provider": "hf", "repo_id": "acme/evil"},
        "files": [{"path": "../../escape.txt", "size": 1, "sha256": digest}],
    }
    client.put_object(
        Bucket=team.bucket, Key=team.key("models/acme/evil.json"), Body=json.dumps(manifest).encode()
    )
    out = run_cli("pull", "acme/evil", "--from", "team")
    assert out.returncode != 0 and "unsafe path" in out.stderr and "Traceback" not in out.stderr
    assert not list(tmp_path.rglob("escape.txt"))


# -- errors: one clear line each -------------------------------------------------------------------


def test_wrong_credentials_missing_bucket_unreachable(run_cli, team: Team) -> None:
    seed_model(team.dirs["registry"], team.dirs["models"])
    wrong = run_cli("push", NAME, "--to", "team", env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    assert wrong.returncode == 2
    lines = wrong.stderr.strip().splitlines()
    assert lines[0].startswith("error: remote 'team':") and "rejected the credentials" in lines[0]
    assert lines[1].startswith("hint: ") and len(lines) == 2
    assert "not-the-secret" not in wrong.stderr

    none = run_cli("remote", "ls", "team", env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert none.returncode == 2 and "no AWS credentials found" in none.stderr

    config = resolve_config(registry_dir=team.dirs["registry"])
    add_remote(config, Remote("nope", team.bucket, "p", endpoint_url=team.server.endpoint, profile="nope"))
    unknown = run_cli("remote", "ls", "nope")
    assert unknown.returncode == 2 and "AWS profile 'nope' not found" in unknown.stderr

    # A profile in ~/.aws/credentials is the whole chain when the environment has no keys.
    aws = team.dirs["home"] / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        f"[teamprof]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    add_remote(
        config, Remote("viaprofile", team.bucket, "p", endpoint_url=team.server.endpoint, profile="teamprof")
    )
    profiled = run_cli(
        "remote", "ls", "viaprofile", env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    )
    assert profiled.returncode == 0 and "holds no models" in profiled.stdout, profiled.stderr
    assert SECRET_KEY not in (team.dirs["registry"] / "imageworks.toml").read_text()

    add_remote(config, Remote("gone", "no-such-bucket-here", "p", endpoint_url=team.server.endpoint))
    missing = run_cli("remote", "ls", "gone")
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[0] == (
        f"error: remote 'gone': bucket 'no-such-bucket-here' does not exist at {team.server.endpoint}"
    )

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    add_remote(config, Remote("down", "bucket", "p", endpoint_url=f"http://127.0.0.1:{port}"))
    down = run_cli("pull", NAME, "--from", "down")
    assert down.returncode == 1 and "cannot reach http://127.0.0.1" in down.stderr
    assert "Traceback" not in down.stderr + missing.stderr + none.stderr
    assert get_remote(config, "team").endpoint_url == team.server.endpoint


# -- manifests and config, no server -----------------------------------------------------------------

_GOOD = "a" * 64


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ([{"path": "/etc/passwd", "size": 1, "sha256": _GOOD}], "unsafe path"),
        ([{"path": "a/../../x", "size": 1, "sha256": _GOOD}], "unsafe path"),
        ([{"path": "C:/Windows/x", "size": 1, "sha256": _GOOD}], "unsafe path"),
        ([{"path": "dir\\x", "size": 1, "sha256": _GOOD}], "unsafe path"),
        ([{"path": "x", "size": -1, "sha256": _GOOD}], "bad file record"),
        ([{"path": "x", "size": 1, "sha256": "../../etc"}], "no valid sha256"),
        ([{"path": "x", "size": 1, "sha256": _GOOD}, {"path": "x", "size": 1, "sha256": _GOOD}], "twice"),
        ([], "lists no files"),
    ],
)
def test_hostile_manifests_are_refused(files: list[dict[str, Any]], problem: str) -> None:
    from imageworks.errors import ImageworksError
    from imageworks.remote.manifest import Manifest

    doc = {"schema": "imageworks.model-manifest", "version": 1, "name": "acme/x", "files": files}
    with pytest.raises(ImageworksError, match=problem):
        Manifest.parse(json.dumps(doc).encode(), "test")


def test_manifest_names_and_versions() -> None:
    from imageworks.errors import ImageworksError
    from imageworks.remote.manifest import Manifest, files_key, manifest_key

    doc = {"schema": "imageworks.model-manifest", "version": 99, "name": "acme/x", "files": []}
    with pytest.raises(ImageworksError, match="newer"):
        Manifest.parse(json.dumps(doc).encode(), "test")
    for name in ("../x", "/x", "a//b", "a\\b"):
        with pytest.raises(ImageworksError):
            manifest_key(name)
    assert manifest_key("owner/model:q4_k_m") == "models/owner/model:q4_k_m.json"
    assert files_key({"repo_id": "o/r", "commit": "c" * 40}, "sub/w.bin") == f"files/o/r/{'c' * 40}/sub/w.bin"
    with pytest.raises(ImageworksError):
        files_key({"repo_id": "o/..", "commit": "c"}, "w.bin")


def test_remote_config_validation(isolated_env: dict[str, Path]) -> None:
    from imageworks.errors import ImageworksError
    from imageworks.remote.config import load_remotes, parse_s3_url, parse_size

    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    for bad in ("s3://", "s3://b/../x", "gs://bucket/x", "s3://bu cket/x"):
        with pytest.raises(ImageworksError):
            parse_s3_url(bad)
    assert parse_size("8MiB", "x") == 8 << 20 and parse_size(65536, "x") == 65536
    with pytest.raises(ImageworksError):
        parse_size("1KB", "x")
    toml = isolated_env["registry"] / "imageworks.toml"
    toml.parent.mkdir(parents=True)
    toml.write_text('[remotes.team]\nurl = "s3://bucket/p"\naws_secret_access_key = "x"\n')
    with pytest.raises(ImageworksError, match="unknown key"):
        load_remotes(resolve_config(registry_dir=isolated_env["registry"]))


def test_pull_checks_free_space_first(tmp_path: Path) -> None:
    from imageworks.errors import InsufficientSpace
    from imageworks.remote.fetch import BlobJob
    from imageworks.remote.pull import _check_space

    job = BlobJob("k", 10**18, _GOOD, tmp_path / "new" / "folder" / "w.bin", "w.bin")
    with pytest.raises(InsufficientSpace, match="not enough free space"):
        _check_space([job])
    _check_space([BlobJob("k", 1024, _GOOD, tmp_path / "w.bin", "w.bin")])
    assert not (tmp_path / "new").exists()
