"""Client mode: the local endpoint apps use, forwarding each request to a server of the pool."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import aiohttp
from aiohttp import web

from ollana import __version__
from ollana.cluster.models import inspect_request
from ollana.cluster.router import NoServerError, Router
from ollana.proxy.forward import error_response, relay, request_headers

__all__ = ["PIN_HEADER", "VERSION_HEADER", "ClientProxy"]

log = logging.getLogger(__name__)

PIN_HEADER: Final = "X-Ollana-Server"
VERSION_HEADER: Final = "X-Ollana-Version"

# A local handler answers some requests itself (guard refusals, merged lists); None passes on.
LocalHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse | None]]


class ClientProxy:
    """The request handler of client mode; routes through a Router."""

    def __init__(
        self,
        router: Router,
        *,
        retry_buffer: int,
        route_body_cap: int,
        local: LocalHandler | None = None,
    ) -> None:
        self._router = router
        self._retry_buffer = retry_buffer
        self._route_body_cap = route_body_cap
        self._local = local
        self._tag = {VERSION_HEADER: __version__}

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request from a local app."""
        if self._local is not None:
            answered = await self._local(request)
            if answered is not None:
                return answered
        body: bytes | aiohttp.StreamReader | None = None
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= self._retry_buffer:
                # Kept whole so that it can be sent again to another server.
                body = await request.read()
            else:
                body = request.content
        route = inspect_request(
            request.method,
            request.path,
            body if isinstance(body, bytes) else None,
            request.headers.get(PIN_HEADER),
            self._route_body_cap,
        )
        headers = request_headers(request.headers, None)
        headers.popall(PIN_HEADER, None)
        try:
            server, upstream = await self._router.open(
                request.method, request.raw_path, headers, body, route
            )
        except NoServerError as exc:
            return error_response(exc.status, str(exc), self._tag)
        status = upstream.status
        try:
            return await relay(request, upstream, {**self._tag, PIN_HEADER: server.label})
        except BaseException:
            status = 599
            raise
        finally:
            self._router.done(server, route, status)
