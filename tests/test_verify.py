"""verify: real files in tmp_path, the real registry store, the CLI as a user runs it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from imageworks.hashing import aggregate_sha256
from imageworks.registry import FileRecord, ModelEntry, RegistryStore, Source
from imageworks.registry.store import CURATED, DISCOVERED, HISTORY
from imageworks.verify import verify_models

WEIGHTS = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(40_000))  # 1.28 MB
FILES = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"]}\n',
    "model-00001-of-00002.safetensors": WEIGHTS[:700_000],
    "model-00002-of-00002.safetensors": WEIGHTS[700_000:],
    "tokenizer/tokenizer.json": b'{"version": "1.0"}\n',
}
NAME = "theowner/tiny-llama"


def write_model(root: Path, files: dict[str, bytes] = FILES) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def make_entry(
    name: str,
    folder: Path,
    *,
    files: dict[str, bytes] = FILES,
    digests: bool = True,
    repo_id: str | None = None,
    commit: str | None = None,
    aliases: list[str] | None = None,
) -> ModelEntry:
    records = []
    for rel, data in sorted(files.items()):
        st = (folder / rel).stat()
        records.append(
            FileRecord(
                path=rel,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest() if digests else None,
                mtime_ns=st.st_mtime_ns if digests else None,
            )
        )
    return ModelEntry(
        name=name,
        path=str(folder),
        files=records,
        format="safetensors",
        location="linux_wsl",
        source=Source(provider="hf", repo_id=repo_id, commit=commit) if repo_id else Source(provider="local"),
        size_bytes=sum(len(d) for d in files.values()),
        aggregate_sha256=aggregate_sha256((r.path, r.sha256) for r in records) if digests else None,
        aliases=aliases or [],
    )


def put(store: RegistryStore, *entries: ModelEntry) -> None:
    with store.transaction(["test-setup"], backup=False) as registry:
        for entry in entries:
            registry.put(entry)


@pytest.fixture
def store(isolated_env: dict[str, Path]) -> RegistryStore:
    return RegistryStore(isolated_env["registry"])


@pytest.fixture
def model(isolated_env: dict[str, Path], store: RegistryStore) -> Path:
    """A model as the downloader leaves it: files under the models root, digests and mtimes recorded."""
    folder = write_model(isolated_env["models"] / "TheOwner" / "Tiny-Llama")
    put(store, make_entry(NAME, folder, repo_id="TheOwner/Tiny-Llama"))
    return folder


def flip_byte_keep_mtime(path: Path, offset: int) -> None:
    st = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def discovered(store: RegistryStore, name: str = NAME) -> dict:
    return json.loads(store.path(DISCOVERED).read_text())["models"][name]


def verify_json(run_cli, *args: str):
    result = run_cli("verify", "--json", *args)
    return result, json.loads(result.stdout) if result.stdout.strip() else None


# ------------------------------------------------------------------------------------------ CLI
def test_untouched_model_verifies_and_records_verified_at(run_cli, model: Path, store: RegistryStore) -> None:
    assert discovered(store).get("verified_at") is None
    history_before = store.path(HISTORY).read_text().count("\n")

    result = run_cli("verify", "tiny-llama", script="imageworks-loader")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok") and NAME in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    verified_at = discovered(store)["verified_at"]
    assert verified_at.endswith("Z") and verified_at[:2] == "20"
    assert f"verified_at {verified_at}" in result.stdout
    # verified_at is bookkeeping: no change-log line, no backup (issue 9.6)
    assert store.path(HISTORY).read_text().count("\n") == history_before
    backups = sorted((store.folder / "backups").iterdir()) if (store.folder / "backups").exists() else []
    for _ in range(3):
        assert run_cli("verify", "tiny-llama", script="imageworks-loader").returncode == 0
    assert store.path(HISTORY).read_text().count("\n") == history_before
    after = sorted((store.folder / "backups").iterdir()) if (store.folder / "backups").exists() else []
    assert after == backups
    # The same command under imageworks-download, by HF id in another case.
    again = run_cli("verify", "TheOwner/TINY-LLAMA")
    assert again.returncode == 0, again.stderr


def test_progress_bar_in_bytes_on_a_terminal(model: Path) -> None:
    import pty
    import subprocess
    import sys
    import threading

    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # read while the child runs: a full pty buffer would block it
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child side is closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "imageworks.cli.loader", "verify", NAME],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    shown = b"".join(chunks).decode(errors="replace")
    assert result.returncode == 0
    assert "hashing" in shown and "1.3 MB" in shown  # total bytes of the model, not a file count
    assert result.stdout.startswith("ok")


def test_flipped_byte_with_same_size_and_mtime_is_caught(run_cli, model: Path, store: RegistryStore) -> None:
    target = model / "model-00002-of-00002.safetensors"
    expected = hashlib.sha256(target.read_bytes()).hexdigest()
    flip_byte_keep_mtime(target, 123_456)
    actual = hashlib.sha256(target.read_bytes()).hexdigest()

    result = run_cli("verify", NAME)

    assert result.returncode == 1
    assert result.stdout.startswith("CHANGED")
    assert "model-00002-of-00002.safetensors" in result.stdout
    assert f"recorded sha256 {expected}" in result.stdout
    assert f"on disk  sha256 {actual}" in result.stdout
    assert "model-00001" not in result.stdout  # only the offending file is listed
    assert discovered(store).get("verified_at") is None

    # --quick compares size and mtime only: by design it cannot see this change.
    quick = run_cli("verify", "--quick", NAME)
    assert quick.returncode == 0, quick.stdout
    assert "quick" in quick.stdout


def test_deleted_file_is_missing(run_cli, model: Path) -> None:
    (model / "tokenizer" / "tokenizer.json").unlink()
    result = run_cli("verify", NAME)
    assert result.returncode == 1
    assert result.stdout.startswith("MISSING")
    assert "missing       tokenizer/tokenizer.json" in result.stdout


def test_truncated_file_is_caught_by_full_and_quick(run_cli, model: Path, store: RegistryStore) -> None:
    target = model / "model-00001-of-00002.safetensors"
    with open(target, "r+b") as handle:
        handle.truncate(500_000)
    result = run_cli("verify", NAME)
    assert result.returncode == 1
    assert "model-00001-of-00002.safetensors  recorded 700000 bytes, on disk 500000 bytes" in result.stdout
    [report] = verify_models(store, [NAME], quick=True)
    assert report.status == "changed"
    assert [(f.path, f.status) for f in report.problem_files] == [
        ("model-00001-of-00002.safetensors", "size differs")
    ]


def test_extra_file_is_reported_but_our_partials_and_hf_metadata_are_not(run_cli, model: Path) -> None:
    (model / ".model-00003.safetensors.imageworks-partial").write_bytes(b"half")
    (model / ".model-00003.safetensors.imageworks-partial.aria2").write_bytes(b"ctl")
    (model / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (model / ".cache" / "huggingface" / "download" / "config.json.metadata").write_text("x")
    clean = run_cli("verify", NAME)
    assert clean.returncode == 0, clean.stdout
    assert "1 partial download file(s)" in clean.stdout

    (model / "model-00003-of-00002.safetensors").write_bytes(b"stray weights")
    result = run_cli("verify", NAME)
    assert result.returncode == 1
    assert result.stdout.startswith("EXTRA")
    assert "extra         model-00003-of-00002.safetensors" in result.stdout
    assert "imageworks-partial" not in result.stdout.replace("partial download", "")


def test_hidden_files_of_a_git_clone_are_not_extra(run_cli, model: Path) -> None:
    # scan and download never list hidden files, so a cloned repo's .gitattributes must not fail verify
    (model / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (model / "sub").mkdir()
    (model / "sub" / ".DS_Store").write_bytes(b"\0")
    result = run_cli("verify", NAME)
    assert result.returncode == 0, result.stdout
    assert "extra" not in result.stdout


def test_entry_without_digests_says_so_and_record_stores_them(
    run_cli, isolated_env: dict[str, Path], store: RegistryStore
) -> None:
    folder = write_model(isolated_env["models"] / "scanned")
    put(store, make_entry("local/scanned", folder, digests=False))

    result = run_cli("verify", "local/scanned")
    assert result.returncode == 1
    assert result.stdout.startswith("NO DIGESTS")
    assert "verify --record" in result.stdout
    assert all(f["sha256"] is None for f in discovered(store, "local/scanned")["files"])

    recorded = run_cli("verify", "--record", "local/scanned")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert recorded.stdout.startswith("recorded")
    entry = discovered(store, "local/scanned")
    by_path = {f["path"]: f for f in entry["files"]}
    for rel, data in FILES.items():
        assert by_path[rel]["sha256"] == hashlib.sha256(data).hexdigest()
        assert by_path[rel]["mtime_ns"] == (folder / rel).stat().st_mtime_ns
    assert entry["aggregate_sha256"] == aggregate_sha256((p, f["sha256"]) for p, f in by_path.items())
    assert entry.get("verified_at") is None  # recording is not verifying: nothing was compared

    [final] = verify_models(store, ["local/scanned"])
    assert final.status == "ok"
    assert discovered(store, "local/scanned")["verified_at"] == final.verified_at


def test_record_on_an_entry_without_a_file_list_lists_the_folder(
    isolated_env: dict[str, Path], store: RegistryStore
) -> None:
    folder = write_model(isolated_env["models"] / "bare")
    (folder / ".x.imageworks-partial").write_bytes(b"ours")
    put(store, ModelEntry(name="local/bare", path=str(folder)))

    [report] = verify_models(store, ["local/bare"])
    assert report.status == "no digests" and not report.ok

    [report] = verify_models(store, ["local/bare"], record=True)
    assert report.status == "recorded", report
    files = discovered(store, "local/bare")["files"]
    assert sorted(f["path"] for f in files) == sorted(FILES)
    assert discovered(store, "local/bare")["size_bytes"] == sum(len(d) for d in FILES.values())
    [report] = verify_models(store, ["local/bare"])
    assert report.status == "ok"


def test_record_on_a_single_file_entry(isolated_env: dict[str, Path], store: RegistryStore) -> None:
    folder = isolated_env["lmstudio"] / "url"
    folder.mkdir(parents=True)
    gguf = folder / "tiny.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF" + WEIGHTS[:5000])
    (folder / "someone-elses.gguf").write_bytes(b"GGUF")  # a sibling is not this entry's business
    put(store, ModelEntry(name="url/tiny:q4_k_m", path=str(gguf)))

    [report] = verify_models(store, ["url/tiny"], record=True)
    assert report.status == "recorded"
    [record] = discovered(store, "url/tiny:q4_k_m")["files"]
    assert record["path"] == "tiny.Q4_K_M.gguf"
    assert record["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    [report] = verify_models(store, ["url/tiny"])
    assert report.status == "ok" and report.verified_at


def test_ambiguous_and_unknown_names_exit_2_before_hashing(
    run_cli, isolated_env: dict[str, Path], store: RegistryStore
) -> None:
    for name in ("acme/llama-7b", "acme/llama-13b"):
        folder = write_model(isolated_env["models"] / name)
        put(store, make_entry(name, folder))

    ambiguous = run_cli("verify", "llama")
    assert ambiguous.returncode == 2
    assert "acme/llama-13b" in ambiguous.stderr and "acme/llama-7b" in ambiguous.stderr
    assert ambiguous.stdout == ""

    unknown = run_cli("verify", "acme/llama-7b", "no-such-model")
    assert unknown.returncode == 2
    assert "no model matches 'no-such-model'" in unknown.stderr
    assert unknown.stdout == ""
    assert all(
        e["verified_at"] is None for e in json.loads(store.path(DISCOVERED).read_text())["models"].values()
    )


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give one or more model names, or --all"),
        (["--all", "x"], "not both"),
        (["--quick", "--record", "x"], "--record"),
        (["--jobs", "0", "x"], "--jobs"),
    ],
)
def test_bad_usage_exits_2(run_cli, args: list[str], message: str) -> None:
    result = run_cli("verify", *args)
    assert result.returncode == 2
    assert message in result.stderr
    if "--jobs" not in args:  # click's own range check prints its usage text instead
        assert "\nhint: " in result.stderr


def test_quick_catches_size_and_mtime_but_records_nothing(run_cli, model: Path, store: RegistryStore) -> None:
    quick = run_cli("verify", "--quick", NAME)
    assert quick.returncode == 0
    assert discovered(store).get("verified_at") is None  # no hashing, so no proof to record

    config = model / "config.json"
    st = config.stat()
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched, content unchanged
    touched = run_cli("verify", "--quick", NAME)
    assert touched.returncode == 1
    assert "mtime differs" in touched.stdout and "run a full verify" in touched.stdout

    # A full verify proves the content and refreshes the recorded mtime, so --quick passes again.
    assert verify_models(store, [NAME])[0].status == "ok"
    assert discovered(store)["files"][0]["mtime_ns"] == config.stat().st_mtime_ns
    assert verify_models(store, [NAME], quick=True)[0].status == "ok"


def test_json_contract(run_cli, model: Path) -> None:
    (model / "config.json").write_bytes(b'{"architectures": ["Changed!!!!!!!!!!!!!!"]}')
    (model / "notes.txt").write_text("mine")
    result, doc = verify_json(run_cli, NAME)
    assert result.returncode == 1
    assert doc["schema"] == "imageworks.verify" and doc["version"] == 1 and doc["ok"] is False
    [report] = doc["data"]["models"]
    keys = {"name", "path", "mode", "status", "ok", "problems", "files", "notes", "verified_at", "remote"}
    assert keys <= set(report)
    assert report["name"] == NAME and report["mode"] == "full" and report["ok"] is False
    assert report["problems"] == ["changed", "extra"]
    by_path = {f["path"]: f for f in report["files"]}
    assert by_path["notes.txt"]["status"] == "extra"
    changed = by_path["config.json"]
    assert changed["status"] == "size differs"
    assert changed["expected_size"] == len(FILES["config.json"])
    assert by_path["model-00001-of-00002.safetensors"]["status"] == "ok"
    assert (
        by_path["model-00001-of-00002.safetensors"]["actual_sha256"]
        == hashlib.sha256(WEIGHTS[:700_000]).hexdigest()
    )
    assert doc["data"]["hashed_bytes"] == len(WEIGHTS) + len(FILES["tokenizer/tokenizer.json"])
    # the envelope's error object, as for every failure (issue 9.14)
    assert doc["error"]["exit_code"] == 1 and NAME in doc["error"]["message"]
    assert set(doc["error"]) == {"type", "message", "hint", "exit_code"}

    (model / "notes.txt").unlink()
    write_model(model)
    result, doc = verify_json(run_cli, NAME)
    assert result.returncode == 0 and doc["ok"] is True and "error" not in doc
    assert doc["data"]["models"][0]["verified_at"].endswith("Z")


def test_all_reports_every_model(run_cli, isolated_env: dict[str, Path], store: RegistryStore) -> None:
    good = write_model(isolated_env["models"] / "a" / "good")
    bad = write_model(isolated_env["models"] / "a" / "bad")
    put(
        store,
        make_entry("a/good", good),
        make_entry("a/bad", bad),
        ModelEntry(name="ollama/llama3", source=Source(provider="ollama")),  # nothing on disk of ours
    )
    shutil.rmtree(bad / "tokenizer")

    result, doc = verify_json(run_cli, "--all", "--jobs", "3")
    assert result.returncode == 1
    statuses = {m["name"]: m["status"] for m in doc["data"]["models"]}
    assert statuses == {"a/bad": "missing", "a/good": "ok", "ollama/llama3": "skipped"}

    text = run_cli("verify", "--all")
    lines = [line for line in text.stdout.splitlines() if not line.startswith(" ")]
    assert lines[0].startswith("MISSING") and "a/bad" in lines[0]
    assert lines[1].startswith("ok") and "a/good" in lines[1]
    assert "3 model(s)" in lines[-1]

    assert verify_models(store, ["ollama/llama3"])[0].status == "not installed"


def test_curated_only_entry_is_verified_but_not_recorded(
    run_cli, isolated_env: dict[str, Path], store: RegistryStore
) -> None:
    folder = write_model(isolated_env["models"] / "hand" / "made")
    entry = make_entry("hand/made", folder).to_layer_dict()
    store.folder.mkdir(parents=True, exist_ok=True)
    curated_text = json.dumps({"schema_version": 1, "models": {"hand/made": entry}}, indent=2)
    store.path(CURATED).write_text(curated_text)

    result = run_cli("verify", "hand/made")
    assert result.returncode == 0
    assert "curated layer" in result.stdout and "not recorded" in result.stdout
    assert store.path(CURATED).read_text() == curated_text


def test_gguf_quants_sharing_a_folder_are_not_extra_for_each_other(
    isolated_env: dict[str, Path], store: RegistryStore
) -> None:
    folder = isolated_env["lmstudio"] / "TheOwner" / "Tiny-GGUF"
    quants = {"tiny.Q4_K_M.gguf": b"GGUF" + b"4" * 1000, "tiny.Q8_0.gguf": b"GGUF" + b"8" * 2000}
    write_model(folder, quants)
    put(
        store,
        *(
            make_entry(f"theowner/tiny-gguf:{q}", folder, files={f: quants[f]})
            for q, f in (("q4_k_m", "tiny.Q4_K_M.gguf"), ("q8_0", "tiny.Q8_0.gguf"))
        ),
    )
    reports = verify_models(store, None)
    assert [r.status for r in reports] == ["ok", "ok"]
    (folder / "tiny.Q2_K.gguf").write_bytes(b"GGUF")
    reports = verify_models(store, None)
    assert [r.status for r in reports] == ["extra", "extra"]


def test_hand_edited_aggregate_is_reported(
    isolated_env: dict[str, Path], store: RegistryStore, model: Path
) -> None:
    entry = store.load().get(NAME)
    assert entry is not None
    put(store, entry.model_copy(update={"aggregate_sha256": "0" * 64}))
    [report] = verify_models(store, [NAME])
    assert report.status == "registry inconsistent" and not report.ok


def test_unsafe_recorded_path_is_not_read(isolated_env: dict[str, Path], store: RegistryStore) -> None:
    folder = write_model(isolated_env["models"] / "evil")
    (isolated_env["models"] / "secret.txt").write_text("outside")
    entry = make_entry("local/evil", folder)
    entry.files.append(FileRecord(path="../secret.txt", size=7, sha256="0" * 64))
    put(store, entry)
    [report] = verify_models(store, ["local/evil"])
    [unsafe] = [f for f in report.files if f.path == "../secret.txt"]
    assert unsafe.status == "unsafe path" and unsafe.actual_sha256 is None
    assert not report.ok


# --------------------------------------------------------------------------------------- remote
def test_remote_compares_recorded_digests_with_the_hubs(
    run_cli, fake_hub, isolated_env: dict[str, Path], store: RegistryStore
) -> None:
    commit = fake_hub.add_repo("TheOwner/Tiny-Llama", FILES)
    folder = write_model(isolated_env["models"] / "TheOwner" / "Tiny-Llama")
    put(store, make_entry(NAME, folder, repo_id="TheOwner/Tiny-Llama", commit=commit))

    result = run_cli("verify", "--remote", NAME)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "remote: ok" in result.stdout

    # Someone replaced a shard and re-recorded its digest by hand: the disk matches the registry, the
    # Hub does not. Small files are compared by git blob id, so change one of those too.
    local = {**FILES, "model-00002-of-00002.safetensors": WEIGHTS[700_000:][::-1], "config.json": b"{}\n"}
    write_model(folder, local)
    put(store, make_entry(NAME, folder, files=local, repo_id="TheOwner/Tiny-Llama", commit=commit))
    assert verify_models(store, [NAME])[0].status == "ok"  # locally consistent

    result, doc = verify_json(run_cli, "--remote", NAME)
    assert result.returncode == 1
    [report] = doc["data"]["models"]
    assert report["remote"] == "mismatch"
    by_path = {f["path"]: f for f in report["files"]}
    shard = by_path["model-00002-of-00002.safetensors"]
    assert shard["status"] == "remote mismatch"
    assert shard["remote_sha256"] == hashlib.sha256(WEIGHTS[700_000:]).hexdigest()
    assert by_path["config.json"]["status"] == "remote mismatch"  # its size differs from the Hub's
    assert by_path["tokenizer/tokenizer.json"]["status"] == "ok"


def test_remote_failure_is_reported_per_model(
    run_cli, fake_hub, isolated_env: dict[str, Path], store: RegistryStore, model: Path
) -> None:
    entry = store.load().get(NAME)
    assert entry is not None
    put(
        store,
        entry.model_copy(update={"source": Source(provider="hf", repo_id="Nobody/Nothing", commit="a" * 40)}),
    )
    result = run_cli("verify", "--remote", NAME)
    assert result.returncode == 1
    assert "remote unavailable" in result.stdout.lower()
    assert "remote: error" in result.stdout


# ------------------------------------------------------------------------------------- download
def test_model_downloaded_from_the_fake_hub_then_tampered(
    run_cli, fake_hub, isolated_env: dict[str, Path], store: RegistryStore
) -> None:
    """The runbook end to end: `imageworks-download download`, verify (also --remote), flip a byte."""
    import importlib.util

    if importlib.util.find_spec("imageworks.cli.download_cmd") is None:
        pytest.skip("imageworks.cli.download_cmd (the download helper's command) does not exist yet")
    from tests.fakehub import samples

    repo = samples.add_sharded_model(fake_hub)
    result = run_cli("download", repo.repo_id, "--location", "linux_wsl", "--quiet", "--no-backup")
    if result.returncode != 0:
        pytest.skip(f"`imageworks-download download` does not work yet: {result.stderr.strip()[-300:]}")
    [name] = [e.name for e in store.load().entries()]

    first = run_cli("verify", "--remote", name)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "remote: ok" in first.stdout
    assert discovered(store, name)["verified_at"]

    entry = store.load().get(name)
    assert entry is not None and entry.path
    biggest = max(entry.files, key=lambda f: f.size)
    assert biggest.sha256 and biggest.mtime_ns
    flip_byte_keep_mtime(Path(entry.path) / biggest.path, biggest.size // 2)
    second = run_cli("verify", name)
    assert second.returncode == 1
    assert biggest.path in second.stdout and biggest.sha256 in second.stdout


def test_one_hash_file_gives_both_digests_and_raises_on_demand(tmp_path: Path) -> None:
    """`hashing.hash_file` is the one function that hashes a file on disk (issue 10.8): verify, the
    engines' final check and the plan all use it."""
    import errno
    import hashlib

    from imageworks.hashing import git_blob_sha1_file, hash_file

    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    digest = hash_file(path, git_blob=True)
    assert digest.sha256 == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert digest.git_sha1 == git_blob_sha1_file(path) and hash_file(path).git_sha1 is None
    missing = hash_file(tmp_path / "nope")
    assert missing.sha256 is None and missing.error
    with pytest.raises(FileNotFoundError) as info:
        missing.checked()
    assert info.value.errno == errno.ENOENT
    import imageworks.transfer.base as base

    assert not hasattr(base, "hash_file") or base.hash_file is hash_file


