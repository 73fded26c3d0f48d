"""scan: realistic model trees built in tmp_path with real GGUF/safetensors files (tests/modelfiles.py),
through the real CLI (a subprocess) and through the library."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imageworks.candidates import placeholder_pattern
from imageworks.registry import FileRecord, RegistryStore, Source
from imageworks.scan import ScanOptions, scan
from imageworks.walk import find_model_folders
from tests.modelfiles import dense_tensors, write_gguf, write_gguf_repo, write_hf_model, write_safetensors


def build_tree(models: Path, lmstudio: Path) -> None:
    """Several owners, GGUF and safetensors, an @branch folder, a multi-quant GGUF folder with a
    projector, a split GGUF, placeholders, a symlink loop, a dangling link, a truncated weight file, and
    an LM Studio tree."""
    write_hf_model(models / "Qwen" / "Qwen2-VL-2B", "plain-bf16")
    write_hf_model(models / "TheBloke" / "Llama-AWQ", "awq")
    write_hf_model(models / "TheBloke" / "Llama-AWQ@gptq-4bit", "gptq")
    write_gguf_repo(models / "bartowski" / "Llama-GGUF", "Llama", quants=("Q4_K_M", "Q8_0"), mmproj=True)
    write_gguf_repo(models / "unsloth" / "Split-GGUF", "Split", quants=("Q4_K_M",), split_parts=2)
    write_gguf(models / "test-models" / "foo" / "foo-Q4_K_M.gguf")
    write_gguf(models / "someone" / "demo-model" / "demo-Q4_K_M.gguf")
    (models / "acme" / "no-weights").mkdir(parents=True)
    (models / "acme" / "no-weights" / "README.md").write_text("coming soon\n")
    (models / "acme" / "empty").mkdir()
    (models / "acme" / "loop").symlink_to("..")  # acme/loop -> acme: a loop
    (models / "acme" / "gone").symlink_to(models / "nowhere")
    truncated = write_gguf(models / "broken" / "Trunc-GGUF" / "Trunc-Q8_0.gguf")
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size // 2)
    write_gguf_repo(lmstudio / "lmstudio-community" / "Qwen-GGUF", "Qwen", quants=("Q4_K_M",))


@pytest.fixture
def tree(isolated_env: dict[str, Path]) -> dict[str, Path]:
    build_tree(isolated_env["models"], isolated_env["lmstudio"])
    return isolated_env


def registry_bytes(folder: Path) -> dict[str, bytes]:
    """Every file in the registry folder (backups included), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def scan_json(run_cli, *args: str) -> dict:
    proc = run_cli("scan", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "imageworks.scan" and doc["version"] == 1
    return doc["data"]


EXPECTED_NAMES = {
    "qwen/qwen2-vl-2b",
    "thebloke/llama-awq",
    "thebloke/llama-awq@gptq-4bit",
    "bartowski/llama-gguf:q4_k_m",
    "bartowski/llama-gguf:q8_0",
    "unsloth/split-gguf:q4_k_m",
}


def test_scan_cli_finds_models_skips_the_rest_and_is_idempotent(tree, run_cli) -> None:
    data = scan_json(run_cli)
    assert {i["name"] for i in data["added"]} == EXPECTED_NAMES
    assert data["summary"] == {"added": 6, "updated": 0, "unchanged": 0, "skipped": len(data["skipped"])}
    reasons = {Path(s["path"]).relative_to(tree["models"]).as_posix(): s["reason"] for s in data["skipped"]}
    assert "placeholder name 'test-models'" in reasons["test-models/foo"]
    assert "placeholder name 'demo-model'" in reasons["someone/demo-model"]
    assert reasons["acme/no-weights"] == "no weight files"
    assert reasons["acme/empty"] == "empty folder"
    assert "symlink loop" in reasons["acme/loop"]
    assert "dangling symlink" in reasons["acme/gone"]
    assert reasons["broken/Trunc-GGUF"].startswith("unusable weight file Trunc-Q8_0.gguf: truncated")

    by_name = {i["name"]: i for i in data["added"]}
    assert by_name["thebloke/llama-awq"]["quantization"] == "awq-4bit-g128"
    assert by_name["thebloke/llama-awq@gptq-4bit"]["format"] == "gptq"
    assert by_name["qwen/qwen2-vl-2b"]["format"] == "safetensors"

    registry = RegistryStore(tree["registry"]).load()
    awq_dev = registry.get("thebloke/llama-awq@gptq-4bit")
    assert awq_dev is not None
    assert awq_dev.source.model_dump(include={"provider", "repo_id", "revision"}) == {
        "provider": "hf",
        "repo_id": "TheBloke/Llama-AWQ",
        "revision": "gptq-4bit",
    }
    assert awq_dev.location == "linux_wsl"
    assert len(RegistryStore(tree["registry"]).history()) == 1

    before = registry_bytes(tree["registry"])
    again = scan_json(run_cli)
    assert again["summary"]["added"] == 0 and again["summary"]["unchanged"] == 6
    assert registry_bytes(tree["registry"]) == before  # not one byte: no rewrite, no backup, no log line
    # Even --update-existing finds nothing to change on an unchanged tree.
    scan_json(run_cli, "--update-existing")
    assert registry_bytes(tree["registry"]) == before


def test_multi_quant_folder_gives_one_entry_per_quant_with_shared_files(tree) -> None:
    scan(RegistryStore(tree["registry"]), tree["models"], ScanOptions(location="linux_wsl"))
    registry = RegistryStore(tree["registry"]).load()
    q4 = registry.get("bartowski/llama-gguf:q4_k_m")
    q8 = registry.get("bartowski/llama-gguf:q8_0")
    assert q4 is not None and q8 is not None
    assert [f.path for f in q4.files] == ["Llama-Q4_K_M.gguf", "mmproj-Llama-F16.gguf"]
    assert [f.path for f in q8.files] == ["Llama-Q8_0.gguf", "mmproj-Llama-F16.gguf"]
    assert q4.path == q8.path == str(tree["models"] / "bartowski" / "Llama-GGUF")
    assert (q4.quantization, q8.quantization) == ("Q4_K_M", "Q8_0")
    assert (
        "FROM" in q4.serve["ollama"]["modelfile"] and "Llama-Q4_K_M.gguf" in q4.serve["ollama"]["modelfile"]
    )
    split = registry.get("unsloth/split-gguf:q4_k_m")
    assert split is not None
    assert [f.path for f in split.files] == [
        "Split-Q4_K_M-00001-of-00002.gguf",
        "Split-Q4_K_M-00002-of-00002.gguf",
    ]


def test_lmstudio_layout_under_its_root(tree, run_cli) -> None:
    data = scan_json(run_cli, "--location", "windows_lmstudio")
    assert [i["name"] for i in data["added"]] == ["lmstudio-community/qwen-gguf:q4_k_m"]
    entry = RegistryStore(tree["registry"]).load().get("lmstudio-community/qwen-gguf:q4_k_m")
    assert entry is not None
    assert entry.location == "windows_lmstudio"
    assert entry.source.repo_id == "lmstudio-community/Qwen-GGUF"
    assert entry.serve["lmstudio"]["visible"] is True


def test_base_inside_a_location_keeps_the_owner_repo_layout(tree, run_cli) -> None:
    data = scan_json(run_cli, "--base", str(tree["models"] / "TheBloke"))
    assert {i["name"] for i in data["added"]} == {"thebloke/llama-awq", "thebloke/llama-awq@gptq-4bit"}
    assert data["location"] == "linux_wsl"
    roots = (tree["models"], tree["lmstudio"])
    one = scan(
        RegistryStore(tree["registry"]),
        tree["models"] / "Qwen" / "Qwen2-VL-2B",
        ScanOptions(layout_roots=roots, dry_run=True),
    )
    assert [i.name for i in one.added] == ["qwen/qwen2-vl-2b"]


def test_include_testing_records_placeholders_marked_testing(tree) -> None:
    store = RegistryStore(tree["registry"])
    result = scan(store, tree["models"], ScanOptions(location="linux_wsl", include_testing=True))
    testing = {i.name for i in result.added if i.testing}
    assert testing == {
        "test-models/foo:q4_k_m",
        "someone/demo-model:q4_k_m",
        "acme/no-weights",
        "acme/empty",
    }
    entry = store.load().get("acme/no-weights")
    assert entry is not None and entry.testing and entry.format is None
    assert {s.reason for s in result.skipped} >= {"dangling symlink (-> %s)" % (tree["models"] / "nowhere")}
    assert all(not i.testing for i in result.added if i.name in EXPECTED_NAMES)


def test_placeholder_patterns() -> None:
    for name in (
        "test",
        "Test-Models",
        "demo-llm",
        "dummy",
        "example_model",
        "tmp123",
        "qwen-placeholder",
        "tiny-random-llama",
        "model-test",
    ):
        assert placeholder_pattern(name), name
    for name in ("Qwen2-VL-2B", "Llama-3-8B", "latest-model", "contest-7b", "attempt"):
        assert placeholder_pattern(name) is None, name


def test_dry_run_writes_nothing(tree, run_cli) -> None:
    text = run_cli("scan", "--dry-run").stdout
    assert "would add" in text and "6 would add, 0 would update, 0 unchanged" in text
    assert not tree["registry"].exists() or registry_bytes(tree["registry"]) == {}


def test_hash_records_sha256_and_backup_and_one_log_line(tree, run_cli) -> None:
    store = RegistryStore(tree["registry"])
    scan_json(run_cli, "--no-backup")
    assert not (tree["registry"] / "backups").exists()
    data = scan_json(run_cli, "--update-existing", "--hash")
    assert data["summary"]["updated"] == 6 and data["hashed_files"] > 0
    entry = store.load().get("thebloke/llama-awq")
    assert entry is not None
    for record in entry.files:
        path = Path(entry.path or "") / record.path
        assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record.mtime_ns == path.stat().st_mtime_ns
    assert entry.aggregate_sha256
    assert len(list((tree["registry"] / "backups").glob("*.model_registry.discovered.json"))) == 1
    assert len(store.history()) == 2
    # Hashing again finds every digest still valid by size+mtime: nothing is read, nothing written.
    before = registry_bytes(tree["registry"])
    again = scan_json(run_cli, "--update-existing", "--hash")
    assert again["hashed_files"] == 0 and again["summary"]["updated"] == 0
    assert registry_bytes(tree["registry"]) == before


def simulate_download(store: RegistryStore, folder: Path, repo_id: str, files: list[str]) -> str:
    """Record an entry as `download` does (the shared entries builder, the canonical repo id, the commit
    and digests), without the network."""
    from imageworks.entries import build_entry, record_entry

    records = []
    for rel in files:
        path = folder / rel
        st = path.stat()
        records.append(
            FileRecord(
                path=rel,
                size=st.st_size,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                mtime_ns=st.st_mtime_ns,
            )
        )
    source = Source(provider="hf", repo_id=repo_id, revision="main", commit="a" * 40)
    entry = build_entry(
        folder, source=source, location="linux_wsl", files=records, downloaded_at="2026-01-01T00:00:00Z"
    )
    with store.transaction("download " + repo_id) as registry:
        return record_entry(registry, entry).name


def test_downloaded_model_then_scanned_is_one_entry(tree) -> None:
    store = RegistryStore(tree["registry"])
    folder = tree["models"] / "bartowski" / "Llama-GGUF"
    name = simulate_download(
        store, folder, "bartowski/Llama-GGUF", ["Llama-Q4_K_M.gguf", "mmproj-Llama-F16.gguf"]
    )
    assert name == "bartowski/llama-gguf:q4_k_m"
    downloaded = store.load().discovered[name]

    result = scan(store, tree["models"], ScanOptions(location="linux_wsl"))
    assert name in {i.name for i in result.unchanged}
    assert name not in {i.name for i in result.added}
    assert "bartowski/llama-gguf:q8_0" in {i.name for i in result.added}  # the other quant: its own entry
    registry = store.load()
    assert registry.discovered[name] == downloaded
    assert sum(1 for e in registry.entries() if e.path == str(folder)) == 2

    # --update-existing refreshes from disk but keeps what only the download knew.
    result = scan(store, tree["models"], ScanOptions(location="linux_wsl", update_existing=True))
    assert name in {i.name for i in result.unchanged}
    entry = store.load().get(name)
    assert entry is not None
    assert entry.source.commit == "a" * 40 and entry.downloaded_at == "2026-01-01T00:00:00Z"
    assert all(f.sha256 for f in entry.files)


def test_update_existing_refreshes_changed_files(tree) -> None:
    store = RegistryStore(tree["registry"])
    options = ScanOptions(location="linux_wsl")
    scan(store, tree["models"], options)
    folder = tree["models"] / "unsloth" / "Split-GGUF"
    # The model was re-quantised in place: the split Q4_K_M is replaced by a single Q5_K_M file... named
    # as the old one, so only the headers can tell.
    for part in folder.glob("*.gguf"):
        part.unlink()
    write_gguf(folder / "Split-Q4_K_M-00001-of-00002.gguf", file_type="Q5_K_M")

    untouched = scan(store, tree["models"], options)
    assert "unsloth/split-gguf:q4_k_m" in {i.name for i in untouched.unchanged}
    assert store.load().get("unsloth/split-gguf:q4_k_m").quantization == "Q4_K_M"  # type: ignore[union-attr]

    result = scan(store, tree["models"], ScanOptions(location="linux_wsl", update_existing=True))
    (item,) = result.updated
    assert item.name == "unsloth/split-gguf:q4_k_m"
    changes = {c.field: (c.old, c.new) for c in item.changes}
    assert changes["quantization"] == ("Q4_K_M", "Q5_K_M")
    assert changes["files"] == ("2 files, 0 hashed", "1 files, 0 hashed")
    entry = store.load().get("unsloth/split-gguf:q4_k_m")
    assert entry is not None and entry.quantization == "Q5_K_M"
    assert [f.path for f in entry.files] == ["Split-Q4_K_M-00001-of-00002.gguf"]


def test_update_diff_names_what_moved_inside_nested_fields(tree) -> None:
    store = RegistryStore(tree["registry"])
    scan(store, tree["models"], ScanOptions(location="linux_wsl"))
    folder = tree["models"] / "Qwen" / "Qwen2-VL-2B"
    # Same layout, weights now F16: only `--dtype` changes, far past where a JSON dump of `serve` is cut.
    shutil.rmtree(folder)
    write_hf_model(folder, "plain-bf16", config_overrides={"torch_dtype": "float16"})
    write_safetensors(folder / "model.safetensors", dense_tensors("F16"))

    result = scan(store, tree["models"], ScanOptions(location="linux_wsl", update_existing=True))
    (item,) = result.updated
    lines = {c.field: c.render() for c in item.changes}
    assert "--dtype float16" in lines["serve.vllm.command"]
    for line in lines.values():
        before, _, after = line.partition(": ")[2].partition(" -> ")
        assert before != after, line


def test_moved_model_is_matched_by_identity(tree) -> None:
    store = RegistryStore(tree["registry"])
    scan(store, tree["models"], ScanOptions(location="linux_wsl"))
    old = tree["models"] / "Qwen" / "Qwen2-VL-2B"
    new_root = tree["models"].parent / "elsewhere"
    (new_root / "Qwen").mkdir(parents=True)
    shutil.move(old, new_root / "Qwen" / "Qwen2-VL-2B")
    result = scan(store, new_root, ScanOptions(location="path"))
    (item,) = result.unchanged
    assert item.name == "qwen/qwen2-vl-2b" and "no longer exists" in item.notes[0]
    scan(store, new_root, ScanOptions(location="path", update_existing=True))
    entry = store.load().get("qwen/qwen2-vl-2b")
    assert (
        entry is not None
        and entry.path == str(new_root / "Qwen" / "Qwen2-VL-2B")
        and entry.location == "path"
    )


def test_a_second_copy_is_reported_not_merged(tree) -> None:
    store = RegistryStore(tree["registry"])
    scan(store, tree["models"], ScanOptions(location="linux_wsl"))
    copy_root = tree["models"].parent / "copy"
    shutil.copytree(tree["models"] / "TheBloke" / "Llama-AWQ", copy_root / "TheBloke" / "Llama-AWQ")
    result = scan(store, copy_root, ScanOptions(location="path", update_existing=True))
    assert not result.items
    (skip,) = result.skipped
    assert "another copy of thebloke/llama-awq" in skip.reason


def test_undecodable_names_are_skipped(tree) -> None:
    bad = Path(os.fsdecode(bytes(tree["models"]) + b"/own\xffer"))
    write_gguf(bad / "repo" / "m-Q4_K_M.gguf")
    result = scan(RegistryStore(tree["registry"]), tree["models"], ScanOptions(location="linux_wsl"))
    assert any(s.reason == "name is not valid UTF-8" and "own\\xffer" in s.path for s in result.skipped)
    assert {i.name for i in result.added} == EXPECTED_NAMES


def test_hidden_partial_download_is_not_a_model(tree) -> None:
    folder = tree["models"] / "acme" / "downloading"
    folder.mkdir()
    (folder / ".model.safetensors.imageworks-partial").write_bytes(b"\0" * 64)
    folders = {f.path.name: f for f in find_model_folders(tree["models"]).folders}
    assert folders["downloading"].files == [] and folders["downloading"].partial_files == 1
    # A download interrupted half-way: one split part done, the other still partial.
    write_gguf(folder / "Part-Q4_K_M-00001-of-00002.gguf", split=(1, 2))
    result = scan(RegistryStore(tree["registry"]), tree["models"], ScanOptions())
    (skip,) = [s for s in result.skipped if s.path == str(folder)]
    assert skip.reason.startswith("a download is in progress or was interrupted (1 partial file(s))")
    assert "acme/downloading" not in {i.name for i in result.items}


def test_missing_base_is_a_usage_error(run_cli, tmp_path) -> None:
    proc = run_cli("scan", "--base", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "cannot scan" in proc.stderr and "Traceback" not in proc.stderr


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True)
    return probe.returncode == 0


def test_unreadable_folder_is_reported_and_the_scan_goes_on(tree, run_cli) -> None:
    """A folder the scanning user cannot read. Tests run as root, which chmod does not stop, so as root
    the folder is owned by an unmapped uid and the CLI runs in a user namespace (unshare
    --map-root-user): there, root's override does not apply to files of uids outside the namespace, and
    opening the folder fails with a real EACCES."""
    locked = tree["models"] / "locked" / "Secret-GGUF"
    write_gguf(locked / "Secret-Q4_K_M.gguf")
    locked_owner = tree["models"] / "private"
    write_gguf(locked_owner / "repo" / "x-Q4_K_M.gguf")
    if os.geteuid() == 0:
        if not _unshare_works():
            pytest.skip(
                "needs unprivileged user namespaces (unshare --user) to make a folder unreadable to root"
            )
        for folder in (locked, locked_owner):
            os.chown(folder, 54321, 54321)
        prefix = ["unshare", "--user", "--map-root-user"]
    else:
        prefix = []
    for folder in (locked, locked_owner):
        folder.chmod(0)
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "imageworks.cli.main", "scan", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for folder in (locked, locked_owner):
            folder.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)["data"]
    reasons = {s["path"]: s["reason"] for s in data["skipped"]}
    assert "Permission denied" in reasons[str(locked)]
    assert "Permission denied" in reasons[str(locked_owner)]
    assert {i["name"] for i in data["added"]} == EXPECTED_NAMES


