"""Client mode: the local endpoint, the pool of servers and the router between them."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

from aiohttp import web

from ollana.cluster.aggregate import Aggregator
from ollana.cluster.pool import Pool
from ollana.cluster.router import Router
from ollana.cluster.server import Server
from ollana.config import HostPort, Settings
from ollana.discovery import Announce, Goodbye, Message, Query
from ollana.http import bare_response
from ollana.http.client import ConnectionPool
from ollana.http.guard import LocalGuard
from ollana.http.listener import Listener
from ollana.identity import short_device_id
from ollana.identity.names import display_name
from ollana.identity.nearby import NEARBY_MAX_AGE
from ollana.local_ollama import who_listens
from ollana.modes.mode import Mode, record_seen
from ollana.modes.static_servers import keep_introduced
from ollana.ollama_api import ROOT_ANSWER, ROOT_CONTENT_TYPE
from ollana.proxy.client import ClientProxy
from ollana.usage import USAGE_FILE, UsageStore
from ollana.wake import RememberedServer, ServerMemory, Waker

__all__ = ["ClientMode"]

log = logging.getLogger(__name__)

UNPAIRED_KEPT = 256
UNPAIRED_LOGGED = 16
UNPAIRED_EXPLAINED = 3  # unpaired servers named in an error an app shows


class ClientMode(Mode):
    """Runs client mode's parts; exit stops accepting, drains, then closes the pool."""

    mode = "client"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.ollama = None  # client mode fronts no Ollama of its own
        self.pool = Pool(settings, self._upstream, scheme="https")
        self.waker: Waker | None = None
        if settings.wake:
            self.waker = Waker(
                self.pool,
                ServerMemory.in_home(settings.home),
                timeout=settings.wake_timeout,
                static_macs={s.address: s.mac for s in settings.servers if s.mac},
            )
        self.router = Router(
            self.pool,
            settings.wait_for_server,
            self.metrics,
            waker=self.waker,
            explain=self._unpaired_reasons,
            nobody=self._nobody,
        )
        self.usage = UsageStore(settings.home / USAGE_FILE) if settings.usage else None
        self.aggregator = Aggregator(
            self.pool, self.router, settings.wait_for_server, settings.limits.connect_timeout
        )
        self.proxy = ClientProxy(
            self.router,
            retry_buffer=settings.retry_buffer,
            route_body_cap=settings.limits.route_body_cap,
            local=self._local,
            guard=LocalGuard(
                settings.origins,
                settings.allowed_hosts,
                check_hosts=_is_loopback(settings.listen_address(server_mode=False).host),
            ),
            metrics=self.metrics,
            usage=self.usage,
        )
        self.listener = Listener(
            self.proxy.handle,
            settings.listen_address(server_mode=False),
            settings.limits,
            grace=settings.grace,
            name="client",
            on_refusal=self.metrics.refused,
            who=who_listens,
        )
        # Servers heard but not allowed: device ID -> (address, when), the most recent last;
        # one not heard for unpaired_max_age seconds has stopped or left, and is not offered.
        self.unpaired: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.unpaired_max_age = NEARBY_MAX_AGE.total_seconds()

    async def _start(self) -> None:
        self._stack.callback(self.tls.on_revoked(self._revoked))
        if self.usage is not None:  # entered first: it closes after the listener drained
            await self._stack.enter_async_context(self.usage)
        await self._stack.enter_async_context(self.pool)
        self._stack.callback(self.metrics.watch_pool(self.pool))
        if self.waker is not None:
            await self._stack.enter_async_context(self.waker)
        await self._stack.enter_async_context(self.listener)
        await self._start_discovery(
            "client", self._heard, needs_servers=lambda: not self.pool.healthy()
        )
        # Static ones only: discovery may have added servers already, and they know us.
        for server in [s for s in self.pool if s.static]:
            heard = self.waker.heard if self.waker is not None else None
            introduced = keep_introduced(
                server, self.pool, self.tls, self.settings.timings, name=self.name, heard=heard
            )
            self._spawn(introduced, f"hello {server.address}")

    # --- status -------------------------------------------------------------------------

    def counters(self) -> dict[str, object]:
        """Counters of this mode beside the metrics."""
        return {
            "connections": self.listener.connections,
            "unpaired_servers": len(self._unpaired_now()),
            "wake_packets": self.waker.packets if self.waker is not None else 0,
        }

    def sleeping(self) -> Sequence[RememberedServer]:
        """Remembered servers that are not up now, to be woken when a request needs one."""
        return self.waker.sleeping() if self.waker is not None else ()

    # --- parts --------------------------------------------------------------------------

    def _upstream(self, server: Server) -> ConnectionPool:
        limits = self.settings.limits
        return ConnectionPool(
            server.address.host,
            server.address.port,
            ssl_context=self.tls.client_context(),
            check=self.tls.device_pin(server.device_id).check,
            connect_timeout=limits.connect_timeout,
            read_timeout=limits.stream_idle_timeout,
            demand_hold=self.settings.timings.connection_hold,
            # Opt-in, and never more than a server lets one device hold (its fair share).
            preconnect=min(limits.preconnect, limits.max_device_connections),
            label=f"server {server.label} at {server.address}"
            if server.device_id
            else f"server {server.address}",
        )

    async def _local(self, request: web.BaseRequest) -> web.StreamResponse | None:
        if self.aggregator.handles(request):
            return await self.aggregator.answer(request)
        if request.path == "/" and request.method in ("GET", "HEAD"):
            # Ollama's own liveness answer, at once: it says this endpoint is there, whether or
            # not a server is (tools that check "/" would otherwise decide Ollama is down).
            return bare_response(200, ROOT_ANSWER, ROOT_CONTENT_TYPE)
        return None

    def _unpaired_reasons(self) -> list[str]:
        return [
            f"server {short_device_id(device)} at {address} is not paired: run `ollana pair`"
            f" on it and `ollana pair CODE` here, or `ollana device allow {device[:16]}`"
            for device, address in reversed(self._unpaired_now())
        ][:UNPAIRED_EXPLAINED]

    def _unpaired_now(self) -> list[tuple[str, str]]:
        """(device ID, address) of the unpaired servers heard lately, the most recent last."""
        since = time.monotonic() - self.unpaired_max_age
        return [(d, address) for d, (address, when) in self.unpaired.items() if when >= since]

    def _nobody(self) -> str:
        static = ", ".join(str(s.address) for s in self.settings.servers)
        if static:
            return f"none of the configured servers ({static}) has answered"
        if not self.settings.discovery:
            return "discovery is off and no --server is configured"
        port = self.settings.discovery_port
        return (
            f"no ollana server answered discovery (UDP {port}) on this LAN: start `ollana serve`"
            " next to an Ollama, or name one with --server HOST:11435"
        )

    # --- discovery ----------------------------------------------------------------------

    def _heard(self, message: Message, source: tuple[str, int]) -> None:
        if message.device == self.device_id:
            return  # another process with this device's home: never a stranger to offer
        if isinstance(message, Query):
            # A client's query comes from a port of no use to anyone: its host is the address.
            record_seen(self.seen, message, source[0])
            return
        if message.role != "server":
            return
        if isinstance(message, Goodbye):
            self.unpaired.pop(message.device, None)
            server = self.pool.find(message.device)
            if server is not None:
                self.pool.remove(server, "said goodbye")
            return
        assert isinstance(message, Announce)
        address = HostPort(source[0], message.port)
        record_seen(self.seen, message, str(address))
        if not self.tls.is_allowed(message.device):
            if message.device not in self.unpaired:
                # A flood of made-up devices must not flood the log or the memory.
                quiet = len(self.unpaired) >= UNPAIRED_LOGGED
                log.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "server %s at %s is not paired: run `ollana pair` there to use it",
                    display_name(message.name, message.device),
                    address,
                )
            self.unpaired[message.device] = (str(address), time.monotonic())
            self.unpaired.move_to_end(message.device)
            if len(self.unpaired) > UNPAIRED_KEPT:
                self.unpaired.popitem(last=False)
            return
        self.unpaired.pop(message.device, None)
        server = self.pool.add(address, device_id=message.device, priority=message.priority)
        self.pool.heard(server, message.models, message.queue)
        if self.waker is not None:
            # The address the pool uses: a server heard at several must not flip between them.
            self.waker.heard(message.device, server.address, message.mac, message.name)

    def _revoked(self, device_ids: frozenset[str]) -> None:
        for device_id in device_ids:
            server = self.pool.find(device_id)
            if server is not None:
                self.pool.remove(server, "device disabled")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
