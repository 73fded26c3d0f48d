"""import hf-cache|ollama|lmstudio|llama.cpp: other tools' shelves registered in place (issue 11)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.fakehub import samples
from tests.fakehub.server import FakeHub


def _tree(root: Path) -> dict[str, tuple]:
    """Every path under root with what would show a change: type, size, mtime, inode, link target."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        target = os.readlink(path) if path.is_symlink() else None
        out[path.relative_to(root).as_posix()] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, target)
    return out


def _entries(isolated_env: dict[str, Path]) -> dict:
    return json.loads((isolated_env["registry"] / "model_registry.discovered.json").read_text())["models"]


def _hf_download(hub: FakeHub, repo_id: str, cache: Path) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, endpoint=hub.endpoint, cache_dir=cache))


def test_import_hf_cache_written_by_huggingface_hub(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    gguf = samples.add_gguf_model(fake_hub)
    dense = samples.add_safetensors_model(fake_hub)
    cache = isolated_env["hf_home"] / "hub"  # HF_HOME/hub: where the real client put it
    _hf_download(fake_hub, gguf.repo_id, cache)
    _hf_download(fake_hub, dense.repo_id, cache)
    repo_dir = cache / "models--TheOwner--Tiny-Llama-GGUF"
    # What other tools leave around: a dangling ref, an interrupted blob, a ref written with a newline.
    (repo_dir / "refs" / "v9").write_text("f" * 40)
    (repo_dir / "blobs" / ("0" * 64 + ".incomplete")).write_bytes(b"partial")
    dense_ref = cache / "models--TheOwner--Tiny-Llama" / "refs" / "main"
    dense_ref.write_text(dense_ref.read_text() + "\n")
    before = _tree(cache)

    out = run_cli("import", "hf-cache", "--json")
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)["data"]
    # Weights are registered by the SHA-256 their blob is named by; only small files (git blob ids) are read.
    blobs = {p.resolve() for p in cache.glob("*/snapshots/*/**/[!.]*") if p.is_symlink()}
    small = sum(b.stat().st_size for b in blobs if len(b.name) == 40)
    assert result["shelf"] == str(cache) and result["bytes_hashed"] == small > 0
    assert sorted(result["added"]) == [
        "theowner/tiny-llama",
        "theowner/tiny-llama-gguf:q4_k_m",
        "theowner/tiny-llama-gguf:q5_k_s",
        "theowner/tiny-llama-gguf:q8_0",
    ]
    assert any("ref v9" in n for n in result["notes"])
    assert _tree(cache) == before  # importing changes nothing in the other tool's folders
    entry = _entries(isolated_env)["theowner/tiny-llama-gguf:q8_0"]
    assert entry["tool"] == "hf-cache" and entry["source"]["commit"] == gguf.commit
    assert entry["path"] == str(repo_dir / "snapshots" / gguf.commit)
    q8 = next(f for f in entry["files"] if f["path"] == "Tiny-Llama-3B-Q8_0.gguf")
    assert q8["sha256"] == hashlib.sha256(gguf.bytes_of("Tiny-Llama-3B-Q8_0.gguf")).hexdigest()
    assert q8["inode"] == (repo_dir / "blobs" / q8["sha256"]).stat().st_ino
    assert run_cli("verify", "tiny-llama-gguf:q8_0", script="imageworks-loader").returncode == 0

    registry_bytes = (isolated_env["registry"] / "model_registry.discovered.json").read_bytes()
    again = run_cli("import", "hf-cache", "--json")
    data = json.loads(again.stdout)["data"][0]
    assert data["added"] == [] and data["copies"] == [] and len(data["unchanged"]) == 4
    assert data["bytes_hashed"] == 0  # small files are hashed once: a re-import reads nothing again
    assert (isolated_env["registry"] / "model_registry.discovered.json").read_bytes() == registry_bytes


