"""What both modes share: identity and trust, discovery, metrics, the admin API, staged close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, Self

from ollana.admin import AdminListener, create_admin_app
from ollana.config import Settings
from ollana.discovery import DiscoveryService, Message, OnMessage, Role, TargetSet
from ollana.discovery.signing import Signer
from ollana.http.listener import Listener
from ollana.identity import DeviceStore, SeenDevice, StoreError, TLSManager, load_identity
from ollana.identity.nearby import nearby_devices
from ollana.identity.pairhttp import PairingDesk
from ollana.identity.recorder import SeenRecorder
from ollana.metrics import Metrics
from ollana.wake import RememberedServer

__all__ = ["Mode", "discovery_targets", "nearby", "record_seen", "trust"]

log = logging.getLogger(__name__)

MAX_DISMISSED = 1024


class Mode:
    """One running mode: `async with` starts its parts, exit stops them in stages.

    Subclasses build `listener` in __init__ and start their own parts in `_start()`;
    `close()` stops accepting, lets `_stopping()` act (a server says goodbye), cancels the
    mode's tasks, then closes every part in reverse order (the listener drains on close).
    """

    mode: str
    listener: Listener

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.tls = trust(settings)
        self.device_id = self.tls.identity.device_id
        self.name = settings.name
        self.seen = SeenRecorder(self.tls.store)
        self.pairing: PairingDesk | None = None  # server mode opens pairing windows
        self._dismissed: dict[str, None] = {}  # nearby devices the dashboard was told to hide
        self.metrics = Metrics()
        self.admin: AdminListener | None = None
        self.discovery: DiscoveryService | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        try:
            if self.settings.admin_listen is not None:
                # Entered first, so that it closes last and answers while the mode drains.
                app = create_admin_app(
                    self,  # type: ignore[arg-type]
                    self.metrics,
                    pairing=self.pairing,
                    history_interval=self.settings.timings.history_interval,
                )
                listener = AdminListener(app, self.settings.admin_listen)
                self.admin = await self._stack.enter_async_context(listener)
            await self._stack.enter_async_context(self.tls)
            await self._stack.enter_async_context(self.seen)
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _start(self) -> None:
        raise NotImplementedError

    async def _start_discovery(self, role: Role, on_message: OnMessage, **kwargs: Any) -> None:
        """Run discovery in this role until the mode closes, if it is on."""
        if not self.settings.discovery:
            return
        self.discovery = DiscoveryService(
            role=role,
            on_message=on_message,
            device_id=self.device_id,
            cert_der=self.tls.identity.cert_der,
            name=self.name,
            discovery_port=self.settings.discovery_port,
            targets=discovery_targets(self.settings),
            timings=self.settings.timings,
            limits=self.settings.limits,
            # A server signs what it says; what paired devices say must be signed.
            sign=Signer.from_key_file(self.tls.identity.key_path) if role == "server" else None,
            paired=self.tls.paired,
            cert_of=self.tls.cert_of,
            **kwargs,
        )
        await self._stack.enter_async_context(self.discovery)
        self._stack.callback(self.metrics.watch_discovery(self.discovery))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A task that lives as long as the mode."""
        self._tasks.append(asyncio.create_task(coro, name=name))

    def _stopping(self) -> None:
        """Called once the listener no longer accepts, before anything closes."""

    async def close(self) -> None:
        """Stop accepting, drain up to the grace period, close everything; safe twice."""
        await self.listener.stop_accepting()
        self._stopping()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._stack.aclose()

    @property
    def port(self) -> int:
        """The port the mode's endpoint is bound to."""
        return self.listener.port

    def nearby(self) -> list[SeenDevice]:
        """Devices heard on the LAN that are not allowed here (and not dismissed)."""
        return [d for d in nearby(self.tls) if d.device_id not in self._dismissed]

    def dismiss(self, device_id: str) -> bool:
        """Forget a nearby device and hide it for this run (file I/O); False if unknown."""
        try:
            forgotten = self.tls.store.forget_seen(device_id)
        except (StoreError, ValueError):
            return False
        self._dismissed[device_id] = None
        while len(self._dismissed) > MAX_DISMISSED:
            del self._dismissed[next(iter(self._dismissed))]
        return forgotten

    def device_names(self) -> dict[str, str]:
        """The names of allowed devices by ID (reads the allow list)."""
        try:
            allowed = self.tls.store.allowed()
        except StoreError:
            return {}
        return {device_id: entry.name for device_id, entry in allowed.items() if entry.name}

    def sleeping(self) -> Sequence[RememberedServer]:
        """Remembered servers that are not up now (client mode)."""
        return ()


def trust(settings: Settings) -> TLSManager:
    """This device's identity and allow list, as the TLS layer uses them."""
    identity = load_identity(settings.home)
    store = DeviceStore(settings.home, own_id=identity.device_id)
    return TLSManager(identity, store, open_mode=settings.open)


def discovery_targets(settings: Settings) -> TargetSet:
    """Where discovery datagrams go: interface broadcasts, 255.255.255.255, configured ones."""
    return TargetSet.from_settings(settings.discovery_targets, settings.discovery_port)


def record_seen(recorder: SeenRecorder, message: Message, address: str) -> bool:
    """Remember a device heard on the LAN, so `ollana device list` can offer it for pairing.

    Checked here (a new certificate's signature costs about 0.1 ms); written in batches.
    True when the message carried a certificate that passed the checks.
    """
    if not message.cert or not message.device:
        return False
    try:
        record = recorder.store.seen_record(
            message.device, address, message.role, message.cert, name=message.name
        )
    except ValueError as exc:
        log.debug("not recording device %s: %s", message.device[:12], exc)
        return False
    if record is not None:
        recorder.add(record)
    return True


def nearby(tls: TLSManager) -> list[SeenDevice]:
    """Devices heard on the LAN lately that are not allowed (yet) nor this one, newest first."""
    try:
        seen = tls.store.seen()
    except StoreError as exc:
        log.warning("cannot read the devices seen nearby: %s", exc)
        return []
    allowed = {d for d in seen if tls.is_allowed(d)}
    return nearby_devices(seen.values(), allowed, own=tls.identity.device_id)
