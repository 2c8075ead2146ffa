"""Waking a sleeping server when a request needs it: remembered servers, rate-limited packets.

The router asks `Waker.wake_for(model)` only when no routable server has the model. The
waker looks for a remembered server that is not in the pool (or is down there) and had the
model, sends it a Wake-on-LAN packet, and waits until the pool holds it healthy with its
model list, or until `--wake-timeout`. Every request waiting for one server shares one wake
attempt, and one server gets at most one packet every `WAKE_GAP` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Final

from ollana.cluster.pool import Pool
from ollana.cluster.router import NoServerError
from ollana.cluster.server import Server, ServerState
from ollana.config import HostPort, parse_host_port
from ollana.discovery.targets import LIMITED_BROADCAST, interface_for
from ollana.lifecycle import Service
from ollana.wake.memory import MemoryFileError, RememberedServer, ServerMemory
from ollana.wake.packet import WOL_PORT, magic_packet

__all__ = [
    "RESEND_INTERVAL",
    "SAVE_INTERVAL",
    "SYNC_INTERVAL",
    "WAKE_GAP",
    "Sender",
    "Waker",
    "send_magic_packet",
    "wake_destinations",
]

log = logging.getLogger(__name__)

WAKE_GAP: Final = 5.0  # never more than one packet to one server this often
RESEND_INTERVAL: Final = 15.0  # while a server is awaited, its packet again (one may be lost)
SYNC_INTERVAL: Final = 2.0  # how often what the pool knows is copied into the memory
SAVE_INTERVAL: Final = 60.0  # last-seen times alone are written this often

Sender = Callable[[str, str | None], tuple[str, ...]]


def wake_destinations(last_host: str | None) -> tuple[str, ...]:
    """Where a wake-up packet for a server last seen at `last_host` goes.

    The directed broadcast of the interface that reaches it (switches forward a broadcast
    to a sleeping machine's port, which has no ARP entry any more), and the address itself;
    the limited broadcast where no interface is known to reach it.
    """
    found: list[str] = []
    iface = interface_for(last_host) if last_host else None
    found.append(iface.broadcast if iface is not None else LIMITED_BROADCAST)
    if last_host and last_host not in found:
        found.append(last_host)
    return tuple(found)


def send_magic_packet(mac: str, last_host: str | None) -> tuple[str, ...]:
    """Send one wake-up packet for `mac` to `wake_destinations`; the ones it was sent to."""
    packet = magic_packet(mac)
    sent: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for host in wake_destinations(last_host):
            try:
                sock.sendto(packet, (host, WOL_PORT))
            except OSError as exc:  # e.g. no route to a broadcast address
                log.debug("wake-up packet to %s: %s", host, exc)
            else:
                sent.append(host)
    return tuple(sent)


def _host_of(address: str) -> str | None:
    try:
        return parse_host_port(address).host
    except ValueError:
        return None


class Waker(Service):
    """Remembers the servers of a pool, and wakes one a request needs."""

    def __init__(
        self,
        pool: Pool,
        memory: ServerMemory,
        *,
        timeout: float,
        static_macs: Mapping[HostPort, str] | None = None,
        send: Sender = send_magic_packet,
    ) -> None:
        self._pool = pool
        self.memory = memory
        self.timeout = timeout
        self._static_macs = dict(static_macs or {})
        self._send = send
        self._last_sent: dict[str, float] = {}  # device ID -> time.monotonic() of its packet
        self._attempts: dict[str, asyncio.Task[bool]] = {}
        self._task: asyncio.Task[None] | None = None
        self._usable = True  # False once the file proved unreadable: it is left alone
        self.packets = 0

    async def start(self) -> None:
        """Read the remembered servers and begin copying what the pool learns into them."""
        try:
            await asyncio.to_thread(self.memory.load)
        except MemoryFileError as exc:
            self._usable = False
            log.error("%s; servers are not remembered this run", exc)
        self._task = asyncio.create_task(self._sync_loop(), name="wake memory")

    async def close(self) -> None:
        """Stop, and write what changed; safe to call twice."""
        tasks = [t for t in (self._task, *self._attempts.values()) if t is not None]
        self._task = None
        self._attempts.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._save()

    # --- remembering ---------------------------------------------------------------------

    def heard(self, device_id: str, address: HostPort, mac: str, name: str) -> None:
        """An allowed server announced itself: its address, MAC and name."""
        if self._usable:
            self.memory.seen(device_id, address=str(address), mac=mac or None, name=name or None)

    def sync(self) -> bool:
        """Copy what the pool knows of healthy servers into the memory; whether there were any."""
        if not self._usable:
            return False
        synced = False
        for server in self._pool:
            if server.device_id is None or server.state is not ServerState.HEALTHY:
                continue
            self.memory.seen(
                server.device_id,
                address=str(server.address),
                mac=self._static_macs.get(server.address) if server.static else None,
                models=server.models if server.models_known else None,
            )
            synced = True
        return synced

    async def _sync_loop(self) -> None:
        saved = time.monotonic()
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            if self.sync() and time.monotonic() - saved >= SAVE_INTERVAL:
                self.memory.touched()
            if self.memory.dirty:
                saved = time.monotonic()
                await self._save()

    async def _save(self) -> None:
        if not self._usable:
            return
        try:
            await asyncio.to_thread(self.memory.save)
        except MemoryFileError as exc:
            log.warning("%s", exc)

    # --- what sleeps ---------------------------------------------------------------------

    def sleeping(self) -> list[RememberedServer]:
        """Remembered servers that the pool does not hold routable now."""
        return [s for s in self.memory if not self._routable(s.device_id)]

    def _routable(self, device_id: str) -> bool:
        server = self._server(device_id)
        return server is not None and server.routable

    def _up(self, device_id: str, model: str | None = None) -> bool:
        server = self._server(device_id)
        if server is None or server.state is not ServerState.HEALTHY:
            return False
        return model is None or server.models_known or model in server.models

    def _server(self, device_id: str) -> Server | None:
        found = self._pool.find(device_id)
        if found is not None:
            return found
        # A static server is keyed by its address until its hello told its ID (a client that
        # started while it slept has not heard it yet).
        remembered = self.memory.get(device_id)
        addresses = remembered.addresses if remembered is not None else ()
        return next(
            (
                s
                for s in self._pool
                if s.device_id == device_id or (s.device_id is None and str(s.address) in addresses)
            ),
            None,
        )

    # --- waking --------------------------------------------------------------------------

    async def wake_for(self, model: str) -> None:
        """The router found no routable server with `model`: wake one that had it, and wait.

        Returns at once when no sleeping server had it; NoServerError (503) when the ones
        woken did not come up within the timeout.
        """
        wanted = [s for s in self.sleeping() if s.mac and model in s.models]
        if not wanted:
            return
        # Shielded: a request that goes away does not end the wake-up others wait for.
        pending = {asyncio.shield(self.wake(s.device_id, model)) for s in wanted}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not t.cancelled() and t.exception() is None and t.result() for t in done):
                return
        names = ", ".join(s.label for s in wanted)
        raise NoServerError(
            f"model {model!r} is on {names}, which was woken (Wake-on-LAN) and did not "
            f"answer within {self.timeout:g} s"
        )

    def wake(self, device_id: str, model: str | None = None) -> asyncio.Task[bool]:
        """Wake a remembered server (one attempt shared by all who wait): True once it is up."""
        attempt = self._attempts.get(device_id)
        if attempt is None or attempt.done():
            attempt = asyncio.create_task(self._attempt(device_id, model), name=f"wake {device_id}")
            self._attempts[device_id] = attempt
        return attempt

    async def _attempt(self, device_id: str, model: str | None) -> bool:
        remembered = self.memory.get(device_id)
        if remembered is None or not remembered.mac:
            return False
        deadline = time.monotonic() + self.timeout
        resend_at = 0.0
        while not self._up(device_id, model):
            now = time.monotonic()
            if now >= deadline:
                log.warning("server %s was woken and did not answer", remembered.label)
                return False
            if now >= resend_at:
                await self.send(remembered)
                resend_at = now + RESEND_INTERVAL
            await self._pool.wait_changed(min(deadline, resend_at) - now)
        log.info("server %s is up after its wake-up", remembered.label)
        return True

    async def send(self, server: RememberedServer) -> bool:
        """One wake-up packet, unless one went to this server less than WAKE_GAP ago."""
        now = time.monotonic()
        if now - self._last_sent.get(server.device_id, -WAKE_GAP) < WAKE_GAP:
            return False
        self._last_sent[server.device_id] = now
        last = _host_of(server.addresses[0]) if server.addresses else None
        # In a thread: the last address may be a host name to look up.
        sent = await asyncio.to_thread(self._send, server.mac, last)
        self.packets += 1
        log.info(
            "waking server %s (%s): wake-up packet to %s",
            server.label,
            server.mac,
            ", ".join(sent) or "nowhere (no route)",
        )
        if self._usable:
            self.memory.woken(server.device_id)
        return True
