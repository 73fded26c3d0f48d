from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from imageworks.errors import EntryNotFound, InsufficientSpace, UnsafePathError, UsageError
from imageworks.listing import RepoFile
from imageworks.locations import Location
from imageworks.plan import KnownFile, build_plan, check_space
from imageworks.select import select_files


def lfs(path: str, size: int = 1000) -> RepoFile:
    return RepoFile(path, size, sha256=hashlib.sha256(path.encode()).hexdigest())


def small(path: str, size: int = 10) -> RepoFile:
    return RepoFile(path, size, git_sha1=hashlib.sha1(path.encode()).hexdigest())


SUPPORT = [
    small(".gitattributes"),
    small("README.md"),
    small("LICENSE"),
    small("config.json"),
    small("generation_config.json"),
    small("tokenizer.json"),
    small("tokenizer_config.json"),
    small("special_tokens_map.json"),
    lfs("tokenizer.model"),
    small("chat_template.jinja"),
]


def paths(selection) -> list[str]:
    return [s.file.path for s in selection.files]


def test_safetensors_preferred_over_the_same_weights_in_other_formats() -> None:
    listing = [
        *SUPPORT,
        lfs("model-00001-of-00002.safetensors"),
        lfs("model-00002-of-00002.safetensors"),
        small("model.safetensors.index.json"),
        lfs("pytorch_model.bin"),
        small("pytorch_model.bin.index.json"),
        lfs("tf_model.h5"),
        lfs("flax_model.msgpack"),
        lfs("onnx/model.onnx"),
        small("onnx/config.json"),
        lfs("original/consolidated.00.pth"),
        small("original/params.json"),
        lfs("training_args.bin"),
        small("assets/logo.png"),
    ]
    sel = select_files(listing)
    assert sel.format == "safetensors"
    assert paths(sel) == sorted(
        [
            "README.md",
            "LICENSE",
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "tokenizer.model",
            "chat_template.jinja",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
        ]
    )
    notes = "\n".join(sel.notes)
    for kind in ("pytorch", "onnx", "h5", "msgpack"):
        assert f"skipped {kind} weights" in notes and f"--format {kind}" in notes
    assert "other file" in notes and "--include" in notes
    assert "onnx/config.json" in sel.skipped and "original/params.json" in sel.skipped


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("pytorch", "pytorch_model.bin"), ("onnx", "onnx/model.onnx"), ("awq", "model.safetensors")],
)
def test_format_flag_picks_the_weights(fmt: str, expected: str) -> None:
    listing = [
        *SUPPORT,
        lfs("model.safetensors"),
        lfs("pytorch_model.bin"),
        lfs("onnx/model.onnx"),
        small("onnx/config.json"),
    ]
    sel = select_files(listing, format=fmt)
    weights = [s.file.path for s in sel.files if s.role == "weights"]
    assert weights == [expected]
    assert ("onnx/config.json" in paths(sel)) == (fmt == "onnx")


def test_format_not_in_repo_lists_what_is() -> None:
    with pytest.raises(UsageError, match="no gguf weights.*safetensors, pytorch"):
        select_files([*SUPPORT, lfs("model.safetensors"), lfs("pytorch_model.bin")], format="gguf")
    with pytest.raises(UsageError, match="unknown --format"):
        select_files(SUPPORT, format="zip")
    with pytest.raises(UsageError, match="only applies to GGUF"):
        select_files([*SUPPORT, lfs("model.safetensors")], quant="Q4_K_M")


GGUF = [
    small("README.md"),
    lfs("Model-7B-Q4_K_M.gguf"),
    lfs("Model-7B-Q8_0.gguf"),
    lfs("Model-7B-Q5_K_S.gguf"),
    lfs("mmproj-Model-7B-F16.gguf"),
    lfs("mmproj-Model-7B-F32.gguf"),
    lfs("Q6_K/Model-7B-Q6_K-00001-of-00002.gguf"),
    lfs("Q6_K/Model-7B-Q6_K-00002-of-00002.gguf"),
]


def test_gguf_default_quant_with_projector() -> None:
    sel = select_files(GGUF)
    assert sel.format == "gguf"
    assert sel.quants == ["Q4_K_M"]
    assert paths(sel) == ["Model-7B-Q4_K_M.gguf", "README.md", "mmproj-Model-7B-F16.gguf"]
    assert sel.available_quants == ["Q4_K_M", "Q5_K_S", "Q6_K", "Q8_0"]
    assert any("chose quant Q4_K_M" in n and "Q8_0" in n for n in sel.notes)


def test_gguf_default_order_without_q4_k_m() -> None:
    sel = select_files([f for f in GGUF if "Q4_K_M" not in f.path])
    assert sel.quants == ["Q8_0"]


