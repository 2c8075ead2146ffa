"""The one streaming forwarder both proxies use: open upstream, then relay chunk by chunk."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from ollana.ollama_api import stream_error_chunk
from ollana.proxy.upstream import (
    ConnectFailed,
    ConnectionClosed,
    ProtocolError,
    Response,
    Upstream,
    describe,
)

__all__ = [
    "HOP_BY_HOP",
    "VERSION_HEADER",
    "UpstreamError",
    "error_response",
    "json_response",
    "open_upstream",
    "relay",
    "request_headers",
]

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 plus the de-facto ones; Host and Content-Length are re-derived per hop.
HOP_BY_HOP: Final = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
        "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Host",
    )
)  # fmt: skip

# Both proxies tag their answers with it: how a client tells an ollana from an Ollama.
VERSION_HEADER: Final = "X-Ollana-Version"

# Out of file descriptors (per process, or system-wide): too many connections here.
_OUT_OF_FILES: Final = frozenset({errno.EMFILE, errno.ENFILE})


_STREAM_TYPES: Final = frozenset({"application/x-ndjson", "text/event-stream"})


@dataclass(frozen=True, slots=True)
class UpstreamError(Exception):
    """Opening an upstream request failed; `retryable` when no byte of it can have been used."""

    status: int
    message: str
    retryable: bool
    reason: str = "error"  # connect, reset, timeout, busy, local, error: for metrics

    def __str__(self) -> str:
        return self.message


class _Stream(web.StreamResponse):
    """A streamed response that sends no Server header unless the upstream sent one.

    Its head is held back until the first body bytes (or the end) are written, so that
    a small answer leaves in one send rather than two.
    """

    _send_headers_immediately = False

    async def _write_headers(self) -> None:
        if self._headers.get(hdrs.SERVER) == "":
            del self._headers[hdrs.SERVER]
        await super()._write_headers()


class _Whole(web.Response):
    """A response of our own, headed as Ollama heads its answers (no Server header)."""

    async def _write_headers(self) -> None:
        self._headers.popall(hdrs.SERVER, None)
        await super()._write_headers()


def request_headers(
    headers: CIMultiDictProxy[str], extra: Mapping[str, str] | None = None
) -> CIMultiDict[str]:
    """The headers to send upstream: the client's, less hop-by-hop and Connection-named ones."""
    drop = HOP_BY_HOP
    connection = headers.get(hdrs.CONNECTION)
    if connection:
        drop = drop | {t.strip().lower() for t in connection.split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    if extra:
        out.update(extra)
    return out


def json_response(
    status: int,
    body: bytes,
    content_type: str = "application/json; charset=utf-8",
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A JSON answer of our own, headed as Ollama heads its answers."""
    response = _Whole(status=status, body=body, headers=headers)
    response.headers[hdrs.CONTENT_TYPE] = content_type
    return response


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An Ollama-style error: `{"error": "…"}` as application/json; charset=utf-8."""
    return json_response(status, json.dumps({"error": message}).encode(), headers=headers)


async def open_upstream(
    upstream: Upstream,
    method: str,
    target: str,
    headers: CIMultiDict[str],
    body: bytes | aiohttp.StreamReader | None,
    *,
    retry_on_503: bool = False,
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
    host = upstream.host
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
    if retry_on_503 and response.status == 503:
        # Ollama's queue is full: another server may take it.
        response.release()
        raise UpstreamError(503, f"{host} is busy (503)", True, "busy")
    return response


def _why(exc: BaseException) -> str:
    return describe(exc.__cause__ or exc)


_READ_ERRORS: Final = (TimeoutError, aiohttp.ClientError)


class _Broken(Exception):
    """The upstream failed mid-response (as opposed to the client going away)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.why = "idle timeout" if isinstance(exc, TimeoutError) else _why(exc)


async def _end_broken(response: web.StreamResponse, upstream: Response, why: str) -> None:
    log.info("upstream %s broke mid-response: %s", upstream.host, why)
    if upstream.content_type in _STREAM_TYPES:
        await response.write(stream_error_chunk(upstream.content_type, f"upstream failed: {why}"))
        await response.write_eof()
    # A body of known length cannot carry an error: closing the connection says it.
    response.force_close()


async def relay(
    request: web.BaseRequest,
    upstream: Response,
    extra_headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Stream an upstream response to the client chunk by chunk; a broken stream ends cleanly."""
    headers = request_headers(upstream.headers, extra_headers)
    # An empty Server header marks "none upstream": aiohttp would otherwise add its own.
    headers.setdefault(hdrs.SERVER, "")
    response = _Stream(status=upstream.status, reason=upstream.reason, headers=headers)
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
                # (An empty write sends a held head: the client learns the answer started.)
                await write(chunk)
                try:
                    chunk = await read()
                except _READ_ERRORS as exc:
                    raise _Broken(exc) from exc
        except _Broken as broken:
            await _end_broken(response, upstream, broken.why)
            return response
        # The last bytes, the chunked-encoding end marker and a head still held leave together.
        await response.write_eof(chunk)
    finally:
        upstream.release()
    return response
