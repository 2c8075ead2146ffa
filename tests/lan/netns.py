"""A LAN made of Linux network namespaces: hosts joined by bridges, built and removed per test.

Layout of one `Network`:

- each LAN is a bridge ``br0`` inside a namespace of its own (the "switch"), with a random
  private /24 (10.77.K.0/24), so that nothing is ever created in the machine's own namespace;
- each host is a namespace with ``lo`` up and one veth pair per LAN it joins: ``ethN`` in the
  host, ``pN-LABEL`` on the switch; with or without a default route;
- cutting a host's link sets its switch port down: to every other host it vanishes without
  a FIN or a reset, as a machine that loses power does.

Namespace names are ``ollana-lan-<pid>-<token>-<name>``: unique per run, and a later run can
tell that the process that made them is gone and sweep them (`sweep_stale`). Interfaces are
created directly inside their namespaces, so their names never meet another run's.

Code in this process reaches a host's loopback through `Host.http`, which runs on a thread
that entered the host's namespace (setns), so polling costs no process start.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PREFIX",
    "Host",
    "Interface",
    "Lan",
    "Network",
    "Reply",
    "sweep_stale",
    "unavailable_reason",
]

PREFIX = "ollana-lan-"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
IP_TIMEOUT = 20.0
HTTP_TIMEOUT = 5.0
GATEWAY = 254  # the default route's next hop, when a host has one: nobody answers there
_STALE = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")
_live: set[Network] = set()


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS…`; raises with its stderr when it fails and check is set."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    name = f"{PREFIX}{os.getpid()}-probe"
    try:
        made = ip("netns", "add", name, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` cannot run: {exc}"
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    ip("netns", "del", name, check=False)
    return None


def _namespaces() -> list[str]:
    done = ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_namespace(name: str) -> None:
    """Kill what still runs in a namespace of ours, then delete it."""
    pids = ip("netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", name, check=False)


def sweep_stale() -> list[str]:
    """Delete namespaces left by runs whose process is gone; returns their names."""
    swept = []
    for name in _namespaces():
        match = _STALE.match(name)
        if match and not _alive(int(match[1])):
            _remove_namespace(name)
            swept.append(name)
    return swept


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer read inside a namespace."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def _enter(netns: str) -> None:
    """Move the calling thread into a network namespace (sockets it makes live there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes | None,
    headers: Mapping[str, str],
    timeout: float,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers))
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Subnet:
    """A /24: 10.77.K.0/24."""

    prefix: str

    def address(self, index: int) -> str:
        """The address of host number `index` on it."""
        return f"{self.prefix}.{index}"

    @property
    def broadcast(self) -> str:
        """Its directed broadcast address."""
        return f"{self.prefix}.255"


@dataclass(slots=True)
class Lan:
    """One broadcast domain: a bridge in a switch namespace, and a /24."""

    name: str
    switch: str
    subnet: Subnet
    ports: int = 0


@dataclass(frozen=True, slots=True)
class Interface:
    """A host's link to one LAN."""

    name: str  # inside the host: eth0, eth1…
    port: str  # its peer on the switch
    lan: Lan
    address: str


@dataclass(slots=True)
class Host:
    """A machine on the LAN(s): a network namespace and a home directory for ollana."""

    label: str
    netns: str
    home: Path
    interfaces: list[Interface] = field(default_factory=list)
    _executor: ThreadPoolExecutor | None = None

    @property
    def address(self) -> str:
        """Its address on its first LAN."""
        return self.interfaces[0].address

    def argv(self, *argv: str) -> list[str]:
        """A command line that runs `argv` inside this host."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def _interface(self, lan: Lan | None) -> Interface:
        if lan is None:
            return self.interfaces[0]
        return next(i for i in self.interfaces if i.lan is lan)

    def cut(self, lan: Lan | None = None) -> None:
        """Pull the cable: the host's switch port goes down; it hears and sends nothing there."""
        iface = self._interface(lan)
        ip("-n", iface.lan.switch, "link", "set", iface.port, "down")

    def restore(self, lan: Lan | None = None) -> None:
        """Plug the cable back in."""
        iface = self._interface(lan)
        ip("-n", iface.lan.switch, "link", "set", iface.port, "up")

    def routes(self) -> str:
        """`ip route` inside the host."""
        return ip("-n", self.netns, "route").stdout

    async def http(
        self,
        method: str,
        port: int,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> Reply:
        """One HTTP request to 127.0.0.1:port inside this host."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=2, initializer=_enter, initargs=(self.netns,)
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, _request, port, method, path, body, headers or {}, timeout
        )

    def close(self) -> None:
        """Stop the threads that live in this host's namespace."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class Network:
    """LANs and hosts of one test; `close()` (also at exit) removes every namespace."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.token = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.lans: list[Lan] = []
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._octets: set[int] = set()
        _live.add(self)

    def _namespace(self, suffix: str) -> str:
        name = f"{PREFIX}{self.token}-{suffix}"
        # Recorded first, so that a half-made namespace is removed too.
        self._namespaces.append(name)
        ip("netns", "add", name)
        return name

    def lan(self) -> Lan:
        """A new LAN with a random 10.77.K.0/24 of its own."""
        octet = random.choice([k for k in range(1, 255) if k not in self._octets])
        self._octets.add(octet)
        index = len(self.lans)
        switch = self._namespace(f"sw{index}")
        ip("-n", switch, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        ip("-n", switch, "link", "set", "br0", "up")
        lan = Lan(f"lan{index}", switch, Subnet(f"10.77.{octet}"))
        self.lans.append(lan)
        return lan

    def host(self, label: str, *lans: Lan, default_route: bool = False) -> Host:
        """A host on the given LANs (eth0 on the first), with or without a default route."""
        if not lans:
            raise ValueError("a host joins at least one LAN")
        if label in self.hosts or not re.fullmatch(r"[a-z][a-z0-9]{0,9}", label):
            raise ValueError(f"bad or duplicate host label {label!r}")
        netns = self._namespace(label)
        home = self.workdir / label
        home.mkdir(parents=True, exist_ok=True)
        host = Host(label, netns, home)
        self.hosts[label] = host
        ip("-n", netns, "link", "set", "lo", "up")
        for index, lan in enumerate(lans):
            lan.ports += 1
            iface = Interface(
                f"eth{index}", f"p{index}-{label}", lan, lan.subnet.address(9 + lan.ports)
            )
            ip("-n", netns, "link", "add", iface.name, "type", "veth",
               "peer", "name", iface.port, "netns", lan.switch)  # fmt: skip
            ip("-n", lan.switch, "link", "set", iface.port, "master", "br0", "up")
            ip("-n", netns, "addr", "add", f"{iface.address}/24", "dev", iface.name)
            ip("-n", netns, "link", "set", iface.name, "up")
            host.interfaces.append(iface)
        if default_route:
            gateway = lans[0].subnet.address(GATEWAY)
            ip("-n", netns, "route", "add", "default", "via", gateway)
        return host

    def close(self) -> None:
        """Kill what runs in our namespaces and delete them; safe to call twice."""
        for host in self.hosts.values():
            host.close()
        names, self._namespaces = self._namespaces, []
        for name in reversed(names):
            _remove_namespace(name)
        _live.discard(self)


@atexit.register
def _close_all() -> None:
    # An interrupted run still removes what it made; a killed one is swept by the next.
    for network in list(_live):
        network.close()
