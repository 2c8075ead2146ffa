"""The bottom HTTP layer: the upstream client and its pools, listeners with limits, the relay.

- client: a lean keep-alive HTTP/1.1 client (one `ConnectionPool` per origin)
- relay: opening a request upstream with errors told apart for retries, and streaming
  the answer back chunk by chunk
- listener, limits: an aiohttp low-level server per port, with limits and a staged close
- headers, responses: header names ollana speaks; answers of its own in Ollama's shape
- _aiohttp: the one module that touches aiohttp's private internals
"""

from ollana.http.client import (
    FETCH_ERRORS,
    Check,
    ConnectFailed,
    ConnectionClosed,
    ConnectionPool,
    ProtocolError,
    RequestBodyError,
    Response,
    describe,
)
from ollana.http.headers import (
    HOP_BY_HOP,
    MODEL_HEADER,
    PIN_HEADER,
    VERSION_HEADER,
    continue_if_expected,
    is_ollana,
    request_headers,
)
from ollana.http.limits import LimitedServer, OnRefusal
from ollana.http.listener import Listener, ListenError, WhoListens
from ollana.http.relay import UpstreamError, open_upstream, relay
from ollana.http.responses import bare_response, error_response, json_response

__all__ = [
    "FETCH_ERRORS",
    "HOP_BY_HOP",
    "MODEL_HEADER",
    "PIN_HEADER",
    "VERSION_HEADER",
    "Check",
    "ConnectFailed",
    "ConnectionClosed",
    "ConnectionPool",
    "LimitedServer",
    "ListenError",
    "Listener",
    "OnRefusal",
    "ProtocolError",
    "RequestBodyError",
    "Response",
    "UpstreamError",
    "WhoListens",
    "bare_response",
    "continue_if_expected",
    "describe",
    "error_response",
    "is_ollana",
    "json_response",
    "open_upstream",
    "relay",
    "request_headers",
]