def test_local_folders_are_told_apart_by_path(tree) -> None:
    """Weights one level down are `local` models: no repo id, so only the folder identifies them."""
    store = RegistryStore(tree["registry"])
    for folder in ("solo-a", "solo-b"):
        write_gguf(tree["models"] / folder / "model-Q4_K_M.gguf")
    other = tree["models"].parent / "disk2" / "models"  # same last two components as ./models/solo-a
    write_gguf(other / "solo-a" / "model-Q4_K_M.gguf")

    first = scan(store, tree["models"], ScanOptions(location="linux_wsl"))
    assert {"local/models/solo-a:q4_k_m", "local/models/solo-b:q4_k_m"} <= {i.name for i in first.added}
    second = scan(store, other, ScanOptions(location="path"))
    (added,) = second.added
    assert added.name.startswith("local/models/solo-a:q4_k_m-") and added.path == str(other / "solo-a")

    before = registry_bytes(tree["registry"])
    assert not scan(store, other, ScanOptions(location="path")).added
    assert not scan(store, tree["models"], ScanOptions(location="linux_wsl")).added
    assert registry_bytes(tree["registry"]) == before


def test_real_downloads_then_scan_and_normalize_agree(isolated_env, sample_hub, run_cli) -> None:
    """Download from the fake Hub (one quant of a GGUF repo, two quants of another, a safetensors repo),
    then scan the same root: one entry per quant downloaded, nothing to add or change, and a rebuild
    finds no drift."""
    from imageworks.config import resolve_config
    from imageworks.downloader import download
    from tests.fakehub.samples import GGUF_REPO, SAFETENSORS_REPO, add_gguf_model

    add_gguf_model(sample_hub[0], "Other/Tiny-GGUF")
    config = resolve_config()
    names = []
    for reference, quant in (
        (GGUF_REPO, "Q4_K_M"),
        ("Other/Tiny-GGUF", "Q4_K_M,Q8_0"),
        (SAFETENSORS_REPO, None),
    ):
        result = download(
            reference, config=config, quant=quant, location="linux_wsl", engine="native", command="test"
        )
        names.append(result.names)
    assert names[1] == ["other/tiny-gguf:q4_k_m", "other/tiny-gguf:q8_0"]
    store = RegistryStore(isolated_env["registry"])
    downloaded = {e.name for e in store.load().entries()}
    assert downloaded == {
        "theowner/tiny-llama-gguf:q4_k_m",
        "other/tiny-gguf:q4_k_m",
        "other/tiny-gguf:q8_0",
        "theowner/tiny-llama",
    }
    assert len(store.history()) == 3  # one change-log line per download
    before = registry_bytes(isolated_env["registry"])

    data = scan_json(run_cli)
    assert data["summary"] == {"added": 0, "updated": 0, "unchanged": 4, "skipped": 0}, data
    assert {i["name"] for i in data["unchanged"]} == downloaded
    scan_json(run_cli, "--update-existing")
    assert registry_bytes(isolated_env["registry"]) == before

    proc = run_cli("normalize-formats", "--rebuild", "--json")
    assert proc.returncode == 0, proc.stderr
    rebuilt = json.loads(proc.stdout)["data"]
    assert rebuilt["summary"]["update"] == 0 and rebuilt["hashed_files"] == 0, rebuilt["entries"]


