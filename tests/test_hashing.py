"""hashing: digests of real files, in parallel, against hashlib as the reference."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from imageworks import hashing
from imageworks.hashing import (
    READ_CHUNK,
    aggregate_sha256,
    default_jobs,
    git_blob_sha1_file,
    hash_file,
    hash_files,
    sha256_file,
)

# Sizes around the chunk boundary: off-by-one errors in a readinto loop show up exactly here.
SIZES = [0, 1, 4095, READ_CHUNK - 1, READ_CHUNK, READ_CHUNK + 1, 2 * READ_CHUNK + 12345]


def _write(path: Path, size: int, seed: int) -> bytes:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]
    # Vary the bytes so that two files of equal size never share a digest.
    data = bytes([seed % 256]) + data[1:] if size else data
    path.write_bytes(data)
    return data


@pytest.fixture
def files(tmp_path: Path) -> list[tuple[Path, bytes]]:
    out = []
    for index, size in enumerate(SIZES):
        path = tmp_path / f"f{index}.bin"
        out.append((path, _write(path, size, index)))
    return out


@pytest.mark.parametrize("jobs", [1, 2, 5])
def test_hash_files_matches_hashlib_in_input_order(files: list[tuple[Path, bytes]], jobs: int) -> None:
    results = hash_files([p for p, _ in files], jobs=jobs)
    assert [r.path for r in results] == [p for p, _ in files]
    for result, (path, data) in zip(results, files, strict=True):
        assert result.sha256 == hashlib.sha256(data).hexdigest(), path
        assert result.size == len(data)
        assert result.mtime_ns == path.stat().st_mtime_ns
        assert result.error is None and result.ok


def test_progress_adds_up_to_the_bytes_hashed(files: list[tuple[Path, bytes]]) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def progress(n: int) -> None:
        with lock:
            seen.append(n)

    hash_files([p for p, _ in files], jobs=3, progress=progress)
    assert sum(seen) == sum(len(d) for _, d in files)
    assert max(seen) <= READ_CHUNK


def test_files_are_hashed_concurrently(tmp_path: Path) -> None:
    """Two threads must be inside hash_file at once: a progress callback that waits for the other file's
    first chunk would deadlock (and time out) if the files were hashed one after the other."""
    paths = []
    for index in range(2):
        path = tmp_path / f"big{index}.bin"
        _write(path, 3 * READ_CHUNK, index)
        paths.append(path)
    barrier = threading.Barrier(2, timeout=10)
    first_chunk: dict[str, bool] = {}

    def progress(n: int) -> None:
        name = threading.current_thread().name
        if name not in first_chunk:
            first_chunk[name] = True
            barrier.wait()

    results = hash_files(paths, jobs=2, progress=progress)
    assert all(r.ok for r in results)
    assert len(first_chunk) == 2


def test_a_missing_or_unreadable_file_is_reported_not_raised(tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(b"hello")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    results = hash_files([tmp_path / "gone.bin", good, folder], jobs=2)
    assert results[0].sha256 is None and results[0].error
    assert results[1].sha256 == hashlib.sha256(b"hello").hexdigest()
    assert results[2].sha256 is None and results[2].error


def test_a_progress_callback_error_propagates(files: list[tuple[Path, bytes]]) -> None:
    def progress(n: int) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        hash_files([p for p, _ in files], jobs=2, progress=progress)


def test_sha256_file_and_hash_file_agree(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    data = _write(path, READ_CHUNK * 2 + 7, 9)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk=1000) == expected
    assert hash_file(path).sha256 == expected
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "nope")


def test_git_blob_sha1_is_what_git_computes(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"Hello, World!")
    # `git hash-object` of "Hello, World!" (also in huggingface_hub's git_hash docstring).
    assert git_blob_sha1_file(path) == "b45ef6fec89518d314f546fd6c3025367b721684"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert git_blob_sha1_file(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_aggregate_is_the_sha256sum_listing_digest() -> None:
    files = [("b.bin", "bb" * 32), ("a.bin", "aa" * 32)]
    listing = f"{'aa' * 32}  a.bin\n{'bb' * 32}  b.bin\n"
    assert aggregate_sha256(files) == hashlib.sha256(listing.encode()).hexdigest()
    assert aggregate_sha256([("a", None)]) is None
    assert aggregate_sha256([]) is None


def test_default_jobs_is_bounded_by_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 1 <= default_jobs() <= hashing.MAX_DEFAULT_JOBS
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_jobs() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert default_jobs() == hashing.MAX_DEFAULT_JOBS


def test_trusted_digest_is_the_one_size_and_mtime_rule(tmp_path: Path) -> None:
    """A recorded digest is reused only while size and mtime are exactly those it was taken at."""
    from imageworks.hashing import trusted_digest
    from imageworks.registry import FileRecord

    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    st = path.stat()
    digest = hashlib.sha256(b"abc").hexdigest()
    record = FileRecord(path="w.bin", size=3, sha256=digest, mtime_ns=st.st_mtime_ns)
    assert trusted_digest(record, st.st_size, st.st_mtime_ns) == digest
    assert trusted_digest(record, st.st_size, st.st_mtime_ns + 1) is None  # touched
    assert trusted_digest(record, 4, st.st_mtime_ns) is None  # grew
    assert trusted_digest(None, 3, st.st_mtime_ns) is None  # nothing recorded
    assert trusted_digest(record.model_copy(update={"mtime_ns": None}), 3, st.st_mtime_ns) is None
    assert trusted_digest(record.model_copy(update={"sha256": None}), 3, st.st_mtime_ns) is None
    # An edit that changes the mtime is caught even with the size unchanged.
    path.write_bytes(b"abd")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    moved = path.stat()
    assert trusted_digest(record, moved.st_size, moved.st_mtime_ns) is None


def _wait_ahead(ahead: hashing.HashAhead) -> None:
    """Until every guessed file is hashed (the test then changes files knowing what was read)."""
    from concurrent.futures import wait

    wait(list(ahead._futures.values()))


def test_hash_ahead_digests_are_taken_whole_not_hashed_again(tmp_path: Path) -> None:
    """A file hashed ahead comes back from hash_files without a second read: its progress arrives in one
    piece (a file that is read reports at most READ_CHUNK at a time)."""
    big = tmp_path / "big.bin"
    data = _write(big, 3 * READ_CHUNK + 7, 1)
    other = tmp_path / "other.bin"
    other_data = _write(other, 1000, 2)
    ahead = hashing.HashAhead([(big, len(data))], jobs=2)
    try:
        _wait_ahead(ahead)
        seen: list[int] = []
        results = hash_files([big, other], jobs=2, progress=seen.append, ahead=ahead)
    finally:
        ahead.close()
    assert [r.sha256 for r in results] == [hashlib.sha256(d).hexdigest() for d in (data, other_data)]
    assert len(data) in seen, "the file hashed ahead should not have been read again"


def test_hash_ahead_is_ignored_for_a_file_changed_since(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    _write(path, 2 * READ_CHUNK, 1)
    ahead = hashing.HashAhead([(path, 2 * READ_CHUNK)], jobs=1)
    try:
        _wait_ahead(ahead)
        new = _write(path, 2 * READ_CHUNK, 9)  # same size, new bytes
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        [result] = hash_files([path], ahead=ahead)
    finally:
        ahead.close()
    assert result.sha256 == hashlib.sha256(new).hexdigest()


def test_hash_ahead_close_stops_unclaimed_work(tmp_path: Path) -> None:
    paths = []
    for index in range(3):
        path = tmp_path / f"f{index}.bin"
        _write(path, 4 * READ_CHUNK, index)
        paths.append((path, 4 * READ_CHUNK))
    ahead = hashing.HashAhead(paths, jobs=1)
    ahead.close()  # returns without hashing the queue; nothing is left running
    assert all(f.done() for f in ahead._futures.values())
    assert ahead.take(paths[-1][0]) is None
