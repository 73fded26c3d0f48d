"""du and dedupe (issue 11): inodes compared, each candidate hashed once, nothing unsafe linked."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.fakehub import samples
from tests.fakehub.server import FakeHub


def _two_copies(fake_hub: FakeHub, run_cli, isolated_env) -> tuple[Path, Path]:
    repo = samples.add_gguf_model(fake_hub)
    assert run_cli("download", repo.repo_id, "--engine", "native", "--location", "linux_wsl").returncode == 0
    other = isolated_env["home"] / "second"
    # --force fetches anew: a second copy with its own inodes (what dedupe is for).
    got = run_cli("download", repo.repo_id, "--engine", "native", "--location", str(other), "--force")
    assert got.returncode == 0, got.stderr
    return isolated_env["models"] / "TheOwner" / "Tiny-Llama-GGUF", other / "TheOwner" / "Tiny-Llama-GGUF"


def test_du_counts_by_inode_and_dedupe_links_duplicates(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    first, second = _two_copies(fake_hub, run_cli, isolated_env)
    entry = json.loads((isolated_env["registry"] / "model_registry.discovered.json").read_text())["models"][
        "theowner/tiny-llama-gguf:q4_k_m"
    ]
    assert len(entry["copies"]) == 1 and entry["copies"][0]["path"] == str(second)
    size = entry["size_bytes"]
    du = json.loads(run_cli("du", "--json").stdout)["data"]
    assert du["total"]["logical"] == 2 * size and du["total"]["physical"] == 2 * size
    assert du["total"]["duplicated"] == size and du["total"]["reclaimable"] == size
    by_location = json.loads(run_cli("du", "--by", "location", "--json").stdout)["data"]
    assert {r["key"] for r in by_location["rows"]} == {"linux_wsl", "path"} or len(by_location["rows"]) == 2
    by_tool = json.loads(run_cli("du", "--by", "tool", "--json").stdout)["data"]
    assert [(r["key"], r["copies"], r["physical"]) for r in by_tool["rows"]] == [("imageworks", 2, 2 * size)]
    human = run_cli("du")
    assert human.returncode == 0 and "█" in human.stdout and "reclaimable" in human.stdout
    (second / "README.md").rename(second / "README.aside")  # a missing file, not a missing copy
    assert "2 (1 file missing)" in run_cli("du", "--by", "tool").stdout
    (second / "README.aside").rename(second / "README.md")

    dry = run_cli("dedupe", "--dry-run", "--json")
    plan = json.loads(dry.stdout)["data"]
    assert len(plan["pairs"]) == 3 and plan["bytes_planned"] == size and plan["bytes_hashed"] == 0
    gguf = "Tiny-Llama-3B-Q4_K_M.gguf"
    assert os.stat(first / gguf).st_ino != os.stat(second / gguf).st_ino  # dry run changed nothing
    mode = os.stat(second / gguf).st_mode

    done = run_cli("dedupe", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["data"]
    assert result["bytes_freed"] == size
    assert result["files_hashed"] == 6 and result["bytes_hashed"] == 2 * size  # each candidate once
    for name in ("README.md", gguf, "mmproj-Tiny-Llama-3B-F16.gguf"):
        assert os.stat(first / name).st_ino == os.stat(second / name).st_ino
    assert os.stat(second / gguf).st_mode == mode
    after = json.loads(run_cli("du", "--json").stdout)["data"]["total"]
    assert after["physical"] == size and after["shared"] == size and after["duplicated"] == 0
    recorded = json.loads((isolated_env["registry"] / "model_registry.discovered.json").read_text())["models"]
    copy_inodes = {f["inode"] for f in recorded["theowner/tiny-llama-gguf:q4_k_m"]["copies"][0]["files"]}
    assert copy_inodes == {os.stat(first / f["path"]).st_ino for f in entry["files"]}
    assert run_cli("verify", "tiny-llama-gguf", script="imageworks-loader").returncode == 0
    assert json.loads(run_cli("dedupe", "--dry-run", "--json").stdout)["data"]["pairs"] == []


def test_dedupe_skips_a_file_changed_since_it_was_hashed(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    first, second = _two_copies(fake_hub, run_cli, isolated_env)
    gguf = second / "Tiny-Llama-3B-Q4_K_M.gguf"
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 1  # same size and (after the write) a new mtime: other bytes than were recorded
    gguf.write_bytes(bytes(data))
    out = run_cli("dedupe", "--yes", "--json")
    assert out.returncode == 0, out.stderr
    pairs = {Path(p["replace"]).name: p for p in json.loads(out.stdout)["data"]["pairs"]}
    assert pairs[gguf.name]["status"] == "skipped" and "differ" in pairs[gguf.name]["reason"]
    assert pairs["README.md"]["status"] == "linked"
    assert os.stat(gguf).st_ino != os.stat(first / gguf.name).st_ino and gguf.read_bytes() == bytes(data)


def test_dedupe_never_touches_a_download_in_progress(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    from filelock import FileLock

    from imageworks.model_lock import lock_path

    first, second = _two_copies(fake_hub, run_cli, isolated_env)
    (second / ".Tiny-Llama-3B-Q8_0.gguf.imageworks-partial").write_bytes(b"")  # another quant downloading
    out = json.loads(run_cli("dedupe", "--yes", "--json").stdout)["data"]
    assert {p["status"] for p in out["pairs"]} == {"skipped"} and "partial" in out["pairs"][0]["reason"]
    (second / ".Tiny-Llama-3B-Q8_0.gguf.imageworks-partial").unlink()
    lock_path(first).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path(first))):  # the lock a download of this model holds
        out = json.loads(run_cli("dedupe", "--yes", "--json").stdout)["data"]
    assert {p["status"] for p in out["pairs"]} == {"skipped"} and "lock" in out["pairs"][0]["reason"]
    assert os.stat(first / "README.md").st_ino != os.stat(second / "README.md").st_ino


def test_dedupe_pairs_a_file_without_a_digest_with_the_files_it_really_equals(run_cli, isolated_env) -> None:
    """Files of one size, two contents: `aaa` and `bbb` recorded with digests (scan --hash), `ccc` (a copy of
    `bbb`) scanned without. One dedupe run links `ccc` to `bbb`, never tries it against `aaa` only."""
    import shutil

    from tests.modelfiles import write_hf_model

    hashed, plain = isolated_env["home"] / "hashed", isolated_env["home"] / "plain"
    write_hf_model(hashed / "aaa" / "model", "plain-bf16")
    write_hf_model(hashed / "bbb" / "model", "plain-bf16")
    weights_b = hashed / "bbb" / "model" / "model.safetensors"
    data = bytearray(weights_b.read_bytes())
    data[-1] ^= 0xFF  # same size, other contents
    weights_b.write_bytes(bytes(data))
    shutil.copytree(hashed / "bbb" / "model", plain / "ccc" / "model")
    assert run_cli("scan", "--base", str(hashed), "--hash").returncode == 0
    assert run_cli("scan", "--base", str(plain)).returncode == 0

    out = run_cli("dedupe", "--yes", "--json")
    assert out.returncode == 0, out.stderr
    weights_c = plain / "ccc" / "model" / "model.safetensors"
    assert weights_c.stat().st_ino == weights_b.stat().st_ino
    assert (hashed / "aaa" / "model" / "model.safetensors").stat().st_ino != weights_b.stat().st_ino
    assert weights_c.read_bytes() == bytes(data)
    again = json.loads(run_cli("dedupe", "--yes", "--json").stdout)["data"]
    assert not [p for p in again["pairs"] if p["status"] != "linked"], "one run was enough"
