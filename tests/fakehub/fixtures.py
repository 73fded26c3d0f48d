"""pytest plugin: `pytest_plugins = ["tests.fakehub.fixtures"]`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import samples
from .server import FakeHub


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A started, empty fake Hub; HF_ENDPOINT points at it. Fails the test if the fake Hub itself crashed.

    huggingface_hub freezes HF_ENDPOINT at import: in-process calls to it should pass `endpoint=`.
    """
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    try:
        yield hub
    finally:
        hub.stop()
    assert not hub.server_errors, "the fake Hub crashed:\n" + "\n".join(hub.server_errors)


@pytest.fixture
def sample_hub(fake_hub: FakeHub) -> tuple[FakeHub, dict[str, samples.SampleRepo]]:
    """`fake_hub` with every sample repo of tests/fakehub/samples.py (see `samples.add_all`)."""
    return fake_hub, samples.add_all(fake_hub)
