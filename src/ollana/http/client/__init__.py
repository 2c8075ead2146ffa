"""A lean HTTP/1.1 client for forwarding: keep-alive connections to one origin each.

    async with ConnectionPool("127.0.0.1", 11434) as upstream:
        response = await upstream.request("GET", "/api/version", CIMultiDict(), None)
        try:
            body = await response.content.read()
        finally:
            response.release()

Only what forwarding needs: requests go out as given (no headers of its own beyond Host
and the body's framing), answers come back undecoded, bodies stream both ways with
backpressure.
"""

from ollana.http.client.connection import Connection
from ollana.http.client.connection_pool import (
    CLOSE_WAIT,
    FETCH_ERRORS,
    KEEPALIVE_TIMEOUT,
    Check,
    ConnectionPool,
)
from ollana.http.client.errors import (
    ConnectFailed,
    ConnectionClosed,
    ProtocolError,
    RequestBodyError,
    describe,
)
from ollana.http.client.request import Body
from ollana.http.client.response import Response

__all__ = [
    "CLOSE_WAIT",
    "FETCH_ERRORS",
    "KEEPALIVE_TIMEOUT",
    "Body",
    "Check",
    "ConnectFailed",
    "Connection",
    "ConnectionClosed",
    "ConnectionPool",
    "ProtocolError",
    "RequestBodyError",
    "Response",
    "describe",
]
