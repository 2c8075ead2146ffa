"""Client mode: the local endpoint apps use, forwarding each request to a server of the pool."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict

from ollana import __version__
from ollana.cluster.models import inspect_request
from ollana.cluster.router import NoServerError, Router
from ollana.http import (
    MODEL_HEADER,
    PIN_HEADER,
    VERSION_HEADER,
    bare_response,
    continue_if_expected,
    error_response,
    relay,
    request_headers,
)
from ollana.http.guard import LocalGuard
from ollana.logs import access_log
from ollana.metrics import NO_SERVER
from ollana.ollama_api import RESPONSES_PATH, route_label
from ollana.usage import METERED_PATHS, NO_USAGE, Usage, UsageMeter, UsageStore

__all__ = ["ClientProxy"]

if TYPE_CHECKING:
    from ollana.metrics import Metrics

log = logging.getLogger(__name__)


# Why an answer ended with 599: what the dashboard's list of errors says.
BROKE_OFF: Final = "the answer broke off (the server's stream ended, or the app went away)"

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
        guard: LocalGuard | None = None,
        metrics: Metrics | None = None,
        usage: UsageStore | None = None,
    ) -> None:
        self._router = router
        self._usage = usage
        self._metrics = metrics
        self._guard = guard
        self._retry_buffer = retry_buffer
        self._route_body_cap = route_body_cap
        self._local = local
        self._tag = {VERSION_HEADER: __version__}

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request from a local app."""
        started = time.perf_counter()
        extra: CIMultiDict[str] = CIMultiDict(self._tag)
        response = await self._local_answer(request, extra)
        if response is None:
            return await self._forward(request, extra, started)
        route = self._finished(request, response.status, NO_SERVER, started)
        if response.status >= 400:
            self._activity("", route, response.status, model="")
        return response

    async def _local_answer(
        self, request: web.BaseRequest, extra: CIMultiDict[str]
    ) -> web.StreamResponse | None:
        """The guard's refusals and CORS preflights, and what the local handler answers."""
        if self._guard is not None:
            decision = self._guard.check(
                request.method, request.headers.get(hdrs.HOST), request.headers.get(hdrs.ORIGIN)
            )
            if decision.status == 403:
                if self._metrics is not None:
                    self._metrics.refused("guard")
                return error_response(403, decision.error or "forbidden", self._tag)
            if decision.status is not None:
                headers = CIMultiDict(decision.headers)
                headers.extend(self._tag)
                return bare_response(decision.status, headers=headers)
            extra.extend(decision.headers)
        if self._local is not None:
            answered = await self._local(request)
            if answered is not None:
                answered.headers.extend(extra)
                return answered
        return None

    async def _forward(
        self, request: web.BaseRequest, extra: CIMultiDict[str], started: float
    ) -> web.StreamResponse:
        body: bytes | aiohttp.StreamReader | None = None
        if request.body_exists:
            await continue_if_expected(request)
            length = request.content_length
            if length is not None and length <= self._retry_buffer:
                # Kept whole so that it can be sent again to another server.
                try:
                    body = await request.content.readexactly(length)
                except asyncio.IncompleteReadError:
                    why = "request body shorter than its Content-Length"
                    route_name = self._finished(request, 400, NO_SERVER, started)
                    self._activity("", route_name, 400, model="", cause=why)
                    return error_response(400, why)
            else:
                body = request.content
        route = inspect_request(
            request.path,
            body if isinstance(body, bytes) else None,
            request.headers.get(PIN_HEADER),
            self._route_body_cap,
            content_type=request.headers.get(hdrs.CONTENT_TYPE),
            content_encoding=request.headers.get(hdrs.CONTENT_ENCODING),
        )
        headers = request_headers(request.headers, None)
        headers.popall(PIN_HEADER, None)
        headers.popall(MODEL_HEADER, None)
        if route.model is not None:
            headers[MODEL_HEADER] = route.model
        # The guard above is the authority on origins; the server's Ollama knows only its own.
        headers.popall(hdrs.ORIGIN, None)
        try:
            exchange = await self._router.open(
                request.method, request.raw_path, headers, body, route
            )
        except NoServerError as exc:
            route_name = self._finished(request, exc.status, NO_SERVER, started)
            self._activity("", route_name, exc.status, model=route.model or "", cause=str(exc))
            return error_response(exc.status, str(exc), extra)
        upstream = exchange.response
        assert upstream is not None
        status = upstream.status
        latency = time.perf_counter() - started
        label = extra[PIN_HEADER] = exchange.server.label
        meter: UsageMeter | None = None
        on_chunk: Callable[[bytes], None] | None = None
        metered = self._usage is not None or self._metrics is not None
        if metered and request.method == "POST" and request.path in METERED_PATHS:
            meter = UsageMeter(upstream.content_type)  # this device's own usage, per server
            on_chunk = meter.feed
        if route.path == RESPONSES_PATH and status == 200:
            # previous_response_id is known only where the response was made.
            on_chunk = self._router.response_watch(exchange.server, on_chunk)
        began = time.perf_counter()
        try:
            if route.unload and isinstance(body, bytes):
                await self._router.unload_elsewhere(
                    request.method, request.raw_path, headers, body, exchange
                )
            return await relay(request, upstream, extra, on_chunk)
        except BaseException:
            status = 599  # the app went away, or the stream broke
            raise
        finally:
            exchange.finish(status)
            route_name = self._finished(request, status, label, started)
            usage = meter.result() if meter is not None else NO_USAGE
            server = exchange.server
            self._activity(
                server.key, route_name, status, model=route.model or usage.model, latency=latency,
                usage=usage, cause=BROKE_OFF if status == 599 else "",
            )  # fmt: skip
            if meter is not None and self._usage is not None:
                seconds = usage.eval_seconds or usage.total_seconds
                self._usage.record(
                    server.device_id or server.label, usage.model,
                    prompt_tokens=usage.prompt_tokens, generated_tokens=usage.generated_tokens,
                    seconds=seconds if seconds is not None else time.perf_counter() - began,
                    error=status >= 400 or usage.error,
                )  # fmt: skip

    def _activity(
        self,
        key: str,
        route: str,
        status: int,
        *,
        model: str,
        latency: float | None = None,
        usage: Usage | None = None,
        cause: str = "",
    ) -> None:
        """What the dashboard shows: rates, latency and tokens per server, the last errors."""
        if self._metrics is None:
            return
        usage = usage or NO_USAGE
        self._metrics.activity.finished(
            key, status=status, route=route, model=model, latency=latency,
            prompt_tokens=usage.prompt_tokens, generated_tokens=usage.generated_tokens,
            cause=cause,
        )  # fmt: skip

    def _finished(self, request: web.BaseRequest, status: int, server: str, started: float) -> str:
        """Count and log a request that ended; returns its route label (for `_activity`)."""
        seconds = time.perf_counter() - started
        route = route_label(request.path)
        if self._metrics is not None:
            self._metrics.request_finished(route, status, server, seconds)
        access_log(
            request.remote or "-", request.method, request.path, status, seconds, server=server
        )
        return route
