"""Fixtures of the LAN tests: a Network of namespaces per test, and the processes on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.lan.lab import Lab
from tests.lan.netns import Network, sweep_stale, unavailable_reason

_REASON_KEY = pytest.StashKey[str | None]()
_FAILED_KEY = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def netns_support(request: pytest.FixtureRequest) -> None:
    """Skip (saying why) where namespaces cannot be made; sweep what killed runs left."""
    config = request.config
    if _REASON_KEY not in config.stash:
        reason = unavailable_reason()
        config.stash[_REASON_KEY] = reason
        if reason is None:
            swept = sweep_stale()
            if swept:
                print(f"removed {len(swept)} network namespaces left by earlier runs")
    reason = config.stash[_REASON_KEY]
    if reason is not None:
        pytest.skip(f"LAN tests need Linux network namespaces: {reason}")


@pytest.fixture
def network(netns_support: None, tmp_path: Path) -> Iterator[Network]:
    """A fresh set of LANs and hosts for one test, removed afterwards whatever happened."""
    net = Network(tmp_path)
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
async def lab(network: Network, request: pytest.FixtureRequest) -> AsyncIterator[Lab]:
    """Processes on the test's network; killed at the end, their logs shown if it failed."""
    lab = Lab(network)
    try:
        yield lab
    finally:
        await lab.close()
        if request.node.stash.get(_FAILED_KEY, False):
            print(f"\nlogs of the processes (in {network.workdir / 'logs'}):\n{lab.logs()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember whether a test's body failed, for the lab fixture's teardown."""
    report = yield
    if call.when == "call" and report.failed:  # type: ignore[attr-defined]
        item.stash[_FAILED_KEY] = True
    return report
