"""The fair queue in front of the local Ollama: requests wait here for one of its slots.

`FairScheduler` decides who runs next; this module holds the waiting requests as futures
on the event loop. Ollama runs each loaded model with its own slots (OLLAMA_NUM_PARALLEL is
per model), so each model has its own scheduler: a chat does not wait behind another
model's embeddings. The model is what the client named in `X-Ollana-Model` (a request
without it shares the scheduler of ""); a model's scheduler goes once it is idle.

A waiting request whose app goes away (its handler is cancelled when the connection
closes) leaves the queue at once; one released in the same instant hands its slot on.
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
        self._parallel = parallel
        self._max_queue = max_queue
        self._limit_of = limit_of
        self._schedulers: dict[str, FairScheduler[asyncio.Future[None]]] = {}
        self._on_wait = on_wait
        self._on_change = on_change
        self._waited = 0
        self._wait_seconds = 0.0
        self._refused = 0

    @asynccontextmanager
    async def slot(self, device: str, model: str = "") -> AsyncIterator[None]:
        """Hold one of a model's slots for the block; QueueFull when the queue is full."""
        await self.acquire(device, model)
        try:
            yield
        finally:
            self.release(device, model)

    async def acquire(self, device: str, model: str = "") -> None:
        """Wait for a slot of `model` (round-robin across devices); QueueFull if full."""
        scheduler = self._schedulers.get(model)
        if scheduler is None:
            scheduler = FairScheduler(self._parallel, self._max_queue, self._limit_of)
            self._schedulers[model] = scheduler
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        verdict = scheduler.arrive(device, future)
        queued = self.queued
        if verdict == "queued" and queued > self._max_queue:
            # The cap counts the waiting requests of every model.
            scheduler.leave(device, future)
            verdict, queued = "full", queued - 1
        if verdict == "run":
            return
        if verdict == "full":
            self._refused += 1
            self._forget_idle(model)
            raise QueueFull(
                f"this ollana server is busy: {queued} requests are waiting"
                f" (--max-queue {self._max_queue})"
            )
        self._changed()
        started = time.perf_counter()
        try:
            await future
        except asyncio.CancelledError:
            if scheduler.leave(device, future):
                self._forget_idle(model)
                self._changed()
            else:
                self.release(device, model)  # released as it was cancelled: hand it on
            raise
        waited = time.perf_counter() - started
        self._waited += 1
        self._wait_seconds += waited
        if self._on_wait is not None:
            self._on_wait(waited)

    def release(self, device: str, model: str = "") -> None:
        """A request of `device` that held a slot has ended: the next ones in line start."""
        scheduler = self._schedulers[model]
        started = scheduler.finish(device)
        for _, future in started:
            # A cancelled one is being unwound: its task hands the slot on (see acquire).
            if not future.done():
                future.set_result(None)
        self._forget_idle(model)
        if started:
            self._changed()

    def snapshot(self) -> QueueSnapshot:
        """The queue right now, over every model."""
        waiting: dict[str, int] = {}
        for scheduler in self._schedulers.values():
            for device, count in scheduler.waiting().items():
                waiting[device] = waiting.get(device, 0) + count
        return QueueSnapshot(
            self._parallel, self._max_queue, self.running, self.queued, waiting,
            self._waited, self._wait_seconds, self._refused,
        )  # fmt: skip

    @property
    def queued(self) -> int:
        """Requests waiting now."""
        return sum(s.queued for s in self._schedulers.values())

    @property
    def running(self) -> int:
        """Requests holding a slot now."""
        return sum(s.running for s in self._schedulers.values())

    def _forget_idle(self, model: str) -> None:
        scheduler = self._schedulers.get(model)
        if scheduler is not None and scheduler.running == 0 and scheduler.queued == 0:
            del self._schedulers[model]

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.queued)
