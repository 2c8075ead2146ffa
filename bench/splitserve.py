"""The minimal hops `bench.split` measures, each run in its own process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpResponseParser
from yarl import URL

__all__ = ["serve"]

BODY = b'{"version":"0.5.7"}'
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class _Upstream(BaseProtocol):
    """One keep-alive connection: write a request head, parse the answer with the C parser."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.parser = HttpResponseParser(
            self, loop, 2**16, max_line_size=8190, max_field_size=8190,
            read_until_eof=False, auto_decompress=False,
        )  # fmt: skip
        self.answer: asyncio.Future[tuple[int, str, aiohttp.StreamReader]] | None = None

    def data_received(self, data: bytes) -> None:
        messages, _, _ = self.parser.feed_data(data)
        for message, payload in messages:
            if self.answer is not None and not self.answer.done():
                content_type = message.headers.get("Content-Type", "")
                self.answer.set_result((message.code, content_type, payload))


class _LeanClient:
    """A pool of idle keep-alive connections to one host."""

    def __init__(self, url: URL) -> None:
        self._host, self._port = url.host or "127.0.0.1", url.port or 80
        self._idle: list[_Upstream] = []

    async def get(self, path: str) -> tuple[int, str, bytes]:
        loop = asyncio.get_running_loop()
        conn = self._idle.pop() if self._idle else await self._connect(loop)
        conn.answer = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n\r\n".encode()
        )
        status, content_type, payload = await conn.answer
        body = await payload.read()
        self._idle.append(conn)
        return status, content_type, body

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Upstream:
        _, protocol = await loop.create_connection(lambda: _Upstream(loop), self._host, self._port)
        return protocol


def _handler(kind: str, backend: str) -> Handler:
    base = URL(backend)
    if kind == "server":

        async def answer(request: web.BaseRequest) -> web.StreamResponse:
            return web.Response(body=BODY, content_type="application/json")

        return answer
    if kind == "aiohttp client":
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )

        async def forward(request: web.BaseRequest) -> web.StreamResponse:
            async with session.get(base.join(URL(request.raw_path, encoded=True))) as upstream:
                body = await upstream.read()
                return _answer(upstream.status, upstream.headers.get("Content-Type", ""), body)

        return forward
    lean = _LeanClient(base)

    async def forward_lean(request: web.BaseRequest) -> web.StreamResponse:
        status, content_type, body = await lean.get(request.raw_path)
        return _answer(status, content_type, body)

    return forward_lean


def _answer(status: int, content_type: str, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, headers={"Content-Type": content_type})


async def serve(kind: str, backend: str) -> None:
    """Serve one kind of hop on a free loopback port until terminated; print its URL."""
    server = web.Server(_handler(kind, backend), access_log=None)
    runner = web.ServerRunner(server, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"{kind} listening on http://127.0.0.1:{port}", flush=True)
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
