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
    MODEL_HEADER,
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
from ollana.proxy.admission import FairQueue, QueueFull
from ollana.usage import METERED_PATHS, NO_USAGE, Usage, UsageMeter, UsageStore
from ollana.usage.prometheus import DeviceMetrics

__all__ = ["PEER_DEVICE", "Describe", "ServerProxy"]

log = logging.getLogger(__name__)

# A model name is short; a longer header is not one (and must not grow the queue's keys).
MAX_MODEL_KEY: Final = 256

# Why an attempt at the local Ollama failed with nothing processed and nothing sent back.
_ANSWERED_NOTHING: Final = frozenset({"connect", "tls", "reset"})

# Answers a request itself (hello, refusals) or returns None to forward it.
Gate = Callable[[web.BaseRequest], Awaitable[web.StreamResponse | None]]

# The gate puts the device ID of the peer here ("" for one without a certificate).
PEER_DEVICE: Final = web.RequestKey("ollana_peer_device", str)

# How the dashboard names peers without a certificate (open mode).
ANONYMOUS: Final = "anonymous"

# A device's metric labels: its short ID (or "anonymous") and its name ("" if none).
Describe = Callable[[str], tuple[str, str]]


class ServerProxy:
    """The request handler of server mode: every request goes to the local Ollama."""

    def __init__(
        self,
        ollama_url: str,
        limits: Limits,
        *,
        gate: Gate | None = None,
        metrics: Metrics | None = None,
        queue: FairQueue | None = None,
        usage: UsageStore | None = None,
        device_metrics: DeviceMetrics | None = None,
        describe: Describe | None = None,
    ) -> None:
        self._metrics = metrics
        self._gate = gate
        self.queue = queue
        self._usage = usage
        self._device_metrics = device_metrics
        self._describe = describe or _short
        self._labels: dict[str, tuple[str, str]] = {}
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
                route = self._finished(request, answered.status, NO_SERVER, started)
                if answered.status >= 400:
                    self._activity(request, route, None, answered.status)
                return answered
        # Inference waits its turn and is metered; the rest (lists, pulls) goes straight on.
        device = request.get(PEER_DEVICE, "")
        metered = request.method == "POST" and request.path in METERED_PATHS
        queue = self.queue if metered else None
        if queue is None:
            return await self._forward(request, started, device if metered else None)
        try:
            model = request.headers.get(MODEL_HEADER, "")[:MAX_MODEL_KEY]
            await queue.acquire(device, model)
        except QueueFull as exc:
            # At once, before any byte: the client's router tries another server.
            if metrics is not None:
                metrics.refused("queue-full")
            route = self._finished(request, 503, NO_SERVER, started)
            self._activity(request, route, device, 503, cause=str(exc))
            return error_response(503, str(exc), self._tag)
        try:
            return await self._forward(request, started, device)
        finally:
            queue.release(device, model)

    async def _forward(
        self, request: web.BaseRequest, started: float, device: str | None
    ) -> web.StreamResponse:
        """Send a request to Ollama and relay its answer; `device` set: meter its usage."""
        metrics = self._metrics
        began = time.perf_counter()
        body = None
        if request.body_exists:
            await continue_if_expected(request)
            body = request.content
        if metrics is not None:
            metrics.request_started(LOCAL_OLLAMA)
        status = 599
        meter: UsageMeter | None = None
        latency: float | None = None
        cause = ""
        try:
            try:
                upstream = await open_upstream(
                    self.upstream,
                    request.method,
                    self._prefix + request.raw_path,
                    request_headers(request.headers, drop=MODEL_HEADER),
                    body,
                )
            except UpstreamError as exc:
                # Ollama is not there, or closed the connection without an answer: 503, so
                # that a client tries another server with the copy of the body it kept. (A
                # timeout may mean Ollama is still at it: that one is not retried.)
                status = 503 if exc.reason in _ANSWERED_NOTHING else exc.status
                cause = str(exc)
                return error_response(status, cause, self._tag)
            status = upstream.status
            latency = time.perf_counter() - started
            if metrics is not None:
                metrics.upstream_ttfb(LOCAL_OLLAMA, latency)
            if device is not None and (self._usage or self._device_metrics or metrics):
                meter = UsageMeter(upstream.content_type)
                response = await relay(request, upstream, self._tag, meter.feed)
            else:
                response = await relay(request, upstream, self._tag)
        except BaseException:
            status = 599
            raise
        finally:
            route = self._finished(request, status, LOCAL_OLLAMA, started)
            usage = meter.result() if meter is not None else NO_USAGE
            if status == 599 and not cause:
                cause = "the answer broke off (Ollama's stream ended, or the client went away)"
            self._activity(
                request, route, request.get(PEER_DEVICE, ""), status, latency=latency, usage=usage,
                cause=cause, tally=device is not None,
            )  # fmt: skip
            if device is not None:
                self._account(device, status, usage, began)
        return response

    def _activity(
        self,
        request: web.BaseRequest,
        route: str,
        device: str | None,
        status: int,
        *,
        latency: float | None = None,
        usage: Usage | None = None,
        cause: str = "",
        tally: bool = True,
    ) -> None:
        """What the dashboard shows: rates, latency and tokens per device, the last errors.

        `device` "" is a peer without a certificate; None a request no device was let make.
        `tally` False (not inference: lists, probes): only an error is kept.
        """
        if self._metrics is None:
            return
        usage = usage or NO_USAGE
        model = request.headers.get(MODEL_HEADER, "")[:MAX_MODEL_KEY] or usage.model
        self._metrics.activity.finished(
            "" if device is None else device or ANONYMOUS, status=status,
            route=route, model=model, latency=latency,
            prompt_tokens=usage.prompt_tokens, generated_tokens=usage.generated_tokens,
            cause=cause, tally=tally,
        )  # fmt: skip

    def _account(self, device: str, status: int, usage: Usage, began: float) -> None:
        """Count what one metered request used, for its device and model."""
        seconds = usage.eval_seconds
        if seconds is None:
            seconds = usage.total_seconds
        if seconds is None:
            seconds = time.perf_counter() - began
        error = status >= 400 or usage.error
        if self._usage is not None:
            self._usage.record(
                device, usage.model, prompt_tokens=usage.prompt_tokens,
                generated_tokens=usage.generated_tokens, seconds=seconds, error=error,
            )  # fmt: skip
        if self._device_metrics is not None:
            labels = self._labels.get(device)
            if labels is None:
                labels = self._labels[device] = self._describe(device)
            self._device_metrics.count(
                *labels, usage.model, prompt=usage.prompt_tokens,
                generated=usage.generated_tokens, seconds=seconds, error=error,
            )  # fmt: skip

    def _finished(self, request: web.BaseRequest, status: int, server: str, started: float) -> str:
        """Count and log a request that ended; returns its route label (for `_activity`)."""
        seconds = time.perf_counter() - started
        route = route_label(request.path)
        if self._metrics is not None:
            self._metrics.request_finished(route, status, server, seconds)
        access_log(request.remote or "-", request.method, request.path, status, seconds)
        return route

    async def close(self) -> None:
        """Close the connection pool to Ollama; safe to call twice."""
        await self.upstream.close()


def _short(device: str) -> tuple[str, str]:
    return (device[:8] or ANONYMOUS, "")
