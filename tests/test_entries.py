from __future__ import annotations

from pathlib import Path

from imageworks.entries import build_entry, find_existing, folder_variants, record_entry
from imageworks.hashing import sha256_file
from imageworks.registry import FileRecord, RegistryStore, Source
from tests import modelfiles


def records(folder: Path, names: list[str] | None = None) -> list[FileRecord]:
    paths = names or sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    out = []
    for rel in paths:
        st = (folder / rel).stat()
        out.append(
            FileRecord(path=rel, size=st.st_size, sha256=sha256_file(folder / rel), mtime_ns=st.st_mtime_ns)
        )
    return out


def hf(repo_id: str, revision: str = "main") -> Source:
    return Source(provider="hf", repo_id=repo_id, revision=revision, commit="c" * 40)


def test_entry_from_an_awq_folder(tmp_path: Path) -> None:
    folder = modelfiles.write_hf_model(tmp_path / "TheBloke" / "Llama-AWQ", "awq", bits=4, group_size=128)
    entry = build_entry(folder, source=hf("TheBloke/Llama-AWQ"), location="linux_wsl", files=records(folder))
    assert entry.name == "thebloke/llama-awq"
    assert entry.format == "awq" and entry.quantization == "awq-4bit-g128"
    assert entry.size_bytes == sum(r.size for r in entry.files)
    assert entry.aggregate_sha256 and len(entry.aggregate_sha256) == 64
    assert "--quantization awq" in entry.serve["vllm"]["command"]
    assert entry.metadata["architecture"] == "LlamaForCausalLM" and entry.metadata["evidence"]
    assert "chat_template" in entry.capabilities


def test_gguf_quant_in_the_name_only_for_one_quant(tmp_path: Path) -> None:
    folder = tmp_path / "Owner" / "Tiny-GGUF"
    modelfiles.write_gguf_repo(folder, "Tiny", ("Q4_K_M", "Q8_0"))
    q4 = build_entry(
        folder,
        source=hf("Owner/Tiny-GGUF"),
        location="linux_wsl",
        files=records(folder, ["Tiny-Q4_K_M.gguf"]),
    )
    q8 = build_entry(
        folder, source=hf("Owner/Tiny-GGUF"), location="linux_wsl", files=records(folder, ["Tiny-Q8_0.gguf"])
    )
    both = build_entry(folder, source=hf("Owner/Tiny-GGUF"), location="linux_wsl", files=records(folder))
    assert (q4.name, q4.quantization) == ("owner/tiny-gguf:q4_k_m", "Q4_K_M")
    assert q8.name == "owner/tiny-gguf:q8_0"
    assert both.name == "owner/tiny-gguf" and both.quantization is None
    assert sorted(both.metadata["gguf_quants"]) == ["Q4_K_M", "Q8_0"]
    assert "FROM" in q4.serve["ollama"]["modelfile"]


def test_format_hint_is_only_a_fallback(tmp_path: Path) -> None:
    folder = tmp_path / "o" / "r"
    folder.mkdir(parents=True)
    (folder / "weights.dat").write_bytes(b"\0" * 32)
    entry = build_entry(
        folder, source=hf("o/r"), location="linux_wsl", files=records(folder), format_hint="exl2"
    )
    assert entry.format == "exl2"
    st_folder = modelfiles.write_hf_model(tmp_path / "o" / "st", "plain-bf16")
    entry = build_entry(
        st_folder, source=hf("o/st"), location="linux_wsl", files=records(st_folder), format_hint="awq"
    )
    assert entry.format == "safetensors" and entry.metadata["format_requested"] == "awq"


