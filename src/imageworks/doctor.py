"""`doctor`: one screen that says what is ready and what to fix before downloading."""

from __future__ import annotations

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

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class DoctorReport:
    checks: list[Check]

    @property
    def ready(self) -> bool:
        """No check failed: downloads (and every other command) can work."""
        return not any(c.status == FAIL for c in self.checks)

    def as_dict(self) -> list[dict[str, str]]:
        return [c.as_dict() for c in self.checks]


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


def _registry(config: Config) -> list[Check]:
    folder = config.registry_path
    checks = []
    problem = _write_probe(folder)
    if problem is None:
        checks.append(Check("registry folder", OK, f"{folder} ({config.registry_dir.source})"))
    else:
        checks.append(
            Check(
                "registry folder", FAIL, f"{folder}: {problem}", "fix its permissions or use --registry-dir"
            )
        )
    checks.extend(_registry_files(folder))
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


def _registry_files(folder: Path) -> list[Check]:
    """Each registry file must parse and validate: one malformed layer stops every other command."""
    from imageworks.errors import RegistryError
    from imageworks.registry import RegistryStore
    from imageworks.registry.schema import parse_layer_text
    from imageworks.registry.store import MERGED

    store = RegistryStore(folder)
    try:
        registry = store.load()
        registry.merged()
        store.history(1)
        merged = store.path(MERGED)
        if merged.is_file():  # never read by our commands, but by whatever serves the models
            parse_layer_text(merged.read_text(encoding="utf-8", errors="replace"), merged)
    except RegistryError as exc:
        return [Check("registry files", FAIL, exc.message, exc.hint or "")]
    except OSError as exc:
        return [
            Check("registry files", FAIL, f"{folder}: {exc.strerror or exc}", "fix the folder's permissions")
        ]
    count = len(registry.curated.keys() | registry.discovered.keys())
    return [Check("registry files", OK, f"{count} model(s); every layer parses")]


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
    for name, root in config.location_roots().items():
        label = f"location {name}"
        blocker = not root.exists() and name != "linux_wsl"
        if blocker:
            checks.append(Check(label, WARN, f"{root}: does not exist"))
            continue
        problem = _write_probe(root)
        if problem is not None:
            checks.append(
                Check(label, FAIL, f"{root}: {problem}", "choose a writable folder for this location")
            )
        elif not root.exists():
            checks.append(Check(label, OK, f"{root}: will be created on first download"))
        else:
            free = shutil.disk_usage(root).free
            checks.append(Check(label, OK, f"{root} ({free / 1e9:.1f} GB free)"))
    return checks


def _write_probe(root: Path) -> str | None:
    """Why files cannot be created under `root` (None: they can). A real create-and-delete, not
    os.access: that says yes to the superuser on a read-only mount's permission bits and to everyone on some
    network filesystems."""
    import tempfile

    from imageworks.errors import from_os_error

    probe = root
    while not probe.exists():
        if probe == probe.parent:
            return "no existing parent folder"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".imageworks-doctor-"):
            pass
    except OSError as exc:
        return from_os_error(exc).message
    return None


def _hub(config: Config, timeout: float) -> list[Check]:
    from imageworks.errors import HubUnavailable
    from imageworks.hub import HubClient

    endpoint = config.hf_endpoint.value
    checks = []
    try:
        with HubClient(config, timeout=timeout) as client:
            status, user = client.whoami_status()
    except HubUnavailable as exc:
        return [Check("hub", FAIL, f"{endpoint} is not reachable: {exc}", "check the network or HF_ENDPOINT")]
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
    elif status == 200:
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
                f"{token_display(config.token)} rejected (HTTP {status})",
                "hf auth login again",
            )
        )
    return checks


def run_doctor(config: Config, *, hub_timeout: float = 10.0) -> DoctorReport:
    return DoctorReport([_aria2(), *_registry(config), *_roots(config), *_hub(config, hub_timeout)])
