"""The TLS handshake of each accepted connection: a deadline, a budget, and why it failed.

The event loop runs a server's handshakes inside its own accept path, which tells the
application nothing about one that fails or never starts, and gives a silent peer 60 s. A
listener with TLS instead hands the loop a protocol of its own making for every accepted
socket: the loop's own TLS protocol (uvloop's, in C, on uvloop; `asyncio.sslproto`'s
otherwise: the very class the loop would have used) around the HTTP protocol, with
ollana's handshake timeout and a waiter whose outcome is read here. Connections in their
handshake have not shown a certificate yet: they are held to a budget by source address
and in total (`Shares`); past it, the oldest handshake of the address with the most is
dropped.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any, Final

from ollana.http.shares import Shares

__all__ = [
    "CLOSED",
    "CROWDED",
    "HANDSHAKE",
    "HANDSHAKE_REASONS",
    "LOG_INTERVAL",
    "NOT_TLS",
    "TIMEOUT",
    "TLS_VERSION",
    "UNKNOWN_CERTIFICATE",
    "Handshakes",
    "OnHandshakeFailure",
    "peer_address",
]

log = logging.getLogger(__name__)

OnHandshakeFailure = Callable[[str], None]

# Why a handshake failed: a closed set, so that they can be metric labels.
UNKNOWN_CERTIFICATE: Final = "unknown-certificate"
TLS_VERSION: Final = "tls-version"
NOT_TLS: Final = "not-tls"
TIMEOUT: Final = "handshake-timeout"
CLOSED: Final = "closed-in-handshake"
CROWDED: Final = "crowded-out"
HANDSHAKE: Final = "handshake"
HANDSHAKE_REASONS: Final = frozenset(
    {UNKNOWN_CERTIFICATE, TLS_VERSION, NOT_TLS, TIMEOUT, CLOSED, CROWDED, HANDSHAKE}
)
LOG_INTERVAL: Final = 60.0  # at most one log line about failed handshakes this often

_VERSION_ERRORS: Final = frozenset(
    {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE",
     "WRONG_SSL_VERSION", "VERSION_TOO_LOW"}
)  # fmt: skip
_NOT_TLS_ERRORS: Final = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST"})
_CERT_ERRORS: Final = frozenset(
    {"CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE",
     "PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"}
)  # fmt: skip


def peer_address(transport: asyncio.BaseTransport | None) -> str:
    """The peer's IP address, or "?"."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


def reason_of(exc: BaseException | None) -> str:
    """The metric reason of a failed handshake."""
    if exc is None or isinstance(exc, ConnectionResetError | BrokenPipeError):
        return CLOSED
    if isinstance(exc, ConnectionAbortedError) and "longer than" in str(exc):
        return TIMEOUT
    if isinstance(exc, ssl.SSLError):
        what = str(exc.reason or "")
        if what in _CERT_ERRORS or isinstance(exc, ssl.SSLCertVerificationError):
            return UNKNOWN_CERTIFICATE
        if what in _VERSION_ERRORS:
            return TLS_VERSION
        if what in _NOT_TLS_ERRORS:
            return NOT_TLS
    return HANDSHAKE


def _uvloop_tls() -> tuple[type, type] | None:
    """uvloop's loop class and its own TLS protocol, when uvloop is installed."""
    try:
        import uvloop
        import uvloop.loop
    except ImportError:  # pragma: no cover - uvloop is optional
        return None
    protocol = getattr(uvloop.loop, "SSLProtocol", None)
    return (uvloop.Loop, protocol) if isinstance(protocol, type) else None


_UVLOOP: Final = _uvloop_tls()


