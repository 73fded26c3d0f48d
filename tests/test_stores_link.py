"""link NAME --to hf-cache|ollama|lmstudio|PATH (issue 11): read back by the real clients."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.fakehub import samples
from tests.fakehub.server import FakeHub

_READ_BACK = """
import json, sys
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download
repo, cache, name = sys.argv[1], sys.argv[2], sys.argv[3]
folder = snapshot_download(repo, local_files_only=True, cache_dir=cache)
one = hf_hub_download(repo, name, local_files_only=True, cache_dir=cache)
info = scan_cache_dir(cache)
repos = {r.repo_id: r.size_on_disk for r in info.repos}
print(json.dumps({"folder": folder, "file": one, "repos": repos, "warnings": [str(w) for w in info.warnings]}))
"""


def _offline_read(repo: str, cache: Path, name: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _READ_BACK, repo, str(cache), name],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _entries(isolated_env: dict[str, Path]) -> dict:
    return json.loads((isolated_env["registry"] / "model_registry.discovered.json").read_text())["models"]


def test_link_into_hf_cache_is_read_by_the_real_client(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    dense = samples.add_safetensors_model(fake_hub)
    assert run_cli("download", dense.repo_id, "--engine", "native", "--location", "linux_wsl").returncode == 0
    out = run_cli("link", "theowner/tiny-llama", "--to", "hf-cache", "--json")
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)["data"]
    assert result["method"] == "hardlink" and result["recorded"]
    cache = isolated_env["hf_home"] / "hub"
    read = _offline_read(dense.repo_id, cache, "config.json")
    snapshot = cache / "models--TheOwner--Tiny-Llama" / "snapshots" / dense.commit
    assert read["folder"] == str(snapshot) and not read["warnings"]
    assert Path(read["file"]).read_bytes() == dense.bytes_of("config.json")
    held = {f["path"] for f in _entries(isolated_env)["theowner/tiny-llama"]["files"]}
    distinct = {hashlib.sha256(dense.bytes_of(p)).digest(): len(dense.bytes_of(p)) for p in held}
    assert read["repos"][dense.repo_id] == sum(distinct.values())  # identical small files share one blob
    ours = isolated_env["models"] / "TheOwner" / "Tiny-Llama" / "model.safetensors"
    blob = (snapshot / "model.safetensors").resolve()
    assert blob.name == hashlib.sha256(dense.bytes_of("model.safetensors")).hexdigest()
    assert os.stat(blob).st_ino == os.stat(ours).st_ino  # held once
    assert os.readlink(snapshot / "model.safetensors") == f"../../blobs/{blob.name}"
    assert (cache / "models--TheOwner--Tiny-Llama" / "refs" / "main").read_text() == dense.commit
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    assert not (cache / "models--TheOwner--Tiny-Llama" / "trees").exists()
    # Idempotent.
    again = json.loads(run_cli("link", "theowner/tiny-llama", "--to", "hf-cache", "--json").stdout)["data"][0]
    assert again["method"] == "present" and not again["recorded"]
    assert len(_entries(isolated_env)["theowner/tiny-llama"]["copies"]) == 1
    # remove knows what it made: the cache copy goes, our files stay, the cache stays valid.
    gone = run_cli("remove", "theowner/tiny-llama", "--copy", "hf-cache", "--delete-files", "--yes", "--json")
    assert gone.returncode == 0, gone.stderr
    assert not snapshot.exists() and not blob.exists() and ours.exists()
    assert not (cache / "models--TheOwner--Tiny-Llama" / "refs" / "main").exists()
    assert "copies" not in _entries(isolated_env)["theowner/tiny-llama"]
    assert run_cli("verify", "theowner/tiny-llama", script="imageworks-loader").returncode == 0


def test_link_one_gguf_quant_to_hf_cache_lmstudio_and_a_folder(
    fake_hub: FakeHub, run_cli, isolated_env
) -> None:
    repo = samples.add_gguf_model(fake_hub)
    assert run_cli("download", repo.repo_id, "--engine", "native", "--location", "linux_wsl").returncode == 0
    folder = isolated_env["home"] / "shared"
    lms = isolated_env["home"] / ".lmstudio"
    out = run_cli(
        "link", "tiny-llama-gguf", "--to", "hf-cache", "--to", "lmstudio", "--to", str(folder), "--json"
    )
    assert out.returncode == 0, out.stderr
    assert [r["method"] for r in json.loads(out.stdout)["data"]] == ["hardlink", "hardlink", "hardlink"]
    read = _offline_read(repo.repo_id, isolated_env["hf_home"] / "hub", "Tiny-Llama-3B-Q4_K_M.gguf")
    assert sorted(p.name for p in Path(read["folder"]).iterdir()) == [
        "README.md", "Tiny-Llama-3B-Q4_K_M.gguf", "mmproj-Tiny-Llama-3B-F16.gguf",
    ]  # fmt: skip
    src = isolated_env["models"] / "TheOwner" / "Tiny-Llama-GGUF" / "Tiny-Llama-3B-Q4_K_M.gguf"
    for target in (lms / "models" / "TheOwner" / "Tiny-Llama-GGUF", folder):
        assert os.stat(target / "Tiny-Llama-3B-Q4_K_M.gguf").st_ino == os.stat(src).st_ino
    copies = _entries(isolated_env)["theowner/tiny-llama-gguf:q4_k_m"]["copies"]
    assert sorted(c["tool"] for c in copies) == ["hf-cache", "imageworks", "lmstudio"]
    listed = json.loads(run_cli("list", "--json").stdout)["data"][0]["copies"]
    assert listed[0] == "linux_wsl" and set(listed[1:]) == {"hf-cache", "lmstudio", str(folder)}
    gone = run_cli("remove", "tiny-llama-gguf", "--copy", str(folder), "--delete-files", "--yes", "--json")
    assert gone.returncode == 0, gone.stderr
    data = json.loads(gone.stdout)["data"]
    assert data["bytes_freed"] == 0 and not folder.exists() and src.exists()  # hardlinks: nothing freed


def test_link_to_a_folder_never_replaces_another_models_files(
    fake_hub: FakeHub, run_cli, isolated_env
) -> None:
    dense, awq = samples.add_safetensors_model(fake_hub), samples.add_awq_model(fake_hub)
    for repo in (dense, awq):
        assert run_cli("download", repo.repo_id, "--engine", "native").returncode == 0
    folder = isolated_env["home"] / "shelf"
    assert run_cli("link", "theowner/tiny-llama", "--to", str(folder)).returncode == 0
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    clash = run_cli("link", "llama-3-8b-instruct-awq", "--to", str(folder))
    assert clash.returncode == 2 and "already exists with other contents" in clash.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert "copies" not in _entries(isolated_env)["thebloke/llama-3-8b-instruct-awq"]
    again = run_cli("link", "theowner/tiny-llama", "--to", str(folder))  # the same model again: fine
    assert again.returncode == 0, again.stderr


def test_link_to_ollama_without_a_server_writes_what_ollama_writes(
    fake_hub: FakeHub, run_cli, isolated_env
) -> None:
    repo = samples.add_gguf_model(fake_hub)
    assert run_cli("download", repo.repo_id, "--engine", "native", "--location", "linux_wsl").returncode == 0
    models = isolated_env["home"] / "ollama-models"
    env = {"OLLAMA_MODELS": str(models), "OLLAMA_HOST": "127.0.0.1:9"}  # nothing listens there
    out = run_cli("link", "tiny-llama-gguf", "--to", "ollama", env=env)
    assert out.returncode == 0, out.stderr
    assert "Ollama's internal format" in out.stderr
    manifest = models / "manifests" / "hf.co" / "theowner" / "tiny-llama-gguf" / "q4_k_m"
    raw = manifest.read_bytes()
    assert raw.endswith(b"}\n") and b": " not in raw  # Go's json.Encoder: compact, one newline
    doc = json.loads(raw)
    assert list(doc) == ["schemaVersion", "mediaType", "config", "layers"]
    assert doc["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    gguf = repo.bytes_of("Tiny-Llama-3B-Q4_K_M.gguf")
    model_layer = doc["layers"][0]
    assert model_layer == {
        "mediaType": "application/vnd.ollama.image.model",
        "digest": "sha256:" + hashlib.sha256(gguf).hexdigest(),
        "size": len(gguf),
    }
    assert doc["layers"][1]["mediaType"] == "application/vnd.ollama.image.projector"
    config_blob = models / "blobs" / doc["config"]["digest"].replace(":", "-")
    assert hashlib.sha256(config_blob.read_bytes()).hexdigest() == doc["config"]["digest"][7:]
    config = json.loads(config_blob.read_bytes())
    assert config["model_format"] == "gguf" and config["file_type"] == "Q4_K_M"
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in doc["layers"]]
    blob = models / "blobs" / model_layer["digest"].replace(":", "-")
    src = isolated_env["models"] / "TheOwner" / "Tiny-Llama-GGUF" / "Tiny-Llama-3B-Q4_K_M.gguf"
    assert os.stat(blob).st_ino == os.stat(src).st_ino
    # Our own import reads it back as Ollama's: the same model, so no new entry.
    imported = json.loads(run_cli("import", "ollama", "--json", env=env).stdout)["data"][0]
    assert imported["added"] == []
    again = run_cli("link", "tiny-llama-gguf", "--to", "ollama", "--json", env=env)
    assert json.loads(again.stdout)["data"][0]["recorded"] is False
    # remove knows what it made: manifest and blobs we wrote go, our GGUF stays.
    dry = run_cli(
        "remove", "tiny-llama-gguf", "--copy", "ollama", "--delete-files", "--dry-run", "--json", env=env
    )
    planned = [a["path"] for a in json.loads(dry.stdout)["data"]["delete"]]
    assert str(manifest) in planned and len(planned) == len(set(planned)), planned  # each file once
    gone = run_cli("remove", "tiny-llama-gguf", "--copy", "ollama", "--delete-files", "--yes", env=env)
    assert gone.returncode == 0, gone.stderr
    assert not manifest.exists() and not blob.exists() and not config_blob.exists() and src.exists()


class _FakeOllama(BaseHTTPRequestHandler):
    blobs: dict[str, bytes]
    created: list[dict]
    log: list[tuple[str, str]]

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, code: int, body: bytes = b"") -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.log.append(("GET", self.path))
        self._reply(200, b'{"version":"0.13.0"}') if self.path == "/api/version" else self._reply(404)

    def do_HEAD(self) -> None:
        self.log.append(("HEAD", self.path))
        digest = self.path.removeprefix("/api/blobs/")
        self._reply(200 if digest in self.blobs else 404)

    def do_DELETE(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.log.append(("DELETE", self.path + " " + self.rfile.read(length).decode()))
        self._reply(200)

    def do_POST(self) -> None:
        self.log.append(("POST", self.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path.startswith("/api/blobs/"):
            digest = self.path.removeprefix("/api/blobs/")
            if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                return self._reply(400, b'{"error":"digest mismatch"}')
            self.blobs[digest] = body
            return self._reply(201)
        if self.path == "/api/create":
            request = json.loads(body)
            missing = [d for d in request["files"].values() if d not in self.blobs]
            if missing:
                return self._reply(400, json.dumps({"error": f"missing {missing[0]}"}).encode())
            self.created.append(request)
            return self._reply(200, b'{"status":"parsing GGUF"}\n{"status":"success"}\n')
        self._reply(404)


def test_link_to_ollama_through_its_server(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_gguf_model(fake_hub)
    assert run_cli("download", repo.repo_id, "--engine", "native", "--location", "linux_wsl").returncode == 0
    handler: type[_FakeOllama] = type("Handler", (_FakeOllama,), {"blobs": {}, "created": [], "log": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {
            "OLLAMA_HOST": f"127.0.0.1:{server.server_address[1]}",
            "OLLAMA_MODELS": str(isolated_env["home"] / "o"),
        }
        out = run_cli("link", "tiny-llama-gguf", "--to", "ollama", "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["data"][0]["method"] == "server"
        (created,) = handler.created
        assert created["model"] == "hf.co/theowner/tiny-llama-gguf:q4_k_m"
        assert created["parameters"]["num_ctx"] > 0
        gguf = repo.bytes_of("Tiny-Llama-3B-Q4_K_M.gguf")
        assert created["files"]["Tiny-Llama-3B-Q4_K_M.gguf"] == "sha256:" + hashlib.sha256(gguf).hexdigest()
        assert len(handler.blobs) == 2  # model + projector, uploaded once
        handler.log.clear()
        assert run_cli("link", "tiny-llama-gguf", "--to", "ollama", env=env).returncode == 0
        assert not [
            p for m, p in handler.log if m == "POST" and p.startswith("/api/blobs/")
        ]  # HEAD said present
    finally:
        server.shutdown()
        server.server_close()


def test_hostile_registry_values_never_write_or_delete_outside(run_cli, isolated_env, tmp_path) -> None:
    from imageworks.registry import FileRecord, ModelEntry, RegistryStore, Source
    from imageworks.registry.schema import Copy, CopyFile

    folder = isolated_env["models"] / "evil" / "model"
    folder.mkdir(parents=True)
    (folder / "m.gguf").write_bytes(b"GGUF")
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    with RegistryStore(isolated_env["registry"]).transaction(["seed"]) as reg:
        reg.put(
            ModelEntry(
                name="evil/model",
                source=Source(
                    provider="hf", repo_id="evil/..", revision="../../../../escape", commit="../../x"
                ),
                format="gguf",
                path=str(folder),
                files=[FileRecord(path="m.gguf", size=4)],
                copies=[
                    Copy(
                        path=str(
                            isolated_env["hf_home"] / "hub" / "models--evil--model" / "snapshots" / ("a" * 40)
                        ),
                        tool="hf-cache",
                        files=[CopyFile(path="m.gguf", at="../../../../../precious.txt")],
                        made=["../../../../../precious.txt"],
                    )
                ],
            )
        )
    out = run_cli("link", "evil/model", "--to", "hf-cache")
    assert out.returncode == 2 and "not a git commit id" in out.stderr and "Traceback" not in out.stderr
    gone = run_cli("remove", "evil/model", "--copy", "hf-cache", "--delete-files", "--yes", "--json")
    assert precious.read_text() == "keep", gone.stdout + gone.stderr
