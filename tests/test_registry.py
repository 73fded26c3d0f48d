"""The layered registry: schema, merge, atomic writes, locking, backups, change log, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imageworks.errors import AmbiguousName, ModelNotFound, RegistryError, RegistryWriteError
from imageworks.redaction import redact_argv
from imageworks.registry import ModelEntry, RegistryStore, Source, find_entry
from imageworks.registry.merge import deep_merge
from imageworks.registry.schema import SCHEMA_VERSION
from imageworks.registry.store import CURATED, DISCOVERED, HISTORY, MERGED


def entry(name: str, **kw) -> ModelEntry:
    return ModelEntry(name=name, **kw)


def write_curated(folder: Path, models: dict, version: int = SCHEMA_VERSION) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CURATED
    path.write_text(json.dumps({"schema_version": version, "models": models}, indent=2))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def test_put_writes_discovered_and_merged_deterministically(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "reg")
    with store.transaction(["test"]) as reg:
        reg.put(entry("b/model", format="gguf"))
        reg.put(entry("a/model", format="safetensors"))
    text = (tmp_path / "reg" / DISCOVERED).read_text()
    assert text.endswith("}\n") and "\n  " in text
    doc = json.loads(text)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert list(doc["models"]) == ["a/model", "b/model"]
    merged = json.loads((tmp_path / "reg" / MERGED).read_text())
    assert merged["models"]["b/model"]["format"] == "gguf"
    before = snapshot(tmp_path / "reg")
    with store.transaction(["noop"]) as reg:
        reg.put(entry("a/model", format="safetensors"))  # same content: a no-op
    assert snapshot(tmp_path / "reg") == before
    assert len(store.history()) == 1


def test_curated_deep_merges_over_discovered(tmp_path: Path) -> None:
    folder = tmp_path / "reg"
    write_curated(
        folder,
        {
            "org/m": {
                "display_name": "My Model",
                "format": None,  # null = no override
                "source": {"revision": "v2"},
                "tags": ["pinned"],
                "my_custom_key": {"keep": True},
            },
            "only/curated": {"format": "gguf", "path": "/x"},
        },
    )
    store = RegistryStore(folder)
    with store.transaction(["t"]) as reg:
        reg.put(entry("org/m", format="awq", tags=["a", "b"], source=Source(provider="hf", repo_id="Org/M")))
    reg = store.load()
    merged = reg.get("org/m")
    assert merged is not None
    assert merged.display_name == "My Model"
    assert merged.format == "awq"
    assert merged.source.repo_id == "Org/M" and merged.source.revision == "v2"
    assert merged.tags == ["pinned"]  # lists replace
    assert merged.model_extra == {"my_custom_key": {"keep": True}}
    assert reg.get("only/curated") is not None and getattr(reg.get("only/curated"), "format", None) == "gguf"
    origins = reg.origins("org/m")
    assert origins["display_name"] == "curated" and origins["format"] == "discovered"
    assert origins["source"] == "curated+discovered"
    # The curated file is never rewritten by tools.
    assert "my_custom_key" in (folder / CURATED).read_text()
    assert json.loads((folder / CURATED).read_text())["models"]["org/m"]["format"] is None


def test_deep_merge_rules() -> None:
    base = {"a": 1, "n": {"x": 1, "y": 2}, "l": [1, 2]}
    assert deep_merge(base, {"a": None, "n": {"y": 3}, "l": [9]}) == {"a": 1, "n": {"x": 1, "y": 3}, "l": [9]}
    assert base == {"a": 1, "n": {"x": 1, "y": 2}, "l": [1, 2]}


def test_malformed_json_names_file_line_column(tmp_path: Path) -> None:
    folder = tmp_path / "reg"
    folder.mkdir()
    (folder / DISCOVERED).write_text('{\n  "schema_version": 1,\n  "models": {,}\n}\n')
    with pytest.raises(RegistryError) as info:
        RegistryStore(folder).load()
    assert DISCOVERED in str(info.value) and "line 3" in str(info.value) and "column" in str(info.value)


def test_duplicate_names_and_wrong_types_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "reg"
    folder.mkdir()
    (folder / CURATED).write_text('{"schema_version": 1, "models": {"x": {}, "x": {"format": "gguf"}}}')
    with pytest.raises(RegistryError, match="duplicate key 'x'"):
        RegistryStore(folder).load()
    (folder / CURATED).write_text('{"schema_version": 1, "models": {"x": {"size_bytes": "huge"}}}')
    with pytest.raises(RegistryError, match=r"entry 'x', field size_bytes"):
        RegistryStore(folder).load()
    (folder / CURATED).write_text('{"schema_version": 1, "models": {"x": {"files": [{"path": "a"}]}}}')
    with pytest.raises(RegistryError, match=r"entry 'x', field files\.0\.size"):
        RegistryStore(folder).load()


def test_newer_schema_is_refused_older_is_migrated(tmp_path: Path) -> None:
    folder = tmp_path / "reg"
    write_curated(folder, {}, version=SCHEMA_VERSION + 1)
    with pytest.raises(RegistryError, match="newer"):
        RegistryStore(folder).load()
    (folder / CURATED).write_text(json.dumps([{"name": "legacy/model", "format": "gguf"}]))
    reg = RegistryStore(folder).load()
    assert getattr(reg.get("legacy/model"), "format", None) == "gguf"


def test_lookup_rules(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "reg")
    with store.transaction(["t"]) as reg:
        reg.put(
            entry(
                "qwen/qwen2-vl-2b-instruct",
                aliases=["vl2b"],
                source=Source(provider="hf", repo_id="Qwen/Qwen2-VL-2B-Instruct"),
            )
        )
        reg.put(
            entry("bartowski/llama-gguf:q4_k_m", source=Source(provider="hf", repo_id="bartowski/Llama-GGUF"))
        )
        reg.put(
            entry("bartowski/llama-gguf:q8_0", source=Source(provider="hf", repo_id="bartowski/Llama-GGUF"))
        )
    reg = store.load()
    assert find_entry(reg, "vl2b").name == "qwen/qwen2-vl-2b-instruct"
    assert find_entry(reg, "QWEN/qwen2-VL-2b-instruct").name == "qwen/qwen2-vl-2b-instruct"
    assert find_entry(reg, "qwen2-vl-2b").name == "qwen/qwen2-vl-2b-instruct"
    with pytest.raises(AmbiguousName) as info:
        find_entry(reg, "bartowski/llama-GGUF")
    assert sorted(info.value.candidates) == ["bartowski/llama-gguf:q4_k_m", "bartowski/llama-gguf:q8_0"]
    with pytest.raises(ModelNotFound):
        find_entry(reg, "nothing-like-this")


def test_backups_are_kept_and_pruned(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "reg", keep_backups=3)
    for i in range(6):
        with store.transaction(["t"]) as reg:
            reg.put(entry(f"m/{i}"))
    backups = sorted((tmp_path / "reg" / "backups").iterdir())
    assert len([b for b in backups if b.name.endswith(DISCOVERED)]) == 3
    newest = [b for b in backups if b.name.endswith(DISCOVERED)][-1]
    assert "m/4" in json.loads(newest.read_text())["models"]
    with store.transaction(["t"], backup=False) as reg:
        reg.put(entry("m/9"))
    assert sorted((tmp_path / "reg" / "backups").iterdir()) == backups


def test_history_has_patch_and_no_token(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "reg")
    with store.transaction(["imageworks-download", "download", "a/b", "--token", "hf_SECRETSECRET"]) as reg:
        reg.put(entry("a/b", metadata={"note": "Authorization: Bearer hf_SECRETSECRET"}))
    with store.transaction("cmd --token=hf_SECRETSECRET") as reg:
        reg.remove("a/b")
    text = (tmp_path / "reg" / HISTORY).read_text()
    assert "hf_SECRETSECRET" not in text
    records = store.history()
    assert records[0]["patch"][0]["op"] == "add" and records[0]["patch"][0]["path"] == "/models/a~1b"
    assert records[1]["patch"] == [{"op": "remove", "path": "/models/a~1b"}]
    assert redact_argv(["x", "--token", "abc"]) == "x --token '<redacted>'"
    assert "hf_SECRET" not in redact_argv(
        ["x", "--token=hf_SECRETSECRET", "Authorization: Bearer hf_SECRETSECRET"]
    )


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under `folder`, hidden ones and backups/ included."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def _occupy(path: Path) -> None:
    """As root, permission bits do not stop a write: a non-empty folder at a file's name does."""
    path.unlink(missing_ok=True)
    path.mkdir()
    (path / "x").write_text("occupied")


