"""`outdated` and `update` end to end: the real CLI in a subprocess against a fake Hub whose branches move.

Models are downloaded in-process (faster); the commands under test run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import modelfiles
from tests.fakehub import FakeHub

REPO = "Owner/Tiny"
NAME = "owner/tiny"
TOKEN = "hf_aliceSECRETtoken0123456789"
README = b"---\nlicense: apache-2.0\n---\n\n# Tiny\n"


def weights(n_floats: int = 256) -> bytes:
    data = modelfiles.safetensors_bytes({"w": ("F32", (n_floats,))})
    head = 8 + int.from_bytes(data[:8], "little")
    return data[:head] + os.urandom(len(data) - head)


def tiny_files(n_floats: int = 256) -> dict[str, bytes]:
    return {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}).encode(),
        "generation_config.json": b'{"do_sample": true}\n',
        "model.safetensors": weights(n_floats),
        "README.md": README,
    }


def download(reference: str, **kw: object) -> None:
    from imageworks.config import resolve_config
    from imageworks.downloader import download as run

    run(reference, config=resolve_config(), engine="native", **kw)  # type: ignore[arg-type]


def registry(dirs: dict[str, Path]) -> dict:
    return json.loads((dirs["registry"] / "model_registry.discovered.json").read_text())["models"]


def history(dirs: dict[str, Path]) -> list[dict]:
    path = dirs["registry"] / "model_registry.history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def cdn_gets(hub: FakeHub) -> list:
    return [r for r in hub.requests if r.server == "cdn" and r.method == "GET"]


def data_of(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout)["data"]


def folder_of(dirs: dict[str, Path]) -> Path:
    return dirs["models"] / "Owner" / "Tiny"


@pytest.fixture
def tiny(fake_hub: FakeHub, isolated_env) -> dict[str, bytes]:
    files = tiny_files()
    fake_hub.add_repo(REPO, files)
    download(REPO)
    fake_hub.clear_requests()
    return files


def test_download_records_the_selection(fake_hub: FakeHub, isolated_env) -> None:
    fake_hub.add_repo(REPO, tiny_files())
    download(REPO, include=["*.txt"], exclude=["generation_config.json"])
    source = registry(isolated_env)[NAME]["source"]
    assert source["selection"] == {
        "format": None,
        "quant": None,
        "include": ["*.txt"],
        "exclude": ["generation_config.json"],
    }


def test_readme_only_change_is_metadata_only(fake_hub: FakeHub, run_cli, tiny, isolated_env) -> None:
    old = registry(isolated_env)[NAME]
    new_commit = fake_hub.push(REPO, {"README.md": README + b"\nMore words.\n"})
    result = run_cli("outdated", NAME, "--json")
    assert result.returncode == 0, result.stderr
    envelope = json.loads(result.stdout)
    assert (envelope["schema"], envelope["version"], envelope["ok"]) == ("imageworks.outdated", 1, True)
    (model,) = data_of(result)["models"]
    assert model["state"] == "metadata only" and model["new_commit"] == new_commit
    assert [(c["path"], c["change"], c["documentation"]) for c in model["changes"]] == [
        ("README.md", "changed", True)
    ]
    assert model["bytes_to_fetch"] == 0
    api = [r for r in fake_hub.requests if r.server == "hub"]
    assert len(api) == 1, "one metadata request per model"

    text = run_cli("outdated", "--all")
    assert text.returncode == 0 and "metadata only" in text.stdout
    fake_hub.clear_requests()
    update = run_cli("update", NAME)
    assert update.returncode == 0, update.stderr
    assert "nothing to do" in update.stdout
    assert not cdn_gets(fake_hub) and not [r for r in fake_hub.requests if "/resolve/" in r.path]
    assert registry(isolated_env)[NAME] == old


def test_changed_weights_fetch_only_that_file(fake_hub: FakeHub, run_cli, tiny, isolated_env) -> None:
    folder = folder_of(isolated_env)
    old_commit = registry(isolated_env)[NAME]["source"]["commit"]
    config_inode = (folder / "config.json").stat().st_ino
    new_weights = weights()
    new_commit = fake_hub.push(REPO, {"model.safetensors": new_weights}, title="Fix the weights")
    new_sha = fake_hub.file(REPO, "model.safetensors").sha256

    result = run_cli("outdated", "--all", "--json")
    assert result.returncode == 1, result.stderr
    (model,) = data_of(result)["models"]
    assert model["state"] == "outdated" and model["commit"] == old_commit
    assert [(c["path"], c["change"]) for c in model["changes"]] == [("model.safetensors", "changed")]
    assert model["bytes_to_fetch"] == len(new_weights)
    human = run_cli("outdated", NAME)
    assert human.returncode == 1 and "model.safetensors" in human.stdout and "outdated" in human.stdout

    dry = run_cli("update", NAME, "--dry-run", "--json")
    assert dry.returncode == 0 and data_of(dry)["models"][0]["state"] == "would update"
    assert (folder / "model.safetensors").read_bytes() == tiny["model.safetensors"]
    fake_hub.clear_requests()
    update = run_cli("update", NAME, "--engine", "native", "--json")
    assert update.returncode == 0, update.stderr
    (done,) = data_of(update)["models"]
    assert done["state"] == "updated" and done["bytes_fetched"] == len(new_weights)
    assert done["files_fetched"] == 1 and done["files_reused"] == 3
    # Only the new blob left the CDN, and only once.
    gets = cdn_gets(fake_hub)
    assert len(gets) == 1 and gets[0].path.endswith(new_sha) and gets[0].status in (200, 206)
    resolves = [r for r in fake_hub.requests if "/resolve/" in r.path]
    assert len(resolves) == 1 and resolves[0].path.endswith("/model.safetensors")
    assert (folder / "model.safetensors").read_bytes() == new_weights
    assert (folder / "config.json").stat().st_ino == config_inode, "an unchanged file is not copied"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no staging left behind"

    entry = registry(isolated_env)[NAME]
    assert entry["source"]["commit"] == new_commit and entry["source"]["selection"]["include"] == []
    files = {f["path"]: f for f in entry["files"]}
    assert files["model.safetensors"]["sha256"] == new_sha
    line = history(isolated_env)[-1]
    assert old_commit[:12] in line["command"] and new_commit[:12] in line["command"]
    assert "changed model.safetensors" in line["command"]

    verify = run_cli("verify", NAME, script="imageworks-loader")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    again = run_cli("outdated", NAME, "--json")
    assert again.returncode == 0 and data_of(again)["models"][0]["state"] == "current"


def test_file_added_and_file_removed(fake_hub: FakeHub, run_cli, tiny, isolated_env) -> None:
    folder = folder_of(isolated_env)
    fake_hub.push(REPO, {"generation_config.json": None, "tokenizer_config.json": b'{"model_max_length": 8}'})
    result = run_cli("outdated", NAME, "--json")
    assert result.returncode == 1
    (model,) = data_of(result)["models"]
    assert sorted((c["path"], c["change"]) for c in model["changes"]) == [
        ("generation_config.json", "removed"),
        ("tokenizer_config.json", "added"),
    ]
    # A copy `link` placed in a plain folder is brought along; one in another tool's store is reported.
    shelf = isolated_env["home"] / "shelf"
    linked = run_cli("link", NAME, "--to", str(shelf))
    assert linked.returncode == 0, linked.stderr
    layer = isolated_env["registry"] / "model_registry.discovered.json"
    doc = json.loads(layer.read_text())
    doc["models"][NAME]["copies"].append(
        {"path": "/nowhere/hub/models--Owner--Tiny", "tool": "hf-cache", "method": "link"}
    )
    layer.write_text(json.dumps(doc))
    update = run_cli("update", "--all", "--engine", "native")
    assert update.returncode == 0, update.stderr
    assert "updated owner/tiny" in update.stdout
    assert f"copy updated: {shelf}" in update.stdout
    assert "stale: copy at /nowhere/hub/models--Owner--Tiny (hf-cache, link)" in update.stdout
    assert (shelf / "tokenizer_config.json").stat().st_ino == (folder / "tokenizer_config.json").stat().st_ino
    assert not (shelf / "generation_config.json").exists()
    copies = {c["path"]: c for c in registry(isolated_env)[NAME]["copies"]}
    assert "tokenizer_config.json" in {f["path"] for f in copies[str(shelf)]["files"]}
    verify = run_cli("verify", NAME, script="imageworks-loader")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert not (folder / "generation_config.json").exists()
    assert (folder / "tokenizer_config.json").read_bytes() == b'{"model_max_length": 8}'
    paths = sorted(f["path"] for f in registry(isolated_env)[NAME]["files"])
    assert paths == ["README.md", "config.json", "model.safetensors", "tokenizer_config.json"]
    assert not cdn_gets(fake_hub), "small files come from the Hub itself, not the CDN"


def test_deleted_repo_is_gone(fake_hub: FakeHub, run_cli, tiny, isolated_env) -> None:
    fake_hub.delete_repo(REPO)
    result = run_cli("outdated", NAME, "--json")
    assert result.returncode == 1
    (model,) = data_of(result)["models"]
    assert model["state"] == "gone" and "404" in model["reason"] and "deleted" in model["reason"]
    before = registry(isolated_env)
    update = run_cli("update", NAME)
    assert update.returncode == 1 and "gone" in update.stdout and "Traceback" not in update.stderr
    assert registry(isolated_env) == before
    assert (folder_of(isolated_env) / "model.safetensors").read_bytes() == tiny["model.safetensors"]


def test_all_skips_scanned_folders_without_a_commit(fake_hub: FakeHub, run_cli, tiny, isolated_env) -> None:
    """A scanned `<owner>/<repo>` folder has a repo id guessed from its path, no commit: never "gone"."""
    import shutil

    shutil.copytree(folder_of(isolated_env), isolated_env["home"] / "ext" / "Someone" / "Local-Model")
    assert run_cli("scan", "--base", str(isolated_env["home"] / "ext")).returncode == 0
    result = run_cli("outdated", "--all", "--json")
    assert result.returncode == 0, result.stdout
    assert [m["name"] for m in data_of(result)["models"]] == [NAME]


def test_gated_repo_whose_token_expired(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    fake_hub.add_repo("Gated/Tiny", tiny_files(), gated=True)
    fake_hub.tokens[TOKEN] = "alice"
    fake_hub.grant("Gated/Tiny", "alice")
    os.environ["HF_TOKEN"] = TOKEN
    try:
        download("Gated/Tiny")
    finally:
        del os.environ["HF_TOKEN"]
    fake_hub.push("Gated/Tiny", {"model.safetensors": weights()})
    ok = run_cli("outdated", "gated/tiny", "--json", env={"HF_TOKEN": TOKEN})
    assert ok.returncode == 1 and data_of(ok)["models"][0]["state"] == "outdated"

    fake_hub.expire_token(TOKEN)
    expired = run_cli("outdated", "gated/tiny", "--json", env={"HF_TOKEN": TOKEN})
    assert expired.returncode == 1
    (model,) = data_of(expired)["models"]
    assert model["state"] == "gone" and "token" in model["reason"] and "hf auth login" in model["hint"]
    assert TOKEN not in expired.stdout + expired.stderr
    anonymous = run_cli("outdated", "gated/tiny", "--json")
    (model,) = data_of(anonymous)["models"]
    assert model["state"] == "gone" and model["reason"].startswith("gated now")


def test_pinned_entries_are_never_flagged(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    first = fake_hub.add_repo(REPO, tiny_files())
    fake_hub.add_revision(REPO, tag="v1.0")
    fake_hub.add_repo("Owner/Other", tiny_files())
    fake_hub.add_revision(REPO, branch="dev")
    download(f"{REPO}@{first}")
    download(f"{REPO}@v1.0")
    download(f"{REPO}@dev")
    download("Owner/Other")
    curated = {"schema_version": 1, "models": {"owner/other": {"pinned": True}}}
    (isolated_env["registry"] / "model_registry.curated.json").write_text(json.dumps(curated))
    fake_hub.push(REPO, {"model.safetensors": weights()})
    fake_hub.push("Owner/Other", {"model.safetensors": weights()})
    fake_hub.push(REPO, {"README.md": b"# dev\n"}, branch="dev")
    result = run_cli("outdated", "--all", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    states = {m["name"]: (m["state"], m["reason"]) for m in data_of(result)["models"]}
    assert states["owner/tiny@dev"] == ("metadata only", None), "a branch other than main still moves"
    assert states[f"owner/tiny@{first}"] == ("pinned", f"pinned to commit {first[:12]}")
    assert states["owner/tiny@v1.0"] == ("pinned", "pinned to tag v1.0")
    assert states["owner/other"][0] == "pinned" and "curated" in states["owner/other"][1]
    fake_hub.clear_requests()
    update = run_cli("update", "--all", "--json")
    assert update.returncode == 0 and not cdn_gets(fake_hub)


def test_keep_old_shares_unchanged_files(fake_hub: FakeHub, run_cli, tiny, isolated_env) -> None:
    folder = folder_of(isolated_env)
    old_commit = registry(isolated_env)[NAME]["source"]["commit"]
    fake_hub.push(REPO, {"model.safetensors": weights()})
    update = run_cli("update", NAME, "--keep-old", "--engine", "native", "--json")
    assert update.returncode == 0, update.stderr
    kept = f"{NAME}@{old_commit[:12]}"
    assert data_of(update)["models"][0]["kept_as"] == kept
    old_folder = folder.with_name(f"Tiny@{old_commit[:12]}")
    assert (old_folder / "model.safetensors").read_bytes() == tiny["model.safetensors"]
    assert (old_folder / "config.json").stat().st_ino == (folder / "config.json").stat().st_ino
    entries = registry(isolated_env)
    assert entries[kept]["path"] == str(old_folder) and entries[kept]["source"]["commit"] == old_commit
    assert len(history(isolated_env)) == 2, "one download, one update"
    verify = run_cli("verify", kept, script="imageworks-loader")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    listed = run_cli("outdated", kept, "--json")
    assert data_of(listed)["models"][0]["state"] == "pinned"


def test_rate_limited_check_waits_for_retry_after(fake_hub: FakeHub, run_cli, tiny) -> None:
    fault = fake_hub.fail("/api/models/*", "status", status=429, retry_after=1, times=1)
    started = time.monotonic()
    result = run_cli("outdated", NAME, "--json")
    assert result.returncode == 0, result.stderr
    assert fault.hits == 1 and time.monotonic() - started >= 1.0
    assert data_of(result)["models"][0]["state"] == "current"


def test_usage_errors(fake_hub: FakeHub, run_cli, tiny) -> None:
    for args in (["outdated"], ["outdated", NAME, "--all"], ["update"], ["outdated", "no-such-model"]):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_kill_9_mid_update_then_rerun(fake_hub: FakeHub, isolated_env) -> None:
    fake_hub.add_repo(REPO, tiny_files())
    download(REPO)
    folder = folder_of(isolated_env)
    old = (folder / "model.safetensors").read_bytes()
    old_entry = registry(isolated_env)[NAME]
    new_weights = weights(1_500_000)  # 6 MB: above the engines' 4 MiB resume-record threshold
    new_commit = fake_hub.push(REPO, {"model.safetensors": new_weights})
    fake_hub.throttle(total_bps=1_500_000)
    stage = folder / f".imageworks-update-{new_commit[:12]}"
    partial = stage / ".model.safetensors.imageworks-partial"
    cmd = [sys.executable, "-m", "imageworks.cli.main", "update", NAME, "--engine", "native", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if _resumable_bytes(partial) >= len(new_weights) // 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the update never got going")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Killed mid-fetch: the old files are in place and the entry keeps the old commit.
    assert (folder / "model.safetensors").read_bytes() == old
    assert registry(isolated_env)[NAME] == old_entry
    fake_hub.throttle()
    fake_hub.clear_requests()
    rerun = subprocess.run([*cmd[:-1], "--json"], capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    (done,) = data_of(rerun)["models"]
    assert done["state"] == "updated" and done["bytes_resumed"] > 0, done
    assert 0 < done["bytes_fetched"] < len(new_weights) + 10_000
    assert (folder / "model.safetensors").read_bytes() == new_weights
    assert registry(isolated_env)[NAME]["source"]["commit"] == new_commit
    assert not stage.exists()


def _resumable_bytes(partial: Path) -> int:
    """Bytes the engine's resume record vouches for (it is saved about once a second)."""
    try:
        state = json.loads(partial.with_name(partial.name + ".json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(end - start for start, end in state.get("done", []))


def test_one_quant_of_a_gguf_folder_changes(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    from tests.fakehub import samples

    repo = samples.add_gguf_model(fake_hub)
    download(repo.repo_id, quant="all")
    base = "theowner/tiny-llama-gguf"
    q8 = repo.bytes_of("Tiny-Llama-3B-Q8_0.gguf")
    new_q8 = q8[:-1] + bytes([q8[-1] ^ 1])
    fake_hub.push(repo.repo_id, {"Tiny-Llama-3B-Q8_0.gguf": new_q8, "README.md": b"# Tiny Llama GGUF v2\n"})
    result = run_cli("outdated", repo.repo_id, "--json")
    assert result.returncode == 1, result.stderr
    data = data_of(result)
    states = {m["name"]: m["state"] for m in data["models"]}
    assert states == {
        f"{base}:q4_k_m": "metadata only",
        f"{base}:q5_k_s": "metadata only",
        f"{base}:q8_0": "outdated",
    }
    assert data["requests"] == 1, "one request for the repo, whatever the number of its entries"

    fake_hub.clear_requests()
    update = run_cli("update", "--all", "--engine", "native", "--json")
    assert update.returncode == 0, update.stderr
    assert [m["name"] for m in data_of(update)["models"] if m["state"] == "updated"] == [f"{base}:q8_0"]
    assert [len(g.path) > 0 for g in cdn_gets(fake_hub)] == [True], "only the changed quant left the CDN"
    after = run_cli("outdated", "--all", "--json")
    assert after.returncode == 0 and {m["state"] for m in data_of(after)["models"]} == {"current"}
    verify = run_cli("verify", "--all", script="imageworks-loader")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_crash_between_switch_and_record_then_rerun(
    fake_hub: FakeHub, run_cli, tiny, isolated_env, monkeypatch
) -> None:
    """A crash after the new files are in place but before the registry changed: the re-run recognises the
    switched files by their digest, fetches nothing and records the new commit once."""
    import imageworks.update
    import imageworks.update_steps
    from imageworks.config import resolve_config

    folder = folder_of(isolated_env)
    new_weights = weights()
    new_commit = fake_hub.push(REPO, {"model.safetensors": new_weights, "generation_config.json": None})

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    record = imageworks.update_steps.record
    monkeypatch.setattr(imageworks.update_steps, "record", crash)
    options = imageworks.update.UpdateOptions(engine="native")
    with pytest.raises(KeyboardInterrupt):
        imageworks.update.update_models(names=[NAME], config=resolve_config(), options=options)
    monkeypatch.setattr(imageworks.update_steps, "record", record)
    assert (folder / "model.safetensors").read_bytes() == new_weights
    assert registry(isolated_env)[NAME]["source"]["commit"] != new_commit
    lines = len(history(isolated_env))
    fake_hub.clear_requests()
    rerun = run_cli("update", NAME, "--json")
    assert rerun.returncode == 0, rerun.stderr
    (done,) = data_of(rerun)["models"]
    assert done["state"] == "updated" and done["bytes_fetched"] == 0 and not cdn_gets(fake_hub)
    entry = registry(isolated_env)[NAME]
    assert entry["source"]["commit"] == new_commit
    assert "generation_config.json" not in {f["path"] for f in entry["files"]}
    assert len(history(isolated_env)) == lines + 1


def test_hf_cache_import_is_checked_and_reported_stale(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    """A model `import hf-cache` registered from the Hugging Face cache (as the real huggingface_hub wrote
    it): checked like a download, never written by `update`."""
    from huggingface_hub import snapshot_download

    files = tiny_files()
    fake_hub.add_repo(REPO, files)
    snapshot = Path(
        snapshot_download(
            REPO, endpoint=fake_hub.endpoint, cache_dir=isolated_env["hf_home"] / "hub", token=False
        )
    )
    imported = run_cli("import", "hf-cache", "--json")
    assert imported.returncode == 0, imported.stderr
    (name,) = registry(isolated_env)
    fake_hub.push(REPO, {"model.safetensors": weights(), "README.md": b"# v2\n"})
    fake_hub.clear_requests()
    result = run_cli("outdated", name, "--json")
    assert result.returncode == 1, result.stderr
    (model,) = data_of(result)["models"]
    assert model["state"] == "outdated"
    assert ("model.safetensors", "changed") in {(c["path"], c["change"]) for c in model["changes"]}
    before = (snapshot / "model.safetensors").read_bytes()
    update = run_cli("update", name, "--json")
    assert update.returncode == 0, update.stderr
    (done,) = data_of(update)["models"]
    assert done["state"] == "stale" and "Hugging Face cache" in done["reason"]
    assert (snapshot / "model.safetensors").read_bytes() == before and not cdn_gets(fake_hub)


def test_a_new_format_beside_the_old_one_is_not_an_update(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    """A repo that adds safetensors beside its pytorch .bin (a conversion bot's commit): the entry keeps
    the format its download settled on, so nothing it selected changed."""
    from tests.fakehub import samples

    files = {
        k: v for k, v in samples._safetensors_files().items() if k in ("config.json", "pytorch_model.bin")
    }
    fake_hub.add_repo(REPO, files)
    download(REPO)
    assert registry(isolated_env)[NAME]["format"] == "pytorch"
    fake_hub.push(REPO, {"model.safetensors": samples._safetensors_files()["model.safetensors"]})
    result = run_cli("outdated", NAME, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (model,) = data_of(result)["models"]
    assert model["state"] == "metadata only" and model["changes"] == []


def test_ollama_hf_co_import_is_checked_and_reported_stale(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    """A GGUF Ollama pulled as hf.co/OWNER/REPO:QUANT (laid out as Ollama writes it, registered by the real
    import): the Hub's newer Q4_K_M is noticed; Ollama's store is not written."""
    from tests.fakehub import samples
    from tests.shelves import ollama_model

    repo = samples.add_gguf_model(fake_hub)
    models = isolated_env["home"] / ".ollama" / "models"
    q4 = repo.bytes_of("Tiny-Llama-3B-Q4_K_M.gguf")
    projector = repo.bytes_of("mmproj-Tiny-Llama-3B-F16.gguf")
    ollama_model(models, "hf.co/TheOwner/Tiny-Llama-GGUF/Q4_K_M", q4, projector=projector)
    assert run_cli("import", "ollama").returncode == 0
    (name,) = registry(isolated_env)
    current = run_cli("outdated", name, "--json")
    assert current.returncode == 0, current.stdout + current.stderr
    assert data_of(current)["models"][0]["state"] == "current"

    fake_hub.push(repo.repo_id, {"Tiny-Llama-3B-Q4_K_M.gguf": q4[:-1] + bytes([q4[-1] ^ 1])})
    result = run_cli("outdated", name, "--json")
    assert result.returncode == 1, result.stderr
    (model,) = data_of(result)["models"]
    assert model["state"] == "outdated" and model["repo_id"] == "TheOwner/Tiny-Llama-GGUF"
    assert [(c["path"], c["change"]) for c in model["changes"]] == [("Tiny-Llama-3B-Q4_K_M.gguf", "changed")]
    update = run_cli("update", name, "--json")
    (done,) = data_of(update)["models"]
    assert update.returncode == 0 and done["state"] == "stale" and "Ollama" in done["reason"]


def test_update_waits_for_a_download_holding_the_model(fake_hub: FakeHub, tiny, isolated_env) -> None:
    """One writer per model folder: an update waits while the model's lock is held (as a download of the
    same model holds it), says so, and updates once it is free."""
    from filelock import FileLock

    from imageworks.model_lock import lock_path

    folder = folder_of(isolated_env)
    new_weights = weights()
    new_commit = fake_hub.push(REPO, {"model.safetensors": new_weights})
    lock = FileLock(str(lock_path(folder)))
    lock.acquire()
    cmd = [sys.executable, "-m", "imageworks.cli.main", "update", NAME, "--engine", "native"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        time.sleep(2.0)
        assert proc.poll() is None, "the update did not wait for the lock"
        assert (folder / "model.safetensors").read_bytes() == tiny["model.safetensors"]
    finally:
        lock.release()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "waiting for another download or update" in out + err
    assert (folder / "model.safetensors").read_bytes() == new_weights
    assert registry(isolated_env)[NAME]["source"]["commit"] == new_commit
