"""Server mode: the TLS listener in front of the local Ollama, and its discovery voice."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ollana.config import HostPort, Settings
from ollana.discovery import (
    Announce,
    Message,
    Query,
    clamp_priority,
    interface_for,
    models_digest,
    safe_version,
)
from ollana.discovery.protocol import QUEUE_MAX
from ollana.http import error_response, json_response
from ollana.http.listener import Listener
from ollana.identity import (
    HELLO_PATH,
    MAX_HELLO_BODY,
    HelloReply,
    PeerRejected,
    handle_hello,
    peer_device_id,
)
from ollana.identity.hello import HelloQuota
from ollana.identity.pairhttp import PAIR_PATHS, PairingDesk
from ollana.identity.pairing import MAX_PAIR_BODY
from ollana.local_ollama import OllamaWatch, who_listens
from ollana.modes.mode import Mode, record_seen
from ollana.modes.sharing import DeviceBook
from ollana.ollama_api import allowed_read_only
from ollana.proxy.admission import FairQueue
from ollana.proxy.server import PEER_DEVICE, ServerProxy
from ollana.usage import USAGE_FILE, UsageStore
from ollana.usage.prometheus import DeviceMetrics

__all__ = ["ServerMode"]

log = logging.getLogger(__name__)


class ServerMode(Mode):
    """Runs server mode's parts; exit stops accepting, says goodbye, drains, then closes."""

    mode = "server"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.pool = None  # server mode routes to its one local Ollama
        self.devices = DeviceBook(self.tls.store, settings.devices)
        device_metrics = DeviceMetrics(self.metrics.registry)
        self.queue: FairQueue | None = None
        if settings.ollama_parallel > 0:
            self.queue = FairQueue(
                settings.ollama_parallel,
                settings.max_queue,
                self.devices.limit_of,
                on_wait=device_metrics.waited,
                on_change=self._queue_changed,
            )
            device_metrics.watch_queue(self._queue_counts)
        self.usage = UsageStore(settings.home / USAGE_FILE) if settings.usage else None
        self.proxy = ServerProxy(
            settings.ollama,
            settings.limits,
            gate=self._gate,
            metrics=self.metrics,
            queue=self.queue,
            usage=self.usage,
            device_metrics=device_metrics if settings.usage else None,
            describe=self.devices.describe,
        )
        self.listener = Listener(
            self.proxy.handle,
            settings.listen_address(server_mode=True),
            settings.limits,
            ssl_context=self.tls.server_context(),
            grace=settings.grace,
            name="server",
            on_refusal=self.metrics.refused,
            who=who_listens,
            holder=self._holder,
            on_handshake_failure=self.metrics.tls_refused,
        )
        self.ollama = OllamaWatch(
            settings.ollama,
            settings.timings.probe_interval,
            settings.timings.probe_timeout,
            on_change=self._ollama_changed,
        )
        self.refused = 0
        self._management_refused = settings.refuses_management
        self._hellos = HelloQuota()
        self.pairing = PairingDesk(
            self.tls.identity, self.tls.store, self.name, on_change=self._pairing_changed
        )

    async def _start(self) -> None:
        # Before the listener, so that they close after the listener has drained.
        if self.usage is not None:
            await self._stack.enter_async_context(self.usage)
        self._stack.push_async_callback(self.proxy.close)
        assert self.pairing is not None
        await self._stack.enter_async_context(self.pairing)
        await self._stack.enter_async_context(self.listener)
        self._stack.callback(self.metrics.watch_connections(self.listener.held))
        await self._start_discovery(
            "server",
            self._heard,
            server_port=self.listener.port,
            priority=clamp_priority(self.settings.priority),
            available=False,
            announce_mac=True,
        )
        self._spawn(self._watch(), "ollama watch")

    def _stopping(self) -> None:
        if self.discovery is not None:
            self.discovery.set_available(False)  # the goodbye, before the drain

    # --- status -------------------------------------------------------------------------

    def counters(self) -> dict[str, object]:
        """Counters of this mode beside the metrics."""
        counters: dict[str, object] = {
            "connections": self.listener.connections,
            "connections_by_device": {
                holder: {"open": open_, "idle": idle}
                for holder, (open_, idle) in sorted(self.listener.held().items())
            },
            "refused": self.refused,
        }
        if self.queue is not None:
            snap = self.queue.snapshot()
            counters["queue"] = {
                "parallel": snap.parallel,
                "max_queue": snap.max_queue,
                "running": snap.running,
                "waiting": snap.queued,
                "waiting_by_device": {
                    self.devices.describe(device)[0]: n for device, n in snap.waiting.items()
                },
                "waited": snap.waited,
                "wait_seconds": round(snap.wait_seconds, 3),
                "full": snap.refused,
            }
        if self.usage is not None:
            counters["usage"] = {"recording": self.usage.enabled, "error": self.usage.error}
        return counters

    def _queue_counts(self) -> tuple[int, int, int, int]:
        assert self.queue is not None
        snap = self.queue.snapshot()
        return snap.running, snap.queued, snap.parallel, snap.refused

    def _queue_changed(self, waiting: int) -> None:
        if self.discovery is not None:
            self.discovery.update_announce(queue=min(waiting, QUEUE_MAX))

    def _holder(self, transport: asyncio.BaseTransport) -> str | None:
        """Whose share a new connection takes: its allowed device, else None (anonymous).

        In open mode no certificate is asked for: each source address is one holder.
        """
        if self.tls.open_mode:
            peer = transport.get_extra_info("peername")
            return f"address {peer[0]}" if isinstance(peer, tuple) and peer else None
        device_id = peer_device_id(transport.get_extra_info("ssl_object"))
        return device_id if device_id is not None and self.tls.is_allowed(device_id) else None

    # --- requests -----------------------------------------------------------------------

    async def _gate(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """Who may do what: allowed devices use the API, anyone may say hello."""
        try:
            peer = self.tls.admit(request.transport)
        except PeerRejected as exc:
            self.refused += 1
            self.metrics.tls_refused("disabled")
            response = error_response(403, str(exc))
            response.force_close()
            return response
        if request.path == HELLO_PATH and request.method == "POST":
            if not self._hellos.allow(request.remote or ""):
                return error_response(429, "too many hellos from this address; try later")
            body = await request.content.read(MAX_HELLO_BODY + 1)
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            reply = await asyncio.to_thread(
                self._hello,
                body,
                address=request.remote or "",
                local=str(sockname[0]) if sockname else "",
            )
            return json_response(reply.status, reply.body)
        if request.path in PAIR_PATHS and request.method == "POST" and self.pairing is not None:
            body = await request.content.read(MAX_PAIR_BODY + 1)
            reply = await self.pairing.answer(request.path, body, request.remote or "")
            return json_response(reply.status, reply.body)
        if not peer.trusted:
            self.refused += 1
            self.metrics.tls_refused("no-certificate")
            response = error_response(
                403,
                "this device is not allowed here: run `ollana pair` on the server, then "
                "`ollana pair CODE` on this device",
            )
            # Its connection is not kept: anonymous peers cannot hold connections open.
            response.force_close()
            return response
        if self._management_refused and not allowed_read_only(request.method, request.path):
            # An allow list: only what apps need to use models; new endpoints are refused.
            self.refused += 1
            self.metrics.refused("read-only")
            return error_response(
                403, "this ollana server is read-only: only model use is allowed here"
            )
        request[PEER_DEVICE] = peer.device_id or ""
        return None

    def _hello(self, body: bytes, *, address: str, local: str) -> HelloReply:
        """Answer a hello, with the MAC of the interface it came in on (blocking I/O)."""
        interface = interface_for(local) if local else None
        return handle_hello(
            body,
            identity=self.tls.identity,
            store=self.tls.store,
            address=address,
            name=self.name,
            mac=interface.mac if interface is not None else "",
            record=self.seen.add,
        )

    # --- discovery and the local Ollama ------------------------------------------------

    def _heard(self, message: Message, source: tuple[str, int]) -> None:
        if isinstance(message, Query | Announce):
            # A client's query comes from a port of no use to anyone: its host is the address.
            port = message.port if isinstance(message, Announce) else None
            address = source[0] if port is None else str(HostPort(source[0], port))
            if record_seen(self.seen, message, address) and message.cert is not None:
                # Trusted before the answer to this query leaves (discovery answers after
                # this handler): the client's first probe then gets through.
                self.tls.learn(message.device, message.cert)

    def _pairing_changed(self, is_open: bool) -> None:
        if self.discovery is not None:
            self.discovery.update_announce(pairing=is_open)

    def _ollama_changed(self, watch: OllamaWatch) -> None:
        if self.discovery is None:
            return
        self.discovery.update_announce(
            models=models_digest(watch.models), ollama=safe_version(watch.version)
        )
        self.discovery.set_available(watch.up)

    async def _watch(self) -> None:
        await self.ollama.run()