def _free(path: Path) -> None:
    (path / "x").unlink()
    path.rmdir()


@pytest.mark.parametrize("blocked", [MERGED, HISTORY, DISCOVERED])
def test_a_failed_save_changes_nothing_and_says_so(
    tmp_path: Path, blocked: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever write fails (merged view, change log, discovered layer), the whole folder is as it
    was, and the message's "nothing was changed" is true (issue 9.7)."""
    import errno

    from imageworks.registry import store as store_module

    folder = tmp_path / "reg"
    store = RegistryStore(folder)
    with store.transaction(["t"]) as reg:
        reg.put(entry("a/b"))
    with store.transaction(["t"]) as reg:
        reg.put(entry("a/c"))
    if blocked == DISCOVERED:  # the disk fills up just then
        real = store_module.atomic_write_text

        def full_disk(path: Path, text: str | bytes) -> None:
            if path.name == DISCOVERED:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            real(path, text)

        monkeypatch.setattr(store_module, "atomic_write_text", full_disk)
    else:
        (folder / blocked).rename(folder / "saved")
        _occupy(folder / blocked)
    before = tree(folder)
    with (
        pytest.raises(RegistryWriteError, match="cannot save the registry") as info,
        store.transaction(["t"]) as reg,
    ):
        reg.put(entry("c/d"))
    assert info.value.hint and info.value.hint.startswith("nothing was changed")
    assert tree(folder) == before
    monkeypatch.undo()
    if blocked != DISCOVERED:
        _free(folder / blocked)
        (folder / "saved").rename(folder / blocked)
    assert sorted(store.load().discovered) == ["a/b", "a/c"]
    assert [r["command"] for r in store.history()] == ["t", "t"]
    # and the next command works and logs exactly its own change
    with store.transaction(["t2"]) as reg:
        reg.put(entry("e/f"))
    assert sorted(store.load().discovered) == ["a/b", "a/c", "e/f"]
    assert [r["command"] for r in store.history()] == ["t", "t", "t2"]
    assert sorted(json.loads((folder / MERGED).read_text())["models"]) == ["a/b", "a/c", "e/f"]


def test_read_only_folder_gives_clear_error_and_nothing_half_written(tmp_path: Path) -> None:
    folder = tmp_path / "reg"
    store = RegistryStore(folder)
    with store.transaction(["t"]) as reg:
        reg.put(entry("a/b"))
    if os.geteuid() == 0:
        pytest.skip("root ignores permission bits (the occupied-name cases above cover the failure paths)")
    before = tree(folder)
    folder.chmod(0o555)
    try:
        with pytest.raises(RegistryWriteError, match="cannot"), store.transaction(["t"]) as reg:
            reg.put(entry("c/d"))
    finally:
        folder.chmod(0o755)
    assert tree(folder) == before


_DIES = """
import os, sys
from imageworks.registry import ModelEntry, RegistryStore
from imageworks.registry import store as store_module
store = RegistryStore(sys.argv[1])
if sys.argv[2] == "after-line":      # the change-log line is written, the layer is not
    store_module.RegistryStore._write_discovered = lambda self, text: os._exit(9)
else:                                 # the layer is saved, the merged view is not
    real = store_module.atomic_write_text
    def dying(path, text):
        if path.name == "model_registry.json":
            os._exit(9)
        real(path, text)
    store_module.atomic_write_text = dying
with store.transaction(["dies"]) as reg:
    reg.put(ModelEntry(name="x/dies"))
"""


@pytest.mark.parametrize("where", ["after-line", "after-layer"])
def test_the_change_log_never_misses_a_change_the_registry_holds(tmp_path: Path, where: str) -> None:
    """Killed between two writes of a commit: the change log and the layer still agree (issue 15.9)."""
    folder = tmp_path / "reg"
    store = RegistryStore(folder)
    with store.transaction(["first"]) as reg:
        reg.put(entry("a/b"))
    died = subprocess.run([sys.executable, "-c", _DIES, str(folder), where], timeout=60)
    assert died.returncode == 9
    held = "x/dies" in store.load().discovered
    assert held == (where == "after-layer")
    logged = [r["command"] for r in store.history()]
    assert logged == (["first", "dies"] if held else ["first"])
    with store.transaction(["next"]) as reg:
        reg.put(entry("n/m"))
    assert [r["command"] for r in store.history()] == [*logged, "next"]
    lines = (folder / HISTORY).read_text().splitlines()
    assert len(lines) == len(logged) + 1  # the orphan line was taken back under the lock
    merged = json.loads((folder / MERGED).read_text())["models"]
    assert ("x/dies" in merged) == held and "n/m" in merged


def test_verified_at_is_bookkeeping_no_backup_no_log_line(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "reg")
    with store.transaction(["t"]) as reg:
        reg.put(entry("a/b", files=[{"path": "f", "size": 1, "sha256": "0" * 64}]))
    backups = (
        sorted((tmp_path / "reg" / "backups").glob("*")) if (tmp_path / "reg" / "backups").exists() else []
    )
    for i in range(3):
        with store.transaction(["verify"]) as reg:
            current = reg.discovered_entry("a/b")
            assert current is not None
            updated = current.model_copy(deep=True)
            updated.verified_at = f"2026-12-06T00:00:0{i}Z"
            updated.files[0].mtime_ns = 1000 + i
            reg.put(updated)
    assert store.load().discovered["a/b"]["verified_at"] == "2026-12-06T00:00:02Z"
    assert len(store.history()) == 1
    after = (
        sorted((tmp_path / "reg" / "backups").glob("*")) if (tmp_path / "reg" / "backups").exists() else []
    )
    assert after == backups
    with store.transaction(["edit"]) as reg:  # a content change still costs both
        current = reg.discovered_entry("a/b")
        assert current is not None
        reg.put(current.model_copy(update={"format": "gguf"}))
    assert len(store.history()) == 2


_WRITER = """
import sys
from imageworks.registry import ModelEntry, RegistryStore
store = RegistryStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    with store.transaction(["writer"], backup=False) as reg:
        reg.put(ModelEntry(name=f"w{sys.argv[2]}/m{i}", size_bytes=i))
"""


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "reg"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(folder), str(w), "50"]) for w in range(8)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    reg = RegistryStore(folder).load()
    assert len(reg.discovered) == 400
    assert len(RegistryStore(folder).history()) == 400
    assert len(json.loads((folder / MERGED).read_text())["models"]) == 400