def test_a_model_in_our_root_and_the_hf_cache_is_one_entry_with_two_copies(
    fake_hub: FakeHub, run_cli, isolated_env
) -> None:
    dense = samples.add_safetensors_model(fake_hub)
    got = run_cli("download", dense.repo_id, "--engine", "native", "--location", "linux_wsl")
    assert got.returncode == 0, got.stderr
    cache = isolated_env["hf_home"] / "hub"
    _hf_download(fake_hub, dense.repo_id, cache)
    out = run_cli("import", "hf-cache", "--json")
    data = json.loads(out.stdout)["data"][0]
    assert data["added"] == [] and data["copies"] == ["theowner/tiny-llama"]
    entries = _entries(isolated_env)
    assert list(entries) == ["theowner/tiny-llama"]
    (copy,) = entries["theowner/tiny-llama"]["copies"]
    assert copy["tool"] == "hf-cache" and copy["method"] == "import"
    assert json.loads(run_cli("list", "--json").stdout)["data"][0]["copies"] == ["linux_wsl", "hf-cache"]
    shown = run_cli("show", "theowner/tiny-llama")
    assert "hf-cache" in shown.stdout and "snapshots" in shown.stdout
    # Removing the model with --delete-files leaves the cache alone (another tool's shelf), still tracked.
    snapshot = Path(copy["path"])
    before = _tree(cache)
    gone = run_cli("remove", "theowner/tiny-llama", "--delete-files", "--yes")
    assert gone.returncode == 0, gone.stderr
    assert "another tool's shelf" in gone.stderr and _tree(cache) == before and snapshot.exists()
    assert not (isolated_env["models"] / "TheOwner").exists()
    entry = _entries(isolated_env)["theowner/tiny-llama"]
    assert entry["path"] == str(snapshot) and entry["tool"] == "hf-cache" and "copies" not in entry
    # Named, the cache copy's files go (links and their blobs); files the entry does not list stay, and
    # with them the snapshot and its ref, so the cache stays valid for huggingface_hub.
    listed = [f["path"] for f in entry["files"]]
    named = run_cli("remove", "theowner/tiny-llama", "--copy", "hf-cache", "--delete-files", "--yes")
    assert named.returncode == 0, named.stderr
    assert not any((snapshot / p).is_symlink() or (snapshot / p).exists() for p in listed)
    assert (snapshot / "pytorch_model.bin").exists() or any(snapshot.iterdir())
    assert (cache / "models--TheOwner--Tiny-Llama" / "refs" / "main").exists()
    from huggingface_hub import scan_cache_dir

    assert not scan_cache_dir(cache).warnings
    assert "theowner/tiny-llama" not in _entries(isolated_env)


