"""The one streaming forwarder both proxies use: open upstream, then relay chunk by chunk."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict

from ollana.http._aiohttp import HeldStream
from ollana.http.client import (
    ConnectFailed,
    ConnectionClosed,
    ConnectionPool,
    ProtocolError,
    Response,
    describe,
)
from ollana.http.headers import BUSY_HEADER, request_headers
from ollana.ollama_api import stream_error_chunk

__all__ = ["CROWDED", "UpstreamError", "open_upstream", "relay"]

log = logging.getLogger(__name__)

# Out of file descriptors (per process, or system-wide): too many connections here.
_OUT_OF_FILES: Final = frozenset({errno.EMFILE, errno.ENFILE})


CROWDED: Final = "crowded"  # the reason of an ollana listener's 503 for want of a connection
_STREAM_TYPES: Final = frozenset({"application/x-ndjson", "text/event-stream"})


@dataclass(frozen=True, slots=True)
class UpstreamError(Exception):
    """Opening an upstream request failed; `retryable` when no byte of it can have been used."""

    status: int
    message: str
    retryable: bool
    reason: str = "error"  # connect, reset, timeout, busy, crowded, local, error: for metrics

    def __str__(self) -> str:
        return self.message


async def open_upstream(
    upstream: ConnectionPool,
    method: str,
    target: str,
    headers: CIMultiDict[str],
    body: bytes | aiohttp.StreamReader | None,
    *,
    retry_statuses: Collection[int] = (),
) -> Response:
    """Send a request upstream and return once its response head has arrived.

    Raises UpstreamError; `retryable` is set only when the request cannot have been acted
    on. A body that fails on its way in (the app went away) raises RequestBodyError.
    """
    replayable = not isinstance(body, aiohttp.StreamReader)
    untouched = True  # whether a failed attempt left the body for the next one
    if isinstance(body, aiohttp.StreamReader) and body.is_eof() and body.exception() is None:
        # A small body arrives whole with its head: as bytes it leaves with ours in one send,
        # without a task pumping the stream.
        body = body.read_nowait()
        untouched = False
    host = upstream.label
    try:
        response = await upstream.request(method, target, headers, body)
    except ConnectFailed as exc:
        if exc.tls:
            # The TLS handshake failed or named the wrong device: nothing was sent.
            raise UpstreamError(502, f"{host}: TLS: {exc.why}", untouched, "tls") from exc
        if exc.errno in _OUT_OF_FILES:
            # This machine's limit, not the server's fault: eject nothing, try nothing else.
            raise UpstreamError(
                503, f"cannot connect to {host}: {exc.why} here", False, "local"
            ) from exc
        # Refused, unreachable, or connecting took too long (a vanished host): nothing sent.
        raise UpstreamError(
            502, f"cannot connect to {host}: {exc.why}", untouched, "connect"
        ) from exc
    except ConnectionClosed as exc:
        # Closed or reset before the answer: a streamed body is partly gone, so only a kept
        # body may retry.
        message = f"{host}: {exc.why}" if exc.reset else f"{host} closed the connection"
        raise UpstreamError(502, message, replayable, "reset") from exc
    except TimeoutError as exc:
        # The server may still be working on it: never retry, or a POST could run twice.
        raise UpstreamError(504, f"{host} did not answer in time", False, "timeout") from exc
    except ProtocolError as exc:
        raise UpstreamError(502, f"{host}: {exc}", False) from exc
    if response.status == 503 and BUSY_HEADER in response.headers:
        # An ollana listener had no room for the connection: nothing was done, and the same
        # server may well take the request a moment later.
        why = await _error_text(response)
        raise UpstreamError(503, f"{host} answered 503: {why}", replayable, CROWDED)
    status = response.status
    if status in retry_statuses:
        # Ollama's queue is full or it is down (503), its cloud rate limit was hit (429), or
        # it is not signed in to run a cloud model (401): another server may take it.
        why = await _error_text(response)
        reason = _STATUS_REASONS.get(status, "busy")
        raise UpstreamError(status, f"{host} answered {status}: {why}", True, reason)
    return response


_STATUS_REASONS: Final = {503: "busy", 429: "rate-limited", 401: "signin"}


async def _error_text(response: Response) -> str:
    """The `error` of a small JSON error answer, on one line; the answer is released."""
    try:
        async with asyncio.timeout(_ERROR_READ_TIMEOUT), response:
            body = await response.content.read(_ERROR_READ_LIMIT)
        error = json.loads(body).get("error")
    except (*_READ_ERRORS, ValueError, AttributeError):
        return response.reason or "unavailable"
    return " ".join(str(error).split()) if error else (response.reason or "unavailable")


_READ_ERRORS: Final = (TimeoutError, aiohttp.ClientError)
_ERROR_READ_TIMEOUT: Final = 1.0  # an error answer is small and comes whole
_ERROR_READ_LIMIT: Final = 4096


def _why(exc: BaseException) -> str:
    return describe(exc.__cause__ or exc)


class _Broken(Exception):
    """The upstream failed mid-response (as opposed to the client going away)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.silent = isinstance(exc, TimeoutError)
        self.why = _why(exc)


async def _end_broken(
    response: web.StreamResponse, upstream: Response, broken: _Broken, path: str
) -> None:
    log.info("upstream %s broke mid-response: %s", upstream.host, " ".join(broken.why.split()))
    # What the app shows its user: what happened, on one line (not the parser's wording).
    done = "went silent" if broken.silent else "closed the connection"
    message = f"{upstream.host} {done} mid-answer"
    if upstream.content_type in _STREAM_TYPES:
        await response.write(stream_error_chunk(upstream.content_type, message, path))
        await response.write_eof()
    # A body of known length cannot carry an error: closing the connection says it.
    response.force_close()


async def relay(
    request: web.BaseRequest,
    upstream: Response,
    extra_headers: Mapping[str, str] | None = None,
    on_chunk: Callable[[bytes], None] | None = None,
) -> web.StreamResponse:
    """Stream an upstream response to the client chunk by chunk; a broken stream ends cleanly.

    `on_chunk` sees every body chunk as it passes (a usage meter): it must be quick.
    """
    headers = request_headers(upstream.headers, extra_headers)
    headers.setdefault(hdrs.SERVER, "")  # none upstream: none from us either (HeldStream)
    response = HeldStream(status=upstream.status, reason=upstream.reason, headers=headers)
    try:
        await response.prepare(request)
        if request.method == hdrs.METH_HEAD:
            return response
        content = upstream.content
        read = content.readany
        write = response.write
        try:
            try:
                # What came in with the upstream's head goes out with ours, in one send.
                chunk = content.read_nowait()
            except _READ_ERRORS as exc:
                raise _Broken(exc) from exc
            while not content.at_eof():
                if on_chunk is not None:
                    on_chunk(chunk)
                # (An empty write sends a held head: the client learns the answer started.)
                await write(chunk)
                try:
                    chunk = await read()
                except _READ_ERRORS as exc:
                    raise _Broken(exc) from exc
        except _Broken as broken:
            await _end_broken(response, upstream, broken, request.path)
            return response
        if on_chunk is not None:
            on_chunk(chunk)
        # The last bytes, the chunked-encoding end marker and a head still held leave together.
        await response.write_eof(chunk)
    finally:
        upstream.release()
    return response
