"""Hermetic tests: every state folder lives in tmp_path, no token leaks in from the environment, and
HTTP goes only to the loopback fake Hub (tests/fakehub)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

pytest_plugins = ["tests.fakehub.fixtures"]

_CLEARED = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "XDG_CACHE_HOME",
    "IMAGEWORKS_DEBUG",
    "IMAGEWORKS_WINDOWS_USERS_DIR",
)


@pytest.fixture(scope="session", autouse=True)
def bytecode_cache(tmp_path_factory: pytest.TempPathFactory):
    """Many tests start the CLI in a subprocess. Where PYTHONDONTWRITEBYTECODE is set (as on our machines),
    each start would recompile httpx, huggingface_hub and pydantic from source (~0.7 s): give the
    subprocesses one bytecode cache for the session instead, outside the repo and the venv."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")}
    os.environ["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _closed_loopback_port() -> int:
    """A loopback port nothing listens on (bound, then released; the kernel does not reuse it soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def closed_endpoint() -> str:
    return f"http://127.0.0.1:{_closed_loopback_port()}"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_endpoint: str) -> dict[str, Path]:
    home = tmp_path / "home"
    home.mkdir()
    dirs = {
        "home": home,
        "registry": tmp_path / "registry",
        "models": tmp_path / "models",
        "lmstudio": tmp_path / "lmstudio",
        "hf_home": tmp_path / "hf_home",
    }
    for var in _CLEARED:
        monkeypatch.delenv(var, raising=False)
    # A test that forgets the fake Hub fails at once (connection refused) instead of reaching the
    # internet; the `fake_hub` fixture points HF_ENDPOINT at itself.
    monkeypatch.setenv("HF_ENDPOINT", closed_endpoint)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))  # download locks
    monkeypatch.setenv("HF_HOME", str(dirs["hf_home"]))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("IMAGEWORKS_REGISTRY_DIR", str(dirs["registry"]))
    monkeypatch.setenv("IMAGEWORKS_MODEL_ROOT", str(dirs["models"]))
    monkeypatch.setenv("IMAGEWORKS_LMSTUDIO_ROOT", str(dirs["lmstudio"]))
    monkeypatch.chdir(tmp_path)
    return dirs


@pytest.fixture
def run_cli(isolated_env: dict[str, Path]):
    """Run a console script in a real subprocess (exit codes, stdout/stderr exactly as a user sees them)."""
    import subprocess
    import sys

    def run(
        *args: str,
        script: str = "imageworks-download",
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ):
        module = {"imageworks-download": "imageworks.cli.main", "imageworks-loader": "imageworks.cli.loader"}[
            script
        ]
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            capture_output=True,
            text=True,
            input=input,
            env=full_env,
            timeout=timeout,
        )

    return run


@pytest.fixture
def interrupt_cli(isolated_env: dict[str, Path]):
    """Start a console script, send it SIGINT (Ctrl-C) after `after` seconds, and return
    (exit code, stderr, seconds from the signal to its exit)."""
    import signal
    import subprocess
    import sys
    import time

    def run(*args: str, after: float, script: str = "imageworks-download") -> tuple[int, str, float]:
        module = {"imageworks-download": "imageworks.cli.main", "imageworks-loader": "imageworks.cli.loader"}[
            script
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        _, err = proc.communicate(timeout=30)
        return proc.returncode, err, time.monotonic() - interrupted_at

    return run
