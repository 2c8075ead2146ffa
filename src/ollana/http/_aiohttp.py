"""The one place that touches aiohttp's private internals, behind names of our own.

ollana's listener limits, its lean upstream client and its response heads need a few of
aiohttp's private attributes. They are named here, and only here; at import, every one of
them is checked against the installed aiohttp, so that an aiohttp release that renamed one
fails at start with the attribute's name and the supported range, instead of silently
losing a limit. pyproject.toml bounds aiohttp to `SUPPORTED`; tests/unit/test_aiohttp_seam.py
runs the checks and the limits against the installed release.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final

import aiohttp
from aiohttp import hdrs, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpResponseParser, RawRequestMessage, RawResponseMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

__all__ = [
    "SUPPORTED",
    "BareResponse",
    "ClientProtocol",
    "HeldStream",
    "HttpResponseParser",
    "RawRequestMessage",
    "RawResponseMessage",
    "ServerProtocol",
    "StreamReader",
    "check",
    "handler_kwargs",
    "stop_site",
]

SUPPORTED: Final = ">=3.10,<3.15"

# (class, attribute) pairs this module relies on: slots and class attributes can be checked
# without an instance.
_REQUIRED: Final = (
    (RequestHandler, "_messages"),
    (RequestHandler, "_request_count"),
    (RequestHandler, "_request_handler"),
    (RequestHandler, "_payload_parser"),
    (RequestHandler, "_waiter"),
    (RequestHandler, "_close"),
    (RequestHandler, "_force_close"),
    (RequestHandler, "_current_request"),
    (RequestHandler, "_next_keepalive_close_time"),
    (RequestHandler, "_keepalive_timeout"),
    (BaseProtocol, "_loop"),
    (BaseProtocol, "_paused"),
    (BaseProtocol, "_parser"),
    (BaseProtocol, "_reading_paused"),
    (BaseProtocol, "_buffer_paused"),
    (BaseProtocol, "_upgraded"),
    (BaseProtocol, "_drain_helper"),
    (web.BaseSite, "_server"),
    (web.StreamResponse, "_send_headers_immediately"),
    (web.StreamResponse, "_write_headers"),
)


def _has(cls: type, name: str) -> bool:
    return hasattr(cls, name) or any(name in getattr(k, "__slots__", ()) for k in cls.__mro__)


def check() -> None:
    """Raise ImportError naming any internal this module needs that aiohttp lacks."""
    missing = [f"{cls.__name__}.{name}" for cls, name in _REQUIRED if not _has(cls, name)]
    if missing:
        raise ImportError(
            f"aiohttp {aiohttp.__version__} lacks {', '.join(missing)}, which ollana needs;"
            f" ollana supports aiohttp{SUPPORTED}: pip install 'aiohttp{SUPPORTED}'"
        )


check()


class ServerProtocol(RequestHandler):
    """aiohttp's server connection, with its private state under names of our own."""

    __slots__ = ()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The connection's event loop."""
        return self._loop

    @property
    def closing(self) -> bool:
        """Whether the connection closes after what it is doing now (or was upgraded)."""
        return self._force_close or self._close or self._upgraded

    @property
    def waiting(self) -> bool:
        """Whether the connection waits for its next request (as aiohttp's keep-alive sees it)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    @property
    def idle_at(self) -> float:
        """Loop time of the end of the last answer (of the connection's start, before one)."""
        return self._next_keepalive_close_time - self._keepalive_timeout

    @property
    def reading_body(self) -> bool:
        """Whether the parser is inside a request body."""
        return self._payload_parser is not None

    @property
    def input_paused(self) -> bool:
        """Whether reading from the client is paused (a body nobody reads yet)."""
        return self._reading_paused or self._buffer_paused

    @property
    def request_count(self) -> int:
        """Requests whose heads have been parsed on this connection."""
        return self._request_count

    @property
    def queued(self) -> deque[tuple[Any, StreamReader]]:
        """Parsed requests waiting for the handler: (message or error, body) pairs."""
        return self._messages

    @property
    def current_request(self) -> web.BaseRequest | None:
        """The request being handled, if any."""
        return self._current_request

    def answer_with(self, handler: Any) -> None:
        """Let `handler` answer every request of this connection."""
        self._request_handler = handler

    def refusal(self, status: int, exc: Exception, message: str) -> tuple[Any, StreamReader]:
        """A queue entry that makes aiohttp answer with `handle_error(status, exc, message)`."""
        return _ErrInfo(status=status, exc=exc, message=message), EMPTY_PAYLOAD

    def enqueue(self, entry: tuple[Any, StreamReader]) -> None:
        """Queue an entry (see `refusal`) behind the parsed requests and wake the handler."""
        self._messages.append(entry)
        self._request_count += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def handler_kwargs(server: web.Server) -> tuple[asyncio.AbstractEventLoop, dict[str, Any]]:
    """The loop and keyword arguments `web.Server` builds each connection's handler with."""
    loop = getattr(server, "_loop", None)
    kwargs = getattr(server, "_kwargs", None)
    if loop is None or not isinstance(kwargs, dict):
        raise ImportError(
            f"aiohttp {aiohttp.__version__}: web.Server has no _loop/_kwargs;"
            f" ollana supports aiohttp{SUPPORTED}"
        )
    return loop, kwargs


def stop_site(site: web.BaseSite | None) -> None:
    """Close a site's listening socket; its connections go on."""
    server = site._server if site is not None else None
    if server is not None:
        server.close()


class ClientProtocol(BaseProtocol):
    """aiohttp's flow-controlled protocol base, with its private state under our names."""

    __slots__ = ()

    @property
    def reading_is_paused(self) -> bool:
        """Whether reading stopped because a body is not being read (backpressure)."""
        return self._reading_paused

    @property
    def writing_is_paused(self) -> bool:
        """Whether the socket's send buffer is full."""
        return self._paused

    async def drained(self) -> None:
        """Wait while the send buffer is full (ConnectionError if the connection closes)."""
        if self._paused:
            await self._drain_helper()

    def use_parser(self, parser: HttpResponseParser | None) -> None:
        """The parser that `resume_reading` resumes."""
        self._parser = parser


class HeldStream(web.StreamResponse):
    """A streamed response that sends no Server header unless the upstream sent one.

    Its head is held back until the first body bytes (or the end) are written, so that
    a small answer leaves in one send rather than two. An empty Server header marks
    "none upstream": aiohttp would otherwise add its own.
    """

    _send_headers_immediately = False

    async def _write_headers(self) -> None:
        if self.headers.get(hdrs.SERVER) == "":
            del self.headers[hdrs.SERVER]
        await super()._write_headers()


class BareResponse(web.Response):
    """A whole response of our own, headed as Ollama heads its answers (no Server header)."""

    async def _write_headers(self) -> None:
        self.headers.popall(hdrs.SERVER, None)
        await super()._write_headers()
