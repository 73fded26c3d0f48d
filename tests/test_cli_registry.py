"""list / show / remove / history / config / doctor through the real console script."""

from __future__ import annotations

import json
import os
from pathlib import Path

from imageworks.registry import FileRecord, ModelEntry, RegistryStore, Source
from imageworks.registry.store import CURATED, DISCOVERED, MERGED


def seed(registry: Path, models_root: Path) -> None:
    folder = models_root / "Qwen" / "Qwen2-VL-2B-Instruct"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    with RegistryStore(registry).transaction(["seed"]) as reg:
        reg.put(
            ModelEntry(
                name="qwen/qwen2-vl-2b-instruct",
                source=Source(provider="hf", repo_id="Qwen/Qwen2-VL-2B-Instruct"),
                format="safetensors",
                quantization="bf16",
                location="linux_wsl",
                path=str(folder),
                files=[FileRecord(path="model.safetensors", size=100)],
                size_bytes=100,
                serve={"vllm": {"command": f"vllm serve {folder}"}},
            )
        )
        reg.put(
            ModelEntry(
                name="bartowski/llama-gguf:q4_k_m",
                format="gguf",
                quantization="Q4_K_M",
                location="windows_lmstudio",
                path="/nowhere/llama",
                source=Source(provider="hf", repo_id="bartowski/Llama-GGUF"),
            )
        )
        reg.put(
            ModelEntry(
                name="bartowski/llama-gguf:q8_0",
                format="gguf",
                quantization="Q8_0",
                source=Source(provider="hf", repo_id="bartowski/Llama-GGUF"),
            )
        )


def test_list_table_filters_and_json(run_cli, isolated_env) -> None:
    empty = run_cli("list")
    assert empty.returncode == 0 and "no models" in empty.stdout
    seed(isolated_env["registry"], isolated_env["models"])
    out = run_cli("list")
    assert out.returncode == 0
    assert "qwen/qwen2-vl-2b-instruct" in out.stdout and "Q4_K_M" in out.stdout
    data = json.loads(run_cli("list", "--json", "--format", "gguf").stdout)
    assert data["schema"] == "imageworks.list" and data["version"] == 1
    assert [m["name"] for m in data["data"]] == ["bartowski/llama-gguf:q4_k_m", "bartowski/llama-gguf:q8_0"]
    assert all(m["installed"] is False for m in data["data"])
    data = json.loads(run_cli("list", "--json", "--backend", "vllm").stdout)
    assert [m["name"] for m in data["data"]] == ["qwen/qwen2-vl-2b-instruct"]
    assert data["data"][0]["installed"] is True
    data = json.loads(run_cli("list", "--json", "--location", "windows_lmstudio").stdout)
    assert [m["name"] for m in data["data"]] == ["bartowski/llama-gguf:q4_k_m"]


