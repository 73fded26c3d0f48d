"""`imageworks-download download` end to end: the real CLI in a subprocess against the fake Hub."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import modelfiles
from tests.fakehub import FakeHub, samples

TOKEN = "hf_aliceSECRETtoken0123456789"


def registry(dirs: dict[str, Path]) -> dict:
    path = dirs["registry"] / "model_registry.discovered.json"
    return json.loads(path.read_text())["models"] if path.exists() else {}


def history(dirs: dict[str, Path]) -> list[dict]:
    path = dirs["registry"] / "model_registry.history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cdn_gets(hub: FakeHub) -> list:
    return [r for r in hub.requests if r.server == "cdn" and r.method == "GET"]


def big_safetensors(n_floats: int) -> bytes:
    """A valid safetensors file whose data is random (so a misplaced byte cannot go unnoticed)."""
    data = modelfiles.safetensors_bytes({"w": ("F32", (n_floats,))})
    head = 8 + int.from_bytes(data[:8], "little")
    return data[:head] + os.urandom(len(data) - head)


def add_big_model(hub: FakeHub, repo_id: str = "Owner/Big", n_floats: int = 1_000_000) -> dict[str, bytes]:
    files = {
        "config.json": json.dumps(
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32"}
        ).encode(),
        "model.safetensors": big_safetensors(n_floats),
        "README.md": samples.README,
    }
    hub.add_repo(repo_id, files)
    return files


def assert_same_files(folder: Path, files: dict[str, bytes]) -> None:
    for path, content in files.items():
        assert (folder / path).read_bytes() == content, path
    leftovers = [p.name for p in folder.rglob("*") if "imageworks-partial" in p.name]
    assert not leftovers


@pytest.mark.parametrize("engine", ["native", "aria2"])
def test_download_record_and_up_to_date(fake_hub: FakeHub, run_cli, isolated_env, engine: str) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    fake_hub.page_size = 4
    result = run_cli("download", repo.repo_id.lower(), "--engine", engine, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    folder = isolated_env["models"] / "TheOwner" / "Tiny-Llama"
    assert data["path"] == str(folder) and data["name"] == "theowner/tiny-llama" and data["engine"] == engine
    assert data["format"] == "safetensors" and data["recorded"] and not data["up_to_date"]
    wanted = ["LICENSE", "README.md", "config.json", "generation_config.json", "model.safetensors",
              "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]  # fmt: skip
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == wanted
    assert_same_files(folder, {p: repo.bytes_of(p) for p in wanted})
    assert any("skipped pytorch weights" in n for n in data["notes"])
    assert len([r for r in fake_hub.requests if "/tree/" in r.path]) > 1  # pagination followed

    entry = registry(isolated_env)["theowner/tiny-llama"]
    assert entry["source"] == {
        "provider": "hf",
        "repo_id": repo.repo_id,
        "revision": "main",
        "commit": repo.commit,
        "url": None,
        # The selection as the user gave it (issue 12: `update` repeats it).
        "selection": {"format": None, "quant": None, "include": [], "exclude": []},
    }
    assert entry["location"] == "linux_wsl" and entry["path"] == str(folder)
    weights = next(f for f in entry["files"] if f["path"] == "model.safetensors")
    assert weights["sha256"] == hashlib.sha256(repo.bytes_of("model.safetensors")).hexdigest()
    assert {f["digest_source"] for f in entry["files"]} == {"hub"}  # never replaced from disk (issue 9.3)
    assert entry["quantization"] == "bf16" and "vllm" in entry["serve"]
    assert len(history(isolated_env)) == 1 and "download" in history(isolated_env)[0]["command"]

    # Again: up to date, nothing fetched, the registry untouched.
    before = (isolated_env["registry"] / "model_registry.json").read_bytes()
    fake_hub.clear_requests()
    again = run_cli("download", repo.repo_id, "--engine", engine, "--json")
    assert again.returncode == 0, again.stderr
    redo = json.loads(again.stdout)["data"]
    assert redo["up_to_date"] and not redo["recorded"] and redo["bytes_fetched"] == 0
    # "Within a second": the work after start-up; generous because other test suites share the CPUs.
    assert redo["timings"]["total"] < 2.0
    assert not cdn_gets(fake_hub) and not [r for r in fake_hub.requests if "/resolve/" in r.path]
    assert (isolated_env["registry"] / "model_registry.json").read_bytes() == before
    assert len(history(isolated_env)) == 1

    # --force fetches everything again.
    fake_hub.clear_requests()
    forced = run_cli("download", repo.repo_id, "--engine", engine, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["data"]["bytes_fetched"] == sum(len(repo.bytes_of(p)) for p in wanted)
    assert_same_files(folder, {p: repo.bytes_of(p) for p in wanted})


def test_dry_run_shows_the_plan_and_fetches_nothing(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_gguf_model(fake_hub)
    isolated_env["lmstudio"].mkdir()  # GGUF goes to LM Studio's folder when it exists
    result = run_cli("download", repo.repo_id, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    envelope = json.loads(result.stdout)
    assert envelope["schema"] == "imageworks.download" and envelope["version"] == 1
    plan = envelope["data"]["plan"]
    assert envelope["data"]["dry_run"] and plan["location"] == "windows_lmstudio"
    assert plan["folder"] == str(isolated_env["lmstudio"] / "TheOwner" / "Tiny-Llama-GGUF")
    assert plan["quants"] == ["Q4_K_M"] and set(plan["available_quants"]) == {"Q4_K_M", "Q5_K_S", "Q8_0"}
    assert [f["path"] for f in plan["files"]] == [
        "README.md",
        "Tiny-Llama-3B-Q4_K_M.gguf",
        "mmproj-Tiny-Llama-3B-F16.gguf",
    ]
    assert plan["bytes_remaining"] == plan["bytes_total"] > 0 and plan["enough_space"]
    assert not any(f["present"] for f in plan["files"])
    assert not cdn_gets(fake_hub) and not registry(isolated_env)
    assert not Path(plan["folder"]).exists()

    human = run_cli("download", repo.repo_id, "--quant", "Q8_0", "--dry-run")
    assert human.returncode == 0, human.stderr
    assert (
        "Tiny-Llama-3B-Q8_0.gguf" in human.stdout and "fetch" in human.stdout and "to fetch" in human.stdout
    )


def test_gguf_quants_are_separate_entries(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_gguf_model(fake_hub)
    first = run_cli("download", repo.repo_id, "--engine", "native", "--location", "linux_wsl")
    assert first.returncode == 0, first.stderr
    assert "chose quant Q4_K_M" in first.stderr
    second = run_cli(
        "download", repo.repo_id, "--engine", "native", "--location", "linux_wsl", "--quant", "q8_0", "--json"
    )
    assert second.returncode == 0, second.stderr
    data = json.loads(second.stdout)["data"]
    assert data["name"] == "theowner/tiny-llama-gguf:q8_0" and data["quantization"] == "Q8_0"
    # The shared README and projector were already there and verified: not fetched twice.
    assert data["files_fetched"] == 1
    entries = registry(isolated_env)
    assert sorted(entries) == ["theowner/tiny-llama-gguf:q4_k_m", "theowner/tiny-llama-gguf:q8_0"]
    q4 = entries["theowner/tiny-llama-gguf:q4_k_m"]
    assert {f["path"] for f in q4["files"]} == {
        "README.md",
        "Tiny-Llama-3B-Q4_K_M.gguf",
        "mmproj-Tiny-Llama-3B-F16.gguf",
    }
    assert "mmproj" in q4["serve"]["ollama"]["modelfile"]
    # The same model and quant again, typed differently: still one entry for it.
    third = run_cli(
        "download", "hf://theowner/tiny-llama-gguf@main", "--engine", "native", "--location", "linux_wsl"
    )
    assert third.returncode == 0 and "up to date" in third.stdout
    assert sorted(registry(isolated_env)) == sorted(entries)


def test_several_quants_are_recorded_as_one_entry_each(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_split_gguf_model(fake_hub)
    args = ("download", repo.repo_id, "--engine", "native", "--location", "linux_wsl")
    result = run_cli(*args, "--quant", "Q4_K_M,q8_0", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    base = "theowner/big-llama-gguf"
    assert data["names"] == [f"{base}:q4_k_m", f"{base}:q8_0"] and data["name"] == data["names"][0]
    assert [(e["name"], e["quantization"]) for e in data["entries"]] == [
        (f"{base}:q4_k_m", "Q4_K_M"),
        (f"{base}:q8_0", "Q8_0"),
    ]
    entries = registry(isolated_env)
    assert sorted(entries) == data["names"]
    q4 = [f["path"] for f in entries[f"{base}:q4_k_m"]["files"]]
    assert q4 == ["Q4_K_M/Big-Llama-70B-Q4_K_M-00001-of-00003.gguf",
                  "Q4_K_M/Big-Llama-70B-Q4_K_M-00002-of-00003.gguf",
                  "Q4_K_M/Big-Llama-70B-Q4_K_M-00003-of-00003.gguf", "README.md"]  # fmt: skip
    q8 = entries[f"{base}:q8_0"]
    assert [f["path"] for f in q8["files"]][-1] == "README.md" and len(q8["files"]) == 3
    assert all(f["sha256"] for e in entries.values() for f in e["files"])
    assert entries[f"{base}:q4_k_m"]["path"] == q8["path"]
    (line,) = history(isolated_env)  # one transaction for both entries
    assert "Q4_K_M,q8_0" in str(line["command"])

    # --quant all adds the third quant and leaves the other two as they are.
    every = run_cli(*args, "--quant", "all")
    assert every.returncode == 0, every.stderr
    assert f"downloaded {base}:q2_k, {base}:q4_k_m, {base}:q8_0: 1 file," in every.stdout  # not "1 files"
    assert sorted(registry(isolated_env)) == [f"{base}:q2_k", f"{base}:q4_k_m", f"{base}:q8_0"]
    assert registry(isolated_env)[f"{base}:q8_0"] == q8
    assert len(history(isolated_env)) == 2
    again = run_cli(*args, "--quant", "all")
    assert again.returncode == 0 and f"{base}:q8_0 are up to date" in again.stdout
    assert len(history(isolated_env)) == 2


def test_gated_repo_with_and_without_token(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_gated_model(fake_hub)
    fake_hub.tokens[TOKEN] = "alice"
    anonymous = run_cli("download", repo.repo_id, "--engine", "native")
    assert anonymous.returncode == 2
    assert (
        "gated" in anonymous.stderr
        and "hf auth login" in anonymous.stderr
        and "Traceback" not in anonymous.stderr
    )

    no_access = run_cli("download", repo.repo_id, "--engine", "native", env={"HF_TOKEN": TOKEN})
    assert no_access.returncode == 2 and "accept the licence" in no_access.stderr

    fake_hub.grant(repo.repo_id, "alice")
    fake_hub.clear_requests()
    # --token wins over HF_TOKEN (flag > env > token file).
    ok = run_cli(
        "download", repo.repo_id, "--engine", "native", "--token", TOKEN, env={"HF_TOKEN": "hf_stale"}
    )
    assert ok.returncode == 0, ok.stderr
    assert cdn_gets(fake_hub), "LFS files come from the CDN"
    # The CDN answers 403 to any request carrying a token: success proves none was forwarded.
    assert not any(r.authorized for r in fake_hub.requests if r.server == "cdn")
    assert any(r.authorized for r in fake_hub.requests if r.server == "hub")
    for name in ("model_registry.discovered.json", "model_registry.json", "model_registry.history.jsonl"):
        assert TOKEN not in (isolated_env["registry"] / name).read_text()
    assert TOKEN not in ok.stdout + ok.stderr


def test_token_file_from_hf_auth_login(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_gated_model(fake_hub)
    fake_hub.tokens[TOKEN] = "alice"
    fake_hub.grant(repo.repo_id, "alice")
    isolated_env["hf_home"].mkdir()
    (isolated_env["hf_home"] / "token").write_text(TOKEN + "\n")
    ok = run_cli("download", repo.repo_id, "--engine", "native", "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == ""


def test_case_insensitive_id_and_branch_with_slash(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_sharded_model(fake_hub)
    pr = fake_hub.add_revision(repo.repo_id, {"README.md": b"# the PR version\n"}, branch="refs/pr/1")
    result = run_cli("download", "theowner/TINY-llama-sharded@refs/pr/1", "--engine", "native", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    folder = isolated_env["models"] / "TheOwner" / "Tiny-Llama-Sharded@refs-pr-1"
    assert data["path"] == str(folder) and data["name"] == "theowner/tiny-llama-sharded@refs-pr-1"
    assert (folder / "README.md").read_bytes() == b"# the PR version\n"
    entry = registry(isolated_env)[data["name"]]
    assert entry["source"]["repo_id"] == repo.repo_id and entry["source"]["revision"] == "refs/pr/1"
    assert entry["source"]["commit"] == pr
    url = run_cli("download", f"{fake_hub.endpoint}/{repo.repo_id}/tree/refs%2Fpr%2F1", "--engine", "native")
    assert url.returncode == 0 and "up to date" in url.stdout


@pytest.mark.parametrize("engine", ["native", "aria2"])
def test_dropped_connection_resumes(fake_hub: FakeHub, run_cli, isolated_env, engine: str) -> None:
    files = add_big_model(fake_hub, n_floats=1_200_000)
    size = len(files["model.safetensors"])
    fault = fake_hub.fail("model.safetensors", "drop", after_bytes=size // 8, server="cdn", times=2)
    result = run_cli("download", "Owner/Big", "--engine", engine, "--connections", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert fault.hits >= 1
    assert_same_files(isolated_env["models"] / "Owner" / "Big", files)
    ranged = [r for r in cdn_gets(fake_hub) if "range" in r.headers]
    assert ranged, "the remaining bytes were asked for with Range requests"


def test_stalled_connection_is_restarted(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    files = add_big_model(fake_hub, n_floats=250_000)
    fault = fake_hub.fail(
        "model.safetensors", "stall", after_bytes=100_000, seconds=30, server="cdn", times=1
    )
    started = time.monotonic()
    result = run_cli("download", "Owner/Big", "--engine", "native", "--stall-timeout", "0.5")
    assert result.returncode == 0, result.stderr
    assert fault.hits == 1 and time.monotonic() - started < 15
    assert_same_files(isolated_env["models"] / "Owner" / "Big", files)


def test_rate_limited_hub_is_retried_after_retry_after(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_awq_model(fake_hub)
    fault = fake_hub.fail("/api/models/*", "status", status=429, retry_after=1, times=1)
    started = time.monotonic()
    result = run_cli("download", repo.repo_id, "--engine", "native", "--json")
    assert result.returncode == 0, result.stderr
    assert fault.hits == 1 and time.monotonic() - started >= 1.0
    assert "rate limited" in result.stderr
    data = json.loads(result.stdout)["data"]
    assert data["format"] == "awq" and data["quantization"] == "awq-4bit-g128"


def test_corrupt_blob_is_not_recorded(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    fake_hub.corrupt(repo.repo_id, "model.safetensors")
    result = run_cli("download", repo.repo_id, "--engine", "native")
    assert result.returncode == 1
    expected = fake_hub.file(repo.repo_id, "model.safetensors").sha256
    assert "model.safetensors" in result.stderr and expected in result.stderr and "mismatch" in result.stderr
    assert "Traceback" not in result.stderr
    folder = isolated_env["models"] / "TheOwner" / "Tiny-Llama"
    assert not (folder / "model.safetensors").exists()
    assert not registry(isolated_env) and not history(isolated_env)


@pytest.mark.parametrize("engine", ["native", "aria2"])
def test_failed_force_keeps_the_verified_copy(fake_hub: FakeHub, run_cli, isolated_env, engine: str) -> None:
    """`--force` replaces a file only with verified bytes: a failed re-fetch leaves the old copy in place."""
    repo = samples.add_safetensors_model(fake_hub)
    assert run_cli("download", repo.repo_id, "--engine", engine).returncode == 0
    weights = isolated_env["models"] / "TheOwner" / "Tiny-Llama" / "model.safetensors"
    fake_hub.corrupt(repo.repo_id, "model.safetensors")
    forced = run_cli("download", repo.repo_id, "--engine", engine, "--force")
    assert forced.returncode == 1 and "mismatch" in forced.stderr
    assert weights.read_bytes() == repo.bytes_of("model.safetensors")
    assert run_cli("verify", "theowner/tiny-llama").returncode == 0


def test_path_traversal_is_refused(fake_hub: FakeHub, run_cli, isolated_env, tmp_path: Path) -> None:
    repo = samples.add_hostile_model(fake_hub)
    result = run_cli(
        "download",
        repo.repo_id,
        "--engine",
        "native",
        "--include",
        "*",
        "--location",
        str(tmp_path / "target"),
    )
    assert result.returncode != 0
    assert "refusing" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/evil.txt").exists()
    assert not cdn_gets(fake_hub) and not registry(isolated_env)


@pytest.mark.parametrize("engine", ["native", "aria2"])
def test_kill_9_mid_download_then_resume(fake_hub: FakeHub, isolated_env, engine: str) -> None:
    files = add_big_model(fake_hub, n_floats=1_500_000)  # 6 MB
    size = len(files["model.safetensors"])
    fake_hub.throttle(total_bps=1_500_000)
    folder = isolated_env["models"] / "Owner" / "Big"
    partial = folder / ".model.safetensors.imageworks-partial"
    cmd = [
        sys.executable,
        "-m",
        "imageworks.cli.main",
        "download",
        "Owner/Big",
        "--engine",
        engine,
        "--quiet",
    ]
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_blocks * 512 >= size // 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never got going")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (folder / "model.safetensors").exists()
    if engine == "aria2":
        # The orphaned aria2c notices its parent is gone within about a second (--stop-with-process) and
        # saves its control file as it exits; a re-run racing it could be left with that stale file.
        _wait_for_exit(f"--stop-with-process={proc.pid}")
    fake_hub.throttle()
    fake_hub.clear_requests()
    rerun = subprocess.run([*cmd[:-1], "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert rerun.returncode == 0, rerun.stderr
    data = json.loads(rerun.stdout)["data"]
    assert 0 < data["bytes_fetched"] < size + 10_000 and data["bytes_resumed"] > 0
    assert_same_files(folder, files)
    assert registry(isolated_env)["owner/big"]["files"]


def _wait_for_exit(pattern: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout.split()
        if not alive:
            return
        time.sleep(0.1)
    pytest.fail(f"a process matching {pattern!r} outlived its parent")


def test_direct_url_with_sha256(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_gguf_model(fake_hub)
    url = fake_hub.cdn_url_for(repo.repo_id, "Tiny-Llama-3B-Q8_0.gguf")
    content = repo.bytes_of("Tiny-Llama-3B-Q8_0.gguf")
    wrong = run_cli("download", url, "--engine", "native", "--sha256", "0" * 64)
    assert wrong.returncode == 1 and "0" * 64 in wrong.stderr and "mismatch" in wrong.stderr
    assert not registry(isolated_env)

    good = run_cli(
        "download", url, "--engine", "native", "--sha256", hashlib.sha256(content).hexdigest(), "--json"
    )
    assert good.returncode == 0, good.stderr
    data = json.loads(good.stdout)["data"]
    host = "127.0.0.2"
    folder = isolated_env["models"] / "url" / host / "Tiny-Llama-3B-Q8_0"
    assert data["path"] == str(folder) and (folder / "Tiny-Llama-3B-Q8_0.gguf").read_bytes() == content
    assert data["format"] == "gguf" and data["quantization"] == "Q8_0"
    entry = registry(isolated_env)[data["name"]]
    assert data["name"] == "url/tiny-llama-3b-q8_0:q8_0"
    assert entry["source"]["provider"] == "url" and "Signature=***" in entry["source"]["url"]
    assert entry["files"][0]["sha256"] == hashlib.sha256(content).hexdigest()
    assert entry["files"][0]["digest_source"] == "url"
    again = run_cli("download", url, "--engine", "native")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_bad_flags_are_usage_errors(fake_hub: FakeHub, run_cli) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    for args, text in [
        (["not a ref"], "cannot understand"),
        ([repo.repo_id, "--format", "gguf"], "no gguf weights"),
        ([repo.repo_id, "--sha256", "abc"], "64 hex"),
        ([repo.repo_id, "--sha256", "a" * 64], "direct URL"),
        ([repo.repo_id, "--no-aria2", "--engine", "aria2"], "contradicts"),
        (["nobody/nothing"], "not found"),
    ]:
        result = run_cli("download", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert text in result.stderr and "Traceback" not in result.stderr


def test_library_entry_point(fake_hub: FakeHub, isolated_env) -> None:
    import imageworks
    from imageworks.config import resolve_config

    repo = samples.add_awq_model(fake_hub)
    result = imageworks.download(repo.repo_id, config=resolve_config(), engine="native")
    assert result.name == "thebloke/llama-3-8b-instruct-awq" and result.entry is not None
    assert result.entry.format == "awq" and result.files_fetched == len(result.plan.files)
    import imageworks.downloader

    again = imageworks.downloader.download(repo.repo_id, config=resolve_config(), engine="native")
    assert again.up_to_date and not again.recorded and again.names == [result.name]
    assert imageworks.download is imageworks.downloader.download


@pytest.mark.parametrize(
    "code",
    [
        "import imageworks; f = imageworks.download; import imageworks.downloader",
        "import imageworks.downloader; import imageworks; f = imageworks.download",
        "from imageworks import downloader, download as f; import imageworks",
    ],
)
def test_imageworks_download_is_the_function_in_any_import_order(code: str) -> None:
    check = "import inspect; assert inspect.isfunction(imageworks.download) and imageworks.download is f"
    proc = subprocess.run([sys.executable, "-c", f"{code}; {check}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_analyze_command(fake_hub: FakeHub, run_cli) -> None:
    repo = samples.add_split_gguf_model(fake_hub)
    result = run_cli("analyze", repo.repo_id.lower(), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert data["repo_id"] == repo.repo_id and data["commit"] == repo.commit
    offers = {o["quantization"]: o for o in data["offers"] if o["format"] == "gguf"}
    assert set(offers) >= {"Q2_K", "Q4_K_M", "Q8_0"} and len(offers["Q4_K_M"]["files"]) == 3
    assert 0 < data["bytes_read"] < data["total_size"]
    assert not cdn_gets(fake_hub) or all("range" in r.headers for r in cdn_gets(fake_hub))
    human = run_cli("analyze", repo.repo_id)
    assert human.returncode == 0 and "Q4_K_M" in human.stdout and "GGUF quants" in human.stdout


def test_resume_progress_never_passes_the_total(fake_hub: FakeHub, isolated_env, monkeypatch) -> None:
    from click.testing import CliRunner

    from imageworks.cli import download_cmd
    from imageworks.cli.main import cli
    from imageworks.transfer.base import PartialPaths, ResumeState, save_state

    files = add_big_model(fake_hub, n_floats=250_000)
    body = files["model.safetensors"]
    half = len(body) // 2
    # What an interrupted native download leaves behind: the first half on disk and its record.
    paths = PartialPaths.for_dest(isolated_env["models"] / "Owner" / "Big" / "model.safetensors")
    paths.temp.parent.mkdir(parents=True)
    paths.temp.write_bytes(body[:half])
    save_state(paths, ResumeState(size=len(body), done=[(0, half)]))

    displays: list[download_cmd.PlainProgress] = []

    class Recorded(download_cmd.PlainProgress):
        def __init__(self, total: int) -> None:
            super().__init__(total, interval=0.0)
            displays.append(self)

    monkeypatch.setattr(download_cmd, "PlainProgress", Recorded)
    result = CliRunner().invoke(cli, ["download", "Owner/Big", "--engine", "native"])
    assert result.exit_code == 0, result.output
    assert "resumed from disk" in result.output
    (display,) = displays
    assert display.done == display.total
    lines = [line.split() for line in result.output.splitlines() if line.strip().endswith(" s")]
    assert lines and all(int(words[0].rstrip("%")) <= 100 for words in lines)
    assert display.resumed == half  # kept out of the speed and ETA
    assert_same_files(isolated_env["models"] / "Owner" / "Big", files)


def test_analyze_a_folder_on_disk(run_cli, tmp_path: Path) -> None:
    folder = tmp_path / "Owner" / "Model-GGUF"
    modelfiles.write_gguf_repo(folder, "Model", ["Q4_K_M", "Q8_0"])
    out = run_cli("analyze", str(folder), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["data"]
    assert data["format"] == "gguf" and data["gguf_quants"] == ["Q4_K_M", "Q8_0"]
    text = run_cli("analyze", str(folder))
    assert "folder on disk" in text.stdout and "(several quants)" in text.stdout
    # A path that is not there is named as a missing folder, not parsed as a repo id.
    for missing in (str(tmp_path / "gone"), "./gone", "~/gone-folder"):
        gone = run_cli("analyze", missing)
        assert gone.returncode == 2 and "no folder" in gone.stderr and "owner or repo" not in gone.stderr
