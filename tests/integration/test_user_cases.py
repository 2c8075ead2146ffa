"""What users meet on day one, as Ollama answers it: curl's Expect, no server, GET /, bytes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ollana.demo import Chain, running_chain
from tests.integration.cluster_fixtures import Cluster, cluster
from tests.support.ports import refused_address
from tests.support.waiting import until

BLOB = b"\x00weights" * (256 * 1024)  # 2 MiB: curl asks Expect: 100-continue above 1 MiB


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    async with running_chain(tmp_path) as running:
        yield running


@pytest.fixture
async def lan(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path) as members:
        yield members


async def _exchange_expecting(
    port: int, head: bytes, body: bytes, context: ssl.SSLContext | None = None
) -> tuple[bytes, bytes]:
    """Send a head with Expect: 100-continue; what came before the body was sent, then the rest."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        writer.write(head)
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if interim.startswith(b"HTTP/1.1 100"):
            writer.write(body)
            await writer.drain()
            final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        else:
            interim, final = b"", interim
        return interim, final
    finally:
        writer.close()


def _head(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()


async def test_the_client_answers_expect_100_continue_before_the_body(chain: Chain) -> None:
    body = json.dumps({"model": "llama3.2"}).encode()
    interim, final = await _exchange_expecting(chain.client.port, _head("/api/show", body), body)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 200")


async def test_the_server_answers_expect_100_continue_to_a_paired_device(chain: Chain) -> None:
    body = json.dumps({"model": "llama3.2"}).encode()
    context = chain.client.tls.client_context()
    interim, final = await _exchange_expecting(
        chain.server.port, _head("/api/show", body), body, context
    )
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 200")


async def test_a_refused_request_gets_its_final_status_instead_of_100(tmp_path: Path) -> None:
    async with running_chain(tmp_path, server={"read_only": True}) as chain:
        body = json.dumps({"model": "llama3.2"}).encode()
        context = chain.client.tls.client_context()
        interim, final = await _exchange_expecting(
            chain.server.port, _head("/api/pull", body), body, context
        )
    assert interim == b""
    assert final.startswith(b"HTTP/1.1 403")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_uploads_a_blob_as_ollamas_docs_show(chain: Chain, tmp_path: Path) -> None:
    blob = tmp_path / "weights.bin"
    blob.write_bytes(BLOB)
    digest = "sha256:" + hashlib.sha256(BLOB).hexdigest()
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-v", "-o", "/dev/null", "-w", "%{http_code}", "-T", str(blob),
        "-X", "POST", f"{chain.url}/api/blobs/{digest}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await curl.communicate()
    assert out.decode() == "201"
    # Answered, not waited out: curl says "Done waiting for 100-continue" when it gives up.
    assert "HTTP/1.1 100 Continue" in err.decode()
    assert "Done waiting" not in err.decode()


async def test_get_slash_answers_at_once_without_any_server(lan: Cluster) -> None:
    client = await lan.client("c", discovery=False, servers=(refused_address(),))
    url = f"http://127.0.0.1:{client.port}/"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 200
            assert await response.read() == b"Ollama is running"
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert "Server" not in response.headers
        async with session.head(url) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == "17"


async def test_no_server_reachable_is_said_at_once_for_requests_and_lists(lan: Cluster) -> None:
    address = refused_address()
    client = await lan.client("c", discovery=False, servers=(address,), wait_for_server=0.5)
    await until(lambda: not client.pool.expecting(), "the start-up wait is over")
    base = f"http://127.0.0.1:{client.port}"
    async with aiohttp.ClientSession() as session:
        for method, path, body in (
            ("POST", "/api/chat", {"model": "llama3.2", "messages": []}),
            ("GET", "/api/tags", None),
            ("GET", "/v1/models", None),
        ):
            async with session.request(method, base + path, json=body) as response:
                assert response.status == 503, path
                error = (await response.json())["error"]
                # Which server, where, and why: not an empty list, not "no models".
                assert "no Ollama server is reachable through ollana" in error, error
                assert address in error, error
                assert "\n" not in error


async def test_no_server_heard_at_all_says_what_was_asked(lan: Cluster) -> None:
    client = await lan.client("c", wait_for_server=0.5)
    await until(lambda: not client.pool.expecting(), "the start-up wait is over")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{client.port}/api/tags") as response,
    ):
        assert response.status == 503
        error = (await response.json())["error"]
    assert "answered discovery" in error and "--server" in error, error


async def test_a_model_only_an_unreachable_server_has_is_not_a_404(lan: Cluster) -> None:
    lan.pair("a", "b", "c")
    only_a, shared = await lan.emulator("only-a", "shared"), await lan.emulator("shared")
    a = await lan.server("a", only_a)
    b = await lan.server("b", shared)
    statics = (f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}")
    client = await lan.client("c", discovery=False, servers=statics)
    await until(
        lambda: all(s.models_known for s in client.pool) and len(client.pool) == 2,
        "both servers with their lists",
    )
    await a.close()
    await until(lambda: len(client.pool.healthy()) == 1, "a is down")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{client.port}/api/show", json={"model": "only-a"}
        ) as response,
    ):
        status, body = response.status, await response.json()
    # Not Ollama's 404 "try pulling it": the model is there, its server is not.
    assert status == 503
    assert "only-a" in body["error"] and "unreachable" in body["error"], body
    assert statics[0] in body["error"], body


async def test_merged_v1_models_ends_as_ollama_writes_it(chain: Chain) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{chain.url}/v1/models") as merged,
        session.get(f"{chain.ollama_url}/v1/models") as direct,
    ):
        assert await merged.read() == await direct.read()


async def test_a_cors_preflight_carries_no_framework_banner(chain: Chain) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.options(
            f"{chain.url}/api/chat",
            headers={"Origin": "http://localhost", "Access-Control-Request-Method": "POST"},
        ) as response,
    ):
        assert response.status in (200, 204)
        assert "Server" not in response.headers
        assert "X-Ollana-Version" in response.headers


async def test_an_ollama_that_is_down_is_named_with_its_port(tmp_path: Path) -> None:
    down = refused_address()
    async with (
        running_chain(tmp_path, server={"ollama": f"http://{down}"}) as chain,
        aiohttp.ClientSession() as session,
        session.post(f"{chain.url}/api/show", json={"model": "llama3.2"}) as response,
    ):
        status, error = response.status, (await response.json())["error"]
    assert status == 503
    assert f"cannot connect to Ollama at {down}" in error, error
    assert "busy" not in error