_SLOW_WRITER = """
import sys, time
from imageworks.registry import ModelEntry, RegistryStore
store = RegistryStore(sys.argv[1])
i = 0
while True:
    with store.transaction(["writer"], backup=False) as reg:
        for j in range(200):
            reg.put(ModelEntry(name=f"m{i}-{j}", metadata={"pad": "x" * 2000}))
    i += 1
"""


def test_sigkill_mid_save_leaves_old_or_new_content(tmp_path: Path) -> None:
    folder = tmp_path / "reg"
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(folder)])
        time.sleep(0.6 + attempt * 0.13)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for name in (DISCOVERED, MERGED):
            path = folder / name
            if path.exists():
                doc = json.loads(path.read_text())
                assert doc["schema_version"] == SCHEMA_VERSION
                assert len(doc["models"]) % 200 == 0  # whole transactions only
        if (folder / HISTORY).exists():
            lines = (folder / HISTORY).read_text().splitlines()
            for line in lines[:-1]:
                json.loads(line)
        # every transaction the layer holds has its change-log line (issue 15.9)
        held = len(RegistryStore(folder).load().discovered) // 200
        assert len(RegistryStore(folder).history()) == held
    # and the store is still usable afterwards
    with RegistryStore(folder).transaction(["after"], backup=False) as reg:
        reg.put(ModelEntry(name="after/kill"))
    assert RegistryStore(folder).load().get("after/kill") is not None


