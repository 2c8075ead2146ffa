"""The servers a client has used, remembered across restarts so that a sleeping one can be woken.

One JSON file in the data directory (`remembered-servers.json`, 0600), replaced atomically.
A file that cannot be read is a `MemoryFileError` naming it; it is never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ollana.config import parse_mac
from ollana.identity.files import atomic_write
from ollana.identity.ids import MIN_PIN_LENGTH, DeviceIdError, parse_device_id, short_device_id

__all__ = [
    "FILE_NAME",
    "MAX_ADDRESSES",
    "MAX_MODELS",
    "MAX_SERVERS",
    "MemoryFileError",
    "RememberedServer",
    "ServerMemory",
]

FILE_NAME: Final = "remembered-servers.json"
FORMAT: Final = 1
MAX_SERVERS: Final = 256  # the least recently seen are forgotten beyond this
MAX_ADDRESSES: Final = 4  # per server, the most recent first
MAX_MODELS: Final = 1024  # per server
_DEVICE = re.compile(r"[0-9a-f]{64}")
_TEXT_MAX = 300


class MemoryFileError(Exception):
    """The remembered-servers file cannot be read or written; the message names it."""


@dataclass(frozen=True, slots=True)
class RememberedServer:
    """A server this client has used: where it was, how to wake it, what it had."""

    device_id: str
    name: str = ""
    addresses: tuple[str, ...] = ()  # HOST:PORT, the most recent first
    mac: str = ""  # lowercase aa:bb:cc:dd:ee:ff, "" while none is known
    models: tuple[str, ...] = ()
    last_seen: float = 0.0  # time.time() when it last answered
    last_woken: float | None = None  # time.time() of the last wake-up packet sent to it

    @property
    def label(self) -> str:
        """Its name and short ID, for messages."""
        short = short_device_id(self.device_id)
        return f"{self.name} ({short})" if self.name else short


class ServerMemory:
    """The remembered servers of one data directory; `save()` writes them if they changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._servers: dict[str, RememberedServer] = {}
        self.dirty = False

    @classmethod
    def in_home(cls, home: Path) -> ServerMemory:
        """The memory kept in a data directory."""
        return cls(home / FILE_NAME)

    def __iter__(self) -> Iterator[RememberedServer]:
        return iter(sorted(self._servers.values(), key=lambda s: -s.last_seen))

    def __len__(self) -> int:
        return len(self._servers)

    def get(self, device_id: str) -> RememberedServer | None:
        """The remembered server with this device ID, if any."""
        return self._servers.get(device_id)

    # --- reading -------------------------------------------------------------------------

    def load(self) -> None:
        """Read the file (a missing one is an empty memory); MemoryFileError if unreadable."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._servers, self.dirty = {}, False
            return
        except OSError as exc:
            raise MemoryFileError(f"{self.path}: cannot read remembered servers: {exc}") from None
        self._servers, self.dirty = self._parse(data), False

    def _parse(self, data: bytes) -> dict[str, RememberedServer]:
        try:
            document = json.loads(data.decode("utf-8"))
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise ValueError(f"not a format {FORMAT} document")
            entries = document.get("servers")
            if not isinstance(entries, list):
                raise ValueError("'servers' is not a list")
            servers = [_entry(item) for item in entries]
        except (ValueError, TypeError, RecursionError) as exc:  # JSON and Unicode errors too
            raise MemoryFileError(
                f"{self.path}: not a remembered-servers file ({exc}); move it away and ollana "
                "starts a new one"
            ) from None
        return {s.device_id: s for s in servers[:MAX_SERVERS]}

    def find(self, text: str) -> RememberedServer:
        """The one server that `text` names: a device ID prefix, or a name; LookupError."""
        wanted = text.strip()
        matches = [s for s in self._servers.values() if s.name and s.name == wanted]
        if not matches:
            try:
                # Choosing a server to wake grants nothing: a pin's length of prefix will do.
                prefix = parse_device_id(wanted, min_digits=MIN_PIN_LENGTH)
            except DeviceIdError:
                prefix = ""
            if prefix:
                matches = [s for s in self._servers.values() if s.device_id.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise LookupError(f"no remembered server is named or has an ID starting {wanted!r}")
        labels = ", ".join(s.label for s in matches)
        raise LookupError(f"{wanted!r} names several remembered servers: {labels}")

    # --- changing ------------------------------------------------------------------------

    def seen(
        self,
        device_id: str,
        *,
        address: str | None = None,
        mac: str | None = None,
        name: str | None = None,
        models: Iterable[str] | None = None,
        when: float | None = None,
    ) -> RememberedServer:
        """A server answered (or announced): remember what is new about it."""
        old = self._servers.get(device_id) or RememberedServer(device_id)
        addresses = old.addresses
        if address and (not addresses or addresses[0] != address):
            addresses = (address, *(a for a in addresses if a != address))[:MAX_ADDRESSES]
        new = dataclasses.replace(
            old,
            addresses=addresses,
            mac=mac or old.mac,
            name=old.name if name is None else name,
            models=old.models if models is None else tuple(sorted(models))[:MAX_MODELS],
            last_seen=time.time() if when is None else when,
        )
        self._put(new, changed=dataclasses.replace(new, last_seen=old.last_seen) != old)
        return new

    def woken(self, device_id: str, when: float | None = None) -> None:
        """A wake-up packet was sent to this server."""
        old = self._servers.get(device_id)
        if old is not None:
            stamp = time.time() if when is None else when
            self._put(dataclasses.replace(old, last_woken=stamp), changed=True)

    def _put(self, server: RememberedServer, *, changed: bool) -> None:
        self._servers[server.device_id] = server
        if len(self._servers) > MAX_SERVERS:
            oldest = min(self._servers.values(), key=lambda s: s.last_seen)
            del self._servers[oldest.device_id]
        # A later last_seen alone is worth a write only now and then (see Waker).
        self.dirty = self.dirty or changed

    def touched(self) -> None:
        """Mark the memory as worth writing (last-seen times moved on)."""
        self.dirty = True

    def save(self) -> None:
        """Write the memory if it changed; MemoryFileError if it cannot be written.

        The file on disk may hold a later wake-up time (`ollana wake` beside a running
        client): the later one is kept.
        """
        if not self.dirty:
            return
        try:
            on_disk = self._parse(self.path.read_bytes())
        except (OSError, MemoryFileError):
            on_disk = {}
        for device_id, server in list(self._servers.items()):
            other = on_disk.get(device_id)
            if other is not None and (other.last_woken or 0) > (server.last_woken or 0):
                self._servers[device_id] = dataclasses.replace(server, last_woken=other.last_woken)
        document = {"format": FORMAT, "servers": [_to_json(s) for s in self]}
        data = (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode()
        try:
            atomic_write(self.path, data)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise MemoryFileError(f"{self.path}: cannot write remembered servers: {exc}") from None
        self.dirty = False


def _to_json(server: RememberedServer) -> dict[str, Any]:
    return {
        "device": server.device_id,
        "name": server.name,
        "addresses": list(server.addresses),
        "mac": server.mac,
        "models": list(server.models),
        "last_seen": server.last_seen,
        "last_woken": server.last_woken,
    }


def _entry(item: object) -> RememberedServer:
    """One server of the file, checked field by field (the file may have been edited)."""
    if not isinstance(item, dict):
        raise ValueError("a server entry is not an object")
    device = item.get("device")
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ValueError(f"device {device!r:.80} is not a device ID")
    mac = item.get("mac", "")
    if mac:
        mac = parse_mac(mac)
    return RememberedServer(
        device_id=device,
        name=_text(item.get("name", ""), "name"),
        addresses=tuple(_text(a, "address") for a in _list(item, "addresses"))[:MAX_ADDRESSES],
        mac=mac,
        models=tuple(_text(m, "model") for m in _list(item, "models"))[:MAX_MODELS],
        last_seen=_time(item.get("last_seen", 0.0), "last_seen"),
        last_woken=None
        if item.get("last_woken") is None
        else _time(item["last_woken"], "last_woken"),
    )


def _list(item: dict[str, Any], key: str) -> list[Any]:
    value = item.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key} is not a list")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > _TEXT_MAX:
        raise ValueError(f"{what} {value!r:.80} is not a short string")
    return value


def _time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} {value!r:.40} is not a time")
    return float(value)
