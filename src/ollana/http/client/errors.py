"""What can go wrong before an upstream response head arrives, told apart for retries."""

from __future__ import annotations

__all__ = ["ConnectFailed", "ConnectionClosed", "ProtocolError", "RequestBodyError", "describe"]


def describe(exc: BaseException) -> str:
    """An error in a few words: the OS's text for an OSError, else its message or its type."""
    return str(getattr(exc, "strerror", None) or exc) or type(exc).__name__


class ConnectFailed(Exception):
    """No connection could be opened (or it failed its TLS checks): nothing was sent."""

    def __init__(self, why: str, *, tls: bool = False, errno: int | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.tls = tls  # the handshake failed, or the peer is not the one expected
        self.errno = errno


class ConnectionClosed(ConnectionError):
    """The connection closed or was reset before a whole response head arrived."""

    def __init__(self, why: str, *, answered: bool, reset: bool) -> None:
        super().__init__(why)
        self.why = why
        self.answered = answered  # some bytes of an answer had arrived
        self.reset = reset  # an error (a reset), not an orderly close


class ProtocolError(Exception):
    """The upstream's answer is not HTTP/1.1 that this client reads."""


class RequestBodyError(Exception):
    """The body being streamed upstream failed on its way in (its sender went away)."""
