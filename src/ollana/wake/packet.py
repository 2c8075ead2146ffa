"""The Wake-on-LAN magic packet: pure functions on bytes, no I/O."""

from __future__ import annotations

from typing import Final

from ollana.config import parse_mac

__all__ = ["MAGIC_PACKET_SIZE", "WOL_PORT", "mac_of_packet", "magic_packet", "parse_mac"]

WOL_PORT: Final = 9  # the discard port, where wake-up packets are sent by convention
MAGIC_PACKET_SIZE: Final = 6 + 16 * 6
_SYNC: Final = b"\xff" * 6


def magic_packet(mac: str) -> bytes:
    """Six 0xff bytes, then the MAC address sixteen times (102 bytes)."""
    return _SYNC + bytes.fromhex(parse_mac(mac).replace(":", "")) * 16


def mac_of_packet(data: bytes) -> str | None:
    """The MAC address a magic packet wakes, or None if `data` is not one.

    A packet may carry a SecureOn password after the 102 bytes (4 or 6 more); it is ignored.
    """
    if len(data) not in (MAGIC_PACKET_SIZE, MAGIC_PACKET_SIZE + 4, MAGIC_PACKET_SIZE + 6):
        return None
    target = data[6:12]
    if data[:6] != _SYNC or data[6:MAGIC_PACKET_SIZE] != target * 16:
        return None
    return ":".join(f"{b:02x}" for b in target)
