"""Writing requests: the head in one buffer, then the body whole, by length, or chunked."""

from __future__ import annotations

from typing import Final

from aiohttp import StreamReader, hdrs
from multidict import CIMultiDict

from ollana.http.client.connection import Connection
from ollana.http.client.errors import RequestBodyError

__all__ = ["SMALL_BODY", "Body", "body_framing", "encode_head", "send_stream"]

Body = bytes | StreamReader | None

SMALL_BODY: Final = 64 * 1024  # a kept body up to this size leaves in one write with its head

# Methods that carry no Content-Length of their own when they have no body (as aiohttp).
_BODILESS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Framing is this client's to state: given values of these are not passed on.
_DERIVED: Final = frozenset({"host", "content-length", "transfer-encoding"})


def body_framing(method: str, headers: CIMultiDict[str], body: Body) -> tuple[str, int | None]:
    """The head's last lines that frame the body, and a streamed body's length (None: chunked)."""
    if body is None:
        if method in _BODILESS and hdrs.CONTENT_LENGTH not in headers:
            return "\r\n", 0
        return "Content-Length: 0\r\n\r\n", 0
    if isinstance(body, bytes):
        return f"Content-Length: {len(body)}\r\n\r\n", len(body)
    given = headers.get(hdrs.CONTENT_LENGTH)
    if given is None:
        return "Transfer-Encoding: chunked\r\n\r\n", None
    length = int(given)
    if length < 0:
        raise ValueError(f"invalid Content-Length {given!r}")
    return f"Content-Length: {length}\r\n\r\n", length


def encode_head(
    method: str, target: str, authority: str, headers: CIMultiDict[str], framing: str
) -> bytes:
    """A request head: the given headers in order, Host first, the framing last."""
    if " " in target or not target:
        raise ValueError(f"invalid request target {target!r}")
    parts = [f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n"]
    for name, value in headers.items():
        if name.lower() not in _DERIVED:
            parts.append(f"{name}: {value}\r\n")
    parts.append(framing)
    text = "".join(parts)
    # Every part adds its own line ends and no others: a line break inside a name or value
    # (which would smuggle in a header or a request) shows up as one too many.
    lines = len(parts) + framing.count("\n")
    if text.count("\n") != lines or text.count("\r") != lines:
        raise ValueError("a request header holds a line break")
    # Bytes that arrived undecodable travel on unchanged (aiohttp decodes with surrogateescape).
    return text.encode("utf-8", "surrogateescape")


async def send_stream(conn: Connection, body: StreamReader, length: int | None) -> None:
    """Stream a body upstream as it arrives, waiting whenever the socket is full.

    A body that fails on its way in (its sender went away) aborts the exchange with
    RequestBodyError; a connection that closes ends this quietly (the answer's wait
    learns why).
    """
    sent = 0
    try:
        while True:
            try:
                chunk = await body.readany()
            except Exception as exc:
                conn.abort(RequestBodyError(f"request body: {str(exc) or type(exc).__name__}"))
                return
            if not chunk:
                break
            sent += len(chunk)
            if length is None:
                conn.write_chunk(chunk)
            elif sent > length:
                conn.abort(RequestBodyError("request body longer than its Content-Length"))
                return
            else:
                conn.write(chunk)
            await conn.drain()
        if length is None:
            conn.write(b"0\r\n\r\n")
        elif sent != length:
            conn.abort(RequestBodyError("request body shorter than its Content-Length"))
            return
    except ConnectionError:
        return
    conn.sent()
