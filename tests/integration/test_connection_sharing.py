"""Connections as a resource shared by devices: one device's idle connections never lock
another out, and a refusal that remains is retried by the client, not passed to the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ollana.admin.status import status_document
from ollana.modes import ClientMode, ServerMode
from tests.integration.cluster_fixtures import Cluster, cluster, healthy_with_models, until
from tests.support.counts import by_reason

MODEL = "llama3.2:latest"


@pytest.fixture
async def lan(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path) as c:
        c.pair("server", "a", "b")
        yield c


async def burst(client: ClientMode, count: int) -> list[int]:
    """`count` small generations sent at once through a client: their statuses."""
    url = f"http://127.0.0.1:{client.port}/api/generate"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(index: int) -> int:
            body = {"model": MODEL, "prompt": f"hi {index}", "stream": False,
                    "options": {"num_predict": 3}}  # fmt: skip
            async with http.post(url, json=body) as response:
                await response.read()
                return response.status

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def ready(lan: Cluster, server: ServerMode, *clients: ClientMode) -> None:
    device = lan.device_id("server")
    for client in clients:
        await until(lambda c=client: healthy_with_models(c, [device]), "the server is healthy")


def held(server: ServerMode, lan: Cluster, name: str) -> int:
    """Connections a device holds at the server now."""
    return server.listener.held().get(lan.device_id(name), (0, 0))[0]


async def test_a_burst_from_one_device_does_not_lock_out_the_next(lan: Cluster) -> None:
    emulator = await lan.emulator(MODEL, tokens_per_second=100)
    server = await lan.server("server", emulator, **{"limits.max_connections": 64})
    a = await lan.client("a")
    b = await lan.client("b")
    await ready(lan, server, a, b)

    assert await burst(a, 50) == [200] * 50
    assert held(server, lan, "a") > 64 - 30  # a's burst left its connections open
    assert await burst(b, 30) == [200] * 30
    assert server.listener.evicted > 0  # room was made by closing a's idle connections
    assert by_reason(server.metrics, "ollana_refusals").get("connections", 0) == 0


async def test_a_device_past_its_share_is_retried_not_refused(lan: Cluster) -> None:
    emulator = await lan.emulator(MODEL, tokens_per_second=100)
    limits = {"limits.max_connections": 64, "limits.max_device_connections": 8}
    server = await lan.server("server", emulator, **limits)
    a = await lan.client("a")
    await ready(lan, server, a)

    assert await burst(a, 24) == [200] * 24
    assert held(server, lan, "a") <= 8
    refused = by_reason(server.metrics, "ollana_refusals")
    assert refused.get("device-connections", 0) > 0  # some waited for a connection…
    assert by_reason(a.metrics, "ollana_retries").get("crowded", 0) > 0  # …and were sent again


async def test_a_burst_that_comes_back_finds_its_connections(lan: Cluster) -> None:
    # Slow tokens: the first burst's 40 requests are all in flight at once.
    emulator = await lan.emulator(MODEL, tokens_per_second=10)
    server = await lan.server("server", emulator)
    a = await lan.client("a")
    await ready(lan, server, a)

    assert await burst(a, 40) == [200] * 40
    handshakes = server.listener.handshakes
    assert handshakes >= 40
    assert await burst(a, 20) == [200] * 20
    assert server.listener.handshakes == handshakes  # within the hold: none new


async def test_the_client_keeps_only_a_few_idle_connections_after_a_burst(lan: Cluster) -> None:
    emulator = await lan.emulator(MODEL, tokens_per_second=100)
    server = await lan.server("server", emulator)
    a = await lan.client("a", **{"timings.connection_hold": "0"})
    await ready(lan, server, a)

    assert await burst(a, 40) == [200] * 40
    # Once the hold is over, recent demand decays within seconds: the burst's connections
    # close, long before the 60 s keep-alive, and the server sees them go.
    await until(lambda: held(server, lan, "a") <= 12, "a's idle connections closed")
    upstream = a.pool.find(lan.device_id("server"))
    assert upstream is not None and upstream.upstream is not None
    assert upstream.upstream.idle <= 12


async def test_status_and_metrics_show_connections_per_device_and_per_server(
    lan: Cluster,
) -> None:
    emulator = await lan.emulator(MODEL)
    server = await lan.server("server", emulator)
    a = await lan.client("a")
    await ready(lan, server, a)
    assert await burst(a, 5) == [200] * 5

    counters = status_document(server, server.metrics, nearby=[])["counters"]
    assert isinstance(counters, dict)
    mine = counters["connections_by_device"][lan.device_id("a")]
    assert mine["open"] >= 1 and 0 <= mine["idle"] <= mine["open"]
    servers = status_document(a, a.metrics, nearby=[])["servers"]
    assert isinstance(servers, list)
    (entry,) = servers
    assert entry["connections"]["open"] >= 1
    assert f'ollana_connections{{holder="{lan.device_id("a")}",state="open"}}' in (
        server.metrics.render().decode()
    )
    label = lan.device_id("server")[:12]
    assert f'ollana_upstream_connections{{server="{label}",state="open"}}' in (
        a.metrics.render().decode()
    )
