"""One keep-alive HTTP/1.1 connection to an upstream, as an asyncio protocol.

Requests go out one at a time. aiohttp's response parser (llhttp, in C where it is
built) reads each answer and feeds its body into a StreamReader, which pauses reading
from the socket while more than its high-water mark waits unread: a body that nobody
reads fills no memory.

One lazy timer per connection serves both of its clocks: silence while an answer is
awaited (`read_timeout`) and idleness in the pool (`keepalive`). Traffic only moves a
timestamp; the timer re-arms itself when it fires early, so requests create no timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from aiohttp import ClientPayloadError, StreamReader

from ollana.http._aiohttp import ClientProtocol, HttpResponseParser, RawResponseMessage
from ollana.http.client.errors import ConnectionClosed, ProtocolError, describe

__all__ = ["MAX_FIELD", "MAX_LINE", "READ_LIMIT", "Answer", "Connection"]

READ_LIMIT: Final = 2**18  # a body buffers up to twice this unread before reading pauses
MAX_LINE: Final = 8190  # the status line, as aiohttp's client allows
MAX_FIELD: Final = 8190  # each header field

Answer = tuple[RawResponseMessage, StreamReader]
LostFn = Callable[["Connection"], None]


class Connection(ClientProtocol):
    """One connection: carries one exchange at a time and stays open between them."""

    __slots__ = (
        "_answer",
        "_answered",
        "_keepalive",
        "_last",
        "_lost",
        "_on_lost",
        "_payload",
        "_read_timeout",
        "_reader",
        "_timer",
        "busy",
        "closed",
        "keep_alive",
        "sending",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        read_timeout: float,
        keepalive: float,
        on_lost: LostFn,
    ) -> None:
        super().__init__(loop)
        self._read_timeout = read_timeout
        self._keepalive = keepalive
        self._on_lost = on_lost
        self._reader: HttpResponseParser | None = None
        self._answer: asyncio.Future[Answer] | None = None
        self._payload: StreamReader | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lost: asyncio.Future[None] | None = None
        self._last = loop.time()
        self._answered = False  # a byte of the current answer has arrived
        self.busy = False  # an exchange is in progress (until finish())
        self.closed = False  # closing or closed: never to be used again
        self.keep_alive = False  # the current answer allows another request after it
        self.sending = False  # a streamed request body is still going out

    # --- one exchange -------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Whether an idle connection can carry a request now."""
        transport = self.transport
        return not self.closed and transport is not None and not transport.is_closing()

    @property
    def reading_paused(self) -> bool:
        """Whether reading stopped because the answer's body is not being read."""
        return self.reading_is_paused

    def begin(self, *, bodiless: bool) -> asyncio.Future[Answer]:
        """Start an exchange; the future gets the answer's head (and its body stream)."""
        if not self.usable:
            raise ConnectionClosed("closed the connection", answered=False, reset=False)
        # A parser per exchange, as aiohttp's client has: one answer's leftovers cannot
        # run into the next.
        self._reader = self._new_parser(with_body=not bodiless)
        self.use_parser(self._reader)
        self._payload = None
        self._answered = False
        self.keep_alive = False
        self.busy = True
        self._last = self._loop.time()
        answer = self._answer = self._loop.create_future()
        self._arm(self._read_timeout)
        return answer

    def write(self, data: bytes) -> None:
        """Send bytes (dropped once the connection is closing: its end is reported apart)."""
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.write(data)

    def write_chunk(self, data: bytes) -> None:
        """Send one chunk of a chunked body."""
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))

    async def drain(self) -> None:
        """Wait while the socket's send buffer is full (ConnectionError if it closes)."""
        await self.drained()

    def sent(self) -> None:
        """The request's body has gone out whole: the upstream's silence counts from now."""
        self.sending = False
        self._last = self._loop.time()

    def rest(self) -> None:
        """Wait in the pool for a first exchange: closed after the keep-alive time unused."""
        self._last = self._loop.time()
        self._arm(self._keepalive)

    def finish(self, *, reuse: bool) -> bool:
        """End the exchange; True when the connection stays open for another one."""
        payload = self._payload
        complete = (
            payload is not None
            and payload.is_eof()
            and payload.exception() is None
            and not self.sending
        )
        transport = self.transport
        reusable = (
            reuse
            and complete
            and self.keep_alive
            and self._keepalive > 0
            and self.usable
            and transport is not None
            # A body still leaving (the answer came early) would run into the next request.
            and transport.get_write_buffer_size() == 0
            and not self._overran()
        )
        self.busy = False
        self._answer = None
        self._payload = None
        if reusable:
            self._last = self._loop.time()
            self._arm(self._keepalive)
            return True
        if complete:
            self.close()
        else:
            self.abort()
        return False

    # --- ending -------------------------------------------------------------------------

    def close(self) -> None:
        """Close once unsent data has left; the connection is not used again."""
        if self.closed:
            return
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    def abort(self, why: Exception | None = None) -> None:
        """Close at once: whoever awaits the answer or reads its body gets `why`."""
        self.closed = True
        self._stop_timer()
        if why is None:
            self._fail_answer(ConnectionClosed("was closed", answered=self._answered, reset=True))
            self._fail_payload(ClientPayloadError("the upstream connection was closed"))
        else:
            self._fail_answer(why)
            body_why = why if isinstance(why, ClientPayloadError | TimeoutError) else None
            self._fail_payload(body_why or ClientPayloadError(str(why)))
        if self.transport is not None:
            self.transport.abort()

    def lost(self) -> asyncio.Future[None]:
        """A future that is done once the connection has closed."""
        if self._lost is None:
            self._lost = self._loop.create_future()
            if self.transport is None:
                self._lost.set_result(None)
        return self._lost

    # --- asyncio callbacks --------------------------------------------------------------

    def resume_reading(self, resume_parser: bool = True) -> None:
        """Resume after backpressure (the body's reader calls this on every read)."""
        # Only a paused connection has anything to resume: the parser holds bytes back
        # only while reading is paused.
        if self.reading_is_paused:
            super().resume_reading(resume_parser)

    def data_received(self, data: bytes) -> None:
        """Parse what arrived (b"" resumes a parser paused by a full body buffer)."""
        reader = self._reader
        if not self.busy or reader is None:
            if data:
                # Bytes nobody asked for: this peer cannot be trusted with another request.
                self.abort()
            return
        if data:
            self._last = self._loop.time()
            self._answered = True
        try:
            messages, upgraded, _ = reader.feed_data(data)
        except Exception as exc:
            self.abort(ProtocolError(f"invalid response: {exc}"))
            return
        for message, payload in messages:
            self._received(message, payload)
        if upgraded:
            self.abort(ProtocolError("the upstream switched protocols unasked"))

    def connection_lost(self, exc: BaseException | None) -> None:
        """The connection ended: whatever was still awaited from it fails."""
        self.closed = True
        self._stop_timer()
        reader = self._reader
        if self.busy and reader is not None:
            try:
                reader.feed_eof()  # ends a body that runs until the connection closes
            except Exception as err:
                self._fail_payload(ClientPayloadError(f"response body not complete: {err}"))
        if exc is None:
            why, reset = "closed the connection", False
        else:
            why = describe(exc)
            reset = True
        self._fail_answer(ConnectionClosed(why, answered=self._answered, reset=reset))
        self._fail_payload(ClientPayloadError(f"response body not complete: {why}"))
        self._reader = None
        self.use_parser(None)
        super().connection_lost(exc)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._on_lost(self)

    # --- internals ----------------------------------------------------------------------

    def _new_parser(self, *, with_body: bool) -> HttpResponseParser:
        return HttpResponseParser(
            self,
            self._loop,
            READ_LIMIT,
            max_line_size=MAX_LINE,
            max_field_size=MAX_FIELD,
            payload_exception=ClientPayloadError,
            response_with_body=with_body,
            read_until_eof=True,
            auto_decompress=False,
        )

    def _overran(self) -> bool:
        """Whether bytes came after the answer (in its last read): the peer is out of step."""
        reader = self._reader
        if reader is None:
            return False
        try:
            # The parser is done with this exchange; ending it returns the head of any
            # further message that those bytes began.
            return reader.feed_eof() is not None
        except Exception:
            return True

    def _received(self, message: RawResponseMessage, payload: StreamReader) -> None:
        if message.code < 200:
            if message.code == 101:
                self.abort(ProtocolError("the upstream switched protocols unasked"))
            # Otherwise an interim answer (100 Continue, 103 Early Hints): the final follows.
            return
        answer = self._answer
        if answer is None or answer.done():
            self.abort(ProtocolError("an answer to no request"))
            return
        self._payload = payload
        self.keep_alive = not message.should_close
        answer.set_result((message, payload))

    def _fail_answer(self, exc: Exception) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_exception(exc)

    def _fail_payload(self, exc: BaseException) -> None:
        payload = self._payload
        if payload is not None and not payload.is_eof() and payload.exception() is None:
            payload.set_exception(exc)

    def _waiting(self) -> bool:
        answer = self._answer
        if answer is not None and not answer.done():
            return True
        payload = self._payload
        return payload is not None and not payload.is_eof()

    def _arm(self, delay: float) -> None:
        if delay <= 0 or self.closed:
            return
        due = self._last + delay
        timer = self._timer
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self._timer = self._loop.call_at(due, self._tick)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self._loop.time()
        if self.busy and self._waiting():
            if self.sending or self.reading_is_paused or self.writing_is_paused:
                # This side holds the exchange up (a body going out, a slow reader), not
                # the upstream's silence.
                self._last = now
            elif now - self._last >= self._read_timeout:
                self._time_out()
                return
            self._arm(self._read_timeout)
            return
        # Idle in the pool, or an answer read whole but never handed back.
        if now - self._last >= self._keepalive:
            self.close()
            return
        self._arm(self._keepalive)

    def _time_out(self) -> None:
        self.abort(TimeoutError(f"no data from the upstream for {self._read_timeout:g} s"))