def test_gguf_quant_flag_split_parts_and_all() -> None:
    sel = select_files(GGUF, quant="q6_k")
    assert [s.file.path for s in sel.files if s.role == "weights"] == [
        "Q6_K/Model-7B-Q6_K-00001-of-00002.gguf",
        "Q6_K/Model-7B-Q6_K-00002-of-00002.gguf",
    ]
    assert not any("chose quant" in n for n in sel.notes)
    every = select_files(GGUF, quant="all")
    assert len([s for s in every.files if s.role == "weights"]) == 5
    assert len([s for s in every.files if s.role == "projector"]) == 2
    both = select_files(GGUF, quant="Q8_0,Q5_K_S")
    assert both.quants == ["Q8_0", "Q5_K_S"]
    with pytest.raises(UsageError) as info:
        select_files(GGUF, quant="IQ2_XS")
    assert "Q4_K_M" in (info.value.hint or "")


def test_single_file_reference_brings_support_files_and_split_siblings() -> None:
    listing = [*SUPPORT, *GGUF[1:], small("Q6_K/notes.txt")]
    sel = select_files(listing, path="Model-7B-Q8_0.gguf")
    assert [s.file.path for s in sel.files if s.role == "weights"] == ["Model-7B-Q8_0.gguf"]
    assert "config.json" in paths(sel) and "Q6_K/notes.txt" not in paths(sel)
    split = select_files(listing, path="Q6_K/Model-7B-Q6_K-00002-of-00002.gguf")
    assert [s.file.path for s in split.files if s.role == "weights"] == [
        "Q6_K/Model-7B-Q6_K-00001-of-00002.gguf",
        "Q6_K/Model-7B-Q6_K-00002-of-00002.gguf",
    ]
    assert "Q6_K/notes.txt" in paths(split)
    with pytest.raises(EntryNotFound):
        select_files(listing, path="nope.gguf")


def test_tree_url_folder_restricts_the_weights() -> None:
    sel = select_files([*SUPPORT, *GGUF[1:]], folder="Q6_K")
    assert sel.quants == ["Q6_K"]
    assert [s.file.path for s in sel.files if s.role == "weights"] == [
        "Q6_K/Model-7B-Q6_K-00001-of-00002.gguf",
        "Q6_K/Model-7B-Q6_K-00002-of-00002.gguf",
    ]
    assert "config.json" in paths(sel)
    with pytest.raises(EntryNotFound):
        select_files(GGUF, folder="nope")


def test_include_exclude_and_hidden_files() -> None:
    listing = [*SUPPORT, lfs("model.safetensors"), small("images/chart.png"), small(".github/workflow.yml")]
    sel = select_files(listing, include=["*.png"], exclude=["LICENSE", "chat_template.*"])
    assert "images/chart.png" in paths(sel)
    assert "LICENSE" not in paths(sel) and "chat_template.jinja" not in paths(sel)
    assert ".gitattributes" not in paths(sel) and ".github/workflow.yml" not in paths(sel)
    assert {s.role for s in sel.files if s.file.path == "images/chart.png"} == {"included"}


def test_consolidated_duplicate_is_skipped() -> None:
    listing = [
        *SUPPORT,
        lfs("consolidated.safetensors"),
        lfs("model-00001-of-00002.safetensors"),
        lfs("model-00002-of-00002.safetensors"),
        small("model.safetensors.index.json"),
    ]
    sel = select_files(listing)
    assert "consolidated.safetensors" not in paths(sel)
    assert any("consolidated" in n for n in sel.notes)


def test_no_weights_is_a_plan_of_support_files() -> None:
    sel = select_files(SUPPORT)
    assert sel.format is None and "config.json" in paths(sel)
    assert any("no weight files" in n for n in sel.notes)


# ------------------------------------------------------------------------------------------- plans


def _plan(tmp_path: Path, rows, known=None):
    return build_plan(
        reference="o/r",
        provider="hf",
        location=Location("path", tmp_path),
        folder=tmp_path / "o" / "r",
        files=rows,
        known=known,
    )


@pytest.mark.parametrize(
    "bad", ["../evil.txt", "/tmp/evil.txt", "sub/../../evil.txt", "C:/evil.txt", "a\\..\\b"]
)
def test_server_paths_outside_the_folder_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UnsafePathError):
        _plan(tmp_path, [("config.json", 2, None, None, "support"), (bad, 2, None, None, "support")])


def test_present_files_are_verified_against_their_digests(tmp_path: Path) -> None:
    folder = tmp_path / "o" / "r"
    folder.mkdir(parents=True)
    good, bad = b"x" * 100, b"y" * 100
    (folder / "good.safetensors").write_bytes(good)
    (folder / "bad.safetensors").write_bytes(bad)
    (folder / "config.json").write_bytes(b"{}")
    sha1 = hashlib.sha1(b"blob 2\0{}").hexdigest()
    plan = _plan(
        tmp_path,
        [
            ("good.safetensors", 100, hashlib.sha256(good).hexdigest(), None, "weights"),
            ("bad.safetensors", 100, hashlib.sha256(good).hexdigest(), None, "weights"),
            ("config.json", 2, None, sha1, "support"),
            ("missing.json", 5, None, "0" * 40, "support"),
        ],
    )
    state = {f.path: f.present for f in plan.files}
    assert state == {
        "good.safetensors": True,
        "bad.safetensors": False,
        "config.json": True,
        "missing.json": False,
    }
    assert plan.bytes_remaining == 105 and plan.bytes_present == 102


