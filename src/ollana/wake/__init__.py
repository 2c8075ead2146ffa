"""Wake-on-LAN: the magic packet, the servers a client remembers, and waking one on demand."""

from ollana.wake.memory import FILE_NAME, MemoryFileError, RememberedServer, ServerMemory
from ollana.wake.packet import WOL_PORT, mac_of_packet, magic_packet, parse_mac
from ollana.wake.waker import WAKE_GAP, Waker, send_magic_packet, wake_destinations

__all__ = [
    "FILE_NAME",
    "WAKE_GAP",
    "WOL_PORT",
    "MemoryFileError",
    "RememberedServer",
    "ServerMemory",
    "Waker",
    "mac_of_packet",
    "magic_packet",
    "parse_mac",
    "send_magic_packet",
    "wake_destinations",
]
