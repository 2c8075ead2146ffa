"""Discovery on the LAN (DESIGN §2): asyncio datagram endpoints for both roles.

Each service has two UDP sockets. The *listen* socket is bound to the discovery port
(11436) with SO_REUSEADDR/SO_REUSEPORT so that several ollana processes on one host share
it; broadcasts reach every socket bound to the port, so it hears every unsolicited announce,
goodbye and broadcast query. A unicast datagram to a shared port reaches only one of its
sockets, though, so everything this service sends leaves from its own *reply* socket, bound
to an ephemeral port: a server answers a query at the query's source address and port, and
that answer reaches exactly the process that asked, even beside other ollana processes.

Answers are not a reflector: only hosts on a directly connected subnet (or loopback, or a
configured target) get one, within a budget per querier and overall, and a query without a
certificate gets an answer without one (and unsigned). Announces and goodbyes of a server
are signed with its device key when it has one (see authority.py for what peers check).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ollana.config import DEFAULT_DISCOVERY_PORT, HostPort, Limits, Timings
from ollana.discovery.authority import Authority
from ollana.discovery.protocol import (
    Announce,
    DecodeError,
    Goodbye,
    Message,
    Query,
    Role,
    Sign,
    decode,
    encode,
    new_instance_id,
    split_signature,
)
from ollana.discovery.replies import MAX_SOURCES, REPLY_BUDGET, RateLimit, ReplyPolicy
from ollana.discovery.targets import resolve
from ollana.lifecycle import Service

__all__ = ["DiscoveryService", "DiscoveryStats", "OnMessage", "Targets"]

log = logging.getLogger(__name__)

# As mDNS does (RFC 6762 §8.3): a random delay before the first announce, so that hosts
# powered on together do not answer in lockstep, then one repeat a second later.
START_DELAY_MAX = 0.25
REPEAT_GAP = 1.0
JITTER = 0.2  # periodic announces and queries at interval x (1 ± JITTER)

OnMessage = Callable[[Message, tuple[str, int]], None]
Targets = Sequence[HostPort] | Callable[[], Sequence[HostPort]]


@dataclass(frozen=True, slots=True)
class DiscoveryStats:
    """Counters of one service: datagrams sent and received, and why some were dropped."""

    sent: int
    received: int
    delivered: int
    dropped: Mapping[str, int]
    send_errors: int
    unanswered: Mapping[str, int] = dataclasses.field(default_factory=dict)  # why not answered


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, service: DiscoveryService) -> None:
        self._service = service
        self.closed = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._service._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self._service._on_socket_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass(frozen=True, slots=True)
class _Socket:
    sock: socket.socket
    transport: asyncio.DatagramTransport
    endpoint: _Endpoint


class DiscoveryService(Service):
    """Announces a server, or finds servers for a client; ``async with`` runs it.

    Every message from another process is passed to ``on_message(message, source)``; for
    an announce, the server is reached at the source IP and the announced port.
    """

    def __init__(
        self,
        *,
        role: Role,
        on_message: OnMessage | None = None,
        instance: str | None = None,
        device_id: str = "",
        cert_der: bytes | None = None,
        server_port: int = 0,
        discovery_port: int | None = DEFAULT_DISCOVERY_PORT,
        targets: Targets = (),
        ollama_version: str = "",
        models_digest: str = "",
        priority: int = 0,
        name: str = "",
        available: bool = True,
        needs_servers: Callable[[], bool] = lambda: True,
        timings: Timings | None = None,
        limits: Limits | None = None,
        bind_host: str = "0.0.0.0",
        sign: Sign | None = None,
        paired: Callable[[str], bool] | None = None,
        cert_of: Callable[[str], bytes | None] | None = None,
        reply_budget: float = REPLY_BUDGET,
    ) -> None:
        if role == "server" and discovery_port is None:
            raise ValueError("a server needs the discovery port, to hear queries")
        self.role: Role = role
        self.instance = instance if instance is not None else new_instance_id()
        self._device = device_id
        # Built now, so that bad identity values fail here rather than in a background task.
        self._hello: Announce | Query
        if role == "server":
            self._hello = Announce(
                instance=self.instance, device=device_id, port=server_port, cert=cert_der,
                ollama=ollama_version, models=models_digest, priority=priority, name=name,
            )  # fmt: skip
        else:
            self._hello = Query(instance=self.instance, device=device_id, cert=cert_der, name=name)
        self._on_message = on_message
        self._needs_servers = needs_servers
        self._discovery_port = discovery_port
        self._targets = targets
        self._timings = timings or Timings()
        self._bind_host = bind_host
        self._available = available
        self._repeat = available  # the next announce is followed by another REPEAT_GAP later
        rate = (limits or Limits()).datagram_rate
        self._flood = RateLimit(rate, max(1.0, rate))
        self._replies = ReplyPolicy(reply_budget)
        self._sign = sign
        self._authority = Authority(paired, cert_of)
        self._announcers: OrderedDict[str, None] = OrderedDict()
        self._addresses: tuple[tuple[str, int], ...] = ()
        self._listen: _Socket | None = None
        self._reply: _Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._sent = self._received = self._delivered = self._send_errors = 0
        self._dropped: Counter[str] = Counter()
        self._logged: set[Hashable] = set()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the sockets and begin announcing (server) or querying (client)."""
        if self._reply is not None or self._closed:
            raise RuntimeError("a discovery service starts once")
        try:
            if self._discovery_port is not None:
                self._listen = await self._open(self._discovery_port, shared=True)
            self._reply = await self._open(0, shared=False)
            await self._resolve_targets()
        except BaseException:
            await self.close()
            raise
        run = self._announce_loop if self.role == "server" else self._query_loop
        self._task = asyncio.get_running_loop().create_task(run(), name=f"discovery-{self.role}")
        self._task.add_done_callback(_log_crash)

    async def close(self) -> None:
        """Say goodbye (an available server), close the sockets, stop the task; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.role == "server" and self._available:
            self._send_all(self._goodbye())
        sockets = [s for s in (self._listen, self._reply) if s is not None]
        for s in sockets:
            s.transport.close()
        waits: list[asyncio.Future[None]] = [s.endpoint.closed for s in sockets]
        if self._task is not None:
            self._task.cancel()
            waits.append(self._task)
        # return_exceptions: the task's own CancelledError is expected; an outer
        # cancellation of close() still propagates out of the gather.
        await asyncio.gather(*waits, return_exceptions=True)

    async def _open(self, port: int, *, shared: bool) -> _Socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if hasattr(socket, "SO_REUSEPORT"):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((self._bind_host, port))
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot bind UDP {self._bind_host}:{port} for discovery: {exc}"
                ) from exc
            sock.setblocking(False)
            transport, endpoint = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Endpoint(self), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        return _Socket(sock, transport, endpoint)

    # --- the running state -------------------------------------------------------------

    @property
    def listen_port(self) -> int | None:
        """The bound discovery port (useful when 0 was asked for), or None."""
        return self._listen.sock.getsockname()[1] if self._listen is not None else None

    @property
    def reply_port(self) -> int:
        """The ephemeral port this service sends from and gets answers on."""
        if self._reply is None:
            raise RuntimeError("the discovery service is not started")
        return int(self._reply.sock.getsockname()[1])

    def set_available(self, available: bool) -> None:
        """Server: unavailable says goodbye and goes silent; available announces at once."""
        if available == self._available:
            return
        self._available = available
        if available:
            self._repeat = True
        else:
            self._send_all(self._goodbye())
        self._wake.set()

    def update_announce(
        self,
        *,
        models: str | None = None,
        ollama: str | None = None,
        queue: int | None = None,
        pairing: bool | None = None,
    ) -> None:
        """Server: change what announces carry (models digest, Ollama version, whether a
        pairing window is open); announce now.

        A new queue length alone waits for the next announce: it changes too often.
        """
        if not isinstance(self._hello, Announce):
            return
        hello = self._hello
        updated = dataclasses.replace(
            hello,
            models=hello.models if models is None else models,
            ollama=hello.ollama if ollama is None else ollama,
            queue=hello.queue if queue is None else queue,
            pairing=hello.pairing if pairing is None else pairing,
        )
        if updated != hello:
            self._hello = updated
            if (updated.models, updated.ollama, updated.pairing) != (
                hello.models,
                hello.ollama,
                hello.pairing,
            ):
                self._wake.set()

    def query(self) -> None:
        """Client: send a query to every target now."""
        self._send_all(self._stamped())

    def stats(self) -> DiscoveryStats:
        """A snapshot of the counters."""
        counts = (self._sent, self._received, self._delivered)
        unanswered = MappingProxyType(dict(self._replies.unanswered()))
        return DiscoveryStats(
            *counts, MappingProxyType(dict(self._dropped)), self._send_errors, unanswered
        )

    # --- sending -----------------------------------------------------------------------

    async def _announce_loop(self) -> None:
        await self._pause(random.uniform(0.0, START_DELAY_MAX))
        while True:
            await self._resolve_targets()
            gap = _jittered(self._timings.announce_interval)
            if self._available:
                self._send_all(self._stamped())
                # Becoming available is said twice (a datagram may be lost), not once.
                if self._repeat:
                    gap, self._repeat = REPEAT_GAP, False
            await self._pause(gap)

    async def _query_loop(self) -> None:
        self.query()  # on start, whatever needs_servers() says
        while True:
            await self._pause(_jittered(self._timings.query_interval))
            await self._resolve_targets()
            try:
                wanted = self._needs_servers()
            except Exception:
                log.exception("discovery: needs_servers() failed; querying anyway")
                wanted = True
            if wanted:
                self.query()

    async def _pause(self, delay: float) -> None:
        """Sleep for delay, or until something should be announced at once."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

    async def _resolve_targets(self) -> None:
        """Targets as (IPv4, port); host names are looked up again each round."""
        targets = self._targets() if callable(self._targets) else self._targets
        self._addresses, failures = await resolve(targets)
        self._replies.refresh(host for host, _ in self._addresses)
        for target, exc in failures:
            self._send_failed((target.host, target.port), exc)

    def _stamped(self) -> Announce | Query:
        return dataclasses.replace(self._hello, ts=time.time())

    def _goodbye(self) -> Goodbye:
        return Goodbye(instance=self.instance, device=self._device, role=self.role, ts=time.time())

    def _send_all(self, msg: Message) -> None:
        data = self._encode(msg)
        for address in self._addresses:
            self._send(data, address)

    def _encode(self, msg: Message) -> bytes:
        """A server's announces and goodbyes go signed, when it has a key to sign with."""
        signs = self._sign is not None and isinstance(msg, Announce | Goodbye)
        return encode(msg, self._sign if signs else None)

    def _send(self, data: bytes, address: tuple[str, int]) -> None:
        if self._reply is None or self._reply.transport.is_closing():
            return
        # Straight to the socket, not transport.sendto(): transports report send errors
        # to error_received() after the fact, and here each error belongs to its target
        # (a host with no default route fails 255.255.255.255 and no other).
        try:
            self._reply.sock.sendto(data, address)
        except OSError as exc:
            self._send_failed(address, exc)
        else:
            self._sent += 1

    def _send_failed(self, address: tuple[str, int], exc: Exception) -> None:
        self._send_errors += 1
        if self._first_time((address, getattr(exc, "errno", None) or type(exc).__name__)):
            log.info("discovery: cannot send to %s:%d: %s", *address, exc)

    def _first_time(self, key: Hashable) -> bool:
        # Log once, not every round; bounded, since keys may come from the network.
        if key in self._logged or len(self._logged) >= MAX_SOURCES:
            return False
        self._logged.add(key)
        return True

    # --- receiving ---------------------------------------------------------------------

    def _on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        now = time.monotonic()
        self._received += 1
        if not self._flood.allow(source[0], now):
            self._dropped["rate"] += 1
            return
        signed = split_signature(data)
        try:
            # What a signature covers is what counts: the datagram without it.
            msg = decode(signed.data if signed is not None else data)
        except DecodeError as exc:
            self._dropped[exc.reason] += 1
            log.debug("discovery: dropped a datagram from %s:%d: %s", *source, exc)
            return
        if msg.instance and msg.instance == self.instance:
            self._dropped["own"] += 1  # our own broadcast, looped back
            return
        if msg.device and msg.device == self._device and not isinstance(msg, Query):
            self._dropped["conflict"] += 1
            if self._first_time(("conflict", msg.instance)):
                log.warning(
                    "discovery: another ollana at %s uses this device's ID (%s): was the data "
                    "directory copied? It is ignored; give it its own identity.",
                    source[0], msg.device,
                )  # fmt: skip
            return
        refused = self._authority.check(msg, signed, source[0], now)
        if refused:
            self._dropped[refused] += 1
            log.debug("discovery: dropped a %s datagram from %s:%d", refused, *source)
            return
        answer = isinstance(msg, Query) and self.role == "server" and self._available
        # A server that started after this client never heard the client's queries, which
        # carry its certificate: it could not trust the client even once it allows its ID,
        # nor list it among the devices nearby. The first announce of each run gets one,
        # if it carried a certificate itself (so that the answer is no larger than it).
        introduce = (
            isinstance(msg, Announce)
            and self.role == "client"
            and self._hello.cert is not None
            and msg.cert is not None
            and self._first_announce(msg.instance or source[0])
        )
        self._delivered += 1
        if self._on_message is not None:
            # Before the answer: what the handler learns (a certificate it now trusts) holds
            # by the time the answer makes the other side connect.
            try:
                self._on_message(msg, source)
            except Exception:
                log.exception("discovery: the message handler failed")
        if answer or introduce:
            self._answer(msg, source, now)

    def _answer(self, msg: Message, source: tuple[str, int], now: float) -> None:
        """Answer at source, unless that would make this service a reflector."""
        if not self._replies.allow(source, now):
            return
        reply = self._stamped()
        if msg.cert is None and reply.cert is not None:
            # Small for whoever did not say who it is: no certificate, no signature.
            self._send(encode(dataclasses.replace(reply, cert=None)), source)
        else:
            self._send(self._encode(reply), source)

    def _first_announce(self, instance: str) -> bool:
        """Whether this is the first announce heard from a server run (bounded memory)."""
        if instance in self._announcers:
            self._announcers.move_to_end(instance)
            return False
        self._announcers[instance] = None
        if len(self._announcers) > MAX_SOURCES:
            self._announcers.popitem(last=False)
        return True

    def _on_socket_error(self, exc: Exception) -> None:
        self._send_errors += 1  # e.g. an ICMP error, reported late
        log.debug("discovery: socket error: %s", exc)


def _jittered(interval: float) -> float:
    return interval * random.uniform(1.0 - JITTER, 1.0 + JITTER)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("discovery stopped", exc_info=task.exception())
