"""normalize-formats: recompute formats from disk, rebuild files with drift, prune missing folders; dry run
by default, one transaction with --apply."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from imageworks.normalize import apply_normalize, plan_normalize
from imageworks.registry import RegistryStore
from imageworks.registry.store import CURATED, DISCOVERED
from imageworks.scan import ScanOptions, scan
from tests.modelfiles import write_gguf, write_gguf_repo, write_hf_model
from tests.test_scan import registry_bytes


@pytest.fixture
def scanned(isolated_env: dict[str, Path]) -> dict[str, Path]:
    """A registry filled by `scan --hash` over a small tree of real models."""
    models = isolated_env["models"]
    write_hf_model(models / "Qwen" / "Qwen2-VL-2B", "plain-bf16")
    write_hf_model(models / "TheBloke" / "Llama-AWQ", "awq")
    write_gguf_repo(models / "bartowski" / "Llama-GGUF", "Llama", quants=("Q4_K_M", "Q8_0"), mmproj=True)
    write_gguf_repo(models / "unsloth" / "Gone-GGUF", "Gone", quants=("Q4_K_M",))
    result = scan(
        RegistryStore(isolated_env["registry"]), models, ScanOptions(location="linux_wsl", hash=True)
    )
    assert len(result.added) == 5
    return isolated_env


def edit_discovered(registry: Path, name: str, **fields) -> None:
    """Edit the discovered layer the way a stale tool version (or a hand) would have left it."""
    path = registry / DISCOVERED
    doc = json.loads(path.read_text())
    doc["models"][name].update(fields)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def normalize_json(run_cli, *args: str, code: int = 0) -> dict:
    proc = run_cli("normalize-formats", "--json", *args)
    assert proc.returncode == code, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "imageworks.normalize-formats"
    return doc["data"]


def test_dry_run_by_default_shows_field_diffs_and_apply_writes_once(scanned, run_cli) -> None:
    registry = scanned["registry"]
    edit_discovered(registry, "bartowski/llama-gguf:q8_0", quantization="Q4_0")
    edit_discovered(registry, "thebloke/llama-awq", format="safetensors", quantization="f16")
    store = RegistryStore(registry)
    history_before = len(store.history())
    before = registry_bytes(registry)

    proc = run_cli("normalize-formats")
    assert proc.returncode == 0, proc.stderr
    assert "quantization: Q4_0 -> Q8_0" in proc.stdout
    assert "format: safetensors -> awq" in proc.stdout
    assert "quantization: f16 -> awq-4bit-g128" in proc.stdout
    assert "dry run: nothing written" in proc.stdout
    assert registry_bytes(registry) == before

    plan = plan_normalize(store.load())
    assert {e.name for e in plan.writes} == {"bartowski/llama-gguf:q8_0", "thebloke/llama-awq"}

    proc = run_cli("normalize-formats", "--apply")
    assert proc.returncode == 0, proc.stderr
    assert "2 updated" in proc.stdout
    loaded = store.load()
    awq = loaded.get("thebloke/llama-awq")
    assert awq is not None and (awq.format, awq.quantization) == ("awq", "awq-4bit-g128")
    assert "--quantization awq" in awq.serve["vllm"]["command"]
    assert loaded.get("bartowski/llama-gguf:q8_0").quantization == "Q8_0"  # type: ignore[union-attr]
    history = store.history()
    assert len(history) == history_before + 1
    assert "normalize-formats" in history[-1]["command"]
    assert list((registry / "backups").glob("*.model_registry.discovered.json"))

    after = registry_bytes(registry)
    assert normalize_json(run_cli, "--apply")["summary"]["update"] == 0
    assert registry_bytes(registry) == after


def test_rebuild_reports_drift_and_hashes_only_what_changed(scanned, run_cli) -> None:
    models = scanned["models"]
    qwen = models / "Qwen" / "Qwen2-VL-2B"
    # Changed after download: a byte flipped in the weights, a file added, a file deleted.
    weights = qwen / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (qwen / "notes.txt").write_text("my notes\n")
    (qwen / "generation_config.json").unlink()

    unchanged = normalize_json(run_cli, "--rebuild")
    (entry,) = unchanged["entries"]
    assert entry["name"] == "qwen/qwen2-vl-2b"
    assert entry["drift"] == {
        "changed": ["model.safetensors"],
        "added": ["notes.txt"],
        "missing": ["generation_config.json"],
    }
    # Only the two files whose size/mtime moved were read; every other digest was reused.
    assert unchanged["hashed_files"] == 2
    assert unchanged["hashed_bytes"] == weights.stat().st_size + (qwen / "notes.txt").stat().st_size

    text = run_cli("normalize-formats", "--rebuild").stdout
    assert "files changed: model.safetensors" in text
    assert "files added: notes.txt" in text
    assert "files missing: generation_config.json" in text

    applied = normalize_json(run_cli, "--rebuild", "--apply")
    assert applied["written"] == ["qwen/qwen2-vl-2b"]
    stored = RegistryStore(scanned["registry"]).load().get("qwen/qwen2-vl-2b")
    assert stored is not None
    recorded = {f.path: f.sha256 for f in stored.files}
    assert recorded["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert "generation_config.json" not in recorded and "notes.txt" in recorded

    # Nothing changed since: a rebuild reads no file at all.
    quiet = plan_normalize(RegistryStore(scanned["registry"]).load(), rebuild=True)
    assert quiet.hashed_files == 0 and not quiet.writes


def test_full_catches_an_in_place_change_that_kept_size_and_mtime(scanned) -> None:
    store = RegistryStore(scanned["registry"])
    weights = scanned["models"] / "TheBloke" / "Llama-AWQ" / "model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))

    quick = plan_normalize(store.load(), rebuild=True)
    assert quick.hashed_files == 0 and not quick.writes  # size+mtime match: trusted, as documented

    full = plan_normalize(store.load(), rebuild=True, full=True)
    assert full.hashed_files == sum(len(e.files) for e in store.load().entries())
    (item,) = full.writes
    assert item.name == "thebloke/llama-awq"
    assert item.drift is not None and item.drift.changed == ["model.safetensors"]


def test_prune_missing_removes_discovered_and_reports_curated(scanned, run_cli) -> None:
    registry = scanned["registry"]
    curated_text = json.dumps(
        {
            "schema_version": 1,
            "models": {
                "bartowski/llama-gguf:q8_0": {"tags": ["favourite"]},
                "hand/written": {"path": str(scanned["models"] / "hand" / "written"), "format": "gguf"},
            },
        },
        indent=2,
    )
    (registry / CURATED).write_text(curated_text)
    shutil.rmtree(scanned["models"] / "unsloth" / "Gone-GGUF")
    shutil.rmtree(scanned["models"] / "bartowski" / "Llama-GGUF")

    without = normalize_json(run_cli)
    actions = {e["name"]: e["action"] for e in without["entries"]}
    assert actions["unsloth/gone-gguf:q4_k_m"] == "missing"  # reported, not removed without the flag

    plan = normalize_json(run_cli, "--prune-missing")
    actions = {e["name"]: e["action"] for e in plan["entries"]}
    assert actions == {
        "unsloth/gone-gguf:q4_k_m": "prune",
        "bartowski/llama-gguf:q4_k_m": "prune",
        "bartowski/llama-gguf:q8_0": "curated-missing",
        "hand/written": "curated-missing",
    }
    curated_notes = [e["notes"][0] for e in plan["entries"] if e["action"] == "curated-missing"]
    assert all("edit that file by hand" in note for note in curated_notes)

    normalize_json(run_cli, "--prune-missing", "--apply", "--no-backup")
    loaded = RegistryStore(registry).load()
    assert "unsloth/gone-gguf:q4_k_m" not in loaded.discovered
    assert "bartowski/llama-gguf:q4_k_m" not in loaded.discovered
    assert "bartowski/llama-gguf:q8_0" in loaded.discovered  # has a curated part: left for a hand edit
    assert (registry / CURATED).read_text() == curated_text
    assert not (registry / "backups").exists()


def test_flag_combinations_are_usage_errors(scanned, run_cli) -> None:
    both = run_cli("normalize-formats", "--dry-run", "--apply")
    assert both.returncode == 2 and "contradict" in both.stderr and "\nhint: " in both.stderr
    full = run_cli("normalize-formats", "--full")
    assert full.returncode == 2 and "--rebuild" in full.stderr


def test_one_quant_of_a_shared_folder_is_rebuilt_from_its_own_files(scanned) -> None:
    folder = scanned["models"] / "bartowski" / "Llama-GGUF"
    write_gguf(folder / "Llama-Q6_K.gguf", file_type="Q6_K")  # a new quant arrives in the folder
    plan = plan_normalize(RegistryStore(scanned["registry"]).load(), rebuild=True)
    assert not plan.writes  # neither existing quant entry takes the new file as "added"


def test_entries_changed_meanwhile_are_not_overwritten(scanned) -> None:
    store = RegistryStore(scanned["registry"])
    edit_discovered(scanned["registry"], "thebloke/llama-awq", quantization="wrong")
    plan = plan_normalize(store.load())
    assert [e.name for e in plan.writes] == ["thebloke/llama-awq"]
    edit_discovered(scanned["registry"], "thebloke/llama-awq", quantization="edited-by-someone")
    result = apply_normalize(store, plan, "normalize-formats --apply")
    assert result.conflicts == ["thebloke/llama-awq"] and not result.written
    assert store.load().get("thebloke/llama-awq").quantization == "edited-by-someone"  # type: ignore[union-attr]


def test_an_unmounted_location_root_is_never_pruned(scanned, run_cli) -> None:
    """The whole linux_wsl root is gone (a drive not mounted): its entries are unreachable, not deleted."""
    shutil.move(scanned["models"], scanned["models"].with_name("unplugged"))
    data = normalize_json(run_cli, "--prune-missing", "--apply")
    assert {e["action"] for e in data["entries"]} == {"missing"}
    assert "not mounted" in data["entries"][0]["notes"][0]
    assert data["written"] == []
    assert len(RegistryStore(scanned["registry"]).load().discovered) == 5


def test_a_deleted_quant_is_missing_not_replaced_by_its_neighbour(scanned) -> None:
    (scanned["models"] / "bartowski" / "Llama-GGUF" / "Llama-Q8_0.gguf").unlink()
    plan = plan_normalize(RegistryStore(scanned["registry"]).load(), rebuild=True)
    (item,) = plan.writes
    assert item.name == "bartowski/llama-gguf:q8_0"
    assert item.drift is not None
    assert (item.drift.missing, item.drift.added) == (["Llama-Q8_0.gguf"], [])


def test_normalize_and_scan_are_siblings() -> None:
    """normalize uses the walk, the diffs and the entry refresh from their own modules, not from scan."""
    import subprocess
    import sys

    code = "import sys, imageworks.normalize; print('imageworks.scan' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_rebuild_full_never_replaces_a_hub_digest_from_disk(isolated_env, sample_hub, run_cli) -> None:
    """A downloaded file damaged on disk: `--rebuild --full --apply` reports it as drift with both
    digests (exit 1) and keeps the Hub's digest, so `verify` still says changed. A scanned model's digest
    (computed from disk) is refreshed, and the plan says so."""
    from tests.fakehub.samples import SAFETENSORS_REPO

    proc = run_cli("download", SAFETENSORS_REPO, "--engine", "native")
    assert proc.returncode == 0, proc.stderr
    folder = isolated_env["models"] / "TheOwner" / "Tiny-Llama"
    weights = folder / "model.safetensors"
    hub_digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))  # same size, new mtime
    damaged = hashlib.sha256(data).hexdigest()
    # A scanned model beside it, hashed from disk, then changed on purpose.
    local = isolated_env["models"] / "Mine" / "Tuned"
    write_hf_model(local, "plain-bf16")
    assert scan(RegistryStore(isolated_env["registry"]), isolated_env["models"], ScanOptions(hash=True)).added
    mine = local / "model.safetensors"
    old_mine = hashlib.sha256(mine.read_bytes()).hexdigest()
    mine.write_bytes(mine.read_bytes()[:-1] + b"\x01")
    new_mine = hashlib.sha256(mine.read_bytes()).hexdigest()

    result = normalize_json(run_cli, "--rebuild", "--full", "--apply", code=1)
    entries = {e["name"]: e for e in result["entries"]}
    hub_entry = entries["theowner/tiny-llama"]
    assert hub_entry["mismatches"] == [
        {"path": "model.safetensors", "expected": hub_digest, "actual": damaged, "source": "hub"}
    ]
    assert hub_entry["drift"]["changed"] == ["model.safetensors"]
    registry = RegistryStore(isolated_env["registry"]).load()
    hub_stored, mine_stored = registry.get("theowner/tiny-llama"), registry.get("mine/tuned")
    assert hub_stored is not None and mine_stored is not None
    assert {f.path: f.sha256 for f in hub_stored.files}[
        "model.safetensors"
    ] == hub_digest  # never the damaged file's
    assert {f.path: f.sha256 for f in mine_stored.files}["model.safetensors"] == new_mine
    assert any(old_mine in n and new_mine in n for n in entries["mine/tuned"]["notes"])

    text = run_cli("normalize-formats", "--rebuild", "--full")
    assert text.returncode == 1
    assert f"expected {hub_digest} (from the Hub), got {damaged}" in text.stdout
    verify = run_cli("verify", "theowner/tiny-llama", script="imageworks-loader")
    assert verify.returncode == 1 and "changed" in verify.stdout + verify.stderr

    # scan --update-existing keeps the Hub's record too, and says the file moved.
    proc = run_cli("scan", "--update-existing", "--json")
    assert proc.returncode == 0, proc.stderr
    items = {i["name"]: i for key in ("updated", "unchanged") for i in json.loads(proc.stdout)["data"][key]}
    assert any("model.safetensors changed on disk" in n for n in items["theowner/tiny-llama"]["notes"])
    rescanned = RegistryStore(isolated_env["registry"]).load().get("theowner/tiny-llama")
    assert rescanned is not None
    assert {f.path: f.sha256 for f in rescanned.files}["model.safetensors"] == hub_digest


def test_rebuild_apply_keeps_the_record_of_a_hub_file_gone_from_disk(
    isolated_env, sample_hub, run_cli
) -> None:
    """A downloaded file deleted from disk: `--rebuild --apply` reports it missing (exit 1) and keeps the
    entry's record and the Hub's digest; it never rewrites the entry as an empty, 0-byte model."""
    from tests.fakehub.samples import SAFETENSORS_REPO

    assert run_cli("download", SAFETENSORS_REPO, "--engine", "native").returncode == 0
    registry = RegistryStore(isolated_env["registry"])
    before = registry.load().get("theowner/tiny-llama")
    assert before is not None
    (isolated_env["models"] / "TheOwner" / "Tiny-Llama" / "model.safetensors").unlink()

    result = normalize_json(run_cli, "--rebuild", "--apply", code=1)
    (item,) = [e for e in result["entries"] if e["name"] == "theowner/tiny-llama"]
    assert item["drift"]["missing"] == ["model.safetensors"]
    assert [m["path"] for m in item["mismatches"]] == ["model.safetensors"]
    after = registry.load().get("theowner/tiny-llama")
    assert after is not None and after.files == before.files and after.size_bytes == before.size_bytes
    text = run_cli("normalize-formats", "--rebuild")
    assert text.returncode == 1 and "missing: model.safetensors" in text.stdout