def test_import_hf_cache_without_symlinks(fake_hub: FakeHub, run_cli, isolated_env, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_SYMLINKS", True)
    dense = samples.add_safetensors_model(fake_hub)
    cache = isolated_env["home"] / "elsewhere-cache"
    snapshot = _hf_download(fake_hub, dense.repo_id, cache)
    assert not any(p.is_symlink() for p in snapshot.rglob("*"))  # Windows-style copies
    out = run_cli("import", "hf-cache", str(cache), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["data"][0]["added"] == ["theowner/tiny-llama"]
    entry = _entries(isolated_env)["theowner/tiny-llama"]
    sizes = {f["path"]: f["size"] for f in entry["files"]}
    assert sizes == {p: len(dense.bytes_of(p)) for p in dense.files}


@pytest.mark.parametrize("var", ["HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", None])
def test_hf_cache_resolution_order(var, tmp_path) -> None:
    from imageworks.stores.shelves import hf_cache

    env = {"HOME": str(tmp_path / "h"), "HF_HUB_CACHE": "/a", "HF_HOME": "/b", "XDG_CACHE_HOME": "/c"}
    order = ["HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", None]
    for earlier in order[: order.index(var)]:
        env.pop(earlier)  # type: ignore[arg-type]
    expected = {
        "HF_HUB_CACHE": Path("/a"),
        "HF_HOME": Path("/b/hub"),
        "XDG_CACHE_HOME": Path("/c/huggingface/hub"),
        None: tmp_path / "h" / ".cache" / "huggingface" / "hub",
    }[var]
    if var is None:
        env = {"HOME": str(tmp_path / "h")}
    assert hf_cache(env) == expected


def test_import_ollama_store_as_ollama_writes_it(
    fake_hub: FakeHub, run_cli, isolated_env, monkeypatch
) -> None:
    from tests import modelfiles
    from tests.shelves import ollama_model

    repo = samples.add_gguf_model(fake_hub)
    assert run_cli("download", repo.repo_id, "--engine", "native", "--location", "linux_wsl").returncode == 0
    models = isolated_env["home"] / ".ollama" / "models"  # the default, no OLLAMA_MODELS
    tiny = modelfiles.gguf_bytes(arch="llama", name="Tiny", file_type=15)
    ollama_model(models, "registry.ollama.ai/library/tiny/latest", tiny, params={"stop": ["</s>"]})
    # The same GGUF (and projector) pulled from hf.co: a copy of the entry we downloaded.
    ollama_model(
        models,
        "hf.co/TheOwner/Tiny-Llama-GGUF/Q4_K_M",
        repo.bytes_of("Tiny-Llama-3B-Q4_K_M.gguf"),
        projector=repo.bytes_of("mmproj-Tiny-Llama-3B-F16.gguf"),
    )
    (models / "manifests" / "registry.ollama.ai" / "library" / "broken").mkdir(parents=True)
    (models / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest").write_text("{not json")
    before = _tree(models)
    out = run_cli("import", "ollama", "--json")
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)["data"]
    assert result["added"] == ["ollama/library/tiny:latest"] and result["bytes_hashed"] == 0
    assert result["copies"] == ["theowner/tiny-llama-gguf:q4_k_m"]
    assert any("broken" in n for n in result["notes"])
    assert _tree(models) == before
    entries = _entries(isolated_env)
    tiny_entry = entries["ollama/library/tiny:latest"]
    assert tiny_entry["tool"] == "ollama" and tiny_entry["quantization"] == "Q4_K_M"
    assert tiny_entry["metadata"]["ollama"]["template"] == "{{ .Prompt }}"
    (copy,) = entries["theowner/tiny-llama-gguf:q4_k_m"]["copies"]
    q4 = next(f for f in copy["files"] if f["path"] == "Tiny-Llama-3B-Q4_K_M.gguf")
    assert q4["at"] == "sha256-" + hashlib.sha256(repo.bytes_of("Tiny-Llama-3B-Q4_K_M.gguf")).hexdigest()
    assert run_cli("verify", "ollama/library/tiny:latest", script="imageworks-loader").returncode == 0
    again = json.loads(run_cli("import", "ollama", "--json").stdout)["data"][0]
    assert again["added"] == [] and again["copies"] == [] and len(again["unchanged"]) == 2


def test_import_lmstudio_via_home_pointer_and_llamacpp_cache(run_cli, isolated_env, monkeypatch) -> None:
    from tests import modelfiles

    home = isolated_env["home"]
    lms = home / "somewhere" / "lmstudio"
    (home / ".lmstudio-home-pointer").write_text(str(lms))
    folder = lms / "models" / "bartowski" / "Small-GGUF"
    modelfiles.write_gguf_repo(folder, "Small", ["Q4_K_M", "Q8_0"], mmproj=True)
    modelfiles.write_hf_model(lms / "models" / "mlx-community" / "Small-4bit", "mlx", bits=4, group_size=64)
    pointer_before = (home / ".lmstudio-home-pointer").stat().st_mtime_ns
    out = run_cli("import", "lmstudio", "--json")
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)["data"]
    assert result["shelf"] == str(lms / "models")
    assert result["added"] == [
        "bartowski/small-gguf:q4_k_m",
        "bartowski/small-gguf:q8_0",
        "mlx-community/small-4bit",
    ]
    assert _entries(isolated_env)["mlx-community/small-4bit"]["format"] == "mlx"
    entry = _entries(isolated_env)["bartowski/small-gguf:q8_0"]
    assert entry["tool"] == "lmstudio" and "mmproj-Small-F16.gguf" in {f["path"] for f in entry["files"]}
    assert (home / ".lmstudio-home-pointer").stat().st_mtime_ns == pointer_before

    cache = home / "llama-cache"
    gguf = modelfiles.gguf_bytes(arch="llama", name="Flat", file_type=7)
    (cache).mkdir()
    (cache / "someone_Flat-GGUF_Flat-Q8_0.gguf").write_bytes(gguf)
    (cache / "someone_Flat-GGUF_Flat-Q8_0.gguf.etag").write_text(f'"{hashlib.sha256(gguf).hexdigest()}"')
    (cache / "manifest=someone=Flat-GGUF=Q8_0.json").write_text(
        json.dumps({"ggufFile": {"rfilename": "Flat-Q8_0.gguf"}})
    )
    out = run_cli("import", "llama.cpp", "--json", env={"LLAMA_CACHE": str(cache)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["data"][0]["added"] == ["someone/flat-gguf:q8_0"]
    flat = _entries(isolated_env)["someone/flat-gguf:q8_0"]
    assert flat["tool"] == "llama.cpp" and flat["files"][0]["sha256"] == hashlib.sha256(gguf).hexdigest()


def test_remove_an_ollama_model_as_ollama_rm_would(run_cli, isolated_env) -> None:
    from tests import modelfiles
    from tests.shelves import ollama_model

    models = isolated_env["home"] / "ollama-store"
    a = modelfiles.gguf_bytes(arch="llama", name="A", file_type=15)
    b = modelfiles.gguf_bytes(arch="llama", name="B", file_type=7)
    first = ollama_model(models, "registry.ollama.ai/library/a/latest", a)
    second = ollama_model(models, "registry.ollama.ai/library/b/latest", b)  # shares the template blob
    env = {"OLLAMA_MODELS": str(models)}
    assert run_cli("import", "ollama", env=env).returncode == 0
    # Not named: another tool's shelf stays untouched.
    kept = run_cli("remove", "ollama/library/a:latest", "--delete-files", "--yes", env=env)
    assert kept.returncode == 2 and "another tool's shelf" in kept.stderr and first.exists()
    gone = run_cli(
        "remove", "ollama/library/a:latest", "--copy", "ollama", "--delete-files", "--yes", "--json", env=env
    )
    assert gone.returncode == 0, gone.stderr
    data = json.loads(gone.stdout)["data"]
    assert not first.exists() and second.exists()
    template = "sha256-" + hashlib.sha256(b"{{ .Prompt }}").hexdigest()
    assert (models / "blobs" / template).exists()
    assert any(k["path"].endswith(template) and "ollama/library/b" in k["reason"] for k in data["keep"])
    assert not (models / "blobs" / ("sha256-" + hashlib.sha256(a).hexdigest())).exists()
    assert run_cli("verify", "ollama/library/b:latest", script="imageworks-loader", env=env).returncode == 0


def test_import_lmstudio_over_our_own_lmstudio_location_changes_nothing(
    fake_hub: FakeHub, run_cli, isolated_env
) -> None:
    repo = samples.add_gguf_model(fake_hub)
    home = isolated_env["home"] / "lms"
    env = {"LMSTUDIO_HOME": str(home), "IMAGEWORKS_LMSTUDIO_ROOT": str(home / "models")}
    (home / "models").mkdir(parents=True)
    got = run_cli("download", repo.repo_id, "--engine", "native", "--location", "windows_lmstudio", env=env)
    assert got.returncode == 0, got.stderr
    before = (isolated_env["registry"] / "model_registry.discovered.json").read_bytes()
    out = run_cli("import", "lmstudio", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["data"][0]
    assert data["added"] == [] and data["unchanged"] == ["theowner/tiny-llama-gguf:q4_k_m"]
    assert (
        isolated_env["registry"] / "model_registry.discovered.json"
    ).read_bytes() == before  # digests kept


def test_import_reports_broken_shelves_and_refuses_a_missing_path(run_cli, isolated_env) -> None:
    cache = isolated_env["home"] / "cache"
    (cache / "models--a--b").mkdir(parents=True)
    (cache / "models--a--b" / "snapshots").write_text("not a folder")  # a corrupted repo
    locked = cache / "models--c--d" / "snapshots"
    locked.mkdir(parents=True)
    out = run_cli("import", "hf-cache", str(cache), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["data"][0]["added"] == []
    missing = run_cli("import", "ollama", str(isolated_env["home"] / "nope"))
    assert (
        missing.returncode == 2 and "is not a folder" in missing.stderr and "Traceback" not in missing.stderr
    )


def test_scan_recognises_other_tools_layouts_and_imports_them(
    fake_hub: FakeHub, run_cli, isolated_env
) -> None:
    from tests import modelfiles
    from tests.shelves import ollama_model

    dense = samples.add_safetensors_model(fake_hub)
    cache = isolated_env["home"] / "hub"
    _hf_download(fake_hub, dense.repo_id, cache)
    dry = run_cli("scan", "--base", str(cache), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    data = json.loads(dry.stdout)["data"]
    assert data["shelf"] == "hf-cache" and data["import"][0]["added"] == ["theowner/tiny-llama"]
    assert not (isolated_env["registry"] / "model_registry.discovered.json").exists()
    out = run_cli("scan", "--base", str(cache))
    assert out.returncode == 0, out.stderr
    assert "hf-cache's layout" in out.stdout
    assert _entries(isolated_env)["theowner/tiny-llama"]["tool"] == "hf-cache"  # not local/hub/models--...
    # A second preview says what a second import does: nothing (it claimed "gained a copy").
    again = json.loads(run_cli("scan", "--base", str(cache), "--dry-run", "--json").stdout)["data"]["import"][
        0
    ]
    assert (again["added"], again["copies"], again["unchanged"]) == ([], [], ["theowner/tiny-llama"])
    models = isolated_env["home"] / "ollama"
    ollama_model(
        models, "registry.ollama.ai/library/tiny/latest", modelfiles.gguf_bytes(arch="llama", name="T")
    )
    scanned = json.loads(run_cli("scan", "--base", str(models), "--json").stdout)["data"]
    assert scanned["shelf"] == "ollama" and scanned["import"][0]["added"] == ["ollama/library/tiny:latest"]
