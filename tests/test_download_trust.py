"""`download` keeps its promises (issues 9, 15): a changed file is fetched again, a format the repo does not
hold is refused, a direct URL says what it could not check, one writer per model, clear errors for names the
filesystem cannot hold and for a registry that cannot be written. The real CLI in a subprocess against the
fake Hub."""

from __future__ import annotations

import contextlib
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
from tests.test_download import add_big_model, assert_same_files, cdn_gets, registry


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # the mtime moves, as an edit does


def test_a_changed_file_is_fetched_again(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    args = ("download", repo.repo_id, "--engine", "native")
    assert run_cli(*args).returncode == 0
    folder = isolated_env["models"] / "TheOwner" / "Tiny-Llama"
    _flip_a_byte(folder / "model.safetensors")
    _flip_a_byte(folder / "config.json")  # a small file (git blob id) too

    again = run_cli(*args, "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)["data"]
    assert not data["up_to_date"] and sorted(data["replaced"]) == ["config.json", "model.safetensors"]
    assert data["files_fetched"] == 2
    assert any("model.safetensors on disk is not the expected file" in n for n in data["notes"])
    assert_same_files(folder, {p: repo.bytes_of(p) for p in ("model.safetensors", "config.json")})

    _flip_a_byte(folder / "model.safetensors")
    human = run_cli(*args)
    assert human.returncode == 0 and "up to date" not in human.stdout
    assert "fetched again (the copy on disk had changed): model.safetensors" in human.stdout


def test_a_format_the_repo_does_not_hold_is_refused(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    awq = samples.add_awq_model(fake_hub)
    plain = samples.add_safetensors_model(fake_hub)
    for repo_id, asked, held in (
        (awq.repo_id, "gptq", "awq"),
        (plain.repo_id, "awq", "safetensors, pytorch"),
        (plain.repo_id, "exl2", "safetensors"),
    ):
        result = run_cli("download", repo_id, "--format", asked, "--engine", "native")
        assert result.returncode == 2, (asked, result.stderr)
        assert f"no {asked} weights (formats present: {held}" in result.stderr
    assert (
        not registry(isolated_env)
        and not cdn_gets(fake_hub)
        or all("range" in r.headers for r in cdn_gets(fake_hub))
    )
    ok = run_cli("download", awq.repo_id, "--format", "AWQ", "--dry-run", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["data"]["plan"]["format"] == "safetensors"


def test_a_direct_url_without_digest_says_so(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_gguf_model(fake_hub)
    url = fake_hub.cdn_url_for(repo.repo_id, "Tiny-Llama-3B-Q8_0.gguf")
    content = repo.bytes_of("Tiny-Llama-3B-Q8_0.gguf")
    digest = hashlib.sha256(content).hexdigest()
    result = run_cli("download", url, "--engine", "native")
    assert result.returncode == 0, result.stderr
    assert f"no published digest to check (SHA-256 recorded: {digest})" in result.stdout
    assert "all verified" not in result.stdout
    # The digest recorded then is what a re-run checks the file on disk against.
    path = isolated_env["models"] / "url" / "127.0.0.2" / "Tiny-Llama-3B-Q8_0" / "Tiny-Llama-3B-Q8_0.gguf"
    _flip_a_byte(path)
    again = run_cli("download", url, "--engine", "native")
    assert again.returncode == 0 and "fetched again" in again.stdout, again.stdout + again.stderr
    assert path.read_bytes() == content


def test_legacy_id_without_owner(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    samples.add_safetensors_model(fake_hub, "openai-community/gpt2")
    fake_hub.aliases["gpt2"] = "openai-community/gpt2"
    result = run_cli("download", "gpt2", "--engine", "native", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert data["name"] == "openai-community/gpt2"
    assert data["path"] == str(isolated_env["models"] / "openai-community" / "gpt2")
    assert "gpt2 is openai-community/gpt2 on the Hub" in data["notes"]
    assert registry(isolated_env)["openai-community/gpt2"]["source"]["repo_id"] == "openai-community/gpt2"


def test_a_repo_without_weights_and_exl2_branches(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    fake_hub.add_repo("Owner/Docs-Only", {"README.md": samples.README, "config.json": b"{}"})
    docs = run_cli("download", "Owner/Docs-Only", "--engine", "native")
    assert docs.returncode == 0, docs.stderr
    assert "None" not in docs.stdout and "no weights, " in docs.stdout and "2 files," in docs.stdout

    fake_hub.add_repo("Owner/Model-EXL2", {"README.md": samples.README})
    for bpw in ("4.0bpw", "6.0bpw"):
        files = samples._folder_files(lambda d: modelfiles.write_hf_model(d, "exl2"))  # noqa: B023
        fake_hub.add_revision("Owner/Model-EXL2", files, branch=bpw)
    exl2 = run_cli("download", "Owner/Model-EXL2", "--engine", "native")
    assert exl2.returncode == 2, exl2.stderr
    assert "holds no weights; 4.0bpw, 6.0bpw do" in exl2.stderr and "Owner/Model-EXL2@4.0bpw" in exl2.stderr
    assert not (isolated_env["models"] / "Owner" / "Model-EXL2").exists()


def test_library_call_without_config(fake_hub: FakeHub, isolated_env) -> None:
    import imageworks
    from imageworks.downloader import DownloadOptions

    repo = samples.add_gguf_model(fake_hub)
    result = imageworks.download(repo.repo_id, quant="Q8_0", engine="native", location="linux_wsl")
    assert result.names == ["theowner/tiny-llama-gguf:q8_0"]
    again = imageworks.download(repo.repo_id, DownloadOptions(quant="Q8_0", location="linux_wsl"))
    assert again.up_to_date and not again.recorded
    entry = registry(isolated_env)["theowner/tiny-llama-gguf:q8_0"]
    assert entry["source"]["selection"] == {"format": None, "quant": "Q8_0", "include": [], "exclude": []}


def test_a_name_too_long_for_the_filesystem(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    long_name = "x" * 250 + ".json"
    fake_hub.add_repo(
        "Owner/Long", {"README.md": samples.README, long_name: b"{}", "model.safetensors": b"0"}
    )
    result = run_cli("download", "Owner/Long", "--engine", "native")
    assert result.returncode == 1, result.stderr
    assert "too long for the filesystem" in result.stderr and long_name[:24] in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert not cdn_gets(fake_hub)
    assert run_cli("download", "Owner/Long", "--engine", "native", "--exclude", "xxx*").returncode == 0


def _read_only(folder: Path) -> None:
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i")


def test_an_unwritable_registry_is_found_before_fetching(fake_hub: FakeHub, run_cli, isolated_env) -> None:
    repo = samples.add_safetensors_model(fake_hub)
    blocker = isolated_env["registry"].parent / "a-file"
    blocker.write_text("not a folder")
    under_file = run_cli("download", repo.repo_id, env={"IMAGEWORKS_REGISTRY_DIR": str(blocker / "registry")})
    assert under_file.returncode != 0 and "nothing was downloaded" in under_file.stderr
    assert "internal error" not in under_file.stderr and not cdn_gets(fake_hub)

    _read_only(isolated_env["registry"])
    try:
        result = run_cli("download", repo.repo_id, "--engine", "native")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(isolated_env["registry"])], check=True)
        isolated_env["registry"].chmod(0o755)
    assert result.returncode != 0 and "nothing was downloaded" in result.stderr, result.stderr
    assert not cdn_gets(fake_hub) and not (isolated_env["models"] / "TheOwner").exists()


def _start(args: list[str], stderr: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imageworks.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=stderr.open("w") if stderr else subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def _wait_for_text(path: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        time.sleep(0.05)
    pytest.fail(f"{text!r} never appeared in {path.read_text()!r}")


def _wait_for_partial(folder: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.exists() and any(p.name.endswith(".imageworks-partial") for p in folder.iterdir()):
            return
        time.sleep(0.05)
    pytest.fail("the first download never started")


def test_two_downloads_of_one_model_take_turns(fake_hub: FakeHub, isolated_env) -> None:
    files = add_big_model(fake_hub, n_floats=300_000)  # 1.2 MB at 400 KB/s: the two runs overlap
    samples.add_gguf_model(fake_hub)
    fake_hub.throttle(per_connection_bps=400_000)
    folder = isolated_env["models"] / "Owner" / "Big"
    args = ["download", "Owner/Big", "--engine", "native", "--json"]
    first = _start(args)
    _wait_for_partial(folder)
    second = _start(args)
    # Another model is not held up by the lock.
    other = _start(["download", samples.GGUF_REPO, "--engine", "native", "--location", "linux_wsl", "--json"])
    out_other, err_other = other.communicate(timeout=60)
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0 and other.returncode == 0, err1 + err2 + err_other
    assert "waiting for another download" in err2 and "waiting" not in err_other
    assert first.poll() == 0 and json.loads(out1)["data"]["bytes_fetched"] > 0
    data = json.loads(out2)["data"]
    assert data["up_to_date"] and data["bytes_fetched"] == 0 and data["waited_for_lock"]
    assert_same_files(folder, files)
    assert sorted(registry(isolated_env)) == ["owner/big", "theowner/tiny-llama-gguf:q4_k_m"]


def test_the_waiting_download_resumes_when_the_first_is_killed(fake_hub: FakeHub, isolated_env) -> None:
    files = add_big_model(fake_hub, n_floats=1_300_000)  # 5.2 MB: above the native engine's resume threshold
    fake_hub.throttle(total_bps=1_500_000)
    folder = isolated_env["models"] / "Owner" / "Big"
    args = ["download", "Owner/Big", "--engine", "native", "--json"]
    first = _start(args)
    _wait_for_partial(folder)
    log = isolated_env["home"] / "second.err"
    second = _start(args, stderr=log)
    _wait_for_text(log, "waiting for another download")
    state = folder / ".model.safetensors.imageworks-partial.json"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until the first has recorded some bytes as done
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state.read_text())["done"]:
                break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    out2, _ = second.communicate(timeout=60)
    assert second.returncode == 0, log.read_text()
    data = json.loads(out2)["data"]
    assert data["bytes_resumed"] > 0 and data["bytes_fetched"] < len(files["model.safetensors"])
    assert_same_files(folder, files)
    assert list(registry(isolated_env)) == ["owner/big"]


@pytest.fixture
def file_server():
    """A loopback server answering any path with the same few bytes (HEAD and GET), for direct URLs."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = b"GGUF" + bytes(60)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

        def do_GET(self) -> None:
            self.do_HEAD()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_direct_url_with_a_long_file_name(file_server: str, run_cli, isolated_env) -> None:
    """The folder is named after the file: a long name still fits (the folder keeps 100 characters), and
    one past the filesystem's limit is refused with a clear line, not an OSError."""
    fits = run_cli("download", f"{file_server}/{'m' * 200}.bin", "--engine", "native", "--json")
    assert fits.returncode == 0, fits.stderr
    assert len(Path(json.loads(fits.stdout)["data"]["path"]).name) == 100
    too_long = run_cli("download", f"{file_server}/{'m' * 300}.bin", "--engine", "native")
    assert too_long.returncode == 1 and "too long for the filesystem" in too_long.stderr, too_long.stderr
    assert "internal error" not in too_long.stderr
