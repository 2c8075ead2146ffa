"""Static servers (`--server HOST:PORT`) become usable whatever order things start in.

Such a server learns this device's certificate only from a hello: discovery is off, or
does not reach it. So one task per static server says hello, and checks that the server
then takes our certificate, until it is usable: while nothing answers at its address
(it has not started yet), while it refuses our certificate (it has not learned or not
allowed us yet), and again each time the pool finds it down (it restarted).

Retries start at `timings.hello_retry_first` and double, up to `hello_retry_max` while
nothing answers (a refused connection costs nothing, and a server that boots should be
found within about a second) or `hello_retry_refused` while it answers but will not take
us (someone must edit an allow list first). A server whose certificate is not the
allowed device it was (a reinstalled box) is never used: one log line, and status says so.

An allowed server's hello reply may carry its MAC address: it goes to `heard` (the
client's Waker), so that the server can be woken once it sleeps.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ollana.cluster.pool import Pool
from ollana.cluster.server import Server, ServerState
from ollana.config import HostPort, Timings
from ollana.http import FETCH_ERRORS, ConnectFailed, ConnectionClosed, describe
from ollana.identity import HelloError, StoreError, TLSManager, introduce_to, short_device_id

__all__ = ["RETRY_JITTER", "Attempt", "Heard", "Trouble", "keep_introduced"]

log = logging.getLogger(__name__)

RETRY_JITTER: Final = 0.1  # ± this fraction, so that clients booted together spread out

# Told of an allowed server a hello reached: (device ID, address, MAC or "", name or "").
Heard = Callable[[str, HostPort, str, str], None]


class Trouble(enum.StrEnum):
    """Why a static server is not usable yet."""

    UNREACHABLE = "unreachable"  # nothing answers a hello at its address
    REFUSES_US = "refuses-us"  # it answers hello, then closes our authenticated connections
    NOT_ALLOWED = "not-allowed"  # its certificate is not one this device allows
    CHANGED = "changed"  # its certificate is not the allowed device it was (reinstalled?)


# Sure from one attempt; the others may pass by themselves (a server reloading its allow
# list after learning our certificate), so they are logged when they are seen twice.
_SURE: Final = frozenset({Trouble.NOT_ALLOWED, Trouble.CHANGED})


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one introduction found: usable (`trouble` None), or why not, in words."""

    trouble: Trouble | None = None
    problem: str | None = None
    answered: bool = False  # something answered at the address
    device_id: str | None = None


async def keep_introduced(
    server: Server,
    pool: Pool,
    tls: TLSManager,
    timings: Timings,
    *,
    name: str = "",
    heard: Heard | None = None,
) -> None:
    """Introduce this device to a static server whenever it is not usable; runs until cancelled."""
    introducer = _Introducer(server, pool, tls, timings, name=name, heard=heard)
    while True:
        await introducer.until_usable()
        await introducer.until_down()


