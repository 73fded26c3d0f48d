"""The fake Hub's owner actions (push, delete, gate, expire a token), checked with the real huggingface_hub."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from tests.fakehub import FakeHub

REPO = "Owner/Moving"
TOKEN = "hf_bobSECRETtoken0123456789"


def api(hub: FakeHub, token: str | bool = False) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=token)


def test_push_moves_the_branch(fake_hub: FakeHub, tmp_path) -> None:
    first = fake_hub.add_repo(
        REPO, {"README.md": b"# one\n", "model.safetensors": b"\x00" * 64, "a.json": b"{}"}
    )
    second = fake_hub.push(
        REPO, {"README.md": b"# two\n", "a.json": None, "b.json": b"[]"}, title="Owner push"
    )
    assert second != first
    info = api(fake_hub).model_info(REPO, files_metadata=True)
    assert info.sha == second
    files = {s.rfilename: s for s in info.siblings or []}
    assert sorted(files) == [".gitattributes", "README.md", "b.json", "model.safetensors"]
    assert files["model.safetensors"].lfs is not None
    assert files["model.safetensors"].lfs.sha256 == fake_hub.file(REPO, "model.safetensors").sha256
    assert files["README.md"].blob_id == fake_hub.file(REPO, "README.md").oid
    # The old commit stays reachable by its sha, as on the Hub.
    old = api(fake_hub).model_info(REPO, revision=first, files_metadata=True)
    assert old.sha == first and "a.json" in {s.rfilename for s in old.siblings or []}
    path = hf_hub_download(REPO, "README.md", endpoint=fake_hub.endpoint, cache_dir=tmp_path, token=False)
    assert Path(path).read_bytes() == b"# two\n"


def test_deleted_repo_is_not_found(fake_hub: FakeHub, tmp_path) -> None:
    fake_hub.add_repo(REPO, {"model.safetensors": b"\x01" * 64})
    cdn = fake_hub.cdn_url_for(REPO, "model.safetensors")
    fake_hub.delete_repo(REPO)
    with pytest.raises(RepositoryNotFoundError):
        api(fake_hub).model_info(REPO)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            REPO, "model.safetensors", endpoint=fake_hub.endpoint, cache_dir=tmp_path, token=False
        )
    import httpx

    assert httpx.get(cdn).status_code == 404, "the CDN forgot the repo's objects"


def test_gate_added_later_and_expired_token(fake_hub: FakeHub, tmp_path) -> None:
    fake_hub.add_repo(REPO, {"model.safetensors": b"\x02" * 64})
    fake_hub.tokens[TOKEN] = "bob"
    fake_hub.set_gated(REPO, True)
    assert api(fake_hub).model_info(REPO).gated == "manual"
    with pytest.raises(GatedRepoError):
        hf_hub_download(
            REPO, "model.safetensors", endpoint=fake_hub.endpoint, cache_dir=tmp_path, token=False
        )
    fake_hub.grant(REPO, "bob")
    path = hf_hub_download(
        REPO, "model.safetensors", endpoint=fake_hub.endpoint, cache_dir=tmp_path, token=TOKEN
    )
    assert Path(path).read_bytes() == b"\x02" * 64
    fake_hub.expire_token(TOKEN)
    with pytest.raises(HfHubHTTPError) as failure:
        api(fake_hub, TOKEN).model_info(REPO)
    assert failure.value.response.status_code == 401


def test_api_latency(fake_hub: FakeHub) -> None:
    import time

    fake_hub.add_repo(REPO, {"a.json": b"{}"})
    fake_hub.api_latency = 0.2
    started = time.monotonic()
    assert api(fake_hub).model_info(REPO).sha
    assert time.monotonic() - started >= 0.2
