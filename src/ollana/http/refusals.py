"""Why a listener refuses a request: the reasons (metric labels), and the answers it sends.

`classify` turns what aiohttp's parser refused into a status, a reason and a message that
names the limit but never echoes the request's bytes.
"""

from __future__ import annotations

import json
from typing import Final

from aiohttp import hdrs, http_exceptions, web

from ollana.config import Limits
from ollana.http.admission import ANONYMOUS, CONNECTIONS, DEVICE_CONNECTIONS
from ollana.http.headers import BUSY_HEADER
from ollana.http.responses import error_response

__all__ = [
    "BAD_REQUEST", "BODY_TIMEOUT", "FIELD_OVERHEAD", "HEADERS_TOO_LARGE", "HEADER_TIMEOUT",
    "REASONS", "RETRY_AFTER", "SEND_TIMEOUT", "TOO_MANY_HEADERS", "URI_TOO_LONG", "Refused",
    "busy_error", "classify", "closing_error", "raw_error",
]  # fmt: skip

# Refusal reasons: a closed set, so that they can be metric labels.
HEADER_TIMEOUT: Final = "header-timeout"
BODY_TIMEOUT: Final = "body-timeout"
SEND_TIMEOUT: Final = "send-timeout"
HEADERS_TOO_LARGE: Final = "headers-too-large"
TOO_MANY_HEADERS: Final = "too-many-headers"
URI_TOO_LONG: Final = "uri-too-long"
BAD_REQUEST: Final = "bad-request"
REASONS: Final = frozenset(
    {
        HEADER_TIMEOUT, BODY_TIMEOUT, SEND_TIMEOUT, HEADERS_TOO_LARGE, TOO_MANY_HEADERS,
        URI_TOO_LONG, BAD_REQUEST, CONNECTIONS, DEVICE_CONNECTIONS, ANONYMOUS,
    }
)  # fmt: skip
# Bytes a header field takes beyond its name and value: ": " and CRLF.
FIELD_OVERHEAD: Final = 4
_DETAIL: Final = 100  # characters of the parser's own explanation passed on
RETRY_AFTER: Final = "1"  # seconds, on a 503 for want of a connection


class Refused(http_exceptions.HttpProcessingError):
    """A refusal decided here rather than by the parser; already counted."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(code=status, message=message)
        self.reason = reason


def classify(
    exc: http_exceptions.HttpProcessingError, limits: Limits, max_line: int, max_field: int
) -> tuple[int, str, str]:
    """Status, reason and message for a request the parser refused."""
    if isinstance(exc, http_exceptions.LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == max_line != max_field:
            return 414, URI_TOO_LONG, f"request line longer than {limit} bytes"
        return 431, HEADERS_TOO_LARGE, f"a header field is longer than {limit} bytes"
    if exc.message.startswith("Too many headers"):
        text = f"more than {limits.max_header_fields} header fields"
        return 431, TOO_MANY_HEADERS, text
    if isinstance(exc, http_exceptions.BadHttpMethod):
        if "HTTPS" in exc.message:
            return 400, BAD_REQUEST, "HTTPS traffic on an HTTP port: use http://"
        return 400, BAD_REQUEST, "not an HTTP request"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return 400, BAD_REQUEST, "invalid request line"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return 400, BAD_REQUEST, "invalid header field"
    if isinstance(exc, http_exceptions.InvalidURLError):
        return 400, BAD_REQUEST, "invalid request target"
    # The parser's first line says what is wrong; the request's bytes come after it.
    what = exc.message.split("\n", 1)[0].rstrip(":. ")[:_DETAIL]
    return 400, BAD_REQUEST, f"malformed HTTP request: {what}".rstrip(": ")


def raw_error(status: int, phrase: str, message: str) -> bytes:
    """A whole `{"error": message}` response, for when no handler can send one."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def closing_error(status: int, message: str) -> web.Response:
    """`{"error": message}` as Ollama sends it, with the connection closed after it."""
    response = error_response(status, message)
    response.force_close()
    return response


def busy_error(why: str) -> web.Response:
    """The 503 for want of a connection: nothing was done, so a client may try again soon."""
    response = closing_error(503, f"server busy, please try again: {why}")
    response.headers[hdrs.RETRY_AFTER] = RETRY_AFTER
    response.headers[BUSY_HEADER] = "connections"
    return response
