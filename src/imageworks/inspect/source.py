"""Byte sources the header parsers read from: a bytes object, a local file, or a remote file read with
Range requests. Each counts the bytes it actually read, so callers can prove "headers only"."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from imageworks.inspect.types import FileInspection

ReadRange = Callable[[str, int, int], bytes]
"""read_range(path, start, end) -> the bytes [start, end) of a remote file (fewer at end of file)."""


class ByteSource(Protocol):
    size: int | None  # None when unknown (a bytes prefix of unknown total length)
    bytes_read: int

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to `n` bytes at `offset`; fewer only at end of data."""
        ...


class BytesSource:
    def __init__(self, data: bytes | bytearray | memoryview, size: int | None = None) -> None:
        self._data = memoryview(data).cast("B")
        # Without an explicit size the bytes are the whole file; with one, they may be a prefix of it.
        self.size: int | None = len(self._data) if size is None else size
        self.bytes_read = 0

    def read_at(self, offset: int, n: int) -> bytes:
        chunk = bytes(self._data[offset : offset + n])
        self.bytes_read += len(chunk)
        return chunk


class FileSource:
    """A local file, opened once. Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        self.size: int | None = os.fstat(self._f.fileno()).st_size
        self.bytes_read = 0

    def read_at(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        chunk = self._f.read(n)
        self.bytes_read += len(chunk)
        return chunk

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RangeSource:
    """A remote file behind `read_range`. Each call is one HTTP Range request, so the parsers ask for
    growing chunks rather than many small reads."""

    def __init__(self, path: str, size: int | None, read_range: ReadRange) -> None:
        self.path = path
        self.size: int | None = size
        self.bytes_read = 0
        self._read_range = read_range

    def read_at(self, offset: int, n: int) -> bytes:
        end = offset + n if self.size is None else min(offset + n, self.size)
        if end <= offset:
            return b""
        chunk = self._read_range(self.path, offset, end)[: end - offset]
        self.bytes_read += len(chunk)
        return chunk


def open_source(
    data_or_path: bytes | bytearray | memoryview | str | os.PathLike[str], size: int | None = None
) -> tuple[ByteSource, str, FileSource | None]:
    """(source, display path, file to close) for the public `inspect_*(data_or_path)` functions."""
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        return BytesSource(data_or_path, size), "<bytes>", None
    path = Path(data_or_path)
    fs = FileSource(path)
    return fs, str(path), fs


def inspect_input(
    data_or_path: bytes | bytearray | memoryview | str | os.PathLike[str],
    size: int | None,
    path: str | None,
    parse: Callable[[ByteSource, str], FileInspection],
) -> FileInspection:
    """Open bytes or a path as a source, run one format's parser on it and close it: the shared body of
    the public `inspect_gguf` / `inspect_safetensors`. An unreadable file is a result, not an exception."""
    try:
        src, shown, closer = open_source(data_or_path, size)
    except OSError as exc:
        return FileInspection(
            path=path or str(data_or_path), size=0, format="unknown", error=f"unreadable: {exc}"
        )
    try:
        return parse(src, path or shown)
    finally:
        if closer is not None:
            closer.close()
