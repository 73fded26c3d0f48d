"""A download of a model this machine already holds takes the bytes from the local copy (issue 9.4, 11)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.fakehub import samples
from tests.fakehub.server import FakeHub


def _entries(isolated_env: dict[str, Path]) -> dict:
    return json.loads((isolated_env["registry"] / "model_registry.discovered.json").read_text())["models"]


def _cdn_gets(hub: FakeHub) -> list[str]:
    return [r.path for r in hub.requests if r.server == "cdn" and r.method == "GET"]


def test_second_location_hardlinks_and_the_entry_gains_a_copy(
    fake_hub: FakeHub, run_cli, isolated_env
) -> None:
    repo = samples.add_gguf_model(fake_hub)
    first = run_cli("download", repo.repo_id, "--engine", "native", "--location", "linux_wsl")
    assert first.returncode == 0, first.stderr
    fake_hub.clear_requests()
    isolated_env["lmstudio"].mkdir()
    again = run_cli("download", repo.repo_id, "--engine", "native", "--location", "windows_lmstudio")
    assert again.returncode == 0, again.stderr
    assert "3 hardlinked (same filesystem)" in again.stderr and "nothing fetched" in again.stderr
    assert _cdn_gets(fake_hub) == []  # never the network for the bytes
    src = isolated_env["models"] / "TheOwner" / "Tiny-Llama-GGUF" / "Tiny-Llama-3B-Q4_K_M.gguf"
    dst = isolated_env["lmstudio"] / "TheOwner" / "Tiny-Llama-GGUF" / "Tiny-Llama-3B-Q4_K_M.gguf"
    assert os.stat(src).st_ino == os.stat(dst).st_ino  # inodes compared, not just bytes
    entries = _entries(isolated_env)
    assert list(entries) == ["theowner/tiny-llama-gguf:q4_k_m"]
    entry = entries["theowner/tiny-llama-gguf:q4_k_m"]
    assert entry["location"] == "linux_wsl" and entry["path"] == str(src.parent)  # the primary stays
    (copy,) = entry["copies"]
    assert (
        copy["path"] == str(dst.parent)
        and copy["method"] == "hardlink"
        and copy["location"] == "windows_lmstudio"
    )
    assert {f["inode"] for f in copy["files"]} == {f["inode"] for f in entry["files"]}
    listed = json.loads(run_cli("list", "--json").stdout)["data"]
    assert listed[0]["copies"] == ["linux_wsl", "windows_lmstudio"]
    shown = run_cli("show", "tiny-llama-gguf")
    assert "copy 1" in shown.stdout and str(dst.parent) in shown.stdout and "hardlink" in shown.stdout
    # Both copies verify; removing the copy frees nothing (the other names stay) and keeps the primary.
    assert run_cli("verify", "tiny-llama-gguf", script="imageworks-loader").returncode == 0
    gone = run_cli(
        "remove", "tiny-llama-gguf", "--copy", "windows_lmstudio", "--delete-files", "--yes", "--json"
    )
    assert gone.returncode == 0, gone.stderr
    data = json.loads(gone.stdout)["data"]
    assert data["copy_removed"] and data["bytes_freed"] == 0 and not dst.exists() and src.exists()
    assert "copies" not in _entries(isolated_env)["theowner/tiny-llama-gguf:q4_k_m"]


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a second filesystem")
def test_other_filesystem_copies_and_verifies(fake_hub: FakeHub, run_cli, isolated_env, tmp_path) -> None:
    other = Path("/dev/shm") / f"imageworks-test-{os.getpid()}-{tmp_path.name}"
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same filesystem here")
    try:
        repo = samples.add_gguf_model(fake_hub)
        assert (
            run_cli("download", repo.repo_id, "--engine", "native", "--location", "linux_wsl").returncode == 0
        )
        fake_hub.clear_requests()
        got = run_cli("download", repo.repo_id, "--engine", "native", "--location", str(other))
        assert got.returncode == 0, got.stderr
        assert "3 copied and verified (another filesystem" in got.stderr and _cdn_gets(fake_hub) == []
        (copy,) = _entries(isolated_env)["theowner/tiny-llama-gguf:q4_k_m"]["copies"]
        assert copy["method"] == "copy" and Path(copy["path"]).is_relative_to(other)
        assert not any(p.is_symlink() for p in other.rglob("*"))
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_dry_run_says_what_it_would_take_and_changes_nothing(
    fake_hub: FakeHub, run_cli, isolated_env
) -> None:
    repo = samples.add_gguf_model(fake_hub)
    assert run_cli("download", repo.repo_id, "--engine", "native", "--location", "linux_wsl").returncode == 0
    before = (isolated_env["registry"] / "model_registry.discovered.json").read_bytes()
    dry = run_cli("download", repo.repo_id, "--location", str(isolated_env["home"] / "x"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would take 3 files from the copy in" in dry.stdout + dry.stderr
    assert not (isolated_env["home"] / "x").exists()
    assert (isolated_env["registry"] / "model_registry.discovered.json").read_bytes() == before


def test_the_note_names_each_copy_the_files_came_from(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_gguf_model(fake_hub)
    home = isolated_env["home"]
    got = run_cli(
        "download", repo.repo_id, "--quant", "Q4_K_M", "--engine", "native", "--location", str(home / "a")
    )
    assert got.returncode == 0, got.stderr
    # --force fetches anew, so the Q8_0 file is in this copy only.
    got = run_cli(
        "download",
        repo.repo_id,
        "--quant",
        "Q8_0",
        "--force",
        "--engine",
        "native",
        "--location",
        str(home / "b"),
    )
    assert got.returncode == 0, got.stderr
    both = run_cli("download", repo.repo_id, "--quant", "Q4_K_M,Q8_0", "--location", str(home / "c"))
    assert both.returncode == 0, both.stderr
    note = next(line for line in both.stderr.splitlines() if "from the copies in" in line)
    assert "4 files from the copies in" in note, note
    assert "are in place" in both.stdout and "up to date" not in both.stdout  # a new copy, just recorded
    assert str(home / "a" / "TheOwner" / "Tiny-Llama-GGUF") in note
    assert str(home / "b" / "TheOwner" / "Tiny-Llama-GGUF") in note


def test_download_after_importing_the_hf_cache_links_from_the_cache(
    fake_hub: FakeHub, run_cli, isolated_env
) -> None:
    from huggingface_hub import snapshot_download

    dense = samples.add_safetensors_model(fake_hub)
    cache = isolated_env["hf_home"] / "hub"
    snapshot_download(dense.repo_id, endpoint=fake_hub.endpoint, cache_dir=cache)
    assert run_cli("import", "hf-cache").returncode == 0
    fake_hub.clear_requests()
    got = run_cli("download", dense.repo_id, "--engine", "native", "--location", "linux_wsl")
    assert got.returncode == 0, got.stderr
    assert "hardlinked" in got.stderr and _cdn_gets(fake_hub) == []
    entries = _entries(isolated_env)
    assert list(entries) == ["theowner/tiny-llama"]  # one entry, two copies
    entry = entries["theowner/tiny-llama"]
    assert entry["tool"] == "hf-cache" and entry["copies"][0]["method"] == "hardlink"
    ours = isolated_env["models"] / "TheOwner" / "Tiny-Llama" / "model.safetensors"
    snap = Path(entry["path"]) / "model.safetensors"
    assert os.stat(ours).st_ino == os.stat(snap).st_ino and not ours.is_symlink()


def test_registries_without_copies_keep_their_bytes(isolated_env) -> None:
    from imageworks.registry import FileRecord, ModelEntry, RegistryStore

    store = RegistryStore(isolated_env["registry"])
    with store.transaction(["seed"]) as reg:
        reg.put(ModelEntry(name="a/b", path="/x", files=[FileRecord(path="f", size=1, sha256="0" * 64)]))
    raw = json.loads((isolated_env["registry"] / "model_registry.discovered.json").read_text())
    entry = raw["models"]["a/b"]
    assert (
        "copies" not in entry
        and "tool" not in entry
        and set(entry["files"][0]) == {"path", "size", "sha256", "mtime_ns"}
    )
    loaded = store.load().get("a/b")
    assert loaded is not None and loaded.copies == []
