"""Configuration resolved at call time, each value with the source it came from.

Precedence is always: flag > environment > imageworks.toml > default (STYLE.md #5). Nothing here runs at
import time, so `--help` stays instant and tests can set the environment freely.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageworks.errors import ConfigError

REGISTRY_FILES = (
    "model_registry.curated.json",
    "model_registry.discovered.json",
    "model_registry.json",
)
CONFIG_FILE_NAME = "imageworks.toml"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_HUB_TIMEOUT = 30.0  # seconds one Hub API request may go without connecting or receiving a byte
# Top-level keys and tables imageworks.toml may hold. A module that reads a new key adds it here, so a
# typo (`[location]`, `hub_timout`) is named in a warning instead of being silently ignored.
KNOWN_TOML_KEYS = frozenset({"locations", "hf_endpoint", "hub_timeout", "remotes"})


@dataclass(frozen=True)
class Setting:
    """One resolved value and where it came from (shown by `imageworks-download config`)."""

    value: Any
    source: str


@dataclass(frozen=True)
class Config:
    registry_dir: Setting
    config_file: Setting
    locations: dict[str, Setting]
    hf_endpoint: Setting
    hf_home: Setting
    hf_token: Setting  # value is the token itself: never print it, use `token_display`
    extra: dict[str, Setting] = field(default_factory=dict)
    hub_timeout: Setting = Setting(DEFAULT_HUB_TIMEOUT, "default")  # float seconds
    # What the user should hear about the config file (unknown keys): the CLI prints them on stderr.
    warnings: tuple[str, ...] = ()

    @property
    def registry_path(self) -> Path:
        return Path(self.registry_dir.value)

    @property
    def token(self) -> str | None:
        return self.hf_token.value

    def location_root(self, name: str) -> Path:
        try:
            return Path(self.locations[name].value)
        except KeyError:
            known = ", ".join(sorted(self.locations))
            raise ConfigError(
                f"unknown location {name!r}", hint=f"use one of: {known}, or give a folder path"
            ) from None

    def location_roots(self) -> dict[str, Path]:
        """Every location's root by name (sorted): the one shape commands pass to the library."""
        return {name: Path(self.locations[name].value) for name in sorted(self.locations)}

    def as_rows(self) -> list[tuple[str, str, str]]:
        """(key, value, source) rows with the token masked."""
        rows = [
            ("registry_dir", str(self.registry_dir.value), self.registry_dir.source),
            ("config_file", str(self.config_file.value or "-"), self.config_file.source),
        ]
        for name, setting in sorted(self.locations.items()):
            rows.append((f"locations.{name}", str(setting.value), setting.source))
        rows.append(("hf_endpoint", str(self.hf_endpoint.value), self.hf_endpoint.source))
        rows.append(("hf_home", str(self.hf_home.value), self.hf_home.source))
        rows.append(("hf_token", token_display(self.token), self.hf_token.source))
        rows.append(("hub_timeout", f"{self.hub_timeout.value:g} s", self.hub_timeout.source))
        for key, setting in sorted(self.extra.items()):
            rows.append((key, str(setting.value), setting.source))
        return rows


def token_display(token: str | None) -> str:
    """A token is shown only as 'set (hf_…abcd)': enough to tell two apart, useless to an attacker."""
    if not token:
        return "not set"
    return f"set ({token[:3]}…{token[-4:]})" if len(token) > 10 else "set"


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def _expand(value: str, env: Mapping[str, str]) -> Path:
    if value.startswith("~"):
        value = str(_home(env)) + value[1:]
    return Path(os.path.expandvars(value))


def _user_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("imageworks", appauthor=False))


def _user_config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("imageworks", appauthor=False))


def _resolve_registry_dir(flag: Path | None, env: Mapping[str, str], cwd: Path) -> Setting:
    if flag is not None:
        return Setting(Path(flag).expanduser().absolute(), "--registry-dir")
    if env.get("IMAGEWORKS_REGISTRY_DIR"):
        return Setting(_expand(env["IMAGEWORKS_REGISTRY_DIR"], env).absolute(), "IMAGEWORKS_REGISTRY_DIR")
    configs = cwd / "configs"
    if any((configs / name).is_file() for name in REGISTRY_FILES):
        return Setting(configs.absolute(), "./configs (holds registry files)")
    return Setting(_user_data_dir(), "default (user data folder)")


def _load_toml(registry_dir: Path) -> tuple[Path | None, dict[str, Any]]:
    for folder in (registry_dir, _user_config_dir()):
        path = folder / CONFIG_FILE_NAME
        if path.is_file():
            try:
                return path, tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax") from None
    return None, {}


