"""Before `ollana serve` binds: another ollana on this machine, and the addresses it holds.

A second `ollana serve` beside a running one would fail on a taken port with a bare
"address in use", or, on other ports, put a second server in front of the same Ollama.
So before binding, the admin APIs on this machine are asked who runs (their /status says
mode and pid), and each address the new process needs is tried: the first one taken is a
one-line error naming its holder and the flag that moves it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from ollana.config import DEFAULT_ADMIN_PORT, HostPort, Settings
from ollana.http.listener import ListenError
from ollana.local_ollama import who_listens

__all__ = [
    "ASK_TIMEOUT",
    "MAX_COMMAND",
    "Running",
    "ask_admin",
    "check_before_start",
    "holding_process",
]

ASK_TIMEOUT: Final = 1.0  # a loopback admin API answers in milliseconds
_MAX_STATUS: Final = 1 << 20
MAX_COMMAND: Final = 80  # of a holder's command line, in the one-line error


@dataclass(frozen=True, slots=True)
class Running:
    """Another ollana, as its admin API describes itself."""

    mode: str
    pid: int | None
    listen: HostPort | None
    admin: HostPort
    ollama: str | None  # server mode: the Ollama it serves

    def __str__(self) -> str:
        pid = f", pid {self.pid}" if self.pid is not None else ""
        return f"ollana in {self.mode} mode ({_clean(self.listen)}{pid}, admin API {self.admin})"

    def holds(self, address: HostPort) -> bool:
        """Whether it is what holds this port (its endpoint or its admin API)."""
        ports = {self.admin.port} | ({self.listen.port} if self.listen else set())
        return address.port in ports


async def ask_admin(address: HostPort, timeout: float = ASK_TIMEOUT) -> Running | None:
    """The ollana whose admin API answers at `address`, or None (nothing, or not ollana)."""
    target = HostPort(address.connect_host, address.port)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(f"http://{target}/status", headers={"Accept": "application/json"}) as r,
        ):
            raw = await r.content.read(_MAX_STATUS) if r.status == 200 else b""
        document = json.loads(raw) if raw else None
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
        return None
    if not isinstance(document, dict) or "schema" not in document:
        return None
    pid = document.get("pid")
    ollama = document.get("ollama")
    return Running(
        mode=str(document.get("mode", "?")),
        pid=pid if isinstance(pid, int) else None,
        listen=_host_port(document.get("listen")),
        admin=target,
        ollama=str(ollama.get("url")) if isinstance(ollama, dict) else None,
    )


async def check_before_start(settings: Settings, mode: str) -> None:
    """Raise ListenError if another ollana here conflicts or an address this mode needs is taken.

    Checked in the order a user fixes them: a second server for the same Ollama, then the
    mode's endpoint (--listen), then the admin API (--admin-listen).
    """
    server = mode == "server"
    admins = [HostPort("127.0.0.1", DEFAULT_ADMIN_PORT)]
    if settings.admin_listen is not None and settings.admin_listen.port:
        admins.insert(0, settings.admin_listen)
    others: list[Running] = []
    for admin in dict.fromkeys(HostPort(a.connect_host, a.port) for a in admins):
        if (found := await ask_admin(admin)) is not None:
            others.append(found)
    # Auto mode picked server mode: most likely `ollana serve` run twice. Asked for by name
    # (--mode server), a second server in front of one Ollama is meant (another identity).
    auto = settings.mode == "auto" and not settings.force_server_mode
    for other in others:
        if auto and server and other.mode == "server" and _same_url(other.ollama, settings.ollama):
            raise ListenError(
                errno.EADDRINUSE,
                f"another {other} already serves the Ollama at {settings.ollama}:"
                " stop it first, run this one with --mode client, or with --mode server"
                " to serve it twice",
            )
    needs = [(settings.listen_address(server), "the listen address", "--listen HOST:PORT")]
    if settings.admin_listen is not None:
        needs.append(
            (settings.admin_listen, "the admin API address", "--admin-listen HOST:PORT|off")
        )
    for address, what, flag in needs:
        if not address.port or not _taken(address):
            continue
        holder = next((o for o in others if o.holds(address)), None)
        who = f" by another {holder}" if holder else await who_listens(address)
        if holder is None and (process := holding_process(address.port)) is not None:
            pid, command = process
            if who == " by another program" and "ollana" in command:
                who = " by another ollana"
            who += f" (pid {pid}: {command})"
        raise ListenError(
            errno.EADDRINUSE,
            f"{what} {address} is already in use{who}; stop that or choose another with {flag}",
        )


def _taken(address: HostPort) -> bool:
    """Whether binding `address` fails because something listens there (other errors: no)."""
    try:
        infos = socket.getaddrinfo(
            address.host or None, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError):
        return False  # the real bind reports it
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As the listener binds (aiohttp sets SO_REUSEADDR on POSIX), so that a port in
            # TIME_WAIT is not taken for a port in use.
            if os.name == "posix":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def holding_process(port: int) -> tuple[int, str] | None:
    """Linux, best effort: the pid and command line of a process listening on a TCP port."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local address "HEX_IP:HEX_PORT", state 0A is LISTEN, inode is field 9
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1][-4:], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    raw = (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip()
                    command = "".join(
                        c if c.isprintable() else "?" for c in raw.decode(errors="replace")
                    )
                    if len(command) > MAX_COMMAND:
                        command = command[: MAX_COMMAND - 1] + "…"
                    return int(proc.name), command or "?"
    return None


def _host_port(value: object) -> HostPort | None:
    text = str(value) if value is not None else ""
    host, colon, port = text.rpartition(":")
    with contextlib.suppress(ValueError):
        if colon:
            return HostPort(host.strip("[]"), int(port))
    return None


def _clean(address: HostPort | None) -> str:
    return f"on {address}" if address is not None else "address unknown"


def _same_url(a: str | None, b: str) -> bool:
    return a is not None and a.rstrip("/") == b.rstrip("/")
