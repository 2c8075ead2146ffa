"""Fixtures every test may use."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real clients must talk to our loopback ports directly, never through a proxy."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in (
        "OLLAMA_HOST", "OLLAMA_ORIGINS", "OLLAMA_NUM_PARALLEL", "OLLANA_HOME", "OLLANA_LOG",
        "RUST_LOG",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
