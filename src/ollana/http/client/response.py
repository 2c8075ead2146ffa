"""An upstream answer whose head has arrived: status, headers, and a body to stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import ClientPayloadError, StreamReader, hdrs
from aiohttp.http import RawResponseMessage
from multidict import CIMultiDictProxy

from ollana.http.client.connection import Connection

__all__ = ["Response"]

ReleaseFn = Callable[[Connection, "asyncio.Task[None] | None"], None]


class Response:
    """An answer from upstream; `release()` it once done (relay does), whatever happened.

    Its body streams through `content` (read_nowait, readany, at_eof, exception); a read
    raises TimeoutError after the upstream's silence, ClientPayloadError if it breaks.
    """

    __slots__ = (
        "_conn",
        "_done",
        "_give_back",
        "_pump",
        "content",
        "headers",
        "host",
        "reason",
        "status",
    )

    def __init__(
        self,
        conn: Connection,
        message: RawResponseMessage,
        content: StreamReader,
        *,
        host: str,
        give_back: ReleaseFn,
        pump: asyncio.Task[None] | None,
    ) -> None:
        self.status = message.code
        self.reason = message.reason
        self.headers: CIMultiDictProxy[str] = message.headers
        self.content = content
        self.host = host
        self._conn = conn
        self._give_back = give_back
        self._pump = pump  # a streamed request body still going out
        self._done = False

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} from {self.host}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    @property
    def content_type(self) -> str:
        """The media type, lower case without parameters (application/octet-stream if none)."""
        raw = self.headers.get(hdrs.CONTENT_TYPE)
        media = raw.partition(";")[0].strip().lower() if raw else ""
        return media or "application/octet-stream"

    @property
    def reading_paused(self) -> bool:
        """Whether reading from upstream waits for the body to be read (backpressure)."""
        return self._conn.reading_paused

    def release(self) -> None:
        """Done with the answer: a keep-alive connection read to its end is kept, else closed."""
        if self._done:
            return
        self._done = True
        self._give_back(self._conn, self._pump)

    def close(self) -> None:
        """End the answer now: a read in progress fails and the connection closes."""
        if self._done:
            return
        self._done = True
        if self._pump is not None:
            self._pump.cancel()
        self._conn.abort(ClientPayloadError("the upstream connection was closed"))
