"""A pool of keep-alive connections to one origin, and sending a request on one of them."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import ClientPayloadError, StreamReader
from multidict import CIMultiDict

from ollana.http.client.connection import Connection
from ollana.http.client.errors import (
    ConnectFailed,
    ConnectionClosed,
    ProtocolError,
    describe,
)
from ollana.http.client.request import (
    SMALL_BODY,
    Body,
    body_framing,
    encode_head,
    send_stream,
)
from ollana.http.client.response import Response

__all__ = [
    "AHEAD_SHARE", "CLOSE_WAIT", "DEMAND_DECAY", "DEMAND_HOLD", "FETCH_ERRORS", "IDLE_SPARE",
    "KEEPALIVE_TIMEOUT", "PRECONNECT_BACKOFF", "TRIM_INTERVAL", "Check", "ConnectionPool",
]  # fmt: skip

log = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT: Final = 60.0  # an idle connection is closed after this long unused
CLOSE_WAIT: Final = 1.0  # close() waits this long for idle connections to end cleanly
# Idle connections kept: recent demand (the most in use at once, held for DEMAND_HOLD
# after it was last reached, then decaying by e every DEMAND_DECAY seconds) plus
# IDLE_SPARE; the rest close, on give-back and by one timer per pool every TRIM_INTERVAL
# while there are more than IDLE_SPARE idle. A new mutual-TLS connection costs each side
# about a millisecond of CPU, so a burst that comes back within the hold (what agents and
# shared front ends do) finds its connections ready, as nginx's upstream keepalive would;
# a server that needs the room for another device closes idle ones itself (http.shares).
DEMAND_HOLD: Final = 30.0
DEMAND_DECAY: Final = 3.0
IDLE_SPARE: Final = 2
TRIM_INTERVAL: Final = 1.0
_ROUNDING: Final = 0.25  # a demand that has decayed to 1.25 keeps 1 connection, not 2
# Preconnecting (pools given a `preconnect` ceiling): while requests take connections and
# none waits idle, this share of those in use (at least one) is opened in the background,
# so that the next request finds a connection whose handshake is done. Requests that find
# none connect themselves, as before, and while any does none is opened ahead: a burst
# pays its own handshakes and no more. After a failed background connect none is tried
# for PRECONNECT_BACKOFF.
AHEAD_SHARE: Final = 0.1
PRECONNECT_BACKOFF: Final = 1.0

# What `fetch_json` raises when the upstream does not give a JSON answer in time.
FETCH_ERRORS: Final = (
    ConnectFailed, ConnectionClosed, ProtocolError, ClientPayloadError, TimeoutError, ValueError,
)  # fmt: skip

# Runs after each TLS handshake; raising refuses the connection (a pinned device ID).
Check = Callable[[asyncio.Transport], None]


class ConnectionPool:
    """Connections to one origin: as many at once as requests, idle ones kept for reuse.

    `request()` takes the most recently used idle connection, or opens one. A pooled
    connection that the server closed while it sat idle fails before any answer comes;
    such a request is sent once more on a new connection when its body can be sent
    again (bytes or none), so that the server's own keep-alive limit looks like nothing.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        check: Check | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        label: str | None = None,
        demand_hold: float = DEMAND_HOLD,
        demand_decay: float = DEMAND_DECAY,
        idle_spare: int = IDLE_SPARE,
        trim_interval: float = TRIM_INTERVAL,
        preconnect: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # How errors name this origin ("server 3f2a9c01 at 10.0.0.5:11435"): host and port.
        self.label = label or self.authority
        self._ssl = ssl_context
        self._check = check
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive = keepalive_timeout
        self._idle: dict[Connection, None] = {}  # insertion-ordered: the last is the warmest
        self.closed = False
        self._open: set[Connection] = set()  # in use or idle
        self._demand = 0.0  # the most connections in use at once recently, decaying
        # Loop time that `_demand` was last reached; once past the hold, it moves with the
        # decay, staying `_hold` behind the last trim.
        self._demand_at = 0.0
        self._hold = demand_hold
        self._decay = demand_decay
        self._spare = idle_spare
        self._trim_interval = trim_interval
        self._trimmer: asyncio.TimerHandle | None = None
        # The most connections open at once that preconnecting may reach (0: it never
        # does): the server's share for one device.
        self._preconnect = preconnect
        self._ahead: set[asyncio.Task[None]] = set()  # background connects under way
        self._ahead_after = 0.0  # loop time before which no background connect starts
        self._connecting = 0  # connects under way, for requests or ahead of them

    def __repr__(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"<ConnectionPool {scheme}://{self.authority} idle={len(self._idle)}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def idle(self) -> int:
        """How many connections wait in the pool."""
        return len(self._idle)

    @property
    def opened(self) -> int:
        """How many connections are open (in use or idle)."""
        return len(self._open)

    @property
    def in_use(self) -> int:
        """How many connections carry an exchange now."""
        return len(self._open) - len(self._idle)

    async def request(
        self, method: str, target: str, headers: CIMultiDict[str], body: Body
    ) -> Response:
        """Send a request; return once its answer's head has arrived.

        `target` is sent as given (already encoded); Host and the body's framing are
        added to `headers`. Raises ConnectFailed, ConnectionClosed, ProtocolError,
        RequestBodyError, or TimeoutError (no answer within the read timeout).
        """
        if self.closed:
            raise ConnectFailed("its connection pool is closed")
        framing, length = body_framing(method, headers, body)
        head = encode_head(method, target, self.authority, headers, framing)
        bodiless = method == "HEAD"
        conn = self._take()
        if self._preconnect and not self._idle:
            self._open_ahead(0 if conn is not None else 1)
        if conn is not None:
            try:
                return await self._exchange(conn, head, body, length, bodiless)
            except ConnectionClosed as exc:
                if exc.answered or isinstance(body, StreamReader):
                    raise
                # The server closed this idle connection as it was reused: nothing of the
                # request can have been acted on.
        return await self._exchange(await self._connect(), head, body, length, bodiless)

    async def fetch(self, target: str, timeout: float) -> tuple[int, bytes]:
        """GET `target` on a pooled connection; its status and body.

        The whole exchange has `timeout`; raises one of FETCH_ERRORS.
        """
        async with asyncio.timeout(timeout):
            response = await self.request("GET", target, CIMultiDict(), None)
            async with response:
                body = await response.content.read()
        return response.status, body

    async def fetch_json(self, target: str, timeout: float) -> tuple[int, Any]:
        """GET `target` on a pooled connection; its status and parsed JSON body."""
        status, body = await self.fetch(target, timeout)
        return status, json.loads(body)

    async def close(self) -> None:
        """Close the idle connections and refuse new requests; safe to call twice.

        Connections in flight close when their answers are released.
        """
        self.closed = True
        if self._trimmer is not None:
            self._trimmer.cancel()
            self._trimmer = None
        for task in list(self._ahead):
            task.cancel()
        idle = list(self._idle)
        self._idle.clear()
        for conn in idle:
            conn.close()
        if not idle:
            return
        _, pending = await asyncio.wait([conn.lost() for conn in idle], timeout=CLOSE_WAIT)
        if pending:
            for conn in idle:
                if conn.transport is not None:
                    conn.abort()

    # --- internals ----------------------------------------------------------------------

    def _take(self) -> Connection | None:
        idle = self._idle
        while idle:
            conn, _ = idle.popitem()
            if conn.usable:
                return conn
        return None

    def _open_ahead(self, own: int) -> None:
        """Start background connects so that idle ones cover a share of those in use.

        `own` is 1 when the request being sent opens a connection of its own.
        """
        loop = asyncio.get_running_loop()
        if self.closed or loop.time() < self._ahead_after:
            return
        if self._connecting > len(self._ahead):
            # Requests are connecting themselves: the pool is behind (a burst), and more
            # handshakes now would only take CPU from theirs.
            return
        in_use = len(self._open) - len(self._idle) + own
        ahead = max(1, math.ceil(in_use * AHEAD_SHARE))
        # Never past the server's share for this device.
        wanted = min(
            ahead - len(self._ahead), self._preconnect - len(self._open) - self._connecting - own
        )
        if wanted <= 0:
            return
        # Counted as demand, so that the trimmer keeps them until demand falls.
        if in_use + ahead >= self._demand:
            self._demand, self._demand_at = in_use + ahead, loop.time()
        for _ in range(wanted):
            task = loop.create_task(self._connect_ahead())
            self._ahead.add(task)
            task.add_done_callback(self._ahead.discard)

    async def _connect_ahead(self) -> None:
        try:
            conn = await self._connect()
        except ConnectFailed as exc:
            # The requests that follow connect (and fail) on their own, and say why.
            log.debug("%s: connecting ahead failed: %s", self.label, exc)
            self._ahead_after = asyncio.get_running_loop().time() + PRECONNECT_BACKOFF
            return
        if self.closed:
            conn.close()
            return
        conn.rest()
        self._idle[conn] = None
        if self._trimmer is None and len(self._idle) > self._spare:
            self._trimmer = asyncio.get_running_loop().call_later(self._trim_interval, self._trim)

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()

        def made() -> Connection:
            return Connection(
                loop,
                read_timeout=self._read_timeout,
                keepalive=self._keepalive,
                on_lost=self._lost,
            )

        self._connecting += 1
        try:
            async with asyncio.timeout(self._connect_timeout or None):
                transport, conn = await loop.create_connection(
                    made, self.host, self.port, ssl=self._ssl
                )
        except TimeoutError as exc:
            raise ConnectFailed("timed out") from exc
        except ssl.SSLError as exc:
            raise ConnectFailed(describe(exc), tls=True) from exc
        except OSError as exc:
            raise ConnectFailed(describe(exc), errno=exc.errno) from exc
        finally:
            self._connecting -= 1
        self._open.add(conn)
        if self._check is not None:
            try:
                self._check(transport)
            except Exception as exc:
                # Closed, not reset: nothing was sent, and the peer sees its handshake end.
                conn.close()
                raise ConnectFailed(str(exc) or type(exc).__name__, tls=True) from exc
        return conn

    async def _exchange(
        self, conn: Connection, head: bytes, body: Body, length: int | None, bodiless: bool
    ) -> Response:
        answer = conn.begin(bodiless=bodiless)
        pump: asyncio.Task[None] | None = None
        try:
            if body is None:
                conn.write(head)
            elif isinstance(body, bytes):
                if len(body) <= SMALL_BODY:
                    conn.write(head + body)
                else:
                    conn.write(head)
                    conn.write(body)
            else:
                conn.write(head)
                conn.sending = True
                pump = asyncio.create_task(send_stream(conn, body, length))
            message, payload = await answer
        except BaseException:
            # Cancelled, or failed: what is half sent or half read cannot be reused.
            if pump is not None:
                pump.cancel()
            conn.abort()
            raise
        return Response(
            conn, message, payload, host=self.label, give_back=self._give_back, pump=pump
        )

    def _give_back(self, conn: Connection, pump: asyncio.Task[None] | None) -> None:
        if pump is not None and not pump.done():
            # The answer ended before the request's body did.
            pump.cancel()
            conn.abort()
            return
        idle = self._idle
        loop = asyncio.get_running_loop()
        # It still counts as in use: the most at once is seen as they come back.
        in_use = len(self._open) - len(idle)
        if in_use >= self._demand:
            self._demand, self._demand_at = in_use, loop.time()
        if not conn.finish(reuse=not self.closed):
            return
        idle[conn] = None
        self._close_surplus(in_use - 1)
        if self._trimmer is None and len(idle) > self._spare:
            self._trimmer = loop.call_later(self._trim_interval, self._trim)

    def _trim(self) -> None:
        """Close the idle connections beyond recent demand, now that it has decayed."""
        self._trimmer = None
        if self.closed:
            return
        idle = self._idle
        loop = asyncio.get_running_loop()
        now = loop.time()
        in_use = len(self._open) - len(idle)
        past_hold = now - self._demand_at - self._hold
        if past_hold > 0:
            decayed = self._demand * math.exp(-past_hold / self._decay)
            self._demand, self._demand_at = max(decayed, in_use), now - self._hold
        self._close_surplus(in_use)
        if len(idle) > self._spare:
            self._trimmer = loop.call_later(self._trim_interval, self._trim)

    def _close_surplus(self, in_use: int) -> None:
        """Close the coldest idle connections beyond demand and spare."""
        idle = self._idle
        surplus = len(idle) + in_use - math.ceil(self._demand - _ROUNDING) - self._spare
        while surplus > 0 and idle:
            surplus -= 1
            coldest = next(iter(idle))
            del idle[coldest]
            self._open.discard(coldest)
            coldest.close()

    def _lost(self, conn: Connection) -> None:
        self._open.discard(conn)
        self._idle.pop(conn, None)
