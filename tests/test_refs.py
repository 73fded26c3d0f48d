from __future__ import annotations

import pytest

from imageworks.errors import UsageError
from imageworks.refs import HubRef, UrlRef, parse_reference

ENDPOINT = "http://127.0.0.1:8123"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TheBloke/Llama-3-8B-Instruct-AWQ", HubRef("TheBloke/Llama-3-8B-Instruct-AWQ")),
        ("thebloke/llama-3-8b-instruct-awq@main", HubRef("thebloke/llama-3-8b-instruct-awq", "main")),
        ("owner/repo@refs/pr/1", HubRef("owner/repo", "refs/pr/1")),
        ("owner/repo@feature/new-quant", HubRef("owner/repo", "feature/new-quant")),
        ("owner/repo@" + "a" * 40, HubRef("owner/repo", "a" * 40)),
        ("  owner/repo  ", HubRef("owner/repo")),
        ("hf://owner/repo", HubRef("owner/repo")),
        ("hf://owner/repo@v1.0", HubRef("owner/repo", "v1.0")),
        ("hf://models/owner/repo@refs/pr/2", HubRef("owner/repo", "refs/pr/2")),
        ("https://huggingface.co/owner/repo", HubRef("owner/repo")),
        ("https://huggingface.co/owner/repo/", HubRef("owner/repo")),
        ("https://hf.co/owner/repo", HubRef("owner/repo")),
        ("https://huggingface.co/owner/repo/tree/dev", HubRef("owner/repo", "dev")),
        ("https://huggingface.co/owner/repo/tree/refs%2Fpr%2F1", HubRef("owner/repo", "refs/pr/1")),
        ("https://huggingface.co/owner/repo/tree/refs/pr/1", HubRef("owner/repo", "refs/pr/1")),
        (
            "https://huggingface.co/owner/repo/blob/refs/pr/3/sub/model.gguf",
            HubRef("owner/repo", "refs/pr/3", path="sub/model.gguf"),
        ),
        ("https://huggingface.co/owner/repo/tree/main/Q4_K_M", HubRef("owner/repo", "main", folder="Q4_K_M")),
        (
            "https://huggingface.co/owner/repo/blob/main/sub/model-Q4_K_M.gguf",
            HubRef("owner/repo", "main", path="sub/model-Q4_K_M.gguf"),
        ),
        (
            "https://huggingface.co/owner/repo/resolve/v2/model.gguf?download=true",
            HubRef("owner/repo", "v2", path="model.gguf"),
        ),
        (
            "https://huggingface.co/owner/repo/resolve/main/a%20b.gguf",
            HubRef("owner/repo", "main", path="a b.gguf"),
        ),
        (f"{ENDPOINT}/owner/repo/tree/dev", HubRef("owner/repo", "dev")),
        ("https://example.com/files/model.gguf", UrlRef("https://example.com/files/model.gguf")),
        ("http://127.0.0.2:8123/repos/x/y", UrlRef("http://127.0.0.2:8123/repos/x/y")),
        # The same host on another port is not the configured Hub.
        ("http://127.0.0.1:9999/owner/repo", UrlRef("http://127.0.0.1:9999/owner/repo")),
    ],
)
def test_parse_reference(text: str, expected: object) -> None:
    assert parse_reference(text, endpoint=ENDPOINT) == expected


def test_mirror_with_a_path_prefix() -> None:
    ref = parse_reference(
        "https://mirror.example/hf/owner/repo/tree/dev", endpoint="https://mirror.example/hf"
    )
    assert ref == HubRef("owner/repo", "dev")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "re po",
        "a/b/c",
        "owner/repo@",
        "owner/re po",
        "owner/-repo",
        "owner/repo--x",
        "owner/repo@bad rev",
        "owner/repo@../../etc",
        "ftp://example.com/model.gguf",
        "hf://datasets/owner/data",
        "https://huggingface.co/datasets/owner/data",
        "https://huggingface.co/spaces/owner/app",
        "https://huggingface.co/owner",
        "https://huggingface.co/owner/repo/blob/main",
        "https://huggingface.co/owner/repo/resolve/main/../x",
        "https://huggingface.co/owner/repo/commits/main",
        "https:///nohost",
    ],
)
def test_bad_references_are_one_line_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_reference(text, endpoint=ENDPOINT)
    assert "\n" not in info.value.message
    assert info.value.hint and "OWNER/REPO" in info.value.hint
    assert info.value.exit_code == 2


def test_legacy_id_without_owner_is_a_hub_repo() -> None:
    """`gpt2` is how the Hub (and `hf download gpt2`) still name openai-community/gpt2."""
    assert parse_reference("gpt2") == HubRef("gpt2")
    assert parse_reference("bert-base-uncased@main") == HubRef("bert-base-uncased", "main")


def test_str_round_trip() -> None:
    assert str(parse_reference("owner/repo@refs/pr/1")) == "owner/repo@refs/pr/1"
    assert str(parse_reference("owner/repo")) == "owner/repo"