def test_an_entry_holding_several_quants_keeps_them(tree) -> None:
    """A registry entry that holds two quants of one folder (as `download --quant A,B` recorded them
    before it recorded one entry per quant) is matched as a whole: no entry per quant is added."""
    store = RegistryStore(tree["registry"])
    folder = tree["models"] / "bartowski" / "Llama-GGUF"
    files = ["Llama-Q4_K_M.gguf", "Llama-Q8_0.gguf", "mmproj-Llama-F16.gguf"]
    name = simulate_download(store, folder, "bartowski/Llama-GGUF", files)
    assert name == "bartowski/llama-gguf"
    before = store.load().discovered[name]

    result = scan(store, tree["models"], ScanOptions(location="linux_wsl"))
    assert name in {i.name for i in result.unchanged}
    assert not {i.name for i in result.added} & {"bartowski/llama-gguf:q4_k_m", "bartowski/llama-gguf:q8_0"}
    result = scan(store, tree["models"], ScanOptions(location="linux_wsl", update_existing=True))
    assert name in {i.name for i in result.unchanged}
    registry = store.load()
    assert registry.discovered[name] == before
    assert [e.name for e in registry.entries() if e.path == str(folder)] == [name]


def test_loose_weights_in_a_location_root_versus_a_model_folder_base(tree) -> None:
    store = RegistryStore(tree["registry"])
    roots = (tree["models"], tree["lmstudio"])
    write_gguf(tree["models"] / "stray-Q4_K_M.gguf")
    result = scan(store, tree["models"], ScanOptions(location="linux_wsl", layout_roots=roots, dry_run=True))
    assert any("directly in the location root" in s.reason for s in result.skipped)

    outside = tree["models"].parent / "downloads" / "my-model"
    write_gguf(outside / "my-model-Q8_0.gguf", file_type="Q8_0")
    result = scan(store, outside, ScanOptions(location="path", layout_roots=roots))
    (item,) = result.added
    assert item.name == "local/downloads/my-model:q8_0" and item.path == str(outside)


