"""Client mode: the local endpoint, the pool of servers and the router between them."""

from __future__ import annotations

import contextlib
import logging
from types import TracebackType

import aiohttp
from aiohttp import web

from ollana.cluster.aggregate import Aggregator
from ollana.cluster.pool import Pool, Server
from ollana.cluster.router import Router
from ollana.config import Settings
from ollana.proxy.client import ClientProxy
from ollana.proxy.listener import Listener

__all__ = ["ClientMode"]

log = logging.getLogger(__name__)


class ClientMode:
    """Runs client mode's parts; exit stops accepting, drains, then closes the pool."""

    mode = "client"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = Pool(settings, self._connector, scheme="http")
        self.router = Router(self.pool, settings.wait_for_server)
        self.aggregator = Aggregator(
            self.pool, self.router, settings.wait_for_server, settings.limits.connect_timeout
        )
        self.proxy = ClientProxy(
            self.router,
            retry_buffer=settings.retry_buffer,
            route_body_cap=settings.limits.route_body_cap,
            local=self._local,
        )
        self.listener = Listener(
            self.proxy.handle,
            settings.listen_address(server_mode=False),
            settings.limits,
            grace=settings.grace,
            name="client",
        )
        self._stack = contextlib.AsyncExitStack()

    async def _local(self, request: web.BaseRequest) -> web.StreamResponse | None:
        if self.aggregator.handles(request):
            return await self.aggregator.answer(request)
        return None

    def _connector(self, server: Server) -> aiohttp.BaseConnector:
        return aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0)

    async def __aenter__(self) -> ClientMode:
        try:
            await self._stack.enter_async_context(self.pool)
            await self._stack.enter_async_context(self.listener)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop in stages; safe to call twice."""
        await self.listener.stop_accepting()
        await self._stack.aclose()

    @property
    def port(self) -> int:
        """The port the local endpoint is bound to."""
        return self.listener.port
