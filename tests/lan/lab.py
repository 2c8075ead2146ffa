"""ollana on a namespace LAN: each host's Ollama (the emulator), `ollana serve`, pairing, traffic.

Every process runs inside its host with `ip netns exec`, on the default ports (each host has
a port space of its own); timings are shrunk through OLLANA_* variables so that discovery,
probes and forgetting take about a second.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ollana.identity import load_identity
from tests.lan.netns import Host, Network
from tests.lan.procs import NsProcess, RequestLoop
from tests.support.process import ollana_env
from tests.support.waiting import until

__all__ = [
    "ADMIN_PORT",
    "CLIENT_PORT",
    "FAST_TIMINGS",
    "HERE",
    "Cluster",
    "Lab",
    "eventually",
    "short",
]

HERE = Path(__file__).resolve().parent
CLIENT_PORT = 11434
ADMIN_PORT = 11437
# Seconds, not the defaults' tens of seconds: each scenario stays within about 20 s.
FAST_TIMINGS: Mapping[str, str] = {
    "OLLANA_TIMINGS_PROBE_INTERVAL": "0.5",
    "OLLANA_TIMINGS_ANNOUNCE_INTERVAL": "1",
    "OLLANA_TIMINGS_QUERY_INTERVAL": "1",
    "OLLANA_TIMINGS_FORGET_AFTER": "3",
    "OLLANA_WAIT_FOR_SERVER": "5",
    "OLLANA_GRACE": "2",
    "OLLANA_OLLAMA_PARALLEL": "0",  # the emulator runs any number at once: no fair queue
}
TOKENS_PER_SECOND = 100.0  # a 4-token answer takes 40 ms: requests overlap, all servers get some
POLL = 0.1


def short(device_id: str) -> str:
    """What X-Ollana-Server carries: the first 12 digits of the device ID."""
    return device_id[:12]


async def eventually(
    check: Callable[[], object],
    *,
    timeout: float,
    what: str | Callable[[], str],
) -> Any:
    """Poll `check` until it returns something truthy; fail, saying what, at the deadline.

    An exception from `check` counts as "not yet" (a process still starting), and is shown
    if the deadline passes; `what` may be a function, to describe the state at that time.
    """
    return await until(check, what, timeout, not_yet=(Exception,), poll=POLL)


class Lab:
    """The processes of one test on its Network; `close()` stops them all.

    Every ollana gets `timings` (OLLANA_* variables; the shrunk ones unless told otherwise).
    """

    def __init__(self, network: Network, timings: Mapping[str, str] = FAST_TIMINGS) -> None:
        self.net = network
        self.timings = timings
        self.procs: list[NsProcess] = []
        self._count = 0

    def _log(self, host: Host, name: str) -> Path:
        self._count += 1
        return self.net.workdir / "logs" / f"{self._count:02d}-{host.label}-{name}.log"

    async def start(
        self,
        host: Host,
        argv: list[str],
        *,
        name: str,
        home: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready: re.Pattern[str] | None = None,
    ) -> NsProcess:
        """Any process in a host, with ollana's clean environment."""
        extra = {**self.timings, **(env or {})}
        kwargs: dict[str, Any] = {} if ready is None else {"ready": ready}
        proc = await NsProcess.start(
            host, argv, name=name, env=ollana_env(home or host.home, extra),
            log=self._log(host, name), **kwargs,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    async def ollama(
        self, host: Host, *, tokens_per_second: float = TOKENS_PER_SECOND
    ) -> NsProcess:
        """The host's Ollama: the emulator on 127.0.0.1:11434, where Ollama listens."""
        argv = [sys.executable, "-m", "ollana", "emulate", "--listen", "127.0.0.1:11434",
                "--tokens-per-second", str(tokens_per_second),
                "--log-level", "warning"]  # fmt: skip
        return await self.start(host, argv, name="ollama")

    async def ollana(
        self, host: Host, *args: str, home: Path | None = None, env: Mapping[str, str] | None = None
    ) -> NsProcess:
        """`ollana serve ARGS` in a host (auto mode unless ARGS say otherwise)."""
        argv = [sys.executable, "-m", "ollana", "serve", *args]
        return await self.start(host, argv, name="ollana", home=home, env=env)

    async def traffic(self, host: Host, *args: str, port: int = CLIENT_PORT) -> NsProcess:
        """`traffic.py ARGS` against the host's ollana client."""
        argv = [sys.executable, str(HERE / "traffic.py"), args[0],
                f"http://127.0.0.1:{port}", *args[1:]]  # fmt: skip
        return await self.start(host, argv, name=args[0], ready=re.compile('"started"'))

    async def request_loop(
        self, host: Host, *, workers: int = 2, timeout: float = 15.0, port: int = CLIENT_PORT
    ) -> RequestLoop:
        """A request loop on a host, against its ollana client."""
        proc = await self.traffic(
            host, "loop", "--workers", str(workers), "--timeout", str(timeout), port=port
        )
        return RequestLoop(proc, workers)

    # --- identity and pairing ----------------------------------------------------------

    @staticmethod
    def device_id(home: Path) -> str:
        """The device ID of a home (its identity is made on first use)."""
        return load_identity(home).device_id

    async def allow(self, home: Path, device_id: str) -> None:
        """`ollana device allow ID` in a home."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ollana", "device", "--home", str(home), "allow", device_id,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=ollana_env(home),
        )  # fmt: skip
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"ollana device allow failed: {(out + err).decode()}")

    async def pair(self, client: Path, *servers: Path) -> None:
        """Each server allows the client, and the client allows each server."""
        ids = {home: self.device_id(home) for home in (client, *servers)}
        await asyncio.gather(
            *(self.allow(client, ids[s]) for s in servers),
            *(self.allow(s, ids[client]) for s in servers),
        )

    # --- what a client sees ------------------------------------------------------------

    async def status(self, host: Host, port: int = ADMIN_PORT) -> dict[str, Any]:
        """The /status document of the ollana whose admin API is on `port` in `host`."""
        reply = await host.http("GET", port, "/status")
        if reply.status != 200:
            raise RuntimeError(f"/status answered {reply.status}: {reply.body[:200]!r}")
        document: dict[str, Any] = reply.json()
        return document

    async def pool(self, host: Host, port: int = ADMIN_PORT) -> dict[str, dict[str, Any]]:
        """A client's servers by device ID, as its /status shows them."""
        servers = (await self.status(host, port))["servers"]
        return {s["device_id"]: s for s in servers if s.get("device_id")}

    async def healthy(self, host: Host, port: int = ADMIN_PORT) -> set[str]:
        """The device IDs of the servers a client holds healthy."""
        return {d for d, s in (await self.pool(host, port)).items() if s["state"] == "healthy"}

    async def wait_healthy(
        self, host: Host, devices: set[str], *, port: int = ADMIN_PORT, timeout: float = 10.0
    ) -> None:
        """Wait until a client holds every one of `devices` healthy."""

        async def check() -> bool:
            return devices <= await self.healthy(host, port)

        await eventually(check, timeout=timeout, what=f"{host.label} holds healthy {devices}")

    # --- the end -----------------------------------------------------------------------

    def logs(self, lines: int = 25) -> str:
        """The end of every process's log, for a failed test's report."""
        parts = []
        for proc in self.procs:
            parts.append(f"--- {proc.log.name} (pid {proc.pid}, exit {proc.proc.returncode})")
            parts.append(proc.log_tail(lines, skip=" ollana.access: "))
        return "\n".join(parts)

    async def close(self) -> None:
        """Kill every process still running; safe to call twice."""
        procs, self.procs = self.procs, []
        await asyncio.gather(*(p.close() for p in procs), return_exceptions=True)
        self.procs = procs  # kept for logs()


class Cluster:
    """Servers (each with its Ollama) and clients on one LAN, all paired; restartable parts."""

    def __init__(
        self, lab: Lab, servers: list[Host], clients: list[Host], env: Mapping[str, str]
    ) -> None:
        self.lab = lab
        self.servers = servers
        self.clients = clients
        self.env = env
        self.ids = {h.label: lab.device_id(h.home) for h in servers + clients}
        self.ollama: dict[str, NsProcess] = {}
        self.ollana: dict[str, NsProcess] = {}

    @classmethod
    async def start(
        cls,
        lab: Lab,
        servers: list[Host],
        clients: list[Host],
        env: Mapping[str, str] | None = None,
    ) -> Cluster:
        """Pair every client with every server, start everything, wait until clients see all."""
        self = cls(lab, servers, clients, env or {})
        await asyncio.gather(*(lab.pair(c.home, *(s.home for s in servers)) for c in clients))
        for host in servers:
            await self.start_ollama(host)
        for host in servers + clients:
            await self.start_ollana(host)
        for host in clients:
            await lab.wait_healthy(host, {self.ids[s.label] for s in servers})
        return self

    async def start_ollama(self, host: Host) -> NsProcess:
        """(Re)start a server's Ollama."""
        self.ollama[host.label] = await self.lab.ollama(host)
        return self.ollama[host.label]

    async def start_ollana(self, host: Host) -> NsProcess:
        """(Re)start `ollana serve` on a host, in auto mode."""
        self.ollana[host.label] = await self.lab.ollana(host, env=self.env)
        return self.ollana[host.label]

    def short(self, host: Host) -> str:
        """The short device ID a host's answers carry."""
        return short(self.ids[host.label])