def test_show_reports_origins_and_resolves_references(run_cli, isolated_env) -> None:
    seed(isolated_env["registry"], isolated_env["models"])
    (isolated_env["registry"] / CURATED).write_text(
        json.dumps(
            {
                "schema_version": 1,
                "models": {"qwen/qwen2-vl-2b-instruct": {"display_name": "Qwen VL", "aliases": ["vl"]}},
            }
        )
    )
    out = run_cli("show", "vl", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["data"]
    assert data["entry"]["display_name"] == "Qwen VL"
    assert data["origins"]["display_name"] == "curated" and data["origins"]["format"] == "discovered"
    text = run_cli("show", "QWEN/Qwen2-VL-2B-Instruct")
    assert text.returncode == 0 and "vllm serve" in text.stdout and "(curated)" in text.stdout
    ambiguous = run_cli("show", "llama-gguf")
    assert ambiguous.returncode == 2
    assert (
        "bartowski/llama-gguf:q4_k_m" in ambiguous.stderr and "bartowski/llama-gguf:q8_0" in ambiguous.stderr
    )
    missing = run_cli("show", "does-not-exist")
    assert missing.returncode == 2 and missing.stderr.startswith("error: no model matches")
    assert "Traceback" not in missing.stderr


def test_remove_discovered_curated_and_files(run_cli, isolated_env) -> None:
    seed(isolated_env["registry"], isolated_env["models"])
    (isolated_env["registry"] / CURATED).write_text(
        json.dumps({"schema_version": 1, "models": {"bartowski/llama-gguf:q8_0": {"tags": ["pinned"]}}})
    )
    curated_before = (isolated_env["registry"] / CURATED).read_bytes()
    out = run_cli("remove", "bartowski/llama-gguf:q8_0")
    assert "curated" in out.stderr
    assert (isolated_env["registry"] / CURATED).read_bytes() == curated_before
    # without a terminal, deleting files needs --yes
    refused = run_cli("remove", "qwen2-vl", "--delete-files")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    folder = isolated_env["models"] / "Qwen" / "Qwen2-VL-2B-Instruct"
    assert folder.exists()
    done = run_cli("remove", "qwen2-vl", "--delete-files", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["data"]
    assert result["removed_from_registry"] is True and result["deleted_bytes"] == 100
    assert not folder.exists()
    assert not folder.parent.exists() and isolated_env["models"].exists()  # empty owner folder pruned
    names = json.loads((isolated_env["registry"] / DISCOVERED).read_text())["models"]
    assert "qwen/qwen2-vl-2b-instruct" not in names
    merged = json.loads((isolated_env["registry"] / MERGED).read_text())["models"]
    assert "qwen/qwen2-vl-2b-instruct" not in merged
    hist = json.loads(run_cli("history", "--json").stdout)["data"]
    assert hist[-1]["command"].endswith("--json") and hist[-1]["patch"][0]["op"] == "remove"
    assert "qwen/qwen2-vl-2b-instruct" in run_cli("history", "-n", "2").stdout


def test_remove_refuses_paths_outside_model_roots(run_cli, isolated_env, tmp_path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    with RegistryStore(isolated_env["registry"]).transaction(["seed"]) as reg:
        reg.put(ModelEntry(name="evil/entry", path=str(outside)))
    out = run_cli("remove", "evil/entry", "--delete-files", "--yes")
    assert out.returncode != 0 and "refusing to delete" in out.stderr
    assert (outside / "keep.txt").exists()


def test_malformed_registry_is_one_line_exit_2_and_untouched(run_cli, isolated_env) -> None:
    folder = isolated_env["registry"]
    folder.mkdir(parents=True)
    bad = b'{"schema_version": 1, "models": {"a": {"format": "gguf",}}}'
    (folder / CURATED).write_bytes(bad)
    for args in (["list"], ["show", "a"], ["remove", "a"]):
        out = run_cli(*args)
        assert out.returncode == 2
        assert out.stderr.splitlines()[0].startswith("error: ") and "line 1, column" in out.stderr
        assert "Traceback" not in out.stderr
    assert (folder / CURATED).read_bytes() == bad
    assert not (folder / DISCOVERED).exists()


def test_config_shows_sources_and_precedence(run_cli, isolated_env, tmp_path) -> None:
    out = json.loads(run_cli("config", "--json").stdout)["data"]
    assert out["registry_dir"]["source"] == "IMAGEWORKS_REGISTRY_DIR"
    assert out["locations.linux_wsl"]["value"] == str(isolated_env["models"])
    assert out["hf_token"]["value"] == "not set"
    flag_dir = tmp_path / "flagreg"
    flag_dir.mkdir()
    (flag_dir / "imageworks.toml").write_text(
        '[locations]\nnas = "/mnt/nas/models"\nlinux_wsl = "/ignored"\n'
    )
    out = json.loads(
        run_cli(
            "--registry-dir", str(flag_dir), "config", "--json", env={"HF_TOKEN": "hf_abcdefghijklmnop"}
        ).stdout
    )["data"]
    assert out["registry_dir"] == {"value": str(flag_dir), "source": "--registry-dir"}
    assert out["locations.nas"]["value"] == "/mnt/nas/models"
    # env beats the file
    assert out["locations.linux_wsl"]["source"] == "IMAGEWORKS_MODEL_ROOT"
    assert out["hf_token"]["source"] == "HF_TOKEN" and "hf_abcdefghijklmnop" not in json.dumps(out)
    (flag_dir / "imageworks.toml").write_text("[locations\n")
    bad = run_cli("--registry-dir", str(flag_dir), "config")
    assert bad.returncode == 2 and "imageworks.toml" in bad.stderr


def test_token_file_and_registry_dir_discovery(isolated_env, tmp_path, monkeypatch) -> None:
    from imageworks.config import resolve_config

    (isolated_env["hf_home"]).mkdir(parents=True, exist_ok=True)
    (isolated_env["hf_home"] / "token").write_text("hf_fromfile123456\n")
    monkeypatch.delenv("IMAGEWORKS_REGISTRY_DIR")
    config = resolve_config(cwd=tmp_path)
    assert config.token == "hf_fromfile123456" and config.hf_token.source.endswith("token")
    assert "user data" in config.registry_dir.source
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / CURATED).write_text('{"schema_version": 1, "models": {}}')
    config = resolve_config(cwd=tmp_path)
    assert config.registry_path == tmp_path / "configs"
    assert resolve_config(token="hf_flag", cwd=tmp_path).hf_token.source == "--token"
    monkeypatch.setenv("HF_TOKEN", "hf_envtoken")
    assert resolve_config(cwd=tmp_path).token == "hf_envtoken"


def test_lmstudio_under_wsl_is_found(isolated_env, tmp_path, monkeypatch) -> None:
    from imageworks.config import resolve_config

    users = tmp_path / "mnt_c_users"
    (users / "Public" / ".lmstudio" / "models").mkdir(parents=True)
    (users / "alice" / ".lmstudio" / "models").mkdir(parents=True)
    monkeypatch.delenv("IMAGEWORKS_LMSTUDIO_ROOT")
    monkeypatch.setenv("IMAGEWORKS_WINDOWS_USERS_DIR", str(users))
    config = resolve_config()
    assert config.location_root("windows_lmstudio") == users / "alice" / ".lmstudio" / "models"


def test_doctor_reports_and_exits(run_cli, isolated_env, fake_hub) -> None:
    fake_hub.tokens = {"hf_goodtoken123": "alice"}
    out = run_cli("doctor", "--json", env={"HF_ENDPOINT": fake_hub.endpoint, "HF_TOKEN": "hf_goodtoken123"})
    data = json.loads(out.stdout)
    checks = {c["name"]: c for c in data["data"]}
    assert checks["hub"]["status"] == "ok"
    assert checks["hub token"]["status"] == "ok" and "alice" in checks["hub token"]["detail"]
    assert "hf_goodtoken123" not in out.stdout
    assert out.returncode == 0
    bad = run_cli("doctor", env={"HF_ENDPOINT": fake_hub.endpoint, "HF_TOKEN": "hf_badtoken999"})
    assert bad.returncode == 1 and "rejected" in bad.stdout
    down = run_cli("doctor", "--json", env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert down.returncode == 1
    assert {c["name"]: c for c in json.loads(down.stdout)["data"]}["hub"]["status"] == "fail"


def test_help_is_instant_and_errors_are_one_line(run_cli) -> None:
    out = run_cli("--help")
    assert out.returncode == 0 and "download" in out.stdout and "normalize-formats" in out.stdout
    bad = run_cli("list", "--backend", "nope")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_declining_a_confirmation_is_not_an_internal_error(run_cli, isolated_env) -> None:
    seed(isolated_env["registry"], isolated_env["models"])
    # stdin is not a terminal: remove --delete-files refuses without --yes (a usage error, exit 2)
    out = run_cli("remove", "qwen2-vl", "--delete-files", input="n\n")
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "--yes" in out.stderr
    assert "internal error" not in out.stderr


def test_usage_errors_use_our_format_and_history_names_the_program(run_cli, isolated_env) -> None:
    for args in (["download"], ["download", "a/b", "--connections", "0"], ["frobnicate"]):
        out = run_cli(*args)
        assert out.returncode == 2
        lines = out.stderr.splitlines()
        assert lines[0].startswith("error: ") and lines[1].startswith("hint: see `imageworks-download")
    seed(isolated_env["registry"], isolated_env["models"])
    run_cli("remove", "bartowski/llama-gguf:q8_0")
    command = json.loads(run_cli("history", "--json").stdout)["data"][-1]["command"]
    assert command.split()[0] in {"main.py", "imageworks-download"} and "/" not in command.split()[0]


# ---------------------------------------------------------------------------------- the error boundary
def _run_group(group, args: list[str], capsys) -> tuple[int, str, str]:
    import pytest

    from imageworks.cli.app import run_group

    with pytest.raises(SystemExit) as exit_info:
        run_group(group, "prog", args)
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


def _group_raising(exc: BaseException):
    import click

    from imageworks.cli.app import json_option

    @click.group()
    def group() -> None:
        pass

    @group.command()
    @json_option
    def boom(as_json: bool) -> None:
        raise exc

    @group.command()
    def ask() -> None:
        click.confirm("delete it?", abort=True)

    @group.command()
    def fine() -> int:
        return 1

    return group


def test_the_boundary_maps_every_error_once(capsys, monkeypatch) -> None:
    import errno

    cases = [
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), 1, "read-only", "writable folder"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/sub"), 1, "not a folder", "--location"),
        (PermissionError(errno.EACCES, "Permission denied", "/p"), 1, "permission denied", "permissions"),
        (OSError(errno.ENOSPC, "No space left on device", "/d"), 1, "no space", "free some space"),
        (
            OSError(errno.EXDEV, "Invalid cross-device link", "/a", "/b"),
            1,
            "across filesystems",
            "one filesystem",
        ),
        (OSError(errno.ENAMETOOLONG, "File name too long", "/x" * 10), 1, "too long", "shorter"),
        (KeyboardInterrupt(), 130, "interrupted", "downloads resume from the bytes kept on disk"),
        (RuntimeError("a bug"), 1, "internal error: RuntimeError: a bug", "IMAGEWORKS_DEBUG=1"),
    ]
    for exc, code, message, hint in cases:
        got, out, err = _run_group(_group_raising(exc), ["boom"], capsys)
        assert got == code, (exc, err)
        first, *rest = err.strip().splitlines()
        assert message in first and "Traceback" not in err
        assert rest and rest[-1].startswith("hint: ") and hint in rest[-1]
        if not isinstance(exc, RuntimeError | KeyboardInterrupt):
            assert first.startswith("error: ") and "internal error" not in err
        assert out == ""
    # The envelope for --json, with the same type, message, hint and exit code.
    got, out, err = _run_group(_group_raising(OSError(errno.EROFS, "x", "/ro")), ["boom", "--json"], capsys)
    envelope = json.loads(out)
    assert envelope["schema"] == "imageworks.boom" and envelope["ok"] is False and envelope["data"] is None
    assert envelope["error"]["type"] == "FilesystemError" and envelope["error"]["exit_code"] == got == 1
    assert "read-only" in envelope["error"]["message"] and envelope["error"]["hint"]
    # "no" to a confirmation: exit 1, not an internal error; a command's own exit code passes through.
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    got, out, err = _run_group(_group_raising(RuntimeError()), ["ask"], capsys)
    assert got == 1 and "aborted" in err and "internal error" not in err
    assert _run_group(_group_raising(RuntimeError()), ["fine"], capsys)[0] == 1
    # IMAGEWORKS_DEBUG=1 shows the traceback of a bug instead.
    monkeypatch.setenv("IMAGEWORKS_DEBUG", "1")
    import pytest

    from imageworks.cli.app import run_group

    with pytest.raises(RuntimeError):
        run_group(_group_raising(RuntimeError("a bug")), "prog", ["boom"])


def test_os_errors_from_commands_are_one_line_with_a_hint(run_cli, isolated_env, fake_hub, tmp_path) -> None:
    from tests.fakehub import samples

    repo = samples.add_safetensors_model(fake_hub)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = run_cli("download", repo.repo_id, "--location", str(blocker / "models"))
    assert out.returncode == 1, out.stderr
    assert "internal error" not in out.stderr and "Traceback" not in out.stderr
    error = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert error and "not a folder" in error[0] and str(blocker) in error[0]
    assert "hint: " in out.stderr
    # The registry folder under a file: every reading command says so in one line.
    for args in (["list"], ["history"], ["verify", "--all"]):
        bad = run_cli(*args, env={"IMAGEWORKS_REGISTRY_DIR": str(blocker / "registry")})
        assert bad.returncode in {1, 2} and bad.stderr.startswith("error: "), (args, bad.stderr)
        assert "internal error" not in bad.stderr and "not a folder" in bad.stderr


def test_ctrl_c_exits_130_with_the_resume_hint(interrupt_cli, isolated_env, fake_hub) -> None:
    from tests.fakehub import samples

    repo = samples.add_safetensors_model(fake_hub)
    fake_hub.throttle(total_bps=30_000)  # ~10 s for the weights: interrupted mid-download
    code, err, seconds = interrupt_cli("download", repo.repo_id, "--engine", "native", after=2.0)
    # At 30 KB/s even a "small" file is seconds away: reads blocked on it are woken, not waited for.
    assert seconds < 3.0, "Ctrl-C should stop the download at once"
    assert code == 130, err
    assert "interrupted" in err and "downloads resume from the bytes kept on disk" in err
    assert "Traceback" not in err and "internal error" not in err


def test_json_failures_print_the_envelope_for_every_command(run_cli, isolated_env, tmp_path) -> None:
    """The contract: every command with --json answers a failure with the versioned envelope on stdout,
    `ok: false` and an error object whose exit_code is the process's."""
    seed(isolated_env["registry"], isolated_env["models"])
    bad_toml = tmp_path / "badtoml"
    bad_toml.mkdir()
    (bad_toml / "imageworks.toml").write_text("[locations\n")
    cases = {
        "list": ["list", "--json", "--backend", "nope"],
        "show": ["show", "no-such-model", "--json"],
        "remove": ["remove", "no-such-model", "--json"],
        "history": ["history", "--json", "-n", "0"],
        "config": ["--registry-dir", str(bad_toml), "config", "--json"],
        "doctor": ["--registry-dir", str(bad_toml), "doctor", "--json"],
        "verify": ["verify", "--json"],
        "scan": ["scan", "--json", "--base", str(tmp_path / "missing")],
        "normalize-formats": ["normalize-formats", "--json", "--full"],
        "download": ["download", "--json", "not a reference"],
        "analyze": ["analyze", "--json", "not a reference"],
    }
    for command, args in cases.items():
        out = run_cli(*args)
        assert out.returncode in {1, 2}, (command, out.stdout, out.stderr)
        envelope = json.loads(out.stdout)
        assert envelope["schema"] == f"imageworks.{command}" and envelope["version"] == 1, command
        assert envelope["ok"] is False and envelope["data"] is None, command
        error = envelope["error"]
        assert set(error) == {"type", "message", "hint", "exit_code"}, command
        assert error["exit_code"] == out.returncode and error["message"], command
        assert out.stderr.startswith("error: "), command
    # A command that ran and found problems: its data, and the same error object (exit code 1).
    out = run_cli("doctor", "--json", env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    envelope = json.loads(out.stdout)
    assert out.returncode == 1 and envelope["ok"] is False and envelope["data"]
    assert envelope["error"]["exit_code"] == 1 and "hub" in envelope["error"]["message"]
    # The loader's commands too.
    out = run_cli("verify", "no-such-model", "--json", script="imageworks-loader")
    assert out.returncode == 2 and json.loads(out.stdout)["error"]["type"] == "ModelNotFound"


def test_doctor_fails_on_a_malformed_layer_and_an_unwritable_root(run_cli, isolated_env, tmp_path) -> None:
    """A registry file that makes every other command fail is not "ready" (issue 9.15); the hint for the
    curated file points at git and the line and column, not backups/ (issue 9.16)."""
    env = {"HF_ENDPOINT": "http://127.0.0.1:9"}  # the hub check fails on its own: look at the others
    folder = isolated_env["registry"]
    folder.mkdir(parents=True)
    (folder / CURATED).write_text('{"schema_version": 1,\n "models": {"a": {"format": "gguf",}}}')
    out = run_cli("doctor", "--json", env=env)
    assert out.returncode == 1
    checks = {c["name"]: c for c in json.loads(out.stdout)["data"]}
    files = checks["registry files"]
    assert files["status"] == "fail" and "line 2, column" in files["detail"]
    assert "git" in files["fix"] and "backups" not in files["fix"]
    listed = run_cli("list")
    assert listed.returncode == 2 and "git checkout" in listed.stderr and "backups/" not in listed.stderr
    assert "not ready" in run_cli("doctor", env=env).stdout
    # A tool-written layer may be restored from backups/.
    (folder / CURATED).unlink()
    (folder / DISCOVERED).write_text("{")
    out = run_cli("doctor", "--json", env=env)
    files = {c["name"]: c for c in json.loads(out.stdout)["data"]}["registry files"]
    assert files["status"] == "fail" and "backups" in files["fix"]
    (folder / DISCOVERED).unlink()
    (folder / MERGED).write_text('{"schema_version": 1, "models": [}')
    files = {c["name"]: c for c in json.loads(run_cli("doctor", "--json", env=env).stdout)["data"]}
    assert files["registry files"]["status"] == "fail" and MERGED in files["registry files"]["detail"]
    (folder / MERGED).unlink()
    # A location root under a regular file cannot be written.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = run_cli("doctor", "--json", env={**env, "IMAGEWORKS_MODEL_ROOT": str(blocker / "models")})
    checks = {c["name"]: c for c in json.loads(out.stdout)["data"]}
    assert checks["registry files"]["status"] == "ok"
    assert (
        checks["location linux_wsl"]["status"] == "fail"
        and "not a folder" in checks["location linux_wsl"]["detail"]
    )


def test_unknown_toml_keys_are_named_in_a_warning(run_cli, isolated_env) -> None:
    folder = isolated_env["registry"]
    folder.mkdir(parents=True)
    (folder / "imageworks.toml").write_text('hub_timout = 5\n[location]\nnas = "/mnt/nas"\n')
    out = run_cli("config", "--json")
    assert out.returncode == 0
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert "'hub_timout'" in warnings[0] and "did you mean 'hub_timeout'" in warnings[0]
    assert "'location'" in warnings[1] and "'locations'" in warnings[1]
    json.loads(out.stdout)  # stdout stays clean JSON


def test_history_decodes_names_in_the_library(run_cli, isolated_env) -> None:
    from imageworks.registry.changelog import ChangeRecord, pointer_for

    assert pointer_for("a/b~c") == "/models/a~1b~0c"
    record = ChangeRecord("t", "c", [{"op": "add", "path": "/models/a~1b~0c/format", "value": "x"}])
    assert record.names == ["a/b~c"]
    assert ChangeRecord("t", "c", [{"op": "remove", "path": "/models/x~01"}]).names == ["x~1"]
    store = RegistryStore(isolated_env["registry"])
    with store.transaction(["seed"]) as reg:
        reg.put(ModelEntry(name="owner/odd~name"))
    out = run_cli("history")
    assert out.returncode == 0 and "    owner/odd~name" in out.stdout.splitlines()
    data = json.loads(run_cli("history", "--json").stdout)["data"]
    assert data[-1]["names"] == ["owner/odd~name"]


def _run_in_terminal(args: list[str], columns: int) -> str:
    """Run the CLI with stdout on a pseudo-terminal `columns` wide (as a user's terminal window)."""
    import fcntl
    import struct
    import subprocess
    import sys
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imageworks.cli.main", *args], stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(master)
    import re

    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # styles are not what is measured


def test_list_at_80_columns_breaks_no_word(isolated_env) -> None:
    seed(isolated_env["registry"], isolated_env["models"])
    store = RegistryStore(isolated_env["registry"])
    with store.transaction(["seed"]) as reg:
        reg.put(
            ModelEntry(
                name="bartowski/llama-3.2-3b-instruct-uncensored-abliterated-gguf:ud-q4_k_xl",
                format="gguf",
                quantization="UD-Q4_K_XL",
                location="windows_lmstudio",
                size_bytes=2_345_678_901,
            )
        )
    words = {
        "bartowski/llama-3.2-3b-instruct-uncensored-abliterated-gguf:ud-q4_k_xl",
        "qwen/qwen2-vl-2b-instruct",
        "windows_lmstudio",
        "safetensors",
        "UD-Q4_K_XL",
        "installed",
        "2.3 GB",
    }
    for columns in (80, 200):
        out = _run_in_terminal(["list"], columns)
        assert max(len(line) for line in out.splitlines()) <= columns, out
        for word in words:
            assert word in out, (columns, word, out)
    assert "┃ name" in _run_in_terminal(["list"], 200)  # wide enough: the table itself


def test_a_read_only_mount_is_one_line_with_a_hint(run_cli, isolated_env, fake_hub, tmp_path) -> None:
    """`--location` on a read-only filesystem: our error and hint, not "internal error" (issue 9.13)."""
    import subprocess

    import pytest

    from tests.fakehub import samples

    mount = tmp_path / "ro"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True, timeout=10
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (not root, or no CAP_SYS_ADMIN)")
    try:
        repo = samples.add_safetensors_model(fake_hub)
        out = run_cli("download", repo.repo_id, "--location", str(mount), "--json")
        assert out.returncode == 1, out.stderr
        assert "internal error" not in out.stderr and "Traceback" not in out.stderr
        error = json.loads(out.stdout)["error"]
        assert error["type"] == "FilesystemError" and "read-only" in error["message"]
        assert "writable" in error["hint"]
        doctor = run_cli("doctor", "--json", env={"IMAGEWORKS_MODEL_ROOT": str(mount / "models")})
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["data"]}
        assert (
            checks["location linux_wsl"]["status"] == "fail"
            and "read-only" in checks["location linux_wsl"]["detail"]
        )
        assert doctor.returncode == 1
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=10)


def test_a_json_error_to_a_full_stdout_is_still_one_clean_line(isolated_env) -> None:
    """stdout is /dev/full: the envelope cannot be written, so the error line on stderr must still come,
    with the command's own exit code and no traceback."""
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "imageworks.cli.main", "download", "--json", "not a reference"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_the_end_of_the_last_thread_is_seen_at_once() -> None:
    import threading
    import time

    from imageworks.transfer.base import wait_threads

    threads = [threading.Thread(target=time.sleep, args=(d,)) for d in (0.05, 0.3)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    while not wait_threads(threads, 5.0):
        pass
    assert time.monotonic() - began < 1.0
