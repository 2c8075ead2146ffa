"""The forwarding client over real sockets: framing, keep-alive, bodies both ways.

Behind it are aiohttp servers (Ollama's stand-in) and raw scripted servers for the
framings and edge cases that an aiohttp server does not produce on demand.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from ollana.emulator.app import serving
from ollana.http.client import ConnectionPool, Response
from tests.integration.upstream_fixtures import RawConn, answer, answer_all, raw_server
from tests.support.waiting import until

BIG = 64 << 20  # a download larger than every buffer on its way
BLOCK = 64 << 10


def peer_port(request: web.BaseRequest) -> int:
    """The client's port: one per connection."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    assert peer is not None
    return int(peer[1])


async def echo(request: web.Request) -> web.Response:
    """Tell what arrived: the client's port, the body's framing, length and digest."""
    digest, size = hashlib.sha256(), 0
    async for data in request.content.iter_any():
        digest.update(data)
        size += len(data)
    return web.json_response(
        {
            "port": peer_port(request),
            "chunked": request.headers.get("Transfer-Encoding") == "chunked",
            "length": request.headers.get("Content-Length"),
            "size": size,
            "sha": digest.hexdigest(),
        }
    )


async def download(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": str(BIG)})
    await response.prepare(request)
    block = b"x" * BLOCK
    for _ in range(BIG // BLOCK):
        await response.write(block)
    return response


@pytest.fixture
async def backend() -> AsyncIterator[ConnectionPool]:
    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/download", download)
    async with serving(app, "127.0.0.1", 0) as port, ConnectionPool("127.0.0.1", port) as upstream:
        yield upstream


async def fetch_json(
    upstream: ConnectionPool, method: str = "GET", body: bytes | None = None
) -> dict[str, object]:
    async with await upstream.request(method, "/echo", CIMultiDict(), body) as response:
        assert response.status == 200
        return dict(json.loads(await response.content.read()))


# --- keep-alive -----------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(backend: ConnectionPool) -> None:
    ports = {(await fetch_json(backend))["port"] for _ in range(5)}
    assert len(ports) == 1
    assert backend.idle == 1


async def test_concurrent_requests_each_get_a_connection_then_stay_idle() -> None:
    arrived: list[int] = []
    go = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        arrived.append(peer_port(request))
        await go.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/held", held)
    async with serving(app, "127.0.0.1", 0) as port, ConnectionPool("127.0.0.1", port) as upstream:

        async def one() -> bytes:
            async with await upstream.request("GET", "/held", CIMultiDict(), None) as response:
                return await response.content.read()

        tasks = [asyncio.create_task(one()) for _ in range(3)]
        await until(lambda: len(arrived) == 3, "three requests at the server")
        go.set()
        assert await asyncio.gather(*tasks) == [b"ok"] * 3
        assert len(set(arrived)) == 3
        assert upstream.idle == 3


async def test_an_idle_connection_closes_after_the_keepalive_timeout() -> None:
    async with (
        raw_server(answer_all) as server,
        ConnectionPool("127.0.0.1", server.port, keepalive_timeout=0.05) as upstream,
    ):
        async with await upstream.request("GET", "/", CIMultiDict(), None) as response:
            assert await response.content.read() == b"ok"
        assert upstream.idle == 1
        await asyncio.wait_for(server.conns[0].peer_closed.wait(), 10)
        await until(lambda: upstream.idle == 0, "the expired connection out of the pool")


# --- answers: framing -----------------------------------------------------------------------

FRAMINGS = {
    "length": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True),
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
        True,
    ),
    "until-close": (b"HTTP/1.1 200 OK\r\n\r\nhello", False),
    "connection-close": (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        False,
    ),
}


@pytest.mark.parametrize("framing", sorted(FRAMINGS))
async def test_a_body_is_read_whole_whatever_its_framing(framing: str) -> None:
    raw, kept = FRAMINGS[framing]

    async def script(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            conn.send(raw)
            if not kept:
                return  # the body ends with the connection

    async with raw_server(script) as server, ConnectionPool("127.0.0.1", server.port) as upstream:
        for _ in range(2):
            async with await upstream.request("GET", "/", CIMultiDict(), None) as response:
                assert (response.status, await response.content.read()) == (200, b"hello")
        assert len(server.conns) == (1 if kept else 2)
        assert upstream.idle == (1 if kept else 0)


async def test_head_answers_have_no_body_and_the_connection_goes_on(
    backend: ConnectionPool,
) -> None:
    async with await backend.request("HEAD", "/echo", CIMultiDict(), None) as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) > 0
        assert response.content.at_eof()
    assert backend.idle == 1
    assert (await fetch_json(backend))["size"] == 0  # the same connection parses on