def test_hash_ahead_guess_is_the_exact_names_recorded_files_on_disk(
    isolated_env: dict[str, Path], store: RegistryStore, model: Path
) -> None:
    """The CLI's head start (verify_ahead) guesses from the merged file as plain JSON: the recorded files
    with a digest, on disk at their recorded size, inside the folder; nothing for an inexact name."""
    from imageworks import verify_ahead

    guessed = dict(verify_ahead.guess(store.folder, [NAME]))
    assert guessed == {model / name: len(data) for name, data in FILES.items()}
    assert verify_ahead.guess(store.folder, [NAME.upper()]) == []  # lookup rules are the real plan's
    assert dict(verify_ahead.guess(store.folder, None)) == guessed  # --all
    first = next(iter(FILES))
    (model / first).write_bytes(b"short")
    assert model / first not in dict(verify_ahead.guess(store.folder, [NAME]))


def test_hash_ahead_guess_skips_unsafe_paths_and_bad_files(isolated_env: dict[str, Path]) -> None:
    from imageworks import verify_ahead

    folder = isolated_env["registry"]
    folder.mkdir(parents=True, exist_ok=True)
    outside = folder.parent / "secret.bin"
    outside.write_bytes(b"x" * 10)
    (folder / "model").mkdir()
    entry = {
        "path": str(folder / "model"),
        "files": [{"path": "../secret.bin", "size": 10, "sha256": "0" * 64}],
    }
    (folder / "model_registry.json").write_text(json.dumps({"models": {"m": entry}}))
    assert verify_ahead.guess(folder, ["m"]) == []
    (folder / "model_registry.json").write_text("[" * 100_000)
    assert verify_ahead.guess(folder, ["m"]) == []
    (folder / "model_registry.json").write_text(" " * (verify_ahead.MAX_GUESS_BYTES + 1))
    assert verify_ahead.guess(folder, ["m"]) == []


