"""Servers for the upstream client's tests: scripted raw HTTP/1.1 over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class RawConn:
    """One accepted connection, driven by a test's script."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: RawServer
    peer_closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read_request(self) -> bytes | None:
        """The next request (head and Content-Length body), or None once the peer closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.peer_closed.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        request = head + (await self.reader.readexactly(length) if length else b"")
        self.server.requests.append(request)
        return request

    def send(self, data: bytes) -> None:
        """Write raw bytes to the client."""
        self.writer.write(data)

    async def until_closed(self) -> None:
        """Read and drop bytes until the client closes (or resets) the connection."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.peer_closed.set()

    def reset(self) -> None:
        """Close with a TCP reset (no orderly FIN)."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.writer.transport.abort()


@dataclass
class RawServer:
    """What a raw server saw: its connections and every request read through them."""

    port: int = 0
    conns: list[RawConn] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)


Script = Callable[[RawConn], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[RawServer]:
    """A loopback server running `script` on each connection it accepts."""
    state = RawServer()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        conn = RawConn(len(state.conns), reader, writer, state)
        state.conns.append(conn)
        try:
            await script(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.peer_closed.set()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        # Dropping the connections ends the scripts (a cancelled one would be logged).
        for conn in state.conns:
            conn.writer.transport.abort()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def answer(body: bytes = b"ok", *, status: str = "200 OK", extra: str = "") -> bytes:
    """A keep-alive answer framed by Content-Length."""
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def answer_all(conn: RawConn) -> None:
    """A script: answer every request on the connection with 200 "ok"."""
    while await conn.read_request() is not None:
        conn.send(answer())
