"""One request's use of one server: in flight from the attempt to the answer's end."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ollana.http import Response, UpstreamError

if TYPE_CHECKING:
    from ollana.cluster.models import Route
    from ollana.cluster.pool import Pool
    from ollana.cluster.server import Server
    from ollana.metrics import Metrics

__all__ = ["Exchange", "unless_abandoned"]


class Exchange:
    """Counts a request in flight on a server, and learns from how it ended.

    The one owner of the server's in-flight count and of the metrics that follow it: an
    attempt that fails ends with `failed()`; one that was answered is handed to the caller,
    whose `finish()` ends it. A stream in progress is known to the pool, which ends it if
    the server vanishes.
    """

    __slots__ = ("_metrics", "_open", "_pool", "response", "route", "server")

    def __init__(self, pool: Pool, metrics: Metrics, server: Server, route: Route) -> None:
        self._pool = pool
        self._metrics = metrics
        self.server = server
        self.route = route
        self.response: Response | None = None
        self._open = True
        pool.began(server)
        metrics.request_started(server.label)

    def failed(self) -> None:
        """The attempt failed before any answer: nothing more will come of it."""
        if self._open:
            self._open = False
            self._pool.ended(self.server)
            self._metrics.attempt_failed(self.server.label)

    def answered(self, response: Response) -> None:
        """The server answered: its body streams until `finish()`."""
        self.response = response
        self.server.streams.add(response)

    def finish(self, status: int) -> None:
        """The answer has been relayed (or abandoned, status 599): learn from it once."""
        if not self._open:
            return
        self._open = False
        server = self.server
        if self.response is not None:
            server.streams.discard(self.response)
        self._pool.ended(server)
        if status < 400:
            self._pool.used(server, self.route)


async def unless_abandoned(
    server: Server, attempt: Coroutine[Any, Any, Response], replayable: bool
) -> Response:
    """Await an attempt that the pool cancels if it ejects the server meanwhile.

    What the pool cancels is the request's own task (no task per attempt), after noting it
    in `server.abandoned`: that cancellation, and no other, becomes this server's failure.
    """
    task = asyncio.current_task()
    if task is None:
        return await attempt
    attempts, abandoned = server.attempts, server.abandoned
    attempts.add(task)
    try:
        return await attempt
    except asyncio.CancelledError:
        if task not in abandoned:
            raise
        abandoned.discard(task)
        if task.uncancel() > 0:
            raise  # cancelled from outside as well
        raise UpstreamError(
            502, f"{server.label} was ejected before it answered", replayable, "ejected"
        ) from None
    finally:
        attempts.discard(task)
        if task in abandoned:
            # The attempt ended its cancellation in an error of its own: balance the count.
            abandoned.discard(task)
            task.uncancel()
