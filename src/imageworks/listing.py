"""`RepoFile`: one file of a repo listing, the one type for it everywhere (the Hub's file tree, the
selection and plan built from it, remote inspection, `verify --remote`, a folder listed for analysis).

No network and no imports beyond the standard library: inspection and planning use it without
pulling in the Hub client."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RepoFile:
    """A file of a listing: repo-relative POSIX `path` and `size`; from the Hub also `sha256` (the LFS
    digest of a large file) or `git_sha1` (the git blob id of a small one; an LFS file's blob id is the
    pointer's, so it is not kept). A folder listing has neither."""

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None

    @property
    def lfs(self) -> bool:
        return self.sha256 is not None
