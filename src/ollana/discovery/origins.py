"""Where each server's announces came from, so that a goodbye in its name can be checked.

A goodbye removes a server from every client at once, and a datagram's fields are only
what its sender claims: anyone on the LAN can name another device in one. A goodbye is
taken as the device's own only when it comes from an address that device announced from,
names the run (instance) that announced, and is not older, by the sender's clock, than that
run's last announce (a replayed one is). Anything else is dropped as forged. The same
goodbye heard again (it goes to every broadcast address, so it arrives more than once) is a
copy, not a forgery. Pure: no I/O.

This is all a peer can check of a device it has not paired: paired devices sign their
datagrams (see authority.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from ollana.discovery.protocol import Announce, Goodbye

__all__ = ["MAX_ADDRESSES", "MAX_DEVICES", "Origins"]

MAX_DEVICES: Final = 1024  # devices remembered, least recently announced forgotten first
MAX_ADDRESSES: Final = 8  # a server on several networks announces from each of them


@dataclass(slots=True)
class _Origin:
    instance: str
    ts: float
    addresses: list[str] = field(default_factory=list)
    farewell: float | None = None  # the ts of the goodbye accepted for this run


class Origins:
    """The announcing addresses, run and clock of each device heard announcing."""

    def __init__(self, max_devices: int = MAX_DEVICES) -> None:
        self._max = max_devices
        self._devices: OrderedDict[str, _Origin] = OrderedDict()

    def __len__(self) -> int:
        return len(self._devices)

    def announced(self, msg: Announce, host: str) -> None:
        """Remember an announce heard from host."""
        origin = self._devices.pop(msg.device, None)
        if origin is None or origin.instance != msg.instance:
            origin = _Origin(msg.instance, msg.ts)  # a new run starts afresh
        origin.ts = max(origin.ts, msg.ts)
        if origin.farewell is not None and msg.ts > origin.farewell:
            origin.farewell = None  # back (a server whose Ollama came back up)
        if host not in origin.addresses:
            origin.addresses.append(host)
            del origin.addresses[:-MAX_ADDRESSES]
        self._devices[msg.device] = origin
        if len(self._devices) > self._max:
            self._devices.popitem(last=False)

    def genuine(self, msg: Goodbye, host: str) -> bool:
        """Whether a goodbye heard from host can be the device's own; forgets it if so."""
        origin = self._devices.get(msg.device)
        if (
            origin is None
            or origin.instance != msg.instance
            or host not in origin.addresses
            or msg.ts < origin.ts
            or origin.farewell is not None  # the same goodbye again is a copy or a replay
        ):
            return False
        origin.farewell = origin.ts = msg.ts
        return True

    def repeated(self, msg: Goodbye, host: str) -> bool:
        """Whether a goodbye is another copy of the one accepted last for its run."""
        origin = self._devices.get(msg.device)
        return (
            origin is not None
            and origin.instance == msg.instance
            and host in origin.addresses
            and origin.farewell == msg.ts
        )
