"""A loopback server whose answers wait for a go: connections in use can be counted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from ollana.emulator import serving

__all__ = ["Held", "held_server"]


@dataclass
class Held:
    """The server's view: requests waiting for `go`, and where each came from."""

    go: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0
    transports: set[int] = field(default_factory=set)  # one per connection it has seen
    ports: list[int] = field(default_factory=list)  # each request's client port, in order
    port: int = 0


@contextlib.asynccontextmanager
async def held_server() -> AsyncIterator[Held]:
    """Serve `GET /` on a free loopback port; each answer waits for `state.go`."""
    state = Held()

    async def handle(request: web.Request) -> web.Response:
        assert request.transport is not None
        state.transports.add(id(request.transport))
        state.ports.append(request.transport.get_extra_info("peername")[1])
        state.waiting += 1
        await state.go.wait()
        state.waiting -= 1
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/", handle)
    async with serving(app, "127.0.0.1", 0) as port:
        state.port = port
        yield state
