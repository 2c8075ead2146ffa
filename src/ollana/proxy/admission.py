"""The fair queue in front of the local Ollama: requests wait here for one of its slots.

`FairScheduler` decides who runs next; this module holds the waiting requests as futures
on the event loop. A waiting request whose app goes away (its handler is cancelled when
the connection closes) leaves the queue at once; one released in the same instant hands
its slot on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ollana.proxy.fairqueue import DeviceLimit, FairScheduler

__all__ = ["FairQueue", "QueueFull", "QueueSnapshot"]


class QueueFull(Exception):
    """The queue holds `max_queue` requests already: answer 503 at once."""


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """The queue right now, and what it has done so far."""

    parallel: int
    max_queue: int
    running: int
    queued: int
    waiting: Mapping[str, int]  # device -> requests waiting
    waited: int  # requests that had to wait, since start
    wait_seconds: float  # their time waiting, summed
    refused: int  # requests answered 503 because the queue was full


class FairQueue:
    """Slots of the local Ollama shared fairly between devices."""

    def __init__(
        self,
        parallel: int,
        max_queue: int,
        limit_of: Callable[[str], DeviceLimit] | None = None,
        *,
        on_wait: Callable[[float], None] | None = None,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self._scheduler: FairScheduler[asyncio.Future[None]] = FairScheduler(
            parallel, max_queue, limit_of
        )
        self._on_wait = on_wait
        self._on_change = on_change
        self._waited = 0
        self._wait_seconds = 0.0
        self._refused = 0

    @asynccontextmanager
    async def slot(self, device: str) -> AsyncIterator[None]:
        """Hold one of Ollama's slots for the block; QueueFull when the queue is full."""
        await self.acquire(device)
        try:
            yield
        finally:
            self.release(device)

    async def acquire(self, device: str) -> None:
        """Wait for a slot (round-robin across devices); QueueFull if the queue is full."""
        scheduler = self._scheduler
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        verdict = scheduler.arrive(device, future)
        if verdict == "run":
            return
        if verdict == "full":
            self._refused += 1
            raise QueueFull(
                f"this ollana server is busy: {scheduler.queued} requests are waiting"
                f" (--max-queue {scheduler.max_queue})"
            )
        self._changed()
        started = time.perf_counter()
        try:
            await future
        except asyncio.CancelledError:
            if scheduler.leave(device, future):
                self._changed()
            else:
                self.release(device)  # released as it was cancelled: hand the slot on
            raise
        waited = time.perf_counter() - started
        self._waited += 1
        self._wait_seconds += waited
        if self._on_wait is not None:
            self._on_wait(waited)

    def release(self, device: str) -> None:
        """A request of `device` that held a slot has ended: the next ones in line start."""
        started = self._scheduler.finish(device)
        for _, future in started:
            # A cancelled one is being unwound: its task hands the slot on (see acquire).
            if not future.done():
                future.set_result(None)
        if started:
            self._changed()

    def snapshot(self) -> QueueSnapshot:
        """The queue right now."""
        s = self._scheduler
        return QueueSnapshot(
            s.parallel, s.max_queue, s.running, s.queued, s.waiting(),
            self._waited, self._wait_seconds, self._refused,
        )  # fmt: skip

    @property
    def queued(self) -> int:
        """Requests waiting now."""
        return self._scheduler.queued

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self._scheduler.queued)