class _Introducer:
    __slots__ = (
        "_heard",
        "_logged",
        "_name",
        "_pool",
        "_previous",
        "_server",
        "_timings",
        "_tls",
    )

    def __init__(
        self,
        server: Server,
        pool: Pool,
        tls: TLSManager,
        timings: Timings,
        *,
        name: str,
        heard: Heard | None,
    ) -> None:
        self._name = name  # ours, told in the hello
        self._heard = heard
        self._server = server
        self._pool = pool
        self._tls = tls
        self._timings = timings
        self._logged: tuple[Trouble, str | None] | None = None
        self._previous: str | None = None  # the allowed device it last proved to be

    async def until_usable(self) -> None:
        """Say hello with backoff until the server takes our requests."""
        delay, last = self._timings.hello_retry_first, None
        while True:
            attempt = await self._attempt()
            if attempt.trouble is None:
                self._pool.trouble(self._server, None)
                if self._logged is not None:
                    log.info("static server %s takes this device now", self._server.address)
                    self._logged = None
                return
            self._pool.trouble(self._server, attempt.problem)
            self._tell(attempt, repeated=attempt.trouble is last)
            if attempt.trouble is not last:
                delay, last = self._timings.hello_retry_first, attempt.trouble
            timings = self._timings
            cap = timings.hello_retry_refused if attempt.answered else timings.hello_retry_max
            log.debug("static server %s: hello again in %.2f s", self._server.address, delay)
            await asyncio.sleep(delay * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER))
            delay = min(delay * 2, cap)

    async def until_down(self) -> None:
        """Return once the server stops taking us: the pool finds it down, and it is not
        only what is behind it (its Ollama) that is down."""
        server, timings = self._server, self._timings
        # The probe that follows an introduction comes first.
        await self._wait(lambda: server.state is not ServerState.DOWN, timings.probe_timeout)
        while True:
            while server.state is not ServerState.DOWN:
                await self._pool.wait_changed(timings.probe_interval)
            if await self._refusal() is not None:
                return
            # It answers us: the pool's probes follow whatever is down behind it.
            await self._wait(
                lambda: server.state is not ServerState.DOWN, timings.hello_retry_refused
            )

    async def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done() and (left := deadline - loop.time()) > 0:
            await self._pool.wait_changed(left)

    async def _attempt(self) -> Attempt:
        server = self._server
        try:
            introduced = await introduce_to(self._tls, server.base_url, name=self._name)
        except HelloError as exc:
            return Attempt(Trouble.UNREACHABLE, str(exc), answered=exc.answered)
        device_id = introduced.device_id
        if not self._tls.is_allowed(device_id):
            return await self._not_allowed(device_id)
        self._previous = device_id
        if self._heard is not None:
            self._heard(device_id, server.address, introduced.mac, introduced.name)
        if self._pool.find(device_id) is None:
            self._pool.identify(server, device_id)
        refusal = await self._refusal()
        if refusal is None:
            self._pool.probe_now(server)
            return Attempt()
        if isinstance(refusal, ConnectionClosed):
            ours = self._tls.identity.device_id
            return Attempt(
                Trouble.REFUSES_US,
                f"device {short_device_id(device_id)} does not take this device's certificate:"
                f" run `ollana device allow {ours[:16]}` on it",
                answered=True,
                device_id=device_id,
            )
        return Attempt(Trouble.UNREACHABLE, f"not answering: {describe(refusal)}", answered=True)

    async def _refusal(self) -> Exception | None:
        """Why the server takes no request of ours, or None if it answers one (any answer:
        an error status says its Ollama is down, not that it refuses us).

        A connection closed before any answer, right after the handshake, is how a server
        refuses a certificate it does not trust (TLS 1.3 tells the client after the fact).
        """
        assert self._server.upstream is not None
        try:
            await self._server.upstream.fetch_json("/api/version", self._timings.probe_timeout)
        except (ConnectFailed, TimeoutError) as exc:
            return exc
        except ConnectionClosed as exc:
            return None if exc.answered else exc
        except FETCH_ERRORS:
            return None  # an answer that is not Ollama's: it takes us, something else is wrong
        return None

    async def _not_allowed(self, device_id: str) -> Attempt:
        if device_id == self._tls.identity.device_id:
            return Attempt(
                Trouble.NOT_ALLOWED,
                "is this device itself (an ollana with the same data directory, so the same"
                " ID): give one of the two its own --home",
                answered=True,
                device_id=device_id,
            )
        previous = self._previous or await self._allowed_seen_here(device_id)
        if previous is not None and previous != device_id:
            return Attempt(
                Trouble.CHANGED,
                f"presents device {short_device_id(device_id)}, not the allowed"
                f" {short_device_id(previous)} it was (reinstalled?): if it is yours, run"
                f" `ollana device allow {device_id[:16]}`",
                answered=True,
                device_id=device_id,
            )
        return Attempt(
            Trouble.NOT_ALLOWED,
            f"is device {short_device_id(device_id)}, which is not allowed here:"
            f" run `ollana device allow {device_id[:16]}` to use it",
            answered=True,
            device_id=device_id,
        )

    async def _allowed_seen_here(self, device_id: str) -> str | None:
        """An allowed server last seen at this address, other than `device_id` (a file read)."""
        try:
            seen = await asyncio.to_thread(self._tls.store.seen)
        except StoreError:
            return None
        address = str(self._server.address)
        for other in sorted(seen.values(), key=lambda d: d.last_seen, reverse=True):
            here = other.device_id != device_id and other.address == address
            if here and self._tls.is_allowed(other.device_id):
                return other.device_id
        return None

    def _tell(self, attempt: Attempt, *, repeated: bool) -> None:
        """Log a trouble once (and again only when it changes), not at every retry."""
        assert attempt.trouble is not None
        key = (attempt.trouble, attempt.device_id)
        if key == self._logged or not (repeated or attempt.trouble in _SURE):
            return
        self._logged = key
        level = logging.INFO if attempt.trouble is Trouble.UNREACHABLE else logging.WARNING
        retry = "" if attempt.trouble in _SURE else "; retrying"
        log.log(level, "static server %s: %s%s", self._server.address, attempt.problem, retry)
