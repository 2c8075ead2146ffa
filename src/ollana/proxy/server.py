"""Server mode: the LAN endpoint, forwarding each request to the local Ollama."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import aiohttp
from aiohttp import web
from yarl import URL

from ollana import __version__
from ollana.admin.metrics import LOCAL_OLLAMA, NO_SERVER, Metrics, route_label
from ollana.config import Limits
from ollana.logs import access_log
from ollana.proxy.forward import (
    UpstreamError,
    error_response,
    open_upstream,
    relay,
    request_headers,
)

__all__ = ["MANAGEMENT_PATHS", "ServerProxy", "is_management"]

log = logging.getLogger(__name__)

MANAGEMENT_PATHS: Final = frozenset(
    {"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete"}
)

# Why an attempt at the local Ollama failed with nothing processed and nothing sent back.
_ANSWERED_NOTHING: Final = frozenset({"connect", "tls", "reset"})

# Answers a request itself (hello, refusals) or returns None to forward it.
Gate = Callable[[web.BaseRequest], Awaitable[web.StreamResponse | None]]


def is_management(method: str, path: str) -> bool:
    """Whether a request changes the models a server holds."""
    return path in MANAGEMENT_PATHS or (path.startswith("/api/blobs/") and method == "POST")


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
        self._base = ollama_url.rstrip("/")
        self._metrics = metrics
        self._gate = gate
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._tag = {"X-Ollana-Version": __version__}

    @property
    def session(self) -> aiohttp.ClientSession:
        """The keep-alive connection pool to the local Ollama."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # never replay one app's cookies for another
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self._limits.connect_timeout,
                    sock_read=self._limits.stream_idle_timeout,
                ),
            )
        return self._session

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request from a client on the LAN."""
        started = time.perf_counter()
        metrics = self._metrics
        if self._gate is not None:
            answered = await self._gate(request)
            if answered is not None:
                self._finished(request, answered.status, NO_SERVER, started)
                return answered
        body = request.content if request.body_exists else None
        if metrics is not None:
            metrics.request_started(LOCAL_OLLAMA)
        status = 599
        try:
            try:
                upstream = await open_upstream(
                    self.session,
                    request.method,
                    URL(self._base + request.raw_path, encoded=True),
                    request_headers(request.headers),
                    body,
                )
            except UpstreamError as exc:
                # Ollama is not there, or closed the connection without an answer: 503, so
                # that a client tries another server with the copy of the body it kept. (A
                # timeout may mean Ollama is still at it: that one is not retried.)
                status = 503 if exc.reason in _ANSWERED_NOTHING else exc.status
                return error_response(status, f"ollama: {exc}", self._tag)
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
        if self._session is not None:
            await self._session.close()
