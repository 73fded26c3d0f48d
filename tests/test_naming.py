"""The README's naming table ("### Names"), pinned row by row against `imageworks.naming.model_name`:
the documentation and the one naming rule cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imageworks.naming import model_name

README = Path(__file__).resolve().parents[1] / "README.md"

# The README's left cell -> the model it describes, as model_name's arguments.
CASES: dict[str, dict] = {
    "`Qwen/Qwen2-VL-2B-Instruct`": {"provider": "hf", "repo_id": "Qwen/Qwen2-VL-2B-Instruct"},
    "revision `refs/pr/1` of it": {
        "provider": "hf",
        "repo_id": "Qwen/Qwen2-VL-2B-Instruct",
        "revision": "refs/pr/1",
    },
    "the Q4_K_M file of `bartowski/Llama-3.2-3B-Instruct-GGUF`": {
        "provider": "hf",
        "repo_id": "bartowski/Llama-3.2-3B-Instruct-GGUF",
        "quant": "Q4_K_M",
    },
    "a direct URL `.../tinyllama.Q8_0.gguf`": {
        "provider": "url",
        "url": "https://example.org/models/tinyllama.Q8_0.gguf?download=true",
        "quant": "Q8_0",
    },
    "a folder outside the owner/repo layout": {"provider": "local", "folder": Path("/data/misc/My SD Model")},
}
# Placeholders in the README's right cell, as filled for the folder above.
PLACEHOLDERS = {"<parent>": "misc", "<folder>": "my-sd-model"}


def readme_names_table() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Names", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in {"model", "---"} and not set(cells[0]) <= {"-", " "}:
            rows[cells[0]] = cells[1]
    return rows


def test_the_readme_table_is_the_one_pinned_here() -> None:
    assert set(readme_names_table()) == set(CASES)


@pytest.mark.parametrize("row", sorted(CASES))
def test_each_row_is_what_model_name_gives(row: str) -> None:
    documented = readme_names_table()[row]
    match = re.fullmatch(r"`([^`]+)`", documented)
    assert match, documented
    expected = match.group(1)
    for placeholder, value in PLACEHOLDERS.items():
        expected = expected.replace(placeholder, value)
    assert model_name(**CASES[row]) == expected


def test_the_owner_keeps_two_llamas_apart() -> None:
    """README: "The owner is part of the name, so two owners' `llama-3-8b` never collide"."""
    a = model_name("hf", repo_id="meta/llama-3-8b")
    b = model_name("hf", repo_id="someone/llama-3-8b")
    assert a != b and a.endswith("/llama-3-8b") and b.endswith("/llama-3-8b")
