"""Pairing over the server port: the host's desk (window, endpoints) and the guest's calls.

The exchange itself is in pairing.py. Both endpoints take POSTs over TLS without a client
certificate, as hello does::

    POST /ollana/v1/pair/start    the guest's start message -> the host's reply
    POST /ollana/v1/pair/finish   the guest's confirmation  -> the host's confirmation

On success each side writes the other into its allow list, with its certificate and
name; a running process picks that up from the file within a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from multidict import CIMultiDict
from yarl import URL

from ollana.http import FETCH_ERRORS, ConnectionPool, describe
from ollana.identity.certs import Identity
from ollana.identity.hello import HelloReply
from ollana.identity.ids import format_device_id, short_device_id
from ollana.identity.pairing import MAX_PAIR_BODY, Guest, PairedPeer, PairingError, Window
from ollana.identity.store import DeviceStore, StoreError
from ollana.identity.trust import TLSManager
from ollana.lifecycle import Service

__all__ = [
    "PAIR_FINISH_PATH",
    "PAIR_PATHS",
    "PAIR_START_PATH",
    "PAIR_TIMEOUT",
    "PairingDesk",
    "WindowInfo",
    "pair_with",
]

log = logging.getLogger(__name__)

PAIR_START_PATH: Final = "/ollana/v1/pair/start"
PAIR_FINISH_PATH: Final = "/ollana/v1/pair/finish"
PAIR_PATHS: Final = frozenset({PAIR_START_PATH, PAIR_FINISH_PATH})
PAIR_TIMEOUT: Final = 10.0
# Codes a desk remembers, so that none is offered twice by one process.
MAX_USED_CODES: Final = 10_000


@dataclass(frozen=True, slots=True)
class WindowInfo:
    """What the admin API tells `ollana pair` about the current window."""

    state: str
    code: str
    expires_in: float
    attempts: int
    peer: PairedPeer | None

    def as_json(self) -> dict[str, object]:
        """The window as a JSON object (the peer without its certificate)."""
        peer = self.peer
        return {
            "state": self.state,
            "code": self.code,
            "expires_in": round(self.expires_in, 1),
            "attempts": self.attempts,
            "peer": None if peer is None else {"device_id": peer.device_id, "name": peer.name},
        }


class PairingDesk(Service):
    """The host side in a running server: at most one window at a time."""

    def __init__(
        self,
        identity: Identity,
        store: DeviceStore,
        name: str,
        *,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        self.store = store
        self.name = name
        self.window: Window | None = None
        self._on_change = on_change
        self._clock = clock
        self._used: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._open = False

    async def start(self) -> None:
        """Nothing to start: windows open on request."""

    async def close(self) -> None:
        """Close any open window; safe to call twice."""
        if self.window is not None:
            self.window.close()
        self._changed()

    def open_window(self) -> WindowInfo:
        """Open a new window (closing the one before): a fresh code for 2 minutes."""
        if self.window is not None:
            self.window.close()
        window = Window.open(self.identity.cert_der, self.name, self._clock(), used=self._used)
        self._used = [*self._used[-MAX_USED_CODES:], window.code]
        self.window = window
        if self._timer is not None:
            self._timer.cancel()
        delay = window.deadline - self._clock()
        self._timer = asyncio.get_running_loop().call_later(delay + 0.01, self._changed)
        log.info("pairing window open for %.0f s", delay)
        self._changed()
        return self.info()

    def info(self) -> WindowInfo:
        """The current window's state ("none" when there was never one)."""
        window, now = self.window, self._clock()
        if window is None:
            return WindowInfo("none", "", 0.0, 0, None)
        state = window.current(now)
        left = max(0.0, window.deadline - now) if state == "open" else 0.0
        return WindowInfo(state, window.code, left, window.attempts, window.peer)

    async def answer(self, path: str, body: bytes, address: str) -> HelloReply:
        """Answer a guest's start or finish from `address`."""
        window = self.window
        try:
            if window is None:
                raise PairingError("no pairing window is open on this device", 404)
            if path == PAIR_START_PATH:
                return HelloReply(200, window.start(body, self._clock()))
            reply, peer = window.finish(body, self._clock())
        except PairingError as exc:
            if exc.status == 403:
                log.warning("pairing attempt from %s refused: %s", address, exc)
            return _error(exc.status, str(exc))
        finally:
            self._changed()
        try:
            await asyncio.to_thread(
                self.store.allow, peer.device_id, name=peer.name or None, cert_der=peer.cert_der
            )
        except (StoreError, ValueError) as exc:
            log.error("paired with %s but cannot allow it: %s", address, exc)
            return _error(500, "this device cannot write its allow list right now")
        log.info("paired with %s at %s: allowed", _shown(peer), address)
        return HelloReply(200, reply)

    def _changed(self) -> None:
        window = self.window
        is_open = window is not None and window.current(self._clock()) == "open"
        if is_open != self._open:
            self._open = is_open
            if self._on_change is not None:
                self._on_change(is_open)


async def pair_with(
    tls: TLSManager, url: str, code: str, name: str, *, timeout: float = PAIR_TIMEOUT
) -> PairedPeer:
    """Run the guest's side against the host at `url` (https://HOST:PORT).

    Returns the host once it proved it knows the code; PairingError otherwise. The host's
    certificate in the exchange must be the one its TLS handshakes presented.
    """
    guest = Guest(code, tls.identity.cert_der, name)
    presented: list[str] = []
    target = URL(url)
    if target.scheme != "https" or not target.host:
        raise PairingError(f"{url}: ollana peers are reached over https only")
    pool = tls.hello_pool(
        target.host, target.port or 443, timeout, lambda device_id, _: presented.append(device_id)
    )
    try:
        async with asyncio.timeout(timeout), pool:
            reply = await _post(pool, PAIR_START_PATH, guest.start())
            finish = guest.confirm(reply)
            host = guest.host
            if host is None or not presented or set(presented) != {host.device_id}:
                raise PairingError("the host's certificate is not the one its TLS handshake showed")
            confirmed = await _post(pool, PAIR_FINISH_PATH, finish)
            if set(presented) != {host.device_id}:
                raise PairingError("the host's certificate changed between two connections")
    except FETCH_ERRORS as exc:
        raise PairingError(f"{url}: {describe(exc)}") from None
    return guest.verify(confirmed)


async def _post(pool: ConnectionPool, path: str, body: bytes) -> bytes:
    headers = CIMultiDict({"Content-Type": "application/json"})
    response = await pool.request("POST", path, headers, body)
    async with response:
        data = await response.content.read(MAX_PAIR_BODY + 1)
        if response.status != 200:
            raise PairingError(_error_text(data, response.status), response.status)
    return data


def _error(status: int, message: str) -> HelloReply:
    return HelloReply(status, json.dumps({"error": message}).encode())


def _error_text(body: bytes, status: int) -> str:
    try:
        message = json.loads(body)
    except ValueError:
        message = None
    error = message.get("error") if isinstance(message, dict) else None
    return error if isinstance(error, str) else f"HTTP {status}"


def _shown(peer: PairedPeer) -> str:
    label = f"{peer.name} " if peer.name else ""
    return f"{label}({short_device_id(peer.device_id)}, {format_device_id(peer.device_id)})"
