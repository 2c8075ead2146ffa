"""Whether a new connection gets in: the listener's cap, or shares per device.

Without `who`, a listener has one cap (``Limits.max_connections``). With it (server mode:
the device a connection's certificate names), connections are shared per device
(`shares.Shares`): a newcomer past the cap is admitted by closing the oldest idle
connection of the device holding the most (failing that, the longest-idle one of any
device: devices' clients hold a burst's connections for a while), each device holds at most
``Limits.max_device_connections``, and peers without an allowed certificate have their own
small budget (``anonymous_connections``, ``anonymous_per_address``), grouped by address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sized
from typing import Final, Generic, TypeVar

from ollana.config import Limits
from ollana.http.handshakes import peer_address
from ollana.http.shares import Member, Shares

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_HOLDER",
    "CONNECTIONS",
    "DEVICE_CONNECTIONS",
    "Admission",
    "Refusal",
    "Who",
]

# Who holds a connection whose TLS handshake has completed: a device ID, or None for a peer
# without an allowed certificate.
Who = Callable[[asyncio.BaseTransport], "str | None"]

# Refusal reasons (metric labels).
CONNECTIONS: Final = "connections"
DEVICE_CONNECTIONS: Final = "device-connections"
ANONYMOUS: Final = "anonymous-connections"
# How connections without an allowed certificate are grouped: by source address.
ANONYMOUS_HOLDER: Final = "address "

Refusal = tuple[str, str]  # reason, and why in words
M = TypeVar("M", bound=Member)


class Admission(Generic[M]):
    """A listener's connections, by holder when `who` is given."""

    __slots__ = ("anonymous", "devices", "limits", "who")

    def __init__(self, limits: Limits, who: Who | None) -> None:
        self.limits = limits
        self.who = who
        self.devices: Shares[M] = Shares(
            limits.max_connections, limits.max_device_connections, any_idle=True
        )
        self.anonymous: Shares[M] = Shares(
            limits.anonymous_connections, limits.anonymous_per_address
        )

    def admit(
        self, conn: M, transport: asyncio.BaseTransport, open_now: Sized
    ) -> tuple[str, Shares[M] | None, Refusal | None]:
        """Holder, the shares it was taken into (None without `who`), or why it is refused.

        `open_now` is every connection of the listener, this one included.
        """
        limits = self.limits
        if self.who is None:
            cap = limits.max_connections
            if cap > 0 and len(open_now) > cap:
                return "", None, (CONNECTIONS, f"more than {cap} connections")
            return "", None, None
        device = self.who(transport)
        if device is None:
            holder, shares = ANONYMOUS_HOLDER + peer_address(transport), self.anonymous
        else:
            holder, shares = device, self.devices
        if shares.admit(holder, conn):
            return holder, shares, None
        if device is None:
            why = "too many connections without an allowed certificate"
            return holder, None, (ANONYMOUS, why)
        if 0 < shares.each <= shares.count(holder):
            why = f"this device holds {limits.max_device_connections} connections already"
            return holder, None, (DEVICE_CONNECTIONS, why)
        return holder, None, (CONNECTIONS, f"{limits.max_connections} connections in use")

    def held(self) -> dict[str, tuple[int, int]]:
        """(open, idle) connections per holder: device IDs, and "address …" for the others."""
        return {**self.devices.counts(), **self.anonymous.counts()}

    @property
    def evicted(self) -> int:
        """Idle connections closed to make room for another holder's, since start."""
        return self.devices.evicted + self.anonymous.evicted
