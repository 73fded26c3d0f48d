"""remove knows what is shared (issue 9.1, 11): a multi-quant GGUF folder, hardlinks, copies."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.fakehub import samples
from tests.fakehub.server import FakeHub


def _registry(isolated_env: dict[str, Path]) -> dict:
    return json.loads((isolated_env["registry"] / "model_registry.discovered.json").read_text())["models"]


def test_remove_one_quant_keeps_shared_files_and_the_other_quant_verifies(
    fake_hub: FakeHub, run_cli, isolated_env
) -> None:
    repo = samples.add_gguf_model(fake_hub)
    got = run_cli(
        "download", repo.repo_id, "--engine", "native", "--location", "linux_wsl", "--quant", "Q4_K_M,Q8_0"
    )
    assert got.returncode == 0, got.stderr
    folder = isolated_env["models"] / "TheOwner" / "Tiny-Llama-GGUF"
    q8 = folder / "Tiny-Llama-3B-Q8_0.gguf"
    # Another name of the Q8_0 file elsewhere: deleting ours frees nothing.
    other = isolated_env["home"] / "elsewhere.gguf"
    os.link(q8, other)

    dry = run_cli("remove", "tiny-llama-gguf:q8_0", "--delete-files", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)["data"]
    assert [Path(a["path"]).name for a in plan["delete"]] == ["Tiny-Llama-3B-Q8_0.gguf"]
    assert plan["bytes_freed"] == 0  # the hardlink's other name stays
    kept = {Path(a["path"]).name: a["reason"] for a in plan["keep"]}
    assert set(kept) == {"README.md", "mmproj-Tiny-Llama-3B-F16.gguf"}
    assert all("theowner/tiny-llama-gguf:q4_k_m" in r for r in kept.values())
    assert q8.exists() and "theowner/tiny-llama-gguf:q8_0" in _registry(isolated_env)

    human = run_cli("remove", "tiny-llama-gguf:q8_0", "--delete-files", "--dry-run")
    assert "keep" in human.stdout and "listed by theowner/tiny-llama-gguf:q4_k_m" in human.stdout
    assert "dry run: would remove theowner/tiny-llama-gguf:q8_0 from the registry" in human.stdout
    entry_only = run_cli("remove", "tiny-llama-gguf:q8_0", "--dry-run")  # said nothing at all
    assert "dry run: would remove theowner/tiny-llama-gguf:q8_0 from the registry" in entry_only.stdout

    done = run_cli("remove", "tiny-llama-gguf:q8_0", "--delete-files", "--yes")
    assert done.returncode == 0, done.stderr
    assert "delete" in done.stderr and "0 B freed" in done.stderr  # the plan came before the deletion
    assert "plan: delete 1 file," in done.stderr and "deleted 1 file (" in done.stdout
    assert not q8.exists() and other.exists()
    assert (folder / "README.md").exists() and (folder / "Tiny-Llama-3B-Q4_K_M.gguf").exists()
    assert sorted(_registry(isolated_env)) == ["theowner/tiny-llama-gguf:q4_k_m"]
    check = run_cli("verify", "tiny-llama-gguf:q4_k_m", script="imageworks-loader")
    assert check.returncode == 0, check.stdout + check.stderr

    # The last quant takes the shared files and the folder with it; the owner folder goes too.
    last = run_cli("remove", "tiny-llama-gguf:q4_k_m", "--delete-files", "--yes", "--json")
    assert last.returncode == 0, last.stderr
    data = json.loads(last.stdout)["data"]
    assert data["bytes_freed"] > 0 and not data["keep"]
    assert not folder.exists() and not folder.parent.exists()


def test_remove_keeps_unregistered_files_and_their_folder(run_cli, isolated_env) -> None:
    from imageworks.registry import FileRecord, ModelEntry, RegistryStore

    folder = isolated_env["models"] / "local" / "mine"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 10)
    (folder / "notes.txt").write_text("my notes")
    with RegistryStore(isolated_env["registry"]).transaction(["seed"]) as reg:
        reg.put(
            ModelEntry(
                name="local/mine", path=str(folder), files=[FileRecord(path="model.safetensors", size=10)]
            )
        )
    out = run_cli("remove", "local/mine", "--delete-files", "--yes")
    assert out.returncode == 0, out.stderr
    assert not (folder / "model.safetensors").exists() and (folder / "notes.txt").read_text() == "my notes"