def test_recorded_files_are_trusted_without_hashing(tmp_path: Path) -> None:
    folder = tmp_path / "o" / "r"
    folder.mkdir(parents=True)
    weights = folder / "model.safetensors"
    weights.write_bytes(b"z" * 64)
    st = weights.stat()
    digest = "ab" * 32  # not the real digest: only the record can make this file "present"
    known = {"model.safetensors": KnownFile(64, digest, st.st_mtime_ns)}
    assert _plan(tmp_path, [("model.safetensors", 64, digest, None, "weights")], known).files[0].present
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched since: hash it again
    assert not _plan(tmp_path, [("model.safetensors", 64, digest, None, "weights")], known).files[0].present


def test_partial_bytes_and_free_space(tmp_path: Path) -> None:
    folder = tmp_path / "o" / "r"
    folder.mkdir(parents=True)
    (folder / ".model.safetensors.imageworks-partial").write_bytes(b"p" * 4096)
    plan = _plan(tmp_path, [("model.safetensors", 10_000, "0" * 64, None, "weights")])
    assert plan.files[0].partial_bytes == 4096
    assert plan.bytes_remaining == 10_000 - 4096
    assert plan.free_bytes and plan.enough_space
    plan.free_bytes = 100
    with pytest.raises(InsufficientSpace, match="to fetch"):
        check_space(plan)
    assert plan.as_dict()["enough_space"] is False


def test_one_format_vocabulary() -> None:
    from imageworks.formats import canonical_format, classify_weight_file, file_format_of, weight_stem

    assert canonical_format("BitsAndBytes") == "bnb" and canonical_format("tf") == "h5"
    assert canonical_format("AWQ") == "awq" and canonical_format("zip") is None
    assert file_format_of("awq") == "safetensors" and file_format_of("gguf") == "gguf"
    assert classify_weight_file("training_args.bin") is None and classify_weight_file("x.onnx_data") == "onnx"
    assert weight_stem("tinyllama.Q8_0.gguf") == "tinyllama.Q8_0" and weight_stem("README.md") == "README.md"
    listing = [*SUPPORT, lfs("model.safetensors")]
    assert select_files(listing, format="GPTQ").flavour == "gptq"  # confirmed from the configs later
    assert select_files(listing, format="compressed-tensors").flavour is None  # inspection cannot tell
    assert select_files(listing, format="safetensors").flavour is None


def test_a_recorded_file_that_changed_is_stale(tmp_path: Path) -> None:
    folder = tmp_path / "o" / "r"
    folder.mkdir(parents=True)
    weights = folder / "model.gguf"
    weights.write_bytes(b"a" * 64)
    recorded = hashlib.sha256(b"a" * 64).hexdigest()
    weights.write_bytes(b"b" * 64)  # same size, new bytes, the mtime moves
    known = {"model.gguf": KnownFile(64, recorded, 1)}
    # A direct URL without --sha256: the digest recorded last time is what the file is checked against.
    item = _plan(tmp_path, [("model.gguf", 64, None, None, "weights")], known).files[0]
    assert item.stale and not item.present
    weights.write_bytes(b"a" * 64)
    item = _plan(tmp_path, [("model.gguf", 64, None, None, "weights")], known).files[0]
    assert item.present and not item.stale and item.local_sha256 == recorded


def test_names_too_long_for_the_filesystem_fail_the_plan(tmp_path: Path) -> None:
    from imageworks.errors import TransferError

    with pytest.raises(TransferError, match=r"1 file name too long .*x{24}"):
        _plan(
            tmp_path,
            [("README.md", 2, None, None, "support"), ("x" * 240 + ".json", 2, None, None, "support")],
        )
    assert not (tmp_path / "o").exists()


def test_a_recorded_small_file_is_trusted_for_the_commit_it_was_verified_against(tmp_path: Path) -> None:
    folder = tmp_path / "o" / "r"
    folder.mkdir(parents=True)
    config = folder / "config.json"
    config.write_bytes(b"{}")
    st = config.stat()
    rows = [("config.json", 2, None, "0" * 40, "support")]  # not the real blob id: only a record can pass
    known = {"config.json": KnownFile(2, "cd" * 32, st.st_mtime_ns, commit="a" * 40)}

    def plan(commit: str):
        return build_plan(
            reference="o/r",
            provider="hf",
            location=Location("path", tmp_path),
            folder=folder,
            files=rows,
            known=known,
            commit=commit,
        ).files[0]

    assert plan("a" * 40).present  # recorded from this commit, unchanged since: not read again
    moved = plan("b" * 40)  # another commit: the listing's blob id decides
    assert not moved.present and moved.stale
