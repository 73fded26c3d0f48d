"""The fake Hub must look like the real one to the real client (huggingface_hub) and to plain HTTP."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fakehub import FakeHub, git_blob_sha1, samples

TOKEN = "hf_alice_token"


@pytest.fixture
def hub(fake_hub: FakeHub) -> FakeHub:
    fake_hub.tokens = {TOKEN: "alice", "hf_bob_token": "bob"}
    return fake_hub


def _snapshot(hub: FakeHub, repo_id: str, cache: Path) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, endpoint=hub.endpoint, cache_dir=cache))


def test_fixture_points_hf_endpoint_at_the_hub(fake_hub: FakeHub) -> None:
    import os

    assert os.environ["HF_ENDPOINT"] == fake_hub.endpoint
    assert fake_hub.endpoint.startswith("http://127.0.0.1:")
    assert fake_hub.cdn_url.startswith("http://127.0.0.2:")


def test_snapshot_download_is_byte_identical_across_tree_pages(hub: FakeHub, tmp_path: Path) -> None:
    sample = samples.add_safetensors_model(hub)
    hub.page_size = 3

    folder = _snapshot(hub, sample.repo_id.lower(), tmp_path / "cache")

    for path in sample.files:
        assert (folder / path).read_bytes() == sample.bytes_of(path), path
    tree_pages = [r for r in hub.requests if "/tree/" in r.path]
    assert len(tree_pages) >= 4  # 14 entries (files + onnx/ folder) at 3 a page
    assert "cursor" in tree_pages[-1].query


def test_lfs_download_follows_302_to_cdn_and_token_stays_on_hub(hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    sample = samples.add_safetensors_model(hub)
    hub.clear_requests()

    path = hf_hub_download(
        sample.repo_id, "model.safetensors", endpoint=hub.endpoint, cache_dir=tmp_path, token=TOKEN
    )

    assert Path(path).read_bytes() == sample.bytes_of("model.safetensors")
    hub_requests = [r for r in hub.requests if r.server == "hub"]
    cdn_requests = [r for r in hub.requests if r.server == "cdn"]
    assert [(r.method, r.status) for r in hub_requests] == [("HEAD", 302)]
    assert [(r.method, r.status) for r in cdn_requests] == [("GET", 200)]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in hub_requests)
    assert not any(r.authorized for r in cdn_requests)
    assert cdn_requests[0].host.startswith("127.0.0.2:")


def test_cdn_refuses_a_request_that_carries_a_token(hub: FakeHub) -> None:
    samples.add_safetensors_model(hub)
    url = hub.cdn_url_for(samples.SAFETENSORS_REPO, "model.safetensors")

    assert httpx.get(url).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403
    tampered = url.replace("Signature=", "Signature=0")
    assert httpx.get(tampered).status_code == 403


def test_head_metadata_is_what_the_client_reads(hub: FakeHub) -> None:
    from huggingface_hub import get_hf_file_metadata

    sample = samples.add_safetensors_model(hub)
    lfs = hub.file(sample.repo_id, "model.safetensors")
    small = hub.file(sample.repo_id, "config.json")

    meta = get_hf_file_metadata(hub.resolve_url(sample.repo_id, "model.safetensors"), endpoint=hub.endpoint)
    assert (meta.commit_hash, meta.etag, meta.size) == (sample.commit, lfs.sha256, lfs.size)
    assert meta.location.startswith(hub.cdn_url) and meta.xet_file_data is None

    meta = get_hf_file_metadata(hub.resolve_url(sample.repo_id, "config.json"), endpoint=hub.endpoint)
    assert (meta.etag, meta.size) == (git_blob_sha1(sample.bytes_of("config.json")), small.size)
    assert meta.location == hub.resolve_url(sample.repo_id, "config.json")


def test_model_info_and_tree_report_sizes_and_sha256(hub: FakeHub) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    sample = samples.add_awq_model(hub)
    api = HfApi(endpoint=hub.endpoint)

    info = api.model_info("thebloke/llama-3-8b-instruct-awq", files_metadata=True)
    assert info.id == "TheBloke/Llama-3-8B-Instruct-AWQ"
    assert info.sha == sample.commit
    assert info.config is not None and info.config["quantization_config"]["quant_method"] == "awq"
    assert info.safetensors is not None and info.safetensors.total > 0
    siblings = {s.rfilename: s for s in info.siblings or []}
    weights = sample.bytes_of("model.safetensors")
    assert siblings["model.safetensors"].lfs is not None
    assert siblings["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert siblings["config.json"].lfs is None and siblings["config.json"].size == len(
        sample.bytes_of("config.json")
    )

    tree = list(api.list_repo_tree("THEBLOKE/llama-3-8b-instruct-awq", recursive=True, expand=True))
    files = {e.path: e for e in tree if isinstance(e, RepoFile)}
    assert set(files) == set(sample.files) | {".gitattributes"}
    assert files["model.safetensors"].size == len(weights)
    assert files["model.safetensors"].lfs is not None
    assert files["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert files["config.json"].blob_id == git_blob_sha1(sample.bytes_of("config.json"))
    assert (
        files["config.json"].last_commit is not None and files["config.json"].last_commit.oid == sample.commit
    )
    assert not [e for e in tree if isinstance(e, RepoFolder)]


def test_tree_lists_folders_and_subpaths(hub: FakeHub) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    sample = samples.add_split_gguf_model(hub)
    api = HfApi(endpoint=hub.endpoint)

    top = list(api.list_repo_tree(sample.repo_id))
    assert {e.path for e in top if isinstance(e, RepoFolder)} == {"Q4_K_M", "Q8_0"}
    assert "Q8_0/Big-Llama-70B-Q8_0-00001-of-00002.gguf" not in {e.path for e in top}
    sub = list(api.list_repo_tree(sample.repo_id, path_in_repo="Q8_0"))
    assert [e.path for e in sub if isinstance(e, RepoFile)] == [
        "Q8_0/Big-Llama-70B-Q8_0-00001-of-00002.gguf",
        "Q8_0/Big-Llama-70B-Q8_0-00002-of-00002.gguf",
    ]
    infos = api.get_paths_info(sample.repo_id, ["Q8_0", "README.md", "missing.txt"])
    assert [(type(e).__name__, e.path) for e in infos] == [("RepoFolder", "Q8_0"), ("RepoFile", "README.md")]


def test_branches_with_slash_tags_and_commit_shas(hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, hf_hub_download

    sample = samples.add_sharded_model(hub)
    pr = hub.add_revision(
        sample.repo_id, {"config.json": b'{"model_type": "llama", "pr": 1}'}, branch="refs/pr/1"
    )
    feature = hub.add_revision(sample.repo_id, {"README.md": None}, branch="feature/x", tag="v1.0")
    api = HfApi(endpoint=hub.endpoint)

    assert api.model_info(sample.repo_id, revision="refs/pr/1").sha == pr
    assert api.model_info(sample.repo_id, revision="feature/x").sha == feature
    assert api.model_info(sample.repo_id, revision="v1.0").sha == feature
    assert api.model_info(sample.repo_id, revision=sample.commit).sha == sample.commit
    assert "README.md" not in {
        s.rfilename for s in api.model_info(sample.repo_id, revision="v1.0").siblings or []
    }
    path = hf_hub_download(
        sample.repo_id, "config.json", revision="refs/pr/1", endpoint=hub.endpoint, cache_dir=tmp_path
    )
    assert Path(path).read_bytes() == b'{"model_type": "llama", "pr": 1}'
    # Unencoded slashes (a URL pasted by a user) resolve to the longest matching ref.
    r = httpx.get(f"{hub.endpoint}/{sample.repo_id}/resolve/refs/pr/1/config.json")
    assert r.status_code == 200 and r.headers["x-repo-commit"] == pr
    refs = api.list_repo_refs(sample.repo_id, include_pull_requests=True)
    assert {b.name for b in refs.branches} == {"main", "feature/x"}
    assert [t.name for t in refs.tags] == ["v1.0"]
    assert [(p.ref, p.target_commit) for p in refs.pull_requests or []] == [("refs/pr/1", pr)]


def test_errors_raise_the_client_error_classes(hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub import errors as e

    gated = samples.add_gated_model(hub)
    plain = samples.add_safetensors_model(hub)
    hub.grant(gated.repo_id, "alice")
    api = HfApi(endpoint=hub.endpoint)

    def download(repo_id: str, filename: str, token: str | None = None, revision: str | None = None) -> str:
        return hf_hub_download(
            repo_id, filename, revision=revision, token=token, endpoint=hub.endpoint, cache_dir=tmp_path / "c"
        )

    cases: list[tuple[Callable[[], object], type[e.HfHubHTTPError], int]] = [
        (lambda: download(gated.repo_id, "model.safetensors"), e.GatedRepoError, 401),
        (lambda: download(gated.repo_id, "model.safetensors", token="hf_bob_token"), e.GatedRepoError, 403),
        (lambda: download("Nobody/Nothing", "config.json"), e.RepositoryNotFoundError, 401),
        (lambda: download("Nobody/Nothing", "config.json", token=TOKEN), e.RepositoryNotFoundError, 404),
        (lambda: download(plain.repo_id, "config.json", revision="nope"), e.RevisionNotFoundError, 404),
        (lambda: download(plain.repo_id, "nope.json"), e.RemoteEntryNotFoundError, 404),
        (lambda: api.model_info("Nobody/Nothing"), e.RepositoryNotFoundError, 401),
        (lambda: api.model_info(plain.repo_id, revision="nope"), e.RevisionNotFoundError, 404),
        (lambda: list(api.list_repo_tree(plain.repo_id, revision="nope")), e.RevisionNotFoundError, 404),
    ]
    for call, error_class, status in cases:
        with pytest.raises(error_class) as info:
            call()
        assert info.value.response is not None and info.value.response.status_code == status

    # The gate opens for a granted user; its metadata was public all along, as on the Hub.
    assert Path(download(gated.repo_id, "model.safetensors", token=TOKEN)).read_bytes() == gated.bytes_of(
        "model.safetensors"
    )
    assert api.model_info(gated.repo_id).gated == "manual"


def test_bad_token_private_repo_and_whoami(hub: FakeHub) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub import errors as e

    hub.add_repo("alice/Private-Model", {"config.json": b"{}"}, private=True)
    api = HfApi(endpoint=hub.endpoint)

    with pytest.raises(e.HfHubHTTPError) as info:
        api.model_info("alice/Private-Model", token="hf_wrong")
    assert not isinstance(info.value, e.RepositoryNotFoundError)
    assert info.value.response.headers["x-error-message"] == "Invalid credentials in Authorization header"
    with pytest.raises(e.RepositoryNotFoundError):
        api.model_info("alice/Private-Model", token="hf_bob_token")
    assert api.model_info("alice/private-model", token=TOKEN).private is True
    assert api.whoami(token=TOKEN)["name"] == "alice"
    with pytest.raises(e.HfHubHTTPError):
        api.whoami(token="hf_wrong")


def test_range_requests_on_hub_and_cdn(hub: FakeHub) -> None:
    sample = samples.add_safetensors_model(hub)
    weights = sample.bytes_of("model.safetensors")
    config = sample.bytes_of("config.json")
    cdn = hub.cdn_url_for(sample.repo_id, "model.safetensors")
    small = hub.resolve_url(sample.repo_id, "config.json")

    for url, data in ((cdn, weights), (small, config)):
        size = len(data)
        r = httpx.get(url, headers={"Range": "bytes=10-19"})
        assert (r.status_code, r.content, r.headers["content-range"]) == (
            206,
            data[10:20],
            f"bytes 10-19/{size}",
        )
        r = httpx.get(url, headers={"Range": "bytes=100-"})
        assert (r.status_code, r.content) == (206, data[100:])
        r = httpx.get(url, headers={"Range": "bytes=-7"})
        assert (r.status_code, r.content) == (206, data[-7:])
        r = httpx.get(url, headers={"Range": f"bytes={size}-"})
        assert (r.status_code, r.headers["content-range"]) == (416, f"bytes */{size}")
        r = httpx.head(url, headers={"Range": "bytes=5-9"})
        assert (r.status_code, r.headers["content-length"], r.content) == (206, "5", b"")
        assert httpx.get(url).content == data


def test_drop_fault_closes_mid_body_once(hub: FakeHub) -> None:
    sample = samples.add_safetensors_model(hub)
    weights = sample.bytes_of("model.safetensors")
    fault = hub.fail("*.safetensors", kind="drop", after_bytes=100_000)
    url = hub.cdn_url_for(sample.repo_id, "model.safetensors")

    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", url) as r:
        for chunk in r.iter_bytes():
            received += chunk
    assert bytes(received) == weights[:100_000]
    assert fault.hits == 1
    # Resume from what arrived, as a downloader would.
    r = httpx.get(url, headers={"Range": f"bytes={len(received)}-"})
    assert bytes(received) + r.content == weights


def test_stall_fault_pauses_the_body(hub: FakeHub) -> None:
    sample = samples.add_safetensors_model(hub)
    hub.fail("model.safetensors", kind="stall", after_bytes=1000, seconds=0.6, server="cdn")
    url = hub.cdn_url_for(sample.repo_id, "model.safetensors")

    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, timeout=httpx.Timeout(5, read=0.2))
    start = time.monotonic()
    assert httpx.get(url).content == sample.bytes_of("model.safetensors")  # fired once only
    assert time.monotonic() - start < 0.5


def test_status_faults_with_retry_after_and_error_code(hub: FakeHub) -> None:
    sample = samples.add_safetensors_model(hub)
    hub.fail("config.json", kind="status", status=429, retry_after=1, times=2)
    hub.fail("/api/models/*", kind="status", status=503, error_code="ServiceUnavailable", server="hub")
    url = hub.resolve_url(sample.repo_id, "config.json")

    for _ in range(2):
        r = httpx.get(url)
        assert (r.status_code, r.headers["retry-after"]) == (429, "1")
    assert httpx.get(url).status_code == 200
    r = httpx.get(f"{hub.endpoint}/api/models/{sample.repo_id}")
    assert (r.status_code, r.headers["x-error-code"]) == (503, "ServiceUnavailable")
    assert httpx.get(f"{hub.endpoint}/api/models/{sample.repo_id}").status_code == 200


def test_corrupt_blob_keeps_size_but_not_hash(hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    sample = samples.add_gguf_model(hub)
    name = "Tiny-Llama-3B-Q4_K_M.gguf"
    hub.corrupt(sample.repo_id, name)

    path = hf_hub_download(sample.repo_id, name, endpoint=hub.endpoint, cache_dir=tmp_path)
    served = Path(path).read_bytes()
    assert len(served) == len(sample.bytes_of(name))
    assert hashlib.sha256(served).hexdigest() != hub.file(sample.repo_id, name).sha256
    # The corrupt byte is also served to ranged readers that cover it.
    middle = len(served) // 2
    r = httpx.get(hub.cdn_url_for(sample.repo_id, name), headers={"Range": f"bytes={middle}-{middle}"})
    assert r.content != sample.bytes_of(name)[middle : middle + 1]


def test_hostile_paths_are_listed_verbatim(hub: FakeHub) -> None:
    from huggingface_hub import HfApi

    sample = samples.add_hostile_model(hub)
    paths = {e.path for e in HfApi(endpoint=hub.endpoint).list_repo_tree(sample.repo_id, recursive=True)}
    assert {"../evil.txt", "/tmp/evil.txt", "sub/../../evil.txt", "C:\\evil.txt"} <= paths
    r = httpx.get(f"{hub.endpoint}/{sample.repo_id}/resolve/main/%2E%2E/evil.txt")
    assert (r.status_code, r.content) == (200, b"escaped\n")


def test_big_files_are_served_from_disk(hub: FakeHub, tmp_path: Path) -> None:
    big = tmp_path / "weights.bin"
    big.write_bytes(bytes(range(256)) * 40_000)  # 10 MB, still a Path on the Hub side
    hub.add_repo("TheOwner/Disk-Model", {"weights.bin": big, "notes.txt": big}, lfs_threshold=50_000_000)
    assert hub.file("TheOwner/Disk-Model", "weights.bin").lfs  # *.bin is an LFS pattern
    assert not hub.file("TheOwner/Disk-Model", "notes.txt").lfs  # below the threshold: plain git

    r = httpx.get(hub.resolve_url("TheOwner/Disk-Model", "weights.bin"), follow_redirects=True)
    assert r.content == big.read_bytes()
    r = httpx.get(hub.resolve_url("TheOwner/Disk-Model", "notes.txt"), headers={"Range": "bytes=300-300"})
    assert (r.status_code, r.content, r.headers["etag"]) == (
        206,
        bytes([300 % 256]),
        f'"{git_blob_sha1(big.read_bytes())}"',
    )


def test_throttle_caps_bandwidth(hub: FakeHub) -> None:
    sample = samples.add_safetensors_model(hub)  # model.safetensors is ~300 kB
    url = hub.cdn_url_for(sample.repo_id, "model.safetensors")
    hub.throttle(per_connection_bps=1_000_000)

    start = time.monotonic()
    assert httpx.get(url).content == sample.bytes_of("model.safetensors")
    assert time.monotonic() - start >= 0.25

    hub.throttle()
    start = time.monotonic()
    httpx.get(url)
    assert time.monotonic() - start < 0.25


def test_signed_cdn_urls_expire(hub: FakeHub) -> None:
    sample = samples.add_safetensors_model(hub)
    hub.cdn_url_ttl = -1
    r = httpx.get(hub.resolve_url(sample.repo_id, "model.safetensors"), follow_redirects=True)
    assert r.status_code == 403
