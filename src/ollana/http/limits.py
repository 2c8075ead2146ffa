"""Limits on an HTTP listener, and an explicit answer to every request they refuse.

aiohttp's low-level server already caps the request line, each header field and the number
of fields, but it answers with a text/plain 400, logs each refusal as an error with a
traceback, and puts no deadline on a request head. `LimitedServer` is a drop-in
`aiohttp.web.Server` that adds what a port open to a LAN (or to every web page) needs:

- a request head must arrive whole within ``Limits.header_timeout`` seconds of its first
  byte (of the connection, for the first request): else 408, or a plain close when not a
  byte came (slowloris);
- a request body may not fall silent for ``Limits.body_timeout`` seconds while ollana is
  ready to read it: else 408 if no answer has started, and the connection is closed;
- a client may not leave its answer unread for ``Limits.send_timeout`` seconds (ollana's
  send buffer full all that time): else the connection is closed, which also frees what
  was producing the answer upstream;
- the header fields of a request may take ``Limits.max_header_size`` bytes in all: else 431
  (aiohttp checks each field only);
- at most ``Limits.max_connections`` connections, or shares per device (`admission`):
  one refused gets a 503 once its request head is in (as Ollama answers when its queue is
  full), with Retry-After and `BUSY_HEADER` so that a client may retry it, then is closed;
- given a TLS context, each handshake must complete within ``Limits.handshake_timeout``
  and is held to a budget while it runs; failures are counted by reason (`handshakes`);
- every refusal of a malformed request is an Ollama-style ``{"error": "…"}`` with the
  fitting status (400, 408, 414, 431, 503), counted by reason in ``refusals`` and passed to
  ``on_refusal(reason)``, and logged once at debug level;
- a client that goes away mid-answer is logged at debug level, not as an error.

Request contents (header values, bodies) are never logged nor echoed back.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import StreamReader, http_exceptions, web

from ollana.config import Limits
from ollana.http._aiohttp import RawRequestMessage, ServerProtocol, handler_kwargs
from ollana.http.admission import (
    ANONYMOUS,
    CONNECTIONS,
    DEVICE_CONNECTIONS,
    Admission,
    Who,
)
from ollana.http.handshakes import Handshakes, OnHandshakeFailure
from ollana.http.refusals import (
    BAD_REQUEST,
    BODY_TIMEOUT,
    FIELD_OVERHEAD,
    HEADER_TIMEOUT,
    HEADERS_TOO_LARGE,
    REASONS,
    SEND_TIMEOUT,
    TOO_MANY_HEADERS,
    URI_TOO_LONG,
    Refused,
    busy_error,
    classify,
    closing_error,
    raw_error,
)
from ollana.http.shares import Shares

__all__ = [
    "ANONYMOUS", "BAD_REQUEST", "BODY_TIMEOUT", "CONNECTIONS", "DEVICE_CONNECTIONS",
    "HEADERS_TOO_LARGE", "HEADER_TIMEOUT", "REASONS", "SEND_TIMEOUT", "TOO_MANY_HEADERS",
    "URI_TOO_LONG", "LimitedServer", "OnRefusal",
]  # fmt: skip

log = logging.getLogger(__name__)

OnRefusal = Callable[[str], None]
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class LimitedServer(web.Server):
    """`aiohttp.web.Server` with the limits above; takes web.Server's keyword arguments."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        *,
        on_refusal: OnRefusal | None = None,
        name: str = "http",
        who: Who | None = None,
        tls: ssl.SSLContext | None = None,
        on_handshake_failure: OnHandshakeFailure | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_line_size", limits.max_line_size)
        kwargs.setdefault("max_field_size", limits.max_header_size)
        kwargs.setdefault("max_headers", limits.max_header_fields)
        kwargs.setdefault("keepalive_timeout", limits.keepalive_timeout)
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.name = name
        self.on_refusal = on_refusal
        self.refusals: Counter[str] = Counter()
        self.admission: Admission[_LimitedHandler] = Admission(limits, who)
        self.handshakes: Handshakes | None = None
        if tls is not None:
            # A handshake shows no certificate until it ends, and a device's burst opens
            # dozens at once: no cap per address, but past the total the oldest handshake
            # of the address with the most gives way, so that a flood cannot crowd others out.
            self.handshakes = Handshakes(
                tls, timeout=limits.handshake_timeout, total=limits.max_connections,
                per_address=0, on_failure=on_handshake_failure, name=name,
            )  # fmt: skip

    def __call__(self) -> ServerProtocol:
        loop, kwargs = handler_kwargs(self)
        handler = _LimitedHandler(self, loop=loop, **kwargs)
        if self.handshakes is None:
            return handler
        # asyncio takes any protocol; TLS is ours to run (see handshakes.py).
        return self.handshakes.wrap(loop, handler, handler.was_made)  # type: ignore[no-any-return]

    async def shutdown(self, timeout: float | None = None) -> None:
        """Drop handshakes in progress, then close connections as aiohttp does."""
        if self.handshakes is not None:
            self.handshakes.abort_all()
        await super().shutdown(timeout)

    def held(self) -> dict[str, tuple[int, int]]:
        """(open, idle) connections per holder: device IDs, and "address …" for the others."""
        return self.admission.held()

    def refused(self, reason: str, detail: str, peer: object) -> None:
        """Count a refusal, tell `on_refusal`, log it at debug level."""
        self.refusals[reason] += 1
        log.debug("%s: refused a request from %s (%s): %s", self.name, peer, reason, detail)
        if self.on_refusal is not None:
            try:
                self.on_refusal(reason)
            except Exception:
                log.exception("%s: the refusal callback failed", self.name)