class _Accepted:
    """Mixed into the loop's TLS protocol: one accepted socket, told before its handshake."""

    handshakes: Handshakes
    connected: Callable[[], bool]
    accepted: float
    address: str
    evicted: bool
    raw: asyncio.Transport | None

    @property
    def idle_since(self) -> float | None:
        """A handshake counts as idle from its start: the oldest is dropped first."""
        return self.accepted

    def evict(self) -> None:
        """Give up the handshake: close the socket now."""
        self.evicted = True
        if self.raw is not None:
            self.raw.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport if isinstance(transport, asyncio.Transport) else None
        super().connection_made(transport)  # type: ignore[misc]
        self.handshakes.started(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.raw = None
        super().connection_lost(exc)  # type: ignore[misc]


_CLASSES: dict[type, type] = {}


def _tls_protocol(loop: asyncio.AbstractEventLoop) -> type:
    """`_Accepted` on the TLS protocol class this loop uses itself."""
    base: type = sslproto.SSLProtocol
    if _UVLOOP is not None and isinstance(loop, _UVLOOP[0]):
        base = _UVLOOP[1]
    cls = _CLASSES.get(base)
    if cls is None:
        cls = _CLASSES[base] = type("AcceptedTLS", (_Accepted, base), {})
    return cls


class Handshakes:
    """Wraps each accepted socket's protocol in TLS, with a deadline and a budget."""

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        timeout: float,
        total: int,
        per_address: int,
        on_failure: OnHandshakeFailure | None = None,
        name: str = "http",
    ) -> None:
        self.context = context
        self._timeout = timeout if timeout > 0 else None  # None: asyncio's own 60 s
        self.shares: Shares[_Accepted] = Shares(total, per_address)
        self.failures: dict[str, int] = {}
        self.completed = 0  # handshakes that let a connection in, since start
        self._on_failure = on_failure
        self._name = name
        self._logged_at: float | None = None
        self._unlogged = 0
        self._pending: set[_Accepted] = set()
        self._closing = False

    @property
    def pending(self) -> int:
        """Connections in their handshake now."""
        return len(self._pending)

    def wrap(
        self,
        loop: asyncio.AbstractEventLoop,
        app: asyncio.BaseProtocol,
        connected: Callable[[], bool],
    ) -> Any:
        """The protocol to hand the loop for one accepted socket: TLS around `app`.

        `connected()` says whether `app`'s connection_made has run (the handshake passed).
        """
        waiter: asyncio.Future[None] = loop.create_future()
        tls = _tls_protocol(loop)(
            loop=loop, app_protocol=app, sslcontext=self.context, waiter=waiter,
            server_side=True, ssl_handshake_timeout=self._timeout,
        )  # fmt: skip
        tls.handshakes, tls.connected, tls.accepted = self, connected, loop.time()
        tls.address, tls.evicted, tls.raw = "?", False, None
        waiter.add_done_callback(lambda done: self._ended(tls, done))
        return tls

    def started(self, tls: _Accepted) -> None:
        """The socket is known: count it against its address, or drop it."""
        tls.address = peer_address(tls.raw)
        if not self.shares.admit(tls.address, tls):
            tls.evict()
            return
        self._pending.add(tls)

    def abort_all(self) -> None:
        """Drop every connection still in its handshake (the listener is closing)."""
        self._closing = True
        for tls in list(self._pending):
            if tls.raw is not None:
                tls.raw.abort()

    def _ended(self, tls: _Accepted, done: asyncio.Future[None]) -> None:
        if tls in self._pending:
            self._pending.discard(tls)
            self.shares.release(tls.address, tls)
        exc = None if done.cancelled() else done.exception()
        if exc is None and tls.connected():
            self.completed += 1
            return
        if self._closing:
            return
        self._failed(CROWDED if tls.evicted else reason_of(exc), tls.address, exc)

    def _failed(self, reason: str, address: str, exc: BaseException | None) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1
        if self._on_failure is not None:
            try:
                self._on_failure(reason)
            except Exception:
                log.exception("%s: the handshake failure callback failed", self._name)
        now = asyncio.get_running_loop().time()
        if self._logged_at is not None and now - self._logged_at < LOG_INTERVAL:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last such line)" if self._unlogged else ""
        self._logged_at, self._unlogged = now, 0
        detail = f": {exc}" if exc is not None and reason == HANDSHAKE else ""
        log.info("%s: TLS handshake from %s failed (%s)%s%s", self._name, address, reason,
                 detail, more)  # fmt: skip
