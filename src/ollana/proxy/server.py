"""Server mode: the LAN endpoint, forwarding each request to the local Ollama."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from ollana import __version__
from ollana.config import Limits
from ollana.http import (
    VERSION_HEADER,
    UpstreamError,
    continue_if_expected,
    error_response,
    open_upstream,
    relay,
    request_headers,
)
from ollana.local_ollama import ollama_pool
from ollana.logs import access_log
from ollana.metrics import LOCAL_OLLAMA, NO_SERVER, Metrics
from ollana.ollama_api import route_label

__all__ = ["ServerProxy"]

log = logging.getLogger(__name__)

# Why an attempt at the local Ollama failed with nothing processed and nothing sent back.
_ANSWERED_NOTHING: Final = frozenset({"connect", "tls", "reset"})

# Answers a request itself (hello, refusals) or returns None to forward it.
Gate = Callable[[web.BaseRequest], Awaitable[web.StreamResponse | None]]


class ServerProxy:
    """The request handler of server mode: every request goes to the local Ollama."""

    def __init__(
        self,
        ollama_url: str,
        limits: Limits,
        *,
        gate: Gate | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._gate = gate
        self.upstream, self._prefix = ollama_pool(
            ollama_url,
            connect_timeout=limits.connect_timeout,
            read_timeout=limits.stream_idle_timeout,
        )
        self._tag = {VERSION_HEADER: __version__}

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request from a client on the LAN."""
        started = time.perf_counter()
        metrics = self._metrics
        if self._gate is not None:
            answered = await self._gate(request)
            if answered is not None:
                self._finished(request, answered.status, NO_SERVER, started)
                return answered
        body = None
        if request.body_exists:
            await continue_if_expected(request)
            body = request.content
        if metrics is not None:
            metrics.request_started(LOCAL_OLLAMA)
        status = 599
        try:
            try:
                upstream = await open_upstream(
                    self.upstream,
                    request.method,
                    self._prefix + request.raw_path,
                    request_headers(request.headers),
                    body,
                )
            except UpstreamError as exc:
                # Ollama is not there, or closed the connection without an answer: 503, so
                # that a client tries another server with the copy of the body it kept. (A
                # timeout may mean Ollama is still at it: that one is not retried.)
                status = 503 if exc.reason in _ANSWERED_NOTHING else exc.status
                return error_response(status, str(exc), self._tag)
            status = upstream.status
            if metrics is not None:
                metrics.upstream_ttfb(LOCAL_OLLAMA, time.perf_counter() - started)
            response = await relay(request, upstream, self._tag)
        except BaseException:
            status = 599
            raise
        finally:
            self._finished(request, status, LOCAL_OLLAMA, started)
        return response

    def _finished(self, request: web.BaseRequest, status: int, server: str, started: float) -> None:
        seconds = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.request_finished(route_label(request.path), status, server, seconds)
        access_log(request.remote or "-", request.method, request.path, status, seconds)

    async def close(self) -> None:
        """Close the connection pool to Ollama; safe to call twice."""
        await self.upstream.close()
