"""HTTP listeners: one aiohttp low-level server per port, with limits and staged shutdown."""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from ollana.config import HostPort, Limits
from ollana.http._aiohttp import stop_site
from ollana.http.admission import Who
from ollana.http.handshakes import OnHandshakeFailure
from ollana.http.limits import LimitedServer, OnRefusal
from ollana.lifecycle import Service

__all__ = ["ListenError", "Listener", "WhoListens"]

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# Says who holds an address in use (" by Ollama 0.5.7"), for the error that names it.
WhoListens = Callable[[HostPort], Awaitable[str]]


class ListenError(OSError):
    """The listen address could not be bound; the message says why and, if known, by whom."""


class Listener(Service):
    """Serves one handler on one address; `async with` binds, exit drains then closes."""

    def __init__(
        self,
        handler: Handler,
        address: HostPort,
        limits: Limits,
        *,
        ssl_context: ssl.SSLContext | None = None,
        grace: float = 30.0,
        name: str = "http",
        on_refusal: OnRefusal | None = None,
        who: WhoListens | None = None,
        holder: Who | None = None,
        on_handshake_failure: OnHandshakeFailure | None = None,
    ) -> None:
        self._address = address
        self._who = who
        self._grace = grace
        self._name = name
        self._server = LimitedServer(
            handler,
            limits,
            name=name,
            on_refusal=on_refusal,
            who=holder,
            tls=ssl_context,
            on_handshake_failure=on_handshake_failure,
            handler_cancellation=True,
            access_log=None,
            # A proxy forwards a compressed body as it came (routing decodes its own copy).
            auto_decompress=False,
        )
        self._runner = web.ServerRunner(self._server, handle_signals=False, shutdown_timeout=grace)
        self._site: web.TCPSite | None = None
        self._closed = False
        self.port = address.port

    async def start(self) -> None:
        """Bind and start accepting connections."""
        await self._runner.setup()
        host = self._address.host or None
        # TLS is run by the server's protocol (http/handshakes.py), not by the site.
        self._site = web.TCPSite(self._runner, host, self._address.port, backlog=1024)
        try:
            await self._site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._closed = True
            if exc.errno == errno.EADDRINUSE:
                who = await self._who(self._address) if self._who is not None else ""
                raise ListenError(exc.errno, f"{self._address} is already in use{who}") from None
            raise ListenError(
                exc.errno, f"cannot listen on {self._address}: {exc.strerror}"
            ) from None
        for bound in self._runner.addresses:
            if isinstance(bound, tuple) and len(bound) >= 2:
                self.port = int(bound[1])
                break
        log.info("%s listening on %s", self._name, HostPort(self._address.host, self.port))

    @property
    def connections(self) -> int:
        """Open connections right now."""
        return len(self._server.connections)

    def held(self) -> dict[str, tuple[int, int]]:
        """(open, idle) connections per device (and per address for the anonymous)."""
        return self._server.held()

    @property
    def handshakes(self) -> int:
        """TLS handshakes that let a connection in, since start (0 without TLS)."""
        shakes = self._server.handshakes
        return shakes.completed if shakes is not None else 0

    @property
    def evicted(self) -> int:
        """Idle connections closed to make room for another device's, since start."""
        return self._server.admission.evicted

    async def stop_accepting(self) -> None:
        """Close the listening socket; open connections go on."""
        stop_site(self._site)

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish up to the grace period, then cancel."""
        if self._closed:
            return
        self._closed = True
        await self.stop_accepting()
        cleanup = asyncio.ensure_future(self._runner.cleanup())
        try:
            await asyncio.wait_for(asyncio.shield(cleanup), self._grace)
        except TimeoutError:
            # aiohttp would give cancelled handlers a second grace period; dropping the
            # connections cancels the handlers now (handler_cancellation=True).
            for protocol in list(self._server.connections):
                if protocol.transport is not None:
                    protocol.transport.abort()
            await cleanup
        except asyncio.CancelledError:
            cleanup.cancel()
            raise
