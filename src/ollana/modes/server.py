"""Server mode: the LAN listener in front of the local Ollama, and its discovery voice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

import aiohttp

from ollana.app import OllamaWatch
from ollana.config import Settings
from ollana.proxy.listener import Listener
from ollana.proxy.server import ServerProxy

__all__ = ["ServerMode"]

log = logging.getLogger(__name__)


class ServerMode:
    """Runs server mode's parts; exit stops accepting, says goodbye, drains, then closes."""

    mode = "server"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proxy = ServerProxy(settings.ollama, settings.limits)
        self.listener = Listener(
            self.proxy.handle,
            settings.listen_address(server_mode=True),
            settings.limits,
            grace=settings.grace,
            name="server",
        )
        self.watch = OllamaWatch(
            settings.ollama, settings.timings.probe_interval, settings.timings.probe_timeout
        )
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> ServerMode:
        try:
            await self._stack.enter_async_context(self.listener)
            self._stack.push_async_callback(self.proxy.close)
            self._tasks.append(asyncio.create_task(self._watch(), name="ollama watch"))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _watch(self) -> None:
        session = aiohttp.ClientSession()
        try:
            await self.watch.run(session)
        finally:
            await asyncio.shield(session.close())

    async def close(self) -> None:
        """Stop in stages; safe to call twice."""
        await self.listener.stop_accepting()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._stack.aclose()

    @property
    def port(self) -> int:
        """The port the LAN listener is bound to."""
        return self.listener.port