def test_record_updates_the_same_entry_and_keeps_hand_set_fields(tmp_path: Path) -> None:
    folder = tmp_path / "Owner" / "Tiny-GGUF"
    modelfiles.write_gguf_repo(folder, "Tiny", ("Q4_K_M", "Q8_0"))
    store = RegistryStore(tmp_path / "registry")
    q4 = build_entry(
        folder,
        source=hf("Owner/Tiny-GGUF"),
        location="linux_wsl",
        files=records(folder, ["Tiny-Q4_K_M.gguf"]),
    )
    with store.transaction("test") as reg:
        record_entry(reg, q4)
    with store.transaction("test") as reg:
        stored = reg.discovered_entry(q4.name)
        assert stored is not None
        reg.put(stored.model_copy(update={"aliases": ["tiny-q4"], "tags": ["favourite"]}))
    # Same model again, the repo id typed in another case: the same entry, aliases kept.
    again = build_entry(
        folder,
        source=hf("owner/tiny-gguf"),
        location="linux_wsl",
        files=records(folder, ["Tiny-Q4_K_M.gguf"]),
    )
    q8 = build_entry(
        folder, source=hf("Owner/Tiny-GGUF"), location="linux_wsl", files=records(folder, ["Tiny-Q8_0.gguf"])
    )
    with store.transaction("test") as reg:
        assert getattr(find_existing(reg, again), "name", None) == q4.name
        assert find_existing(reg, q8) is None  # same folder, another quant: its own entry
        record_entry(reg, again)
        record_entry(reg, q8)
    reg = store.load()
    assert sorted(e.name for e in reg.entries()) == ["owner/tiny-gguf:q4_k_m", "owner/tiny-gguf:q8_0"]
    assert getattr(reg.get("owner/tiny-gguf:q4_k_m"), "aliases", None) == ["tiny-q4"]


def test_a_scan_of_a_downloaded_folder_finds_the_download(tmp_path: Path) -> None:
    folder = modelfiles.write_hf_model(tmp_path / "Owner" / "Model", "plain-bf16")
    store = RegistryStore(tmp_path / "registry")
    downloaded = build_entry(folder, source=hf("Owner/Model"), location="linux_wsl", files=records(folder))
    with store.transaction("download") as reg:
        record_entry(reg, downloaded)
    scanned = build_entry(
        folder, source=Source(provider="local"), location="linux_wsl", files=records(folder)
    )
    assert scanned.name != downloaded.name
    with store.transaction("scan") as reg:
        stored = record_entry(reg, scanned)
    assert stored.name == downloaded.name and stored.source.provider == "hf"
    assert [e.name for e in store.load().entries()] == [downloaded.name]


def test_name_collision_between_different_models(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "registry")
    names = []
    for host in ("a.example", "b.example"):
        folder = tmp_path / "url" / host / "model"
        modelfiles.write_gguf(folder / "model.gguf")
        entry = build_entry(
            folder,
            source=Source(provider="url", url=f"https://{host}/model.gguf"),
            location="linux_wsl",
            files=records(folder),
        )
        with store.transaction("test") as reg:
            names.append(record_entry(reg, entry).name)
    assert names[0] == "url/model:q4_k_m" and names[1].startswith("url/model:q4_k_m-")
    assert len(store.load().entries()) == 2


def test_curated_only_entry_is_updated_under_its_name(tmp_path: Path) -> None:
    import json

    folder = modelfiles.write_hf_model(tmp_path / "Owner" / "Model", "plain-bf16")
    registry_dir = tmp_path / "registry"
    registry_dir.mkdir()
    curated = {
        "schema_version": 1,
        "models": {"my-model": {"source": {"provider": "hf", "repo_id": "owner/model"}, "tags": ["pinned"]}},
    }
    (registry_dir / "model_registry.curated.json").write_text(json.dumps(curated))
    store = RegistryStore(registry_dir)
    entry = build_entry(folder, source=hf("Owner/Model"), location="linux_wsl", files=records(folder))
    with store.transaction("test") as reg:
        stored = record_entry(reg, entry)
    assert stored.name == "my-model"
    merged = store.load().get("my-model")
    assert merged is not None
    assert merged.tags == ["pinned"] and merged.format == "safetensors"


