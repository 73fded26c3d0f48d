"""Secrets in URLs and command lines never reach the change log, the registry, logs or errors (issue 15.1)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from imageworks.redaction import MASK, redact_argv, redact_text, redact_url
from imageworks.registry.store import DISCOVERED, HISTORY, MERGED

SECRETS = [
    "tok3nSECRETvalue",
    "apiKEYsecret123",
    "s1gSECRETsig",
    "AmzSIGsecret987",
    "hunter2pw",
    "Zq8pL3xR7vT2mN9kB4wY6cJ1hF5gD0sA",  # random-looking, under a harmless name
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl",  # a JWT
]


def secret_url(base: str, *, userinfo: bool = True) -> str:
    scheme, rest = base.split("://", 1)
    sep = "&" if "?" in rest else "?"
    user = f"alice:{SECRETS[4]}@" if userinfo else ""
    return (
        f"{scheme}://{user}{rest}{sep}token={SECRETS[0]}&api_key={SECRETS[1]}&sig={SECRETS[2]}"
        f"&X-Amz-Signature={SECRETS[3]}&download={SECRETS[5]}&jwt_free={SECRETS[6]}&name=model.gguf"
    )


@pytest.mark.parametrize(
    "text",
    [
        "https://u:p4ss@example.org/x.gguf?token=abc&sig=def&X-Amz-Signature=ghi&X-Amz-Credential=AKIAABCDEFGHIJKLMNOP",
        "GET /file?api_key=abc123 failed",
        "fetching https://example.org/m.gguf?download=Zq8pL3xR7vT2mN9kB4wY6cJ1hF5gD0sA",
        "cannot reach https://host/x?access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl",
    ],
)
def test_redact_text_hides_query_secrets_and_userinfo(text: str) -> None:
    cleaned = redact_text(text)
    for secret in ("p4ss", "abc", "def", "ghi", "AKIAABCDEFGHIJKLMNOP", "abc123", "Zq8pL3xR", "eyJhbGci"):
        if secret in text:
            assert secret not in cleaned, (secret, cleaned)
    assert MASK in cleaned


def test_a_folder_named_hf_something_is_not_a_token() -> None:
    text = "error: /home/me/hf_home/hub/models--a--b: permission denied (HF_HOME=hf_cache/x)"
    assert redact_text(text) == text
    assert redact_text("using token hf_AbCdEf0123456789 now") == f"using token hf_{MASK} now"


def test_what_is_not_a_secret_stays() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    text = f"https://example.org/resolve/main/model.gguf?download=true&revision={digest}&name=Llama-3.2"
    assert redact_text(text) == text
    assert (
        redact_url("https://example.org/a.gguf?download=true") == "https://example.org/a.gguf?download=true"
    )
    assert "hunter2" not in redact_url("https://bob:hunter2@example.org/a")
    line = redact_argv(["imageworks-download", "download", secret_url("https://h.example/x.gguf")])
    assert not [s for s in SECRETS if s in line] and "name=model.gguf" in line


def test_direct_url_secrets_reach_no_file_and_no_output(fake_hub, run_cli, isolated_env) -> None:
    from tests.fakehub import samples

    repo = samples.add_gguf_model(fake_hub)
    signed = fake_hub.cdn_url_for(repo.repo_id, "Tiny-Llama-3B-Q8_0.gguf")
    url = secret_url(signed, userinfo=False)
    content = repo.bytes_of("Tiny-Llama-3B-Q8_0.gguf")
    # Failing downloads: the errors and the logs name the URL without its secrets (the CDN refuses the
    # Basic auth a userinfo URL sends, and a wrong --sha256 is a mismatch).
    refused = run_cli("download", secret_url(signed), "--engine", "native")
    assert refused.returncode != 0 and "127.0.0.2" in refused.stderr
    wrong = run_cli("download", url, "--engine", "native", "--sha256", "0" * 64)
    assert wrong.returncode == 1
    good = run_cli(
        "download", url, "--engine", "native", "--sha256", hashlib.sha256(content).hexdigest(), "--json"
    )
    assert good.returncode == 0, good.stderr
    missing = run_cli("download", url.replace("Tiny-Llama", "No-Such"), "--engine", "native")
    assert missing.returncode != 0
    folder: Path = isolated_env["registry"]
    written = {name: (folder / name).read_text() for name in (DISCOVERED, MERGED, HISTORY)}
    history = [json.loads(line) for line in written[HISTORY].splitlines()]
    assert len(history) == 1 and "download" in history[0]["command"]
    for where, text in {
        **written,
        "stdout": good.stdout + missing.stdout,
        "stderr": refused.stderr + wrong.stderr + good.stderr + missing.stderr,
    }.items():
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, (where, leaked)
    assert "alice" not in written[DISCOVERED]


def test_log_lines_are_redacted_by_the_cli_handler(capsys) -> None:
    import logging

    from imageworks.cli.app import _install_logging

    root = logging.getLogger("imageworks")
    for handler in list(root.handlers):  # installed by an earlier in-process run of the CLI
        root.removeHandler(handler)
    _install_logging()
    _install_logging()  # idempotent: one handler
    logger = logging.getLogger("imageworks.transfer")
    logger.warning("retrying %s", "https://h.example/x.gguf?X-Amz-Signature=abcdef123&token=hf_abcdefghijkl")
    err = capsys.readouterr().err
    assert "abcdef123" not in err and "hf_abcdefghijkl" not in err and "h.example/x.gguf" in err
    handlers = logging.getLogger("imageworks").handlers
    assert len(handlers) == 1
    logging.getLogger("imageworks").removeHandler(handlers[0])
