"""Where discovery datagrams go: this host's broadcast addresses plus configured targets."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ollana.config import HostPort, parse_host_port

__all__ = [
    "LIMITED_BROADCAST",
    "LocalNetworks",
    "TargetSet",
    "broadcast_address",
    "interface_broadcasts",
    "interface_networks",
    "parse_target",
    "resolve",
]

log = logging.getLogger(__name__)

LIMITED_BROADCAST = "255.255.255.255"

_IFF_UP = 0x1
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8
# struct ifreq: a 16-byte name, then a union whose sockaddr_in holds the IPv4 address at
# byte 4 on both Linux (family:2, port:2) and BSD (len:1, family:1, port:2).
_IFREQ_SIZE = 40
_ADDR_OFFSET = 16 + 4
# SIOCGIFFLAGS, SIOCGIFADDR, SIOCGIFNETMASK. The broadcast is computed from address and mask
# rather than read with SIOCGIFBRDADDR: `ip addr add A/N` leaves that 0.0.0.0 while the
# kernel still routes the subnet's broadcast address.
if sys.platform.startswith("linux"):
    _IOCTLS = (0x8913, 0x8915, 0x891B)
elif sys.platform == "darwin" or "bsd" in sys.platform:
    _IOCTLS = (0xC0206911, 0xC0206921, 0xC0206925)
else:
    _IOCTLS = ()


def broadcast_address(address: str, prefixlen: int) -> str | None:
    """The directed broadcast address of an IPv4 subnet, or None where it has none."""
    iface = ipaddress.IPv4Interface(f"{address}/{prefixlen}")
    # /31 (RFC 3021) and /32 links have no broadcast address; loopback is not the LAN.
    if prefixlen >= 31 or iface.ip.is_loopback:
        return None
    return str(iface.network.broadcast_address)


def interface_broadcasts() -> tuple[str, ...]:
    """Directed broadcast addresses of every up, non-loopback IPv4 interface of this host.

    Read with ioctls on Linux, macOS and the BSDs (the primary address of each interface);
    elsewhere (Windows) none are known and discovery relies on the limited broadcast and on
    configured targets.
    """
    if not _IOCTLS or not hasattr(socket, "if_nameindex"):
        return ()
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError as exc:
        log.debug("cannot list network interfaces: %s", exc)
        return ()
    found: list[str] = []
    for flags, address, prefixlen in _interfaces(names):
        if flags & (_IFF_BROADCAST | _IFF_LOOPBACK) != _IFF_BROADCAST:
            continue
        broadcast = broadcast_address(address, prefixlen)
        if broadcast is not None and broadcast not in found:
            found.append(broadcast)
    return tuple(found)


def interface_networks() -> tuple[ipaddress.IPv4Network, ...] | None:
    """The IPv4 subnets of every up interface, loopback included; None where unknown."""
    if not _IOCTLS or not hasattr(socket, "if_nameindex"):
        return None
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError as exc:
        log.debug("cannot list network interfaces: %s", exc)
        return None
    networks = (
        ipaddress.IPv4Interface(f"{address}/{prefixlen}").network
        for _, address, prefixlen in _interfaces(names)
    )
    return tuple(dict.fromkeys(networks))


def _interfaces(names: Iterable[str]) -> Iterator[tuple[int, str, int]]:
    """(flags, address, prefix length) of each up interface with an IPv4 address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            found = _interface(sock, name)
            if found is not None:
                yield found


def _interface(sock: socket.socket, name: str) -> tuple[int, str, int] | None:
    import fcntl

    get_flags, get_address, get_netmask = _IOCTLS
    request = struct.pack(f"{_IFREQ_SIZE}s", name.encode()[:15])
    try:
        flags = struct.unpack_from("H", fcntl.ioctl(sock, get_flags, request), 16)[0]
        if not flags & _IFF_UP:
            return None
        address = fcntl.ioctl(sock, get_address, request)[_ADDR_OFFSET : _ADDR_OFFSET + 4]
        netmask = fcntl.ioctl(sock, get_netmask, request)[_ADDR_OFFSET : _ADDR_OFFSET + 4]
    except OSError:  # no IPv4 address, or the interface went away meanwhile
        return None
    prefixlen = bin(int.from_bytes(netmask, "big")).count("1")
    return int(flags), socket.inet_ntoa(address), prefixlen


class LocalNetworks:
    """Who discovery answers: hosts on a directly connected subnet, loopback, configured targets.

    An answer to a query whose source address is forged goes to the forged address: answering
    only neighbours keeps a querier from turning a server against a host elsewhere.
    """

    def __init__(self) -> None:
        self._networks: tuple[ipaddress.IPv4Network, ...] | None = None
        self._targets: frozenset[str] = frozenset()

    def refresh(self, targets: Iterable[str] = ()) -> None:
        """Read the interfaces again; targets: configured (resolved) addresses, answered too."""
        self._networks = interface_networks()
        self._targets = frozenset(targets)

    def answerable(self, host: str) -> bool:
        """Whether a datagram from host may be answered."""
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            return False
        if address.is_loopback or host in self._targets:
            return True
        if self._networks is None:
            return True  # this platform cannot list its subnets: as before, answer
        return any(address in network for network in self._networks)


def parse_target(text: str, port: int) -> HostPort:
    """A configured target: IPv4 address or host name, with an optional :PORT."""
    try:
        target = parse_host_port(text, port)
    except ValueError as exc:
        raise ValueError(f"discovery target {text!r}: {exc}") from None
    if target.host in ("", "0.0.0.0") or ":" in target.host:
        raise ValueError(f"discovery target {text!r}: expected an IPv4 address or host name")
    if target.port == 0:
        raise ValueError(f"discovery target {text!r}: port 0 is not a port one can send to")
    return target


@dataclass(frozen=True, slots=True)
class TargetSet:
    """The targets of one discovery port; calling it lists them as of now.

    Interfaces are read again on every call, so that a laptop that joins a network starts
    reaching it without a restart. Host names are resolved by the sender, when it sends.
    """

    port: int
    configured: tuple[HostPort, ...] = ()
    interfaces: bool = True
    limited: bool = True

    @classmethod
    def from_settings(cls, targets: Iterable[str], port: int) -> TargetSet:
        """Targets from --discovery-target values; ValueError names a bad one."""
        return cls(port, tuple(parse_target(text, port) for text in targets))

    def __call__(self) -> tuple[HostPort, ...]:
        """Directed broadcasts, then 255.255.255.255, then the configured targets."""
        hosts = list(interface_broadcasts()) if self.interfaces else []
        if self.limited:
            hosts.append(LIMITED_BROADCAST)
        found = [HostPort(host, self.port) for host in hosts]
        found += (target for target in self.configured if target not in found)
        return tuple(found)


async def resolve(
    targets: Iterable[HostPort],
) -> tuple[tuple[tuple[str, int], ...], list[tuple[HostPort, Exception]]]:
    """The IPv4 (address, port) pairs of targets, and the targets that failed to resolve."""
    loop = asyncio.get_running_loop()
    found: list[tuple[str, int]] = []
    failed: list[tuple[HostPort, Exception]] = []
    for target in targets:
        try:
            infos = await loop.getaddrinfo(
                target.host, target.port, family=socket.AF_INET, type=socket.SOCK_DGRAM
            )
        except (OSError, UnicodeError) as exc:  # gaierror; UnicodeError: not a valid IDNA name
            failed.append((target, exc))
            continue
        found += ((str(info[4][0]), int(info[4][1])) for info in infos)
    return tuple(dict.fromkeys(found)), failed
