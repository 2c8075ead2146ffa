"""The fair queue's scheduler: which waiting request runs next. Pure: no I/O, no clock.

Ollama runs `parallel` requests at once and serves the rest first come, first served
across everyone, so one device's batch job holds up everyone else's chat. Here requests
beyond `parallel` wait in a queue per device (first come, first served within one), and a
freed slot goes to the device that has been served least, weighted: start-time fair
queueing with one request as the unit of work. Each device carries a virtual time that
advances by 1/weight per request started; the next slot goes to the waiting device with
the smallest one. A device that starts waiting is brought up to the current virtual time,
so idling earns no credit, and a device that was not served lately waits at most until
the next slot frees: a device with 32 requests waiting cannot delay another's single
request by more than one turn.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

__all__ = ["DeviceLimit", "FairScheduler", "Verdict"]

T = TypeVar("T")

Verdict = Literal["run", "queued", "full"]


@dataclass(frozen=True, slots=True)
class DeviceLimit:
    """One device's share: at most `max_concurrent` running (0: no limit of its own), and
    `weight` times the slots of a device of weight 1 when both are waiting."""

    max_concurrent: int = 0
    weight: float = 1.0


@dataclass(slots=True)
class _Device(Generic[T]):
    limit: DeviceLimit
    running: int = 0
    vtime: float = 0.0
    order: int = 0  # when it last started waiting: breaks ties of vtime
    queue: deque[T] = field(default_factory=deque)

    def may_run(self) -> bool:
        cap = self.limit.max_concurrent
        return cap <= 0 or self.running < cap


class FairScheduler(Generic[T]):
    """Counts running and waiting requests per device and picks who runs next."""

    def __init__(
        self,
        parallel: int,
        max_queue: int,
        limit_of: Callable[[str], DeviceLimit] | None = None,
    ) -> None:
        """`limit_of(device)` is asked once each time a device starts being counted."""
        if parallel < 1:
            raise ValueError("parallel must be 1 or more")
        self.parallel = parallel
        self.max_queue = max_queue
        self._limit_of = limit_of or _no_limit
        self._devices: dict[str, _Device[T]] = {}
        self._vclock = 0.0
        self._order = 0
        self.running = 0
        self.queued = 0

    def arrive(self, device: str, ticket: T) -> Verdict:
        """A request of `device`: it may run now, waits (as `ticket`), or the queue is full."""
        d = self._devices.get(device)
        if d is None:
            d = self._devices[device] = _Device(self._limit_of(device))
        if not d.queue and self.running < self.parallel and d.may_run():
            self._start(d)
            return "run"
        if self.queued >= self.max_queue:
            self._forget_idle(device, d)
            return "full"
        if not d.queue:
            d.vtime = max(d.vtime, self._vclock)
            self._order += 1
            d.order = self._order
        d.queue.append(ticket)
        self.queued += 1
        return "queued"

    def finish(self, device: str) -> list[tuple[str, T]]:
        """A running request of `device` ended: the waiting requests that run now, in order."""
        d = self._devices.get(device)
        if d is None or d.running <= 0:
            raise ValueError(f"no request of {device!r} is running")
        d.running -= 1
        self.running -= 1
        started = self._release()
        self._forget_idle(device, d)
        return started

    def leave(self, device: str, ticket: T) -> bool:
        """A waiting request went away: False if it was not waiting (it has been started)."""
        d = self._devices.get(device)
        if d is None:
            return False
        try:
            d.queue.remove(ticket)
        except ValueError:
            return False
        self.queued -= 1
        self._forget_idle(device, d)
        # Its place may have held back nobody: a device at its own limit waits regardless.
        return True

    def waiting(self) -> dict[str, int]:
        """Requests waiting, per device that has any."""
        return {name: len(d.queue) for name, d in self._devices.items() if d.queue}

    def running_by_device(self) -> dict[str, int]:
        """Requests running, per device that has any."""
        return {name: d.running for name, d in self._devices.items() if d.running}

    # --- internals ------------------------------------------------------------------------

    def _start(self, d: _Device[T]) -> None:
        self._vclock = max(self._vclock, d.vtime)
        d.vtime = max(d.vtime, self._vclock) + 1.0 / max(d.limit.weight, 1e-6)
        d.running += 1
        self.running += 1

    def _release(self) -> list[tuple[str, T]]:
        started: list[tuple[str, T]] = []
        while self.running < self.parallel and self.queued:
            best: tuple[float, int, str] | None = None
            for name, d in self._devices.items():
                if d.queue and d.may_run():
                    key = (d.vtime, d.order, name)
                    if best is None or key < best:
                        best = key
            if best is None:
                break  # everyone waiting is at a limit of their own
            d = self._devices[best[2]]
            ticket = d.queue.popleft()
            self.queued -= 1
            self._start(d)
            started.append((best[2], ticket))
        return started

    def _forget_idle(self, name: str, d: _Device[T]) -> None:
        # An idle device keeps nothing worth remembering: its vtime is raised on return anyway.
        if not d.running and not d.queue and d.vtime <= self._vclock:
            del self._devices[name]


def _no_limit(device: str) -> DeviceLimit:
    return _DEFAULT


_DEFAULT = DeviceLimit()
