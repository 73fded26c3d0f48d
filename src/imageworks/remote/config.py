"""The `[remotes.NAME]` tables of imageworks.toml: read, add, remove.

Only where a store is (URL, endpoint, region, profile) and how to talk to it (part size, parallel
requests) is stored here. Credentials never are: boto3 finds them through the standard AWS chain
(environment, `~/.aws/credentials`, the profile, instance roles).

Writes go through tomlkit, which keeps the user's comments, order and other tables byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageworks.config import CONFIG_FILE_NAME, Config
from imageworks.errors import ConfigError, UsageError

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024  # per multipart part and per ranged GET
DEFAULT_CONCURRENCY = 10  # parallel requests per command, as s3transfer's default
MIN_CHUNK_SIZE = 64 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_KEYS = {"url", "endpoint_url", "region", "profile", "chunk_size", "concurrency"}


@dataclass(frozen=True)
class Remote:
    """One configured object store. `prefix` has no leading or trailing slash ('' for the bucket root)."""

    name: str
    bucket: str
    prefix: str
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    concurrency: int = DEFAULT_CONCURRENCY

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        """An object key under the prefix."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "profile": self.profile,
            "chunk_size": self.chunk_size,
            "concurrency": self.concurrency,
        }


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://BUCKET[/PREFIX]` -> (bucket, prefix)."""
    if not url.startswith("s3://"):
        raise UsageError(f"not an s3:// URL: {url!r}", hint="write it as s3://BUCKET/PREFIX")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket):
        raise UsageError(f"invalid bucket name {bucket!r} in {url!r}", hint="write it as s3://BUCKET/PREFIX")
    if any(part in {"", ".", ".."} for part in prefix.split("/")) and prefix:
        raise UsageError(f"invalid prefix {prefix!r} in {url!r}", hint="no empty, '.' or '..' path parts")
    return bucket, prefix


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 1 << 20}


def parse_size(value: Any, where: str) -> int:
    """An int of bytes, or '8MiB', '512KiB', '16MB'."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise ConfigError(f"{where}: {value!r} is not a size", hint="e.g. 8MiB, 512KiB or 8388608")
        number = int(match.group(1)) * _UNITS[unit]
    if number < MIN_CHUNK_SIZE:
        raise ConfigError(f"{where}: {number} bytes is below the minimum of {MIN_CHUNK_SIZE}")
    return number


def _remote_from_table(name: str, table: Any, origin: str) -> Remote:
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: [remotes.{name}] must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(
            f"{origin}: [remotes.{name}] has unknown key(s) {', '.join(unknown)}",
            hint=f"known keys: {', '.join(sorted(_KEYS))} (credentials belong in the AWS chain, not here)",
        )
    url = table.get("url")
    if not isinstance(url, str):
        raise ConfigError(f'{origin}: [remotes.{name}] needs url = "s3://BUCKET/PREFIX"')
    bucket, prefix = parse_s3_url(url)
    for key in ("endpoint_url", "region", "profile"):
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"{origin}: remotes.{name}.{key} must be a string")
    concurrency = table.get("concurrency", DEFAULT_CONCURRENCY)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 64:
        raise ConfigError(f"{origin}: remotes.{name}.concurrency must be an integer from 1 to 64")
    return Remote(
        name=name,
        bucket=bucket,
        prefix=prefix,
        endpoint_url=table.get("endpoint_url") or None,
        region=table.get("region") or None,
        profile=table.get("profile") or None,
        chunk_size=parse_size(table.get("chunk_size", DEFAULT_CHUNK_SIZE), f"remotes.{name}.chunk_size"),
        concurrency=concurrency,
    )


def config_path(config: Config) -> Path:
    """The imageworks.toml that holds the remotes: the one in use, else a new one in the registry folder
    (which teams keep under git, so the store's address travels with the curated registry)."""
    found = config.config_file.value
    return Path(found) if found else config.registry_path / CONFIG_FILE_NAME


def _read_document(path: Path) -> Any:
    import tomlkit

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return tomlkit.document()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomlkit.parse(text)
    except Exception as exc:  # tomlkit raises several parse error types
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax") from None


def load_remotes(config: Config) -> dict[str, Remote]:
    path = config_path(config)
    if not path.is_file():
        return {}
    doc = _read_document(path).unwrap()
    tables = doc.get("remotes", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [remotes] must hold [remotes.NAME] tables")
    return {name: _remote_from_table(name, table, str(path)) for name, table in tables.items()}


def get_remote(config: Config, name: str) -> Remote:
    remotes = load_remotes(config)
    if name in remotes:
        return remotes[name]
    known = ", ".join(sorted(remotes)) or "none yet"
    raise UsageError(
        f"no remote named {name!r} (configured: {known})",
        hint="add one: imageworks-download remote add NAME s3://BUCKET/PREFIX [--endpoint-url URL]",
    )


def add_remote(config: Config, remote: Remote, *, replace: bool = False) -> Path:
    import tomlkit

    from imageworks.durable import atomic_write_text

    if not _NAME.match(remote.name):
        raise UsageError(
            f"invalid remote name {remote.name!r}", hint="letters, digits, '.', '_' and '-' (up to 64)"
        )
    path = config_path(config)
    doc = _read_document(path)
    remotes = doc.get("remotes")
    if remotes is None:
        remotes = tomlkit.table(is_super_table=True)
        doc["remotes"] = remotes
    if remote.name in remotes and not replace:
        raise UsageError(
            f"remote {remote.name!r} already exists",
            hint="remove it first, or pass --replace to overwrite it",
        )
    table = tomlkit.table()
    table["url"] = remote.url
    for key in ("endpoint_url", "region", "profile"):
        value = getattr(remote, key)
        if value:
            table[key] = value
    if remote.chunk_size != DEFAULT_CHUNK_SIZE:
        table["chunk_size"] = remote.chunk_size
    if remote.concurrency != DEFAULT_CONCURRENCY:
        table["concurrency"] = remote.concurrency
    remotes[remote.name] = table
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, tomlkit.dumps(doc))
    return path


def remove_remote(config: Config, name: str) -> Path:
    import tomlkit

    from imageworks.durable import atomic_write_text

    path = config_path(config)
    doc = _read_document(path)
    remotes = doc.get("remotes")
    if remotes is None or name not in remotes:
        get_remote(config, name)  # raises with the configured names
    del remotes[name]
    if not remotes:
        del doc["remotes"]
    text = tomlkit.dumps(doc).rstrip("\n")
    atomic_write_text(path, text + "\n" if text else "")
    return path
