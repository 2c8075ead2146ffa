"""Requests that end in an error reach each mode's list of the last errors (the dashboard's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.cluster_fixtures import Cluster, cluster, healthy_with_models, until

MODEL = "llama3.2:latest"


@pytest.fixture
async def lan(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path) as c:
        c.pair("server", "client")
        yield c


async def test_errors_through_the_chain_are_listed_where_they_happened(lan: Cluster) -> None:
    emulator = await lan.emulator(MODEL)
    server = await lan.server("server", emulator)
    client = await lan.client()
    await until(lambda: healthy_with_models(client, [lan.device_id("server")]), "server healthy")
    url = f"http://127.0.0.1:{client.port}"

    # Ollama's own 404, passed through both modes.
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/api/show", json={"model": "missing:latest"}) as response,
    ):
        assert response.status == 404
    # A web page from elsewhere: the client refuses it itself.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/api/generate", json={"model": MODEL}, headers={"Origin": "http://evil.example"}
        ) as response,
    ):
        assert response.status == 403

    on_client = {(e.status, e.route): e for e in client.metrics.activity.errors()}
    assert on_client[(404, "/api/show")].key == server.device_id
    assert on_client[(403, "/api/generate")].key == ""  # no server took it
    on_server = {(e.status, e.route): e for e in server.metrics.activity.errors()}
    assert on_server[(404, "/api/show")].key == lan.device_id("client")