def test_repo_part_beats_substring(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "reg")
    with store.transaction(["t"]) as reg:
        reg.put(entry("theowner/tiny-llama"))
        reg.put(entry("theowner/tiny-llama-gguf:q4_k_m"))
    reg = store.load()
    assert find_entry(reg, "tiny-llama").name == "theowner/tiny-llama"
    assert find_entry(reg, "tiny-llama-gguf").name == "theowner/tiny-llama-gguf:q4_k_m"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '{"schema_version": 1, "models": {"a": {"metadata": ' + "[" * 5000 + "]" * 5000 + "}}}",
            "nested too deeply",
        ),
        (
            '{"schema_version": 1, "models": {"a": {"metadata": ' + "[" * 100 + "]" * 100 + "}}}",
            "nested too deeply",
        ),
        ('{"schema_version": 1, "models": {"a": {"size_bytes": ' + "9" * 5000 + "}}}", "number"),
        ('{"schema_version": 1, "models": {"a": {"size_bytes": ' + "9" * 30 + "}}}", "out of range"),
    ],
)
def test_hostile_curated_layer_is_a_registry_error(tmp_path: Path, body: str, message: str) -> None:
    """Deep nesting and huge integers give a clear RegistryError, not RecursionError/ValueError, and not
    a failure later when the merged view is written (issue 15.8)."""
    folder = tmp_path / "reg"
    folder.mkdir()
    (folder / CURATED).write_text(body)
    store = RegistryStore(folder)
    with pytest.raises(RegistryError, match=message) as info:
        store.load()
    assert info.value.hint and "git" in info.value.hint
    with pytest.raises(RegistryError, match=message), store.transaction(["t"]) as reg:
        reg.put(entry("b/c"))
    assert not (folder / DISCOVERED).exists()
