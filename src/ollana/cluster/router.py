"""Choosing a server for each request, and retrying on the next one when that is safe."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from ollana.cluster.pool import Pool, Server, ServerState
from ollana.proxy.forward import UpstreamError, open_upstream

__all__ = ["NoServerError", "Route", "Router"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    """What routing knows of a request: the model it names and a pinned server, if any."""

    model: str | None = None
    pin: str | None = None


class NoServerError(Exception):
    """No server could take the request; the message says what was tried."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


class Router:
    """Orders candidate servers and opens the request on the first one that takes it."""

    def __init__(self, pool: Pool, wait_for_server: float) -> None:
        self._pool = pool
        self._wait = wait_for_server

    def candidates(self, route: Route) -> list[Server]:
        """Routable servers, best first: healthy before suspect, priority, load, latency."""
        servers = self._pool.healthy()
        if route.pin:
            servers = [s for s in servers if _matches(s, route.pin)]
        servers.sort(key=_rank)
        return servers

    async def open(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes | aiohttp.StreamReader | None,
        route: Route,
    ) -> tuple[Server, aiohttp.ClientResponse]:
        """Send the request to the best server; on a failure before any response byte, the next.

        The returned server has its in-flight count raised; the caller lowers it when done.
        """
        deadline = time.monotonic() + self._wait
        tried: list[str] = []
        while True:
            candidates = [s for s in self.candidates(route) if s.key not in tried]
            if not candidates:
                remaining = deadline - time.monotonic()
                if tried or remaining <= 0 or not await self._pool.wait_changed(remaining):
                    break
                continue
            for server in candidates:
                tried.append(server.key)
                assert server.session is not None
                server.inflight += 1
                server.requests += 1
                try:
                    response = await open_upstream(
                        server.session,
                        method,
                        URL(server.base_url + path_qs, encoded=True),
                        headers,
                        body,
                        retry_on_503=True,
                    )
                except UpstreamError as exc:
                    server.inflight -= 1
                    if exc.status != 503:
                        self._pool.passive_failure(server, str(exc))
                    log.info("request to %s failed: %s", server.label, exc)
                    if not exc.retryable:
                        raise NoServerError(str(exc), exc.status) from exc
                    continue
                except BaseException:
                    server.inflight -= 1
                    raise
                return server, response
        what = ", ".join(tried) if tried else "no server is known"
        pin = f" matching {route.pin!r}" if route.pin else ""
        raise NoServerError(f"no ollana server{pin} could take the request (tried: {what})")


def _rank(server: Server) -> tuple[bool, int, int, float]:
    latency = server.latency if server.latency is not None else math.inf
    return (server.state is not ServerState.HEALTHY, -server.priority, server.inflight, latency)


def _matches(server: Server, pin: str) -> bool:
    pin = pin.strip().lower().replace("-", "")
    if server.device_id and len(pin) >= 4 and server.device_id.startswith(pin):
        return True
    return pin in (server.address.host.lower(), str(server.address).lower())