class _LimitedHandler(ServerProtocol):
    """One connection: aiohttp's protocol plus the head deadline, head size and busy answer."""

    __slots__ = (
        "_body", "_body_seen", "_body_timer", "_head_bytes", "_head_since", "_head_timer",
        "_holder", "_limited", "_made", "_over", "_over_why", "_refusing", "_send_timer",
        "_shares", "_uncounted",
    )  # fmt: skip

    def __init__(self, manager: LimitedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limited = manager
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_since: float | None = None  # loop time the head in progress began
        self._head_bytes = 0
        # Bytes went to the parser while a body was read: a pipelined head may have begun
        # among them, uncounted in `_head_bytes`.
        self._uncounted = False
        # The body of the last request whose head came in: the next head starts once the
        # parser has seen it end.
        self._body: StreamReader | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0  # loop time of the body's last bytes
        self._over = False
        self._over_why = ""
        self._refusing = False
        self._send_timer: asyncio.TimerHandle | None = None
        self._holder = ""
        self._shares: Shares[_LimitedHandler] | None = None
        self._made = False

    # --- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._made = True
        super().connection_made(transport)
        holder, shares, refusal = self._limited.admission.admit(
            self, transport, self._limited.connections
        )
        self._holder, self._shares = holder, shares
        if refusal is not None:
            self._refuse_connection(*refusal)
        # A new connection owes its first request head within the deadline too.
        self._arm_head_timer()

    def was_made(self) -> bool:
        """Whether the connection was made (past its TLS handshake, if any)."""
        return self._made

    def _refuse_connection(self, reason: str, why: str) -> None:
        self._over = True
        self._over_why = why
        self.answer_with(self._busy)
        self._limited.refused(reason, why, self._peer())

    @property
    def idle_since(self) -> float | None:
        """When the connection began waiting for its next request; None while it is in use."""
        if self._refusing or self._head_bytes or not self.waiting or self.queued:
            return None
        return self.idle_at

    def evict(self) -> None:
        """Close the idle connection to make room (as aiohttp closes one past keep-alive)."""
        log.debug("%s: closing an idle connection of %s for a newcomer", self._limited.name,
                  self._holder)  # fmt: skip
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._shares is not None:
            self._shares.release(self._holder, self)
            self._shares = None
        self._cancel_head_timer()
        for timer in (self._body_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._body_timer = self._send_timer = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        timeout = self._limited.limits.send_timeout
        if timeout > 0 and self._send_timer is None:
            self._send_timer = self.loop.call_later(timeout, self._send_expired)

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()

    def _send_expired(self) -> None:
        self._send_timer = None
        if self.writing_paused and self.transport is not None:
            timeout = self._limited.limits.send_timeout
            detail = f"read nothing of its answer for {timeout:g} s"
            self._limited.refused(SEND_TIMEOUT, detail, self._peer())
            transport = self.transport
            self.force_close()
            transport.abort()  # close() would wait, for ever, to send what nobody reads

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return  # an answer is on its way and the connection closes after it
        if (
            self.closing
            or self.reading_body
            or (self._body is not None and not self._body.is_eof())
        ):
            self._body_seen = self.loop.time()
            self._uncounted = True
            super().data_received(data)
            return
        # A request head, or its first bytes: time it and count it.
        if data and self._head_since is None:
            self._arm_head_timer()
        self._head_bytes += len(data)
        before = self.request_count
        super().data_received(data)
        if self.request_count > before:
            self._heads_arrived(self.request_count - before)
        elif self._head_bytes > self._max_head():
            self._refuse(431, HEADERS_TOO_LARGE, self._too_large())

    # --- the head deadline --------------------------------------------------------------

    # One timer per connection, not one per request: a head that arrives in time only
    # clears `_head_since`; the timer, when it fires, re-arms itself for the head in
    # progress then, if any (keep-alive requests would otherwise make and cancel a timer
    # each).

    def _arm_head_timer(self) -> None:
        timeout = self._limited.limits.header_timeout
        if timeout <= 0:
            return
        self._head_since = now = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(now + timeout, self._head_expired)

    def _cancel_head_timer(self) -> None:
        self._head_since = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        since = self._head_since
        if since is None or self._refusing or self.closing or self.transport is None:
            return
        due = since + self._limited.limits.header_timeout
        if self.loop.time() < due:
            self._head_timer = self.loop.call_at(due, self._head_expired)  # a later head
            return
        self._head_since = None
        timeout = self._limited.limits.header_timeout
        if self._head_bytes == 0:
            # Not a byte since the connection opened: nothing to answer.
            if not self._over:
                detail = f"no request within {timeout:g} s of connecting"
                self._limited.refused(HEADER_TIMEOUT, detail, self._peer())
            self.force_close()
            return
        self._refuse(408, HEADER_TIMEOUT, f"request head not complete within {timeout:g} s")

    # --- the head size ------------------------------------------------------------------

    def _max_head(self) -> int:
        """A head longer than this cannot fit: request line, fields, and their CRLFs."""
        limits = self._limited.limits
        return limits.max_line_size + 2 + limits.max_header_size + 2

    def _too_large(self) -> str:
        return f"request header fields larger than {self._limited.limits.max_header_size} bytes"

    def _heads_arrived(self, count: int) -> None:
        self._head_since = None  # in time: the timer, when it fires, finds nothing to do
        # Every byte of these heads was counted: fields cannot be larger than all of them.
        counted = self._head_bytes if not self._uncounted else None
        self._head_bytes, self._uncounted = 0, False
        self._body_seen = self.loop.time()
        cap = self._limited.limits.max_header_size
        queued = self.queued
        for index in range(len(queued) - count, len(queued)):
            message, payload = queued[index]
            self._body = payload
            if not isinstance(message, RawRequestMessage) or (
                counted is not None and counted <= cap
            ):
                continue
            size = sum(len(k) + len(v) + FIELD_OVERHEAD for k, v in message.raw_headers)
            if size > cap:
                self._refusing = True
                self._limited.refused(HEADERS_TOO_LARGE, self._too_large(), self._peer())
                exc = Refused(431, HEADERS_TOO_LARGE, self._too_large())
                # No body to wait for (aiohttp lingers to read one): its bytes are dropped.
                queued[index] = self.refusal(431, exc, exc.message)
                # Whatever was pipelined behind it goes unanswered: the connection closes.
                while len(queued) > index + 1:
                    queued.pop()
                return
        self._watch_body()

    # --- the body deadline --------------------------------------------------------------

    def _watch_body(self) -> None:
        timeout = self._limited.limits.body_timeout
        body = self._body
        if timeout > 0 and self._body_timer is None and body is not None and not body.is_eof():
            self._body_timer = self.loop.call_at(self._body_seen + timeout, self._body_check)

    def _body_check(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or body.is_eof() or self.closing or self.transport is None:
            return
        now = self.loop.time()
        if self.input_paused:
            self._body_seen = now  # ollana holds the client back: its silence is ours
        timeout = self._limited.limits.body_timeout
        if now - self._body_seen < timeout:
            self._watch_body()
            return
        message = f"request body stalled for {timeout:g} s"
        self._limited.refused(BODY_TIMEOUT, message, self._peer())
        request = self.current_request
        if request is not None and request.content is body and request.writer.output_size == 0:
            # Written straight out: the handler is still waiting for the body it will not get.
            self.transport.write(raw_error(408, "Request Timeout", message))
        self.force_close()

    # --- refusing -----------------------------------------------------------------------

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Queue an error answer after whatever is being answered now, then close."""
        self._refusing = True
        self._cancel_head_timer()
        self._limited.refused(reason, message, self._peer())
        self.enqueue(self.refusal(status, Refused(status, reason, message), message))

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Malformed requests get an Ollama-style JSON error; handler failures go to aiohttp."""
        if isinstance(exc, ConnectionError):
            # The client went away mid-answer (an app cancelling a generation): routine, and
            # nothing can be sent. aiohttp would log it as an error with a traceback.
            log.debug("%s: %s went away: %s", self._limited.name, self._peer(), exc)
            raise ConnectionError("the client went away") from None
        if not isinstance(exc, http_exceptions.HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, Refused):
            status, text = exc.code, exc.message
        else:
            status, reason, text = classify(
                exc, self._limited.limits, self.max_line_size, self.max_field_size
            )
            self._limited.refused(reason, f"{text} ({type(exc).__name__})", self._peer())
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started; cannot send an error")
        return closing_error(status, text)

    async def _busy(self, request: web.BaseRequest) -> web.StreamResponse:
        why = self._over_why or f"more than {self._limited.limits.max_connections} connections"
        return busy_error(why)

    def _peer(self) -> object:
        transport = self.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return peer[0] if isinstance(peer, tuple) and peer else peer
