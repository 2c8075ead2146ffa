"""Server mode: the TLS listener in front of the local Ollama, and its discovery voice."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ollana.config import Settings
from ollana.discovery import (
    Announce,
    Message,
    Query,
    clamp_priority,
    models_digest,
    safe_version,
)
from ollana.http import error_response, json_response
from ollana.http.listener import Listener
from ollana.identity import (
    HELLO_PATH,
    MAX_HELLO_BODY,
    PeerRejected,
    handle_hello,
    peer_device_id,
)
from ollana.local_ollama import OllamaWatch, who_listens
from ollana.modes.mode import Mode, record_seen
from ollana.ollama_api import changes_models
from ollana.proxy.server import ServerProxy

__all__ = ["ServerMode"]

log = logging.getLogger(__name__)


class ServerMode(Mode):
    """Runs server mode's parts; exit stops accepting, says goodbye, drains, then closes."""

    mode = "server"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.pool = None  # server mode routes to its one local Ollama
        self.proxy = ServerProxy(
            settings.ollama, settings.limits, gate=self._gate, metrics=self.metrics
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

    async def _start(self) -> None:
        # Before the listener, so that it runs after the listener has drained.
        self._stack.push_async_callback(self.proxy.close)
        await self._stack.enter_async_context(self.listener)
        self._stack.callback(self.metrics.watch_connections(self.listener.held))
        await self._start_discovery(
            "server",
            self._heard,
            server_port=self.listener.port,
            priority=clamp_priority(self.settings.priority),
            available=False,
        )
        self._spawn(self._watch(), "ollama watch")

    def _stopping(self) -> None:
        if self.discovery is not None:
            self.discovery.set_available(False)  # the goodbye, before the drain

    # --- status -------------------------------------------------------------------------

    def counters(self) -> dict[str, object]:
        """Counters of this mode beside the metrics."""
        return {
            "connections": self.listener.connections,
            "connections_by_device": {
                holder: {"open": open_, "idle": idle}
                for holder, (open_, idle) in sorted(self.listener.held().items())
            },
            "refused": self.refused,
        }

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
            body = await request.content.read(MAX_HELLO_BODY + 1)
            reply = await asyncio.to_thread(
                handle_hello,
                body,
                identity=self.tls.identity,
                store=self.tls.store,
                address=request.remote or "",
            )
            return json_response(reply.status, reply.body)
        if not peer.trusted:
            self.refused += 1
            self.metrics.tls_refused("no-certificate")
            response = error_response(
                403,
                "this device is not allowed here: on the server run `ollana device allow "
                "<ID>` with the ID `ollana device show` prints on this device",
            )
            # Its connection is not kept: anonymous peers cannot hold connections open.
            response.force_close()
            return response
        if self._management_refused and changes_models(request.method, request.path):
            self.refused += 1
            self.metrics.refused("read-only")
            return error_response(403, "model management is disabled on this ollana server")
        return None

    # --- discovery and the local Ollama ------------------------------------------------

    def _heard(self, message: Message, source: tuple[str, int]) -> None:
        if isinstance(message, Query | Announce):
            address = f"{source[0]}:{message.port if isinstance(message, Announce) else 0}"
            record_seen(self.tls, message.device, address, message.role, message.cert)

    def _ollama_changed(self, watch: OllamaWatch) -> None:
        if self.discovery is None:
            return
        self.discovery.update_announce(
            models=models_digest(watch.models), ollama=safe_version(watch.version)
        )
        self.discovery.set_available(watch.up)

    async def _watch(self) -> None:
        await self.ollama.run()
