"""TLSManager: the live trust state of a running process, kept in step with the store.

It watches the device files; after every change of the allow list (or of a certificate
learned for an allowed device) it builds a fresh server SSLContext. The context handed
to the listener is a long-lived base whose SNI callback, which OpenSSL runs on every
handshake (with or without SNI), swaps in the current one, so new handshakes use the
current trust store while established connections continue untouched. Connections of
a device that has just been disabled are aborted, on both sides, and on_revoked
listeners are told.

Handshake checks alone are not enough (a trust store also accepts a certificate that
an allowed certificate signed, if that one is a CA), so `admit` checks the peer's exact
fingerprint per request on the server, and DevicePin does after each handshake on the client.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ollana.http import ConnectionPool
from ollana.identity.certs import Identity
from ollana.identity.ids import format_device_id, short_device_id
from ollana.identity.store import WATCH_INTERVAL, DeviceStore, StoreError, TrustSnapshot
from ollana.identity.tls import (
    ConnectedFn,
    DevicePin,
    client_context,
    peer_device_id,
    server_context,
)
from ollana.lifecycle import Service

__all__ = ["Peer", "PeerRejected", "RevokedFn", "TLSManager"]

log = logging.getLogger(__name__)

RevokedFn = Callable[[frozenset[str]], None]
_SWEEP_MIN = 64  # a device's connection table is first swept of closed ones at this size


class PeerRejected(Exception):
    """A connection presented a certificate that is not (or no longer) allowed."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {format_device_id(device_id)} is not allowed")
        self.device_id = device_id


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is at the other end of a server-side connection.

    `device_id` is None when no certificate was presented (a client saying hello, or any
    client in open mode). `trusted` says whether it may use the API: an allowed device,
    or anyone in open mode. An untrusted peer may only call POST /ollana/v1/hello.
    """

    device_id: str | None
    trusted: bool


class TLSManager(Service):
    """Contexts, pinning and revocation for one identity and one device store."""

    def __init__(
        self,
        identity: Identity,
        store: DeviceStore,
        *,
        open_mode: bool = False,
        watch_interval: float = WATCH_INTERVAL,
    ) -> None:
        self.identity = identity
        self.store = store
        self.open_mode = open_mode
        self._interval = watch_interval
        self._snapshot = TrustSnapshot(frozenset(), {})
        self._current = server_context(identity, open_mode=open_mode)
        self._base = server_context(identity, open_mode=open_mode)
        self._base.sni_callback = self._select_context
        self._client = client_context(identity)
        self._hello = client_context(None)
        self._peers: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._connections: dict[str, dict[int, asyncio.Transport]] = {}
        self._sweep_at: dict[str, int] = {}  # table size at which closed ones are swept
        self._listeners: list[RevokedFn] = []
        self._watcher: asyncio.Task[None] | None = None
        self._stale = False
        # Certificates of allowed devices heard (checked) before the seen file has them.
        self._learned: dict[str, bytes] = {}

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the allow list (StoreError if it is unreadable) and start watching it."""
        # Taken first, so that a change made while we read is reloaded by the watcher.
        since = self.store.signature()
        self._apply(self.store.snapshot())
        if self._watcher is None:
            self._watcher = asyncio.create_task(
                self.store.watch(self.reload, self._interval, since=since),
                name="ollana-trust-watch",
            )

    async def close(self) -> None:
        """Stop watching the store; safe to call twice."""
        task, self._watcher = self._watcher, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def reload(self) -> None:
        """Re-read the store and apply changes; a bad file keeps the last good state."""
        try:
            snapshot = self.store.snapshot()
        except StoreError as exc:
            log.error("keeping the previous allow list: %s", exc)
            return
        self._apply(self._with_learned(snapshot))

    def learn(self, device_id: str, cert_der: bytes) -> bool:
        """Trust at once the checked certificate of an allowed device that was just heard.

        The seen file records it in its own time; a handshake of that device must not wait
        for the write and the next look at the files (first contact). True if it was new.
        """
        snapshot = self._snapshot
        if device_id not in snapshot.allowed or device_id in snapshot.certs:
            return False
        if len(self._learned) < len(snapshot.allowed):  # bounded by the allow list
            self._learned[device_id] = cert_der
        self._apply(TrustSnapshot(snapshot.allowed, {**snapshot.certs, device_id: cert_der}))
        log.info("device %s: certificate learnt, trusted now", short_device_id(device_id))
        return True

    def _with_learned(self, snapshot: TrustSnapshot) -> TrustSnapshot:
        """The files' view, plus certificates learnt since that the files do not have yet."""
        learned = self._learned
        for device_id in [d for d in learned if d in snapshot.certs or d not in snapshot.allowed]:
            del learned[device_id]  # written since, or no longer allowed
        if not learned:
            return snapshot
        return TrustSnapshot(snapshot.allowed, {**snapshot.certs, **learned})

    # --- what the proxies use -----------------------------------------------------------

    def is_allowed(self, device_id: str) -> bool:
        """Whether a device may talk to us (open mode: every device)."""
        return self.open_mode or device_id in self._snapshot.allowed

    def paired(self, device_id: str) -> bool:
        """Whether a device is on the allow list (open mode or not)."""
        return device_id in self._snapshot.allowed

    def cert_of(self, device_id: str) -> bytes | None:
        """The DER certificate known for an allowed device, if any."""
        return self._snapshot.certs.get(device_id)

    def server_context(self) -> ssl.SSLContext:
        """The context for the TLS listener; it always hands out the current trust store."""
        return self._base

    def client_context(self) -> ssl.SSLContext:
        """Our certificate for client auth; pair it with `device_pin()`'s check."""
        return self._client

    def device_pin(self, expect: str | None = None) -> DevicePin:
        """The handshake check for connections to one server (`expect` its announced ID)."""
        return DevicePin(self.is_allowed, expect, self._track)

    def hello_pool(
        self, host: str, port: int, timeout: float, on_connected: ConnectedFn
    ) -> ConnectionPool:
        """A connection pool for hello: no client certificate, any server (it is asked who)."""
        pin = DevicePin(lambda _: True, None, on_connected)
        return ConnectionPool(
            host, port, ssl_context=self._hello, check=pin.check, connect_timeout=timeout,
            read_timeout=timeout, keepalive_timeout=0,
        )  # fmt: skip

    def admit(self, transport: asyncio.Transport | None) -> Peer:
        """Check the peer of a server-side connection; cheap enough for every request.

        PeerRejected if it presented a certificate that is not allowed (any more): the
        caller should refuse the request and close the connection.
        """
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None:
            return Peer(None, trusted=False)
        device_id = self._peers.get(ssl_object)
        if device_id is None:
            device_id = peer_device_id(ssl_object) or ""
            self._peers[ssl_object] = device_id
            if device_id and transport is not None:
                self._track(device_id, transport)
        if self.open_mode:
            return Peer(device_id or None, trusted=True)
        if not device_id:
            return Peer(None, trusted=False)
        if device_id in self._snapshot.allowed:
            return Peer(device_id, trusted=True)
        raise PeerRejected(device_id)

    def on_revoked(self, callback: RevokedFn) -> Callable[[], None]:
        """Call `callback(ids)` after devices are disabled; returns a function to unsubscribe."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    # --- internals ----------------------------------------------------------------------

    def _select_context(
        self, ssl_object: ssl.SSLObject, server_name: str | None, base: ssl.SSLContext
    ) -> None:
        ssl_object.context = self._current

    def _apply(self, snapshot: TrustSnapshot) -> None:
        if snapshot == self._snapshot and not self._stale:
            return
        if snapshot.certs != self._snapshot.certs or self._stale:
            try:
                self._current = server_context(
                    self.identity, snapshot.certs.values(), open_mode=self.open_mode
                )
                self._stale = False
            except (OSError, ssl.SSLError) as exc:
                # Revocations below still hold: admit() checks the allow list itself.
                log.error("keeping the previous trust store: cannot build a new one: %s", exc)
                self._stale = True
        revoked = self._snapshot.allowed - snapshot.allowed
        self._snapshot = snapshot
        log.info(
            "allow list: %d device(s), %d with a known certificate",
            len(snapshot.allowed),
            len(snapshot.certs),
        )
        if revoked:
            self._revoke(frozenset(revoked))

    def _revoke(self, revoked: frozenset[str]) -> None:
        for device_id in revoked:
            connections = self._connections.pop(device_id, {})
            self._sweep_at.pop(device_id, None)
            log.info(
                "device %s disabled: closing %d connection(s)",
                short_device_id(device_id),
                len(connections),
            )
            for transport in connections.values():
                transport.abort()
        for listener in list(self._listeners):
            try:
                listener(revoked)
            except Exception:
                log.exception("an on_revoked listener failed")

    def _track(self, device_id: str, transport: asyncio.Transport) -> None:
        tracked = self._connections.setdefault(device_id, {})
        tracked[id(transport)] = transport
        # Closed connections are swept when the table has doubled since the last sweep:
        # a burst of N connections costs O(N), not O(N²).
        if len(tracked) >= self._sweep_at.get(device_id, _SWEEP_MIN):
            live = {key: t for key, t in tracked.items() if not t.is_closing()}
            self._connections[device_id] = live
            self._sweep_at[device_id] = max(_SWEEP_MIN, 2 * len(live))