def _raw_safetensors(path: Path, header: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(header).to_bytes(8, "little") + header)


def test_hostile_files_are_per_folder_skips_and_the_good_models_are_recorded(tree, run_cli) -> None:
    """Deeply nested JSON in a safetensors header or config.json, 5,000-digit integers and an absurd
    header length: each is one clear skip or note, and the scan records every good model."""
    models = tree["models"]
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    _raw_safetensors(models / "evil" / "deep-header" / "model.safetensors", deep)
    digits = b'{"t":{"dtype":"F16","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,2]}}'
    _raw_safetensors(models / "evil" / "huge-int" / "model.safetensors", digits)
    wide = b'{"t":{"dtype":"F16","shape":[' + b"9" * 40 + b'],"data_offsets":[0,' + b"9" * 40 + b"]}}"
    _raw_safetensors(models / "evil" / "wide-int" / "model.safetensors", wide)
    huge = models / "evil" / "huge-header" / "model.safetensors"
    huge.parent.mkdir(parents=True)
    huge.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    # A good model with a hostile config.json: still recorded, the config named in a note.
    write_safetensors(models / "evil" / "bad-config" / "model.safetensors", dense_tensors("F16"))
    (models / "evil" / "bad-config" / "config.json").write_text(
        '{"model_type": "llama", "x": ' + "[" * 50_000 + "]" * 50_000 + ', "n": ' + "7" * 5000 + "}"
    )

    proc = run_cli("scan", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(proc.stdout)["data"]
    added = {i["name"]: i for i in data["added"]}
    assert set(added) >= EXPECTED_NAMES
    reasons = {Path(s["path"]).relative_to(models).as_posix(): s["reason"] for s in data["skipped"]}
    assert "nested deeper than" in reasons["evil/deep-header"]
    assert "integer of 5000 digits" in reasons["evil/huge-int"]
    assert "invalid shape" in reasons["evil/wide-int"]
    assert "absurd header length" in reasons["evil/huge-header"]
    for key in ("evil/deep-header", "evil/huge-int", "evil/wide-int", "evil/huge-header"):
        assert reasons[key].startswith("unusable weight file model.safetensors: "), reasons[key]
    assert "evil/bad-config" in added
    assert any("config.json: nested deeper than" in n for n in added["evil/bad-config"]["notes"])


def test_scan_after_direct_url_downloads_adds_no_duplicates(isolated_env, fake_hub, run_cli) -> None:
    """`download URL` writes <root>/url/<host>/<file stem>/<file>; scanning the root matches those
    entries (no `url/127.0.0.2` repo), and a URL folder the registry lost is added as a url model."""
    from tests.fakehub import samples

    repo = samples.add_gguf_model(fake_hub)
    for file in ("Tiny-Llama-3B-Q8_0.gguf", "Tiny-Llama-3B-Q4_K_M.gguf"):
        proc = run_cli("download", fake_hub.cdn_url_for(repo.repo_id, file), "--engine", "native")
        assert proc.returncode == 0, proc.stderr
    store = RegistryStore(isolated_env["registry"])
    downloaded = {e.name for e in store.load().entries()}
    assert downloaded == {"url/tiny-llama-3b-q8_0:q8_0", "url/tiny-llama-3b-q4_k_m:q4_k_m"}
    before = registry_bytes(isolated_env["registry"])

    data = scan_json(run_cli)
    assert data["summary"] == {"added": 0, "updated": 0, "unchanged": 2, "skipped": 0}, data
    assert {i["name"] for i in data["unchanged"]} == downloaded
    scan_json(run_cli, "--update-existing")
    assert registry_bytes(isolated_env["registry"]) == before

    # The same layout with no entry (a registry restored from an older backup): a url model.
    stray = isolated_env["models"] / "url" / "example.org" / "Stray-Q4_K_M"
    write_gguf(stray / "Stray-Q4_K_M.gguf")
    data = scan_json(run_cli)
    (added,) = data["added"]
    assert (added["name"], added["path"]) == ("url/stray-q4_k_m:q4_k_m", str(stray))
    entry = store.load().get("url/stray-q4_k_m:q4_k_m")
    assert entry is not None and entry.source.provider == "url" and entry.source.repo_id is None


def test_a_model_three_folders_deep_is_named_by_its_folder(tree, run_cli) -> None:
    """README: a folder outside the owner/repo layout is local/<parent>/<folder>, at any depth."""
    deep = tree["models"] / "misc" / "nested" / "deep" / "my-sd-model"
    write_safetensors(deep / "model.safetensors", dense_tensors("F16"))
    diffusers = tree["models"] / "misc" / "nested" / "pipelines" / "my-diffuser"
    (diffusers / "unet").mkdir(parents=True)
    (diffusers / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    write_safetensors(diffusers / "unet" / "diffusion_pytorch_model.safetensors", dense_tensors("F16"))
    data = scan_json(run_cli)
    added = {i["name"]: i for i in data["added"]}
    assert set(added) == EXPECTED_NAMES | {"local/deep/my-sd-model", "local/pipelines/my-diffuser"}
    assert added["local/deep/my-sd-model"]["path"] == str(deep)
    assert added["local/pipelines/my-diffuser"]["path"] == str(diffusers)
    entry = RegistryStore(tree["registry"]).load().get("local/deep/my-sd-model")
    assert entry is not None and entry.source.provider == "local"
    assert [f.path for f in entry.files] == ["model.safetensors"]
    assert not any(name.startswith(("misc/", "local/misc")) for name in added)


def test_symlink_loops_are_reported_as_loops(tree, run_cli) -> None:
    """A loop anywhere is called a loop, never "empty folder"."""
    looped = tree["models"] / "acme" / "looped"
    looped.mkdir()
    (looped / "self").symlink_to(".")  # the only thing in a repo folder: a link to itself
    linked = tree["models"] / "acme" / "linked"
    (linked / "sub").mkdir(parents=True)
    (linked / "sub" / "back").symlink_to("..")  # inside a model folder's listing
    (linked / "README.md").write_text("weights elsewhere\n")
    (linked / "sub" / "x-Q4_K_M.gguf").symlink_to("x-Q4_K_M.gguf")  # ELOOP inside the listing
    inner = tree["models"] / "misc" / "nested" / "deep" / "circle"
    inner.mkdir(parents=True)
    (inner / "up").symlink_to("../..")  # misc/nested/deep/circle/up -> misc/nested
    (tree["models"] / "self-link").symlink_to("self-link")  # ELOOP: a link to itself
    only = tree["models"] / "acme" / "only-loop"
    only.mkdir()
    (only / "m-Q4_K_M.gguf").symlink_to("m-Q4_K_M.gguf")  # a model folder holding only a looping link
    data = scan_json(run_cli)
    reasons = {Path(s["path"]).relative_to(tree["models"]).as_posix(): s["reason"] for s in data["skipped"]}
    assert "symlink loop" in reasons["acme/looped/self"], reasons
    assert "no weight files" in reasons["acme/linked"], reasons
    assert reasons["acme/only-loop"] == "ignored m-Q4_K_M.gguf: symlink loop", reasons
    assert "symlink loop" in reasons["misc/nested/deep/circle/up"], reasons
    assert "symlink loop" in reasons["self-link"], reasons
    assert not any(r == "empty folder" for p, r in reasons.items() if "loop" in p or "circle" in p)
    assert {i["name"] for i in data["added"]} == EXPECTED_NAMES


def test_scan_does_not_bring_back_what_remove_deleted_meanwhile(tree, run_cli) -> None:
    """A scan walks outside the lock; `remove --delete-files` running between its walk and its write
    must not be undone: the folder is checked again under the lock."""
    from imageworks.scan import discover, record_scan

    store = RegistryStore(tree["registry"])
    options = ScanOptions(location="linux_wsl", layout_roots=(tree["models"],))
    assert {i.name for i in scan(store, tree["models"], options).added} == EXPECTED_NAMES
    # A second scan walks (and would re-add a model the registry lacks) ...
    base, candidates, skips = discover(tree["models"], options)
    # ... while another process removes a model and its files.
    folder = tree["models"] / "Qwen" / "Qwen2-VL-2B"
    proc = run_cli("remove", "qwen/qwen2-vl-2b", "--delete-files", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert not (folder / "model.safetensors").exists()
    assert store.load().get("qwen/qwen2-vl-2b") is None

    result = record_scan(store, base, candidates, skips, options)
    assert store.load().get("qwen/qwen2-vl-2b") is None
    assert not result.added
    (skip,) = [s for s in result.skipped if s.path == str(folder)]
    assert "vanished during the scan" in skip.reason


def test_stale_partial_records_beside_complete_files_do_not_block_the_folder(tree, run_cli) -> None:
    """Two downloads of one model at once can leave resume records of files that completed. A record
    without its partial data, beside the complete file, is stale: the folder is scanned (the record is
    a note). A real partial data file still skips the folder, and the reason names it."""
    folder = tree["models"] / "acme" / "Finished-GGUF"
    final = write_gguf(folder / "Finished-Q4_K_M.gguf")
    record = {"format": "imageworks-partial", "version": 1, "size": final.stat().st_size, "done": []}
    (folder / ".Finished-Q4_K_M.gguf.imageworks-partial.json").write_text(json.dumps(record))
    (folder / ".Finished-Q4_K_M.gguf.imageworks-partial.aria2").write_bytes(b"\0" * 16)
    # A record that does not match the file on disk (another size) is not stale: it may be resumed.
    other = tree["models"] / "acme" / "Other-GGUF"
    done = write_gguf(other / "Other-Q4_K_M.gguf")
    wrong = {**record, "size": done.stat().st_size + 1}
    (other / ".Other-Q4_K_M.gguf.imageworks-partial.json").write_text(json.dumps(wrong))
    # A partial data file is a download in progress, whatever else is there.
    busy = tree["models"] / "acme" / "Busy-GGUF"
    write_gguf(busy / "Busy-Q4_K_M-00001-of-00002.gguf", split=(1, 2))
    (busy / ".Busy-Q4_K_M-00002-of-00002.gguf.imageworks-partial").write_bytes(b"\0" * 64)

    data = scan_json(run_cli)
    added = {i["name"]: i for i in data["added"]}
    assert "acme/finished-gguf:q4_k_m" in added
    notes = added["acme/finished-gguf:q4_k_m"]["notes"]
    assert any("stale record of a completed download" in n for n in notes), notes
    reasons = {Path(s["path"]).relative_to(tree["models"]).as_posix(): s["reason"] for s in data["skipped"]}
    assert reasons["acme/Other-GGUF"].startswith("a download is in progress or was interrupted (1 partial")
    assert ".Other-Q4_K_M.gguf.imageworks-partial.json" in reasons["acme/Other-GGUF"]
    assert ".Busy-Q4_K_M-00002-of-00002.gguf.imageworks-partial" in reasons["acme/Busy-GGUF"]
    entry = RegistryStore(tree["registry"]).load().get("acme/finished-gguf:q4_k_m")
    assert entry is not None and [f.path for f in entry.files] == ["Finished-Q4_K_M.gguf"]


def test_one_folder_failing_in_an_unforeseen_way_does_not_cost_the_scan(tree, monkeypatch) -> None:
    """The backstop behind the per-file errors: an exception nobody foresaw while inspecting one folder
    is a skip for that folder; the rest of the tree is recorded."""
    import imageworks.candidates as candidates

    real = candidates.folder_variants

    def failing(folder, files, inspection=None):
        if folder.name == "Llama-AWQ":
            raise RecursionError("maximum recursion depth exceeded")
        return real(folder, files, inspection)

    monkeypatch.setattr(candidates, "folder_variants", failing)
    result = scan(RegistryStore(tree["registry"]), tree["models"], ScanOptions(location="linux_wsl"))
    assert {i.name for i in result.added} == EXPECTED_NAMES - {"thebloke/llama-awq"}
    (skip,) = [s for s in result.skipped if s.path.endswith("TheBloke/Llama-AWQ")]
    assert skip.reason == "cannot inspect: RecursionError: maximum recursion depth exceeded"


def test_scan_accepts_a_real_vocab_only_gguf_from_llama_cpp(isolated_env, run_cli) -> None:
    """llama.cpp's own vocab-only GGUF (no tensors, no padding after the metadata) is a usable file, not
    "truncated" (tests/data/llama.cpp/README.md says where it comes from)."""
    real = Path(__file__).parent / "data" / "llama.cpp" / "ggml-vocab-bert-bge.gguf"
    folder = isolated_env["models"] / "ggml-org" / "vocab-bert-bge"
    folder.mkdir(parents=True)
    shutil.copyfile(real, folder / real.name)
    data = scan_json(run_cli)
    assert not data["skipped"], data["skipped"]
    (added,) = data["added"]
    assert (added["name"], added["format"]) == ("ggml-org/vocab-bert-bge:f16", "gguf")


def test_absurd_numbers_in_a_config_never_reach_the_registry(isolated_env, run_cli) -> None:
    """A config.json claiming a 10**30-token context (a 31-digit number, as tokenizer_config.json's
    "no limit" is) parses, but the registry keeps only numbers that fit in 64 bits."""
    folder = isolated_env["models"] / "odd" / "Huge-Context"
    write_hf_model(folder, "plain-bf16")
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 10**30
    (folder / "config.json").write_text(json.dumps(config))
    scan_json(run_cli)
    ints: list[int] = []
    doc = json.loads((isolated_env["registry"] / "model_registry.discovered.json").read_text())
    stack: list = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            ints.append(value)
    assert ints and all(-(2**63) <= n < 2**63 for n in ints)
    entry = RegistryStore(isolated_env["registry"]).load().get("odd/huge-context")
    assert entry is not None and "context_length" not in entry.metadata