async def test_bodiless_and_interim_answers() -> None:
    replies = [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"after"),
        answer(b"last"),
    ]

    async def script(conn: RawConn) -> None:
        for reply in replies:
            assert await conn.read_request() is not None
            conn.send(reply)
        await conn.until_closed()

    async with raw_server(script) as server, ConnectionPool("127.0.0.1", server.port) as upstream:
        seen = []
        for _ in replies:
            async with await upstream.request("GET", "/", CIMultiDict(), None) as response:
                seen.append((response.status, await response.content.read()))
        assert seen == [(204, b""), (304, b""), (200, b"after"), (200, b"last")]
        assert len(server.conns) == 1


async def test_headers_come_back_as_sent() -> None:
    async def script(conn: RawConn) -> None:
        await conn.read_request()
        conn.send(answer(extra="X-Odd-Case: a\r\nSet-Cookie: 1\r\nSet-Cookie: 2\r\n", body=b"{}"))

    async with raw_server(script) as server, ConnectionPool("127.0.0.1", server.port) as upstream:
        response = await upstream.request("GET", "/", CIMultiDict(), None)
        response.release()
        assert response.headers.getall("Set-Cookie") == ["1", "2"]
        assert "X-Odd-Case" in list(response.headers.keys())
        assert response.content_type == "application/octet-stream"  # none was given
        assert response.host == f"127.0.0.1:{server.port}"  # how errors name it: host and port


# --- requests -------------------------------------------------------------------------------


async def test_the_request_goes_out_exactly_as_given() -> None:
    headers = CIMultiDict([("x-lower", "1"), ("X-Upper", "2"), ("x-lower", "3")])
    posted = headers.copy()
    posted["Content-Length"] = "999"  # framing is derived from the body, never passed on
    async with (
        raw_server(answer_all) as server,
        ConnectionPool("127.0.0.1", server.port) as upstream,
    ):
        for method, sent, body in (
            ("POST", posted, b"hello"),
            ("GET", headers, None),
            ("DELETE", headers, None),
        ):
            (await upstream.request(method, "/a%20b/c?q=%C3%A9&x", sent, body)).release()
    port = server.port
    common = f"Host: 127.0.0.1:{port}\r\nx-lower: 1\r\nX-Upper: 2\r\nx-lower: 3\r\n"
    assert server.requests == [
        f"POST /a%20b/c?q=%C3%A9&x HTTP/1.1\r\n{common}Content-Length: 5\r\n\r\nhello".encode(),
        f"GET /a%20b/c?q=%C3%A9&x HTTP/1.1\r\n{common}\r\n".encode(),
        f"DELETE /a%20b/c?q=%C3%A9&x HTTP/1.1\r\n{common}Content-Length: 0\r\n\r\n".encode(),
    ]


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async with (
        raw_server(answer_all) as server,
        ConnectionPool("127.0.0.1", server.port) as upstream,
    ):
        for bad in ("a\r\nX-Smuggled: 1", "a\nb"):
            with pytest.raises(ValueError, match="line break"):
                await upstream.request("GET", "/", CIMultiDict({"X-Bad": bad}), None)
        assert server.conns == []


async def forward_body(upstream: ConnectionPool, request: web.Request) -> web.Response:
    """What a proxy does with a body it streams: hand the incoming stream on."""
    headers: CIMultiDict[str] = CIMultiDict()
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    async with await upstream.request("POST", "/echo", headers, request.content) as response:
        return web.Response(body=await response.content.read(), content_type="application/json")


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "with-length"])
async def test_a_streamed_request_body_arrives_whole(
    backend: ConnectionPool, chunked: bool
) -> None:
    data = bytes(range(256)) * (16 << 10)  # 4 MiB, in many reads

    async def proxy(request: web.Request) -> web.Response:
        return await forward_body(backend, request)

    app = web.Application()
    app.router.add_post("/", proxy)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    async with serving(app, "127.0.0.1", 0) as port, aiohttp.ClientSession() as http:
        sent = chunks() if chunked else io.BytesIO(data)
        async with http.post(f"http://127.0.0.1:{port}/", data=sent) as response:
            seen = await response.json()
    assert (seen["size"], seen["sha"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert seen["chunked"] is chunked
    assert seen["length"] == (None if chunked else str(len(data)))
    assert backend.idle == 1  # the body went out whole: the connection is kept


# --- a large answer read slowly -------------------------------------------------------------


async def test_a_large_download_read_slowly_stays_bounded(backend: ConnectionPool) -> None:
    response: Response = await backend.request("GET", "/download", CIMultiDict(), None)
    async with response:
        content = response.content
        _, high = content.get_read_buffer_limits()
        read = len(await content.readany())
        largest = 0
        while not content.at_eof():
            # Stop reading until the client stops the socket: the buffer must stop growing.
            await until(lambda: response.reading_paused or content.is_eof(), "reading paused")
            largest = max(largest, content.total_bytes - read)
            read += len(await content.read(4 * BLOCK))
            if content.is_eof():
                read += len(await content.read())
        assert read == BIG
        # Paused at the high-water mark, give or take one socket read.
        assert 0 < largest <= high + 1024 * 1024