def _unknown_keys(toml: dict[str, Any], toml_path: Path | None) -> tuple[str, ...]:
    import difflib

    warnings = []
    for key in sorted(set(toml) - KNOWN_TOML_KEYS):
        close = difflib.get_close_matches(key, sorted(KNOWN_TOML_KEYS), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        warnings.append(f"{toml_path}: unknown key {key!r} is ignored{guess}")
    return tuple(warnings)


def _windows_lmstudio_candidates(env: Mapping[str, str]) -> list[Path]:
    """Under WSL, LM Studio runs on the Windows side: its models live in the Windows user's profile."""
    found: list[Path] = []
    users = Path(env.get("IMAGEWORKS_WINDOWS_USERS_DIR", "/mnt/c/Users"))
    try:
        is_wsl = "microsoft" in Path("/proc/version").read_text(encoding="utf-8", errors="replace").lower()
    except OSError:
        is_wsl = False
    if not (is_wsl or "IMAGEWORKS_WINDOWS_USERS_DIR" in env):
        return found
    try:
        for user in sorted(users.iterdir()):
            if user.name in {"Public", "Default", "Default User", "All Users"}:
                continue
            candidate = user / ".lmstudio" / "models"
            if candidate.is_dir():
                found.append(candidate)
    except OSError:
        pass
    return found


def _resolve_locations(
    env: Mapping[str, str], toml: dict[str, Any], toml_path: Path | None
) -> dict[str, Setting]:
    file_locations = toml.get("locations", {})
    if not isinstance(file_locations, dict):
        raise ConfigError(f'{toml_path}: [locations] must be a table of name = "path"')
    locations: dict[str, Setting] = {}
    for name, value in file_locations.items():
        if not isinstance(value, str):
            raise ConfigError(f"{toml_path}: locations.{name} must be a string path")
        locations[name] = Setting(_expand(value, env), str(toml_path))

    if env.get("IMAGEWORKS_MODEL_ROOT"):
        locations["linux_wsl"] = Setting(_expand(env["IMAGEWORKS_MODEL_ROOT"], env), "IMAGEWORKS_MODEL_ROOT")
    elif "linux_wsl" not in locations:
        locations["linux_wsl"] = Setting(_home(env) / "ai-models" / "weights", "default")

    if env.get("IMAGEWORKS_LMSTUDIO_ROOT"):
        locations["windows_lmstudio"] = Setting(
            _expand(env["IMAGEWORKS_LMSTUDIO_ROOT"], env), "IMAGEWORKS_LMSTUDIO_ROOT"
        )
    elif "windows_lmstudio" not in locations:
        windows = _windows_lmstudio_candidates(env)
        if windows:
            locations["windows_lmstudio"] = Setting(windows[0], "default (Windows LM Studio under WSL)")
        else:
            locations["windows_lmstudio"] = Setting(_home(env) / ".lmstudio" / "models", "default")
    return locations


def _resolve_token(flag: str | None, env: Mapping[str, str], hf_home: Path) -> Setting:
    # Mirrors huggingface_hub's get_token() order, but at call time: the library computes its token
    # path from the environment at import, which would pin whatever HF_HOME was set first.
    if flag:
        return Setting(flag.strip(), "--token")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if env.get(var, "").strip():
            return Setting(env[var].strip(), var)
    if env.get("HF_HUB_DISABLE_IMPLICIT_TOKEN", "").lower() in {"1", "true", "yes", "on"}:
        return Setting(None, "HF_HUB_DISABLE_IMPLICIT_TOKEN")
    token_path = _expand(env["HF_TOKEN_PATH"], env) if env.get("HF_TOKEN_PATH") else hf_home / "token"
    try:
        token = token_path.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    if token:
        return Setting(token, str(token_path))
    return Setting(None, "not set (hf auth login, HF_TOKEN or --token)")


def _resolve_hub_timeout(env: Mapping[str, str], toml: dict[str, Any], toml_path: Path | None) -> Setting:
    for raw, source in (
        (env.get("IMAGEWORKS_HUB_TIMEOUT"), "IMAGEWORKS_HUB_TIMEOUT"),
        (toml.get("hub_timeout"), str(toml_path)),
    ):
        if raw is None or raw == "":
            continue
        try:
            value = float(raw) if not isinstance(raw, bool) else float("nan")
        except (TypeError, ValueError):
            value = float("nan")
        if not 0 < value < float("inf"):
            raise ConfigError(
                f"{source}: hub_timeout must be a positive number of seconds, not {raw!r}",
                hint="e.g. IMAGEWORKS_HUB_TIMEOUT=30",
            )
        return Setting(value, source)
    return Setting(DEFAULT_HUB_TIMEOUT, "default")


def resolve_config(
    *,
    registry_dir: Path | None = None,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    registry = _resolve_registry_dir(registry_dir, env, cwd)
    toml_path, toml = _load_toml(Path(registry.value))
    config_file = Setting(toml_path, "found" if toml_path else "none (optional imageworks.toml)")

    if env.get("HF_ENDPOINT"):
        endpoint = Setting(env["HF_ENDPOINT"].rstrip("/"), "HF_ENDPOINT")
    elif isinstance(toml.get("hf_endpoint"), str):
        endpoint = Setting(toml["hf_endpoint"].rstrip("/"), str(toml_path))
    else:
        endpoint = Setting(DEFAULT_HF_ENDPOINT, "default")

    if env.get("HF_HOME"):
        hf_home = Setting(_expand(env["HF_HOME"], env), "HF_HOME")
    else:
        xdg = env.get("XDG_CACHE_HOME")
        base = _expand(xdg, env) if xdg else _home(env) / ".cache"
        hf_home = Setting(base / "huggingface", "default")

    return Config(
        registry_dir=registry,
        config_file=config_file,
        locations=_resolve_locations(env, toml, toml_path),
        hf_endpoint=endpoint,
        hf_home=hf_home,
        hf_token=_resolve_token(token, env, Path(hf_home.value)),
        hub_timeout=_resolve_hub_timeout(env, toml, toml_path),
        warnings=_unknown_keys(toml, toml_path),
    )