def test_a_stale_merged_file_cannot_mislead_verify(run_cli, model: Path, store: RegistryStore) -> None:
    """The head start reads model_registry.json, the real plan the layers: a merged file that lists other
    sizes only wastes the guess, and a tampered file is still caught."""
    merged = store.folder / "model_registry.json"
    doc = json.loads(merged.read_text())
    for record in doc["models"][NAME]["files"]:
        record["size"] += 1
    merged.write_text(json.dumps(doc))
    assert verify_json(run_cli, NAME)[0].returncode == 0
    flip_byte_keep_mtime(model / "model-00001-of-00002.safetensors", 3)
    result, data = verify_json(run_cli, NAME)
    assert result.returncode == 1 and data["data"]["models"][0]["status"] != "ok"


@pytest.mark.parametrize("names", [["big/sparse"], ["--all"]])
def test_ctrl_c_stops_verify_at_once(
    interrupt_cli, isolated_env: dict[str, Path], store: RegistryStore, names: list[str]
) -> None:
    """Hashing starts before the registry is loaded (exact names, --all): Ctrl-C must still stop it at
    the next chunk, not once the files are hashed (two sparse files of 3 GiB: ~2 s each, in parallel)."""
    folder = isolated_env["models"] / "big"
    folder.mkdir(parents=True)
    size = 3 * 1024**3
    records = []
    for name in ("a.bin", "b.bin"):
        with open(folder / name, "wb") as handle:
            handle.truncate(size)
        records.append(FileRecord(path=name, size=size, sha256="0" * 64))
    put(
        store, ModelEntry(name="big/sparse", path=str(folder), files=records, source=Source(provider="local"))
    )
    code, err, seconds = interrupt_cli("verify", *names, script="imageworks-loader", after=1.0)
    assert code == 130, err
    assert seconds < 1.0, "Ctrl-C should stop the hashing at once"
