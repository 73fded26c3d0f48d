"""`doctor`: one screen that says what is ready and what to fix before downloading."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from imageworks.config import Config, token_display
from imageworks.process import run

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail  (fail blocks downloads)
    detail: str
    fix: str = ""


def _aria2() -> Check:
    path = shutil.which("aria2c")
    if not path:
        return Check("aria2c", WARN, "not found: downloads use the native engine", "apt-get install aria2")
    try:
        out = run([path, "--version"], timeout=10).stdout
        version = out.splitlines()[0] if out else "unknown version"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("aria2c", WARN, f"{path} does not run: {exc}", "reinstall aria2")
    return Check("aria2c", OK, f"{version} ({path})")


def _writable(folder: Path) -> bool:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return os.access(probe, os.W_OK)


def _registry(config: Config) -> list[Check]:
    folder = config.registry_path
    checks = []
    if _writable(folder):
        checks.append(Check("registry folder", OK, f"{folder} ({config.registry_dir.source})"))
    else:
        checks.append(
            Check(
                "registry folder",
                FAIL,
                f"{folder} is not writable",
                "fix its permissions or use --registry-dir",
            )
        )
    curated = folder / "model_registry.curated.json"
    if not curated.exists():
        checks.append(
            Check(
                "curated registry",
                WARN,
                f"{curated} does not exist yet",
                "create it to pin names and aliases by hand",
            )
        )
    else:
        tracked = _git_tracked(curated)
        if tracked is True:
            checks.append(Check("curated registry", OK, f"{curated} is tracked by git"))
        else:
            checks.append(
                Check(
                    "curated registry",
                    WARN,
                    f"{curated} is not tracked by git",
                    f"git add {curated.name} && git commit",
                )
            )
    return checks


def _git_tracked(path: Path) -> bool | None:
    git = shutil.which("git")
    if not git:
        return None
    try:
        result = run([git, "-C", str(path.parent), "ls-files", "--error-unmatch", path.name], timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.returncode == 0


def _roots(config: Config) -> list[Check]:
    checks = []
    for name, setting in sorted(config.locations.items()):
        root = Path(setting.value)
        if not root.exists():
            status = WARN if name != "linux_wsl" else OK
            note = "will be created on first download" if name == "linux_wsl" else "does not exist"
            checks.append(Check(f"location {name}", status, f"{root}: {note}"))
            continue
        if not _writable(root):
            checks.append(
                Check(f"location {name}", FAIL if name == "linux_wsl" else WARN, f"{root} is not writable")
            )
            continue
        free = shutil.disk_usage(root).free
        checks.append(Check(f"location {name}", OK, f"{root} ({free / 1e9:.1f} GB free)"))
    return checks


def _hub(config: Config, timeout: float) -> list[Check]:
    import httpx

    endpoint = config.hf_endpoint.value
    checks = []
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.get(f"{endpoint}/api/whoami-v2", headers=_auth(config))
    except httpx.HTTPError as exc:
        return [
            Check(
                "hub",
                FAIL,
                f"{endpoint} is not reachable: {type(exc).__name__}",
                "check the network or HF_ENDPOINT",
            )
        ]
    checks.append(Check("hub", OK, f"{endpoint} reachable ({config.hf_endpoint.source})"))
    if not config.token:
        checks.append(
            Check(
                "hub token",
                WARN,
                "no token: gated and private repos will fail",
                "hf auth login, or set HF_TOKEN",
            )
        )
    elif response.status_code == 200:
        user = response.json().get("name", "?")
        checks.append(
            Check(
                "hub token",
                OK,
                f"{token_display(config.token)} valid, user {user} ({config.hf_token.source})",
            )
        )
    else:
        checks.append(
            Check(
                "hub token",
                FAIL,
                f"{token_display(config.token)} rejected (HTTP {response.status_code})",
                "hf auth login again",
            )
        )
    return checks


def _auth(config: Config) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.token}"} if config.token else {}


def run_doctor(config: Config, *, hub_timeout: float = 10.0) -> list[Check]:
    return [_aria2(), *_registry(config), *_roots(config), *_hub(config, hub_timeout)]
