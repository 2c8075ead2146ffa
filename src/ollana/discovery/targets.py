"""Where discovery datagrams go: this host's broadcast addresses plus configured targets."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ollana.config import HostPort, parse_host_port

__all__ = [
    "LIMITED_BROADCAST",
    "Interface",
    "LocalNetworks",
    "TargetSet",
    "broadcast_address",
    "interface_broadcasts",
    "interface_for",
    "interface_networks",
    "interfaces",
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
_SIOCGIFHWADDR = 0x8927  # Linux: sa_data of the ifreq's sockaddr holds the address
_SYSFS_NET = Path("/sys/class/net")
_MAC = re.compile(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}")


def broadcast_address(address: str, prefixlen: int) -> str | None:
    """The directed broadcast address of an IPv4 subnet, or None where it has none."""
    iface = ipaddress.IPv4Interface(f"{address}/{prefixlen}")
    # /31 (RFC 3021) and /32 links have no broadcast address; loopback is not the LAN.
    if prefixlen >= 31 or iface.ip.is_loopback:
        return None
    return str(iface.network.broadcast_address)


def _interface_names() -> list[str] | None:
    """The names of this host's network interfaces; None where they cannot be read."""
    if not _IOCTLS or not hasattr(socket, "if_nameindex"):
        return None
    try:
        return [name for _, name in socket.if_nameindex()]
    except OSError as exc:
        log.debug("cannot list network interfaces: %s", exc)
        return None


def interface_broadcasts() -> tuple[str, ...]:
    """Directed broadcast addresses of every up, non-loopback IPv4 interface of this host.

    Read with ioctls on Linux, macOS and the BSDs (the primary address of each interface);
    elsewhere (Windows) none are known and discovery relies on the limited broadcast and on
    configured targets.
    """
    names = _interface_names()
    if names is None:
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
    names = _interface_names()
    if names is None:
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


@dataclass(frozen=True, slots=True)
class Interface:
    """An up, non-loopback IPv4 interface with a broadcast address."""

    name: str
    address: str
    prefixlen: int
    broadcast: str
    mac: str  # lowercase aa:bb:cc:dd:ee:ff, or "" where it cannot be read

    def reaches(self, address: str) -> bool:
        """Whether `address` is on this interface's subnet (its broadcast included)."""
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            return False
        return ip in ipaddress.IPv4Interface(f"{self.address}/{self.prefixlen}").network


def interfaces() -> tuple[Interface, ...]:
    """Every up, non-loopback IPv4 interface of this host that has a broadcast address,
    with its MAC address (Linux; "" elsewhere, for now)."""
    names = _interface_names()
    if names is None:
        return ()
    found: list[Interface] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            info = _interface(sock, name)
            if info is None or info[0] & (_IFF_BROADCAST | _IFF_LOOPBACK) != _IFF_BROADCAST:
                continue
            _, address, prefixlen = info
            broadcast = broadcast_address(address, prefixlen)
            if broadcast is not None:
                mac = _hardware_address(sock, name)
                found.append(Interface(name, address, prefixlen, broadcast, mac))
    return tuple(found)


def interface_for(address: str, known: tuple[Interface, ...] | None = None) -> Interface | None:
    """The interface datagrams to `address` leave from: the one whose subnet holds it, else
    the one the routing table picks; None where none is known."""
    known = interfaces() if known is None else known
    for iface in known:
        if iface.reaches(address):
            return iface
    source = _route_source(address)
    return next((i for i in known if i.address == source), None)


def _route_source(address: str) -> str | None:
    """The local address the kernel would send from to reach `address` (nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.connect((address, 9))
            return str(sock.getsockname()[0])
        except (OSError, UnicodeError, ValueError):
            return None


def _hardware_address(sock: socket.socket, name: str) -> str:
    """An interface's MAC address (Linux: sysfs, else SIOCGIFHWADDR); "" where unknown."""
    if not sys.platform.startswith("linux"):
        return ""  # macOS and the BSDs keep it in an AF_LINK address getifaddrs(3) lists
    try:
        text = (_SYSFS_NET / name / "address").read_text("ascii").strip().lower()
    except (OSError, UnicodeError):
        text = ""
    if not _MAC.fullmatch(text):
        import fcntl

        try:
            raw = fcntl.ioctl(sock, _SIOCGIFHWADDR, struct.pack(f"{_IFREQ_SIZE}s", name.encode()))
        except OSError:
            return ""
        text = ":".join(f"{b:02x}" for b in raw[18:24])
    return text if _MAC.fullmatch(text) and text != "00:00:00:00:00:00" else ""


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