def test_a_folder_of_several_quants_makes_one_variant_per_quant(tmp_path: Path) -> None:
    folder = tmp_path / "Owner" / "Mixed-GGUF"
    modelfiles.write_gguf_repo(folder, "Mixed", ("Q4_K_M",), split_parts=2, mmproj=True)
    modelfiles.write_gguf_repo(folder, "Mixed", ("Q8_0",))
    modelfiles.write_hf_model(folder, "plain-bf16")  # safetensors beside the GGUF files
    paths = [r.path for r in records(folder)]
    variants = folder_variants(folder, paths)
    by_quant = {insp.quantization: v for v, insp in variants}
    assert set(by_quant) == {"Q4_K_M", "Q8_0", "bf16"}
    q4, q8, st = by_quant["Q4_K_M"], by_quant["Q8_0"], by_quant["bf16"]
    shared = {p for p in paths if p.endswith(".json") or p.endswith(".md")}
    assert q4.weight_files == {"Mixed-Q4_K_M-00001-of-00002.gguf", "Mixed-Q4_K_M-00002-of-00002.gguf"}
    assert set(q4.files) == q4.weight_files | {"mmproj-Mixed-F16.gguf"} | shared
    assert set(q8.files) == {"Mixed-Q8_0.gguf", "mmproj-Mixed-F16.gguf"} | shared
    assert "mmproj-Mixed-F16.gguf" not in st.files and st.weight_files <= set(st.files)
    # Every file belongs to some variant, and the variants' own weights do not overlap.
    assert set().union(*(v.files for v, _ in variants)) == set(paths)
    assert sum(len(v.weight_files) for v, _ in variants) == len(
        set().union(*(v.weight_files for v, _ in variants))
    )

    names = sorted(
        build_entry(
            folder,
            source=hf("Owner/Mixed-GGUF"),
            location="linux_wsl",
            files=records(folder, list(v.files)),
            inspection=insp,
        ).name
        for v, insp in variants
    )
    assert names == ["owner/mixed-gguf", "owner/mixed-gguf:q4_k_m", "owner/mixed-gguf:q8_0"]


def test_one_kind_of_weights_is_one_variant_with_every_file(tmp_path: Path) -> None:
    folder = tmp_path / "Owner" / "One-GGUF"
    modelfiles.write_gguf_repo(folder, "One", ("Q5_K_M",), split_parts=3, mmproj=True)
    paths = [r.path for r in records(folder)]
    ((variant, inspection),) = folder_variants(folder, paths)
    assert list(variant.files) == paths and inspection.quantization == "Q5_K_M"
    assert len(variant.weight_files) == 3


def test_digest_source_per_file() -> None:
    """Where a recorded digest came from: the record's own `digest_source` when set, else what the entry
    says (a downloaded Hub/URL entry: "hub"/"url"; anything else, e.g. a scanned owner/repo folder: "disk")."""
    from imageworks.entries import digest_source
    from imageworks.registry import ModelEntry

    digest = "a" * 64
    hashed = FileRecord(path="w.safetensors", size=1, sha256=digest)
    hub = Source(provider="hf", repo_id="o/r", commit="c" * 40)
    downloaded = ModelEntry(name="o/r", source=hub, downloaded_at="2026-12-06T00:00:00Z", files=[hashed])
    scanned = ModelEntry(name="o/r", source=Source(provider="hf", repo_id="o/r"), files=[hashed])
    url = ModelEntry(
        name="url/w", source=Source(provider="url", url="http://h/w"), downloaded_at="x", files=[hashed]
    )
    assert digest_source(downloaded, hashed) == "hub"
    assert digest_source(url, hashed) == "url"
    assert digest_source(scanned, hashed) == "disk"
    assert digest_source(downloaded, hashed.model_copy(update={"sha256": None})) is None
    explicit = FileRecord.model_validate({**hashed.model_dump(), "digest_source": "disk"})
    assert digest_source(downloaded, explicit) == "disk"
    assert digest_source(scanned, explicit.model_copy(update={"digest_source": "hub"})) == "hub"
