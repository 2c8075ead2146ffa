"""The forwarding client when things go wrong: closes, resets, silence, TLS pins, cancels.

Each failure must come out as forwarding expects it (proxy/forward.py open_upstream's
UpstreamError contract, or an error from the body stream) and never leave a broken
connection in the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from ollana.emulator.app import serving
from ollana.http import UpstreamError, open_upstream
from ollana.http.client import ConnectFailed, ConnectionClosed, ConnectionPool
from ollana.identity import DeviceStore, TLSManager, load_identity
from tests.integration.upstream_fixtures import (
    RawConn,
    Script,
    answer,
    answer_all,
    raw_server,
)
from tests.support.ports import free_port
from tests.support.waiting import until

WAIT = 10.0


async def get(upstream: ConnectionPool, body: bytes | None = None) -> tuple[int, bytes]:
    method = "GET" if body is None else "POST"
    async with await upstream.request(method, "/", CIMultiDict(), body) as response:
        return response.status, await response.content.read()


# --- a pooled connection the server closed ------------------------------------------------


async def closes_its_first_connection_when_reused(conn: RawConn) -> None:
    """Answer once, then drop the connection as the second request arrives on it."""
    await conn.read_request()
    conn.send(answer(b"first"))
    if conn.index == 0:
        await conn.read_request()
        return
    await answer_all(conn)


@pytest.mark.parametrize("body", [None, b"kept body"], ids=["no-body", "bytes"])
async def test_a_stale_pooled_connection_is_retried_on_a_new_one(body: bytes | None) -> None:
    async with (
        raw_server(closes_its_first_connection_when_reused) as server,
        ConnectionPool("127.0.0.1", server.port) as upstream,
    ):
        assert await get(upstream, body) == (200, b"first")
        assert await get(upstream, body) == (200, b"first")  # the new connection's first
        assert len(server.conns) == 2
        assert len(server.requests) == 3  # the dropped one reached the old connection
        assert upstream.idle == 1


async def test_a_stale_connection_with_a_streamed_body_is_not_retried() -> None:
    async def forward(request: web.Request) -> web.Response:
        try:
            async with await upstream.request("POST", "/", CIMultiDict(), request.content):
                return web.Response(text="answered")
        except ConnectionClosed as exc:
            return web.Response(text=f"closed: answered={exc.answered}")

    app = web.Application()
    app.router.add_post("/", forward)
    async with (
        raw_server(closes_its_first_connection_when_reused) as server,
        ConnectionPool("127.0.0.1", server.port) as upstream,
        serving(app, "127.0.0.1", 0) as port,
        aiohttp.ClientSession() as http,
    ):
        assert await get(upstream) == (200, b"first")

        async def stream() -> AsyncIterator[bytes]:
            yield b"part"

        async with http.post(f"http://127.0.0.1:{port}/", data=stream()) as response:
            assert await response.text() == "closed: answered=False"
        assert len(server.conns) == 1


# --- broken answers -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_a_body_cut_short_is_an_error_to_its_reader(how: str) -> None:
    first_read = asyncio.Event()

    async def script(conn: RawConn) -> None:
        await conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await first_read.wait()
        if how == "reset":
            conn.reset()

    async with raw_server(script) as server, ConnectionPool("127.0.0.1", server.port) as upstream:
        async with await upstream.request("GET", "/", CIMultiDict(), None) as response:
            assert (response.status, await response.content.readany()) == (200, b"partial")
            first_read.set()
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.content.read()
        assert upstream.idle == 0


async def test_reset_before_the_answer_is_a_retryable_reset() -> None:
    async def script(conn: RawConn) -> None:
        await conn.read_request()
        conn.reset()

    async with raw_server(script) as server, ConnectionPool("127.0.0.1", server.port) as upstream:
        with pytest.raises(UpstreamError) as caught:
            await open_upstream(upstream, "POST", "/", CIMultiDict(), b"body")
    assert (caught.value.status, caught.value.reason, caught.value.retryable) == (
        502,
        "reset",
        True,
    )


async def test_an_answer_that_is_not_http_is_a_plain_error() -> None:
    async def script(conn: RawConn) -> None:
        await conn.read_request()
        conn.send(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    async with raw_server(script) as server, ConnectionPool("127.0.0.1", server.port) as upstream:
        with pytest.raises(UpstreamError) as caught:
            await open_upstream(upstream, "GET", "/", CIMultiDict(), None)
    assert (caught.value.status, caught.value.reason, caught.value.retryable) == (
        502,
        "error",
        False,
    )


async def test_bytes_after_an_answer_keep_the_connection_out_of_the_pool() -> None:
    async def script(conn: RawConn) -> None:
        await conn.read_request()
        conn.send(answer() + b"HTTP/1.1 200 OK\r\n")
        await conn.until_closed()

    async with raw_server(script) as server, ConnectionPool("127.0.0.1", server.port) as upstream:
        assert await get(upstream) == (200, b"ok")
        await asyncio.wait_for(server.conns[0].peer_closed.wait(), WAIT)
        assert upstream.idle == 0


async def test_a_busy_upstream_is_retryable_elsewhere_when_asked() -> None:
    async def script(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            conn.send(answer(b"busy", status="503 Service Unavailable"))

    async with raw_server(script) as server, ConnectionPool("127.0.0.1", server.port) as upstream:
        with pytest.raises(UpstreamError) as caught:
            await open_upstream(upstream, "GET", "/", CIMultiDict(), None, retry_statuses={503})
        assert (caught.value.status, caught.value.reason, caught.value.retryable) == (
            503,
            "busy",
            True,
        )
        response = await open_upstream(upstream, "GET", "/", CIMultiDict(), None)
        async with response:
            assert (response.status, await response.content.read()) == (503, b"busy")


# --- connecting -----------------------------------------------------------------------------


async def test_a_refused_connection_is_a_retryable_connect_error() -> None:
    async with ConnectionPool("127.0.0.1", free_port()) as upstream:
        with pytest.raises(UpstreamError) as caught:
            await open_upstream(upstream, "GET", "/", CIMultiDict(), None)
    error = caught.value
    assert (error.status, error.reason, error.retryable) == (502, "connect", True)
    assert str(error).startswith("cannot connect to 127.0.0.1:")


async def test_close_is_safe_twice_and_refuses_new_requests() -> None:
    async with raw_server(answer_all) as server:
        upstream = ConnectionPool("127.0.0.1", server.port)
        held = await upstream.request("GET", "/", CIMultiDict(), None)
        assert await get(upstream) == (200, b"ok")  # on a second connection, then idle
        await upstream.close()
        await upstream.close()
        await asyncio.wait_for(server.conns[1].peer_closed.wait(), WAIT)  # the idle one
        with pytest.raises(ConnectFailed):
            await upstream.request("GET", "/", CIMultiDict(), None)
        # The one in flight finishes, then closes rather than going back to the pool.
        assert await held.content.read() == b"ok"
        held.release()
        await asyncio.wait_for(server.conns[0].peer_closed.wait(), WAIT)
        assert upstream.idle == 0


# --- TLS ------------------------------------------------------------------------------------


async def tls_device(home: Path) -> TLSManager:
    tls = TLSManager(load_identity(home), DeviceStore(home), watch_interval=0.05)
    await tls.start()
    return tls


def allow(tls: TLSManager, other: TLSManager) -> None:
    peer = other.identity
    tls.store.record_seen(peer.device_id, "127.0.0.1:1", "client", peer.cert_der)
    tls.store.allow(peer.device_id)
    tls.reload()


@dataclass
class Paired:
    """Two paired devices; `server` serves "hello" over mutual TLS on `port`."""

    server: TLSManager
    client: TLSManager
    port: int

    def upstream(self, expect: str) -> ConnectionPool:
        pin = self.client.device_pin(expect)
        return ConnectionPool(
            "127.0.0.1", self.port, ssl_context=self.client.client_context(), check=pin.check
        )


@pytest.fixture
async def paired(tmp_path: Path) -> AsyncIterator[Paired]:
    server, client = await tls_device(tmp_path / "server"), await tls_device(tmp_path / "client")
    allow(server, client)
    allow(client, server)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server.server_context()).start()
        yield Paired(server, client, runner.addresses[0][1])
    finally:
        await runner.cleanup()
        await server.close()
        await client.close()


async def test_the_pinned_device_is_reached(paired: Paired) -> None:
    async with paired.upstream(paired.server.identity.device_id) as upstream:
        assert await get(upstream) == (200, b"hello")


async def test_another_device_than_the_pinned_one_is_a_tls_error(paired: Paired) -> None:
    async with paired.upstream("ab" * 32) as upstream:
        with pytest.raises(UpstreamError) as caught:
            await open_upstream(upstream, "GET", "/", CIMultiDict(), None)
    error = caught.value
    assert (error.status, error.reason, error.retryable) == (502, "tls", True)
    assert "presented device" in str(error)


async def test_disabling_the_server_device_drops_its_pooled_connections(paired: Paired) -> None:
    server_id = paired.server.identity.device_id
    async with paired.upstream(server_id) as upstream:
        assert await get(upstream) == (200, b"hello")
        assert upstream.idle == 1
        paired.client.store.disable(server_id)
        paired.client.reload()
        await until(lambda: upstream.idle == 0, "the pooled connection dropped")
        with pytest.raises(ConnectFailed, match="not allow"):
            await upstream.request("GET", "/", CIMultiDict(), None)


# --- silence and cancellation ---------------------------------------------------------------


async def silent(conn: RawConn) -> None:
    """Read the request, then say nothing until the client leaves."""
    await conn.read_request()
    await conn.until_closed()


async def silent_mid_body(conn: RawConn) -> None:
    await conn.read_request()
    conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await conn.until_closed()


async def test_silence_before_the_answer_is_a_timeout_never_retried() -> None:
    async with (
        raw_server(silent) as server,
        ConnectionPool("127.0.0.1", server.port, read_timeout=0.1) as upstream,
    ):
        with pytest.raises(UpstreamError) as caught:
            await open_upstream(upstream, "POST", "/", CIMultiDict(), b"x")
        await asyncio.wait_for(server.conns[0].peer_closed.wait(), WAIT)
    assert (caught.value.status, caught.value.reason, caught.value.retryable) == (
        504,
        "timeout",
        False,
    )


async def test_silence_inside_a_body_is_a_timeout_to_its_reader() -> None:
    async with (
        raw_server(silent_mid_body) as server,
        ConnectionPool("127.0.0.1", server.port, read_timeout=0.1) as upstream,
    ):
        async with await upstream.request("GET", "/", CIMultiDict(), None) as response:
            assert await response.content.readany() == b"hello"
            with pytest.raises(TimeoutError):
                await response.content.readany()
        await asyncio.wait_for(server.conns[0].peer_closed.wait(), WAIT)
        assert upstream.idle == 0


@pytest.mark.parametrize("script", [silent, silent_mid_body], ids=["before-head", "mid-body"])
async def test_a_cancelled_caller_closes_the_connection(script: Script) -> None:
    answered = asyncio.Event()

    async def call(upstream: ConnectionPool) -> None:
        async with await upstream.request("GET", "/", CIMultiDict(), None) as response:
            answered.set()
            while await response.content.readany():
                pass

    async with raw_server(script) as server, ConnectionPool("127.0.0.1", server.port) as upstream:
        task = asyncio.create_task(call(upstream))
        await until(lambda: server.requests, "the request at the server")
        if script is silent_mid_body:
            await asyncio.wait_for(answered.wait(), WAIT)  # now reading the body
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.conns[0].peer_closed.wait(), WAIT)
        assert upstream.idle == 0


async def test_closing_a_response_ends_its_reader_with_an_error() -> None:
    async with (
        raw_server(silent_mid_body) as server,
        ConnectionPool("127.0.0.1", server.port) as up,
    ):
        response = await up.request("GET", "/", CIMultiDict(), None)
        assert await response.content.readany() == b"hello"
        reading = asyncio.create_task(response.content.readany())
        response.close()  # as the pool does when it ejects the server mid-stream
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(reading, WAIT)
        response.release()
        await asyncio.wait_for(server.conns[0].peer_closed.wait(), WAIT)
        assert up.idle == 0
