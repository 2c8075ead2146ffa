"""Failover on loopback processes, with ollana's default timings.

- discovery: from a server's start (spawn, and its "listening" line) to a running client
  routing a request to it; the server listening on 127.0.0.1 only, and on every address;
- SIGKILL: failed requests when one of two servers is killed under a request loop;
- SIGSTOP: the preferred one of two servers stops answering without a FIN or RST (its
  process is stopped, its sockets stay open): the time until the client marks it suspect
  and down (its admin /status), and how many requests were left hanging on it.

Every process shares one discovery port (held by this process for the whole run) and sends
to the loopback broadcast address.

    python -m bench.failover [--samples 5] [--kill-trials 5] [--stop-trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import median, table, write_results
from bench.nginx import free_port
from bench.runner import main, workdir
from bench.setups import Child, child_env, emulator

__all__ = ["run"]

MODEL = "llama3.2"
LOOPBACK_BROADCAST = "127.255.255.255"
POLL = 0.01  # seconds between discovery polls: the resolution of that figure
KILL_BEFORE = 1.0  # seconds of load before the kill
KILL_AFTER = 3.0  # and after it
STOP_WINDOW = 10.0  # seconds a server stays stopped
OPEN_LOOP_GAP = 0.02  # a new request every 20 ms while a server is stopped
HUNG = 8.0  # a request that takes this long counts as hanging
LATE = 1.0  # an answer that took longer than this waited on the stopped server
WAIT = 60.0  # never wait longer than this for anything


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--samples", type=int, default=5, help="server starts per variant")
    parser.add_argument("--kill-trials", type=int, default=5, help="SIGKILLs under load")
    parser.add_argument("--stop-trials", type=int, default=3, help="SIGSTOPs under load")
    parser.add_argument("--workers", type=int, default=4, help="request loop concurrency")


# --- the cluster ------------------------------------------------------------------------------


def reserve_discovery_port() -> socket.socket:
    """A shared UDP socket on a free port, held so that no other run picks the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("0.0.0.0", 0))
    return sock


@dataclass(slots=True)
class Lan:
    """Homes, the discovery port and the emulator every server fronts."""

    tmp: Path
    discovery_port: int
    ollama_url: str
    children: list[Child] = field(default_factory=list)
    _logs: itertools.count[int] = field(default_factory=itertools.count)

    def home(self, name: str) -> Path:
        """A member's data dir."""
        return self.tmp / name

    def device_id(self, name: str) -> str:
        """A member's device ID."""
        from ollana.identity import load_identity

        return load_identity(self.home(name)).device_id

    def log(self, name: str) -> Path:
        """A fresh log file for one run of a member."""
        return self.tmp / f"{name}-{next(self._logs)}.log"

    async def start(self, name: str, mode: str, *args: str, listen: str = "127.0.0.1:0") -> Child:
        """`ollana serve` as a member of this LAN."""
        argv = [
            "serve",
            "--mode",
            mode,
            "--listen",
            listen,
            "--log-level",
            "info",
            "--discovery-port",
            str(self.discovery_port),
            "--discovery-target",
            LOOPBACK_BROADCAST,
            *args,
        ]
        if mode == "server":
            argv += ["--ollama", self.ollama_url]
        if "--admin-listen" not in args:
            argv += ["--admin-listen", "off"]
        env = child_env(self.home(name))
        env["OLLANA_WAIT_FOR_SERVER"] = "0"  # a client answers 503 at once, not after 5 s
        child = await Child.start(name, argv, self.log(name), env)
        self.children.append(child)
        return child

    async def close(self) -> None:
        """Stop every member still running."""
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGCONT)
            await child.stop()


@contextlib.asynccontextmanager
async def lan(tmp: Path, names: tuple[str, ...]) -> AsyncIterator[Lan]:
    """The emulator, paired homes and the discovery port; members are started by the caller."""
    from ollana.demo import pair

    pair(*(tmp / n for n in names))
    held = reserve_discovery_port()
    try:
        async with emulator(tmp) as ollama:
            running = Lan(tmp, held.getsockname()[1], ollama.url)
            try:
                yield running
            finally:
                await running.close()
    finally:
        held.close()


def client_url(child: Child) -> str:
    return child.url.rstrip("/")


async def ask(http: aiohttp.ClientSession, url: str, prompt: str) -> tuple[int, str | None]:
    """One small generation: its status and the server that answered (None on an error)."""
    body = {"model": MODEL, "prompt": prompt, "stream": False, "options": {"num_predict": 2}}
    try:
        async with http.post(url + "/api/generate", json=body) as response:
            await response.read()
            return response.status, response.headers.get("X-Ollana-Server")
    except (aiohttp.ClientError, TimeoutError):
        return 0, None


async def until_routed(http: aiohttp.ClientSession, url: str, device_id: str) -> float:
    """Poll the client until a request is answered by this server; the monotonic time."""
    deadline = time.monotonic() + WAIT
    for n in itertools.count():
        status, label = await ask(http, url, f"poll {n}")
        if status == 200 and label and device_id.startswith(label):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError("the client never routed to the server")
        await asyncio.sleep(POLL)
    raise AssertionError("unreachable")


# --- discovery --------------------------------------------------------------------------------


async def discovery(tmp: Path, samples: int) -> list[dict[str, Any]]:
    """Server start → routed, for a loopback-only server and one on every address."""
    rows = []
    async with lan(tmp, ("client", "server")) as net, aiohttp.ClientSession() as http:
        client = await net.start("client", "client")
        server_id = net.device_id("server")
        for listen in ("127.0.0.1:0", "0.0.0.0:0"):
            from_spawn, from_listening = [], []
            for _ in range(samples):
                spawned = time.monotonic()
                server = await net.start("server", "server", listen=listen)
                listening = time.monotonic()
                routed = await until_routed(http, client_url(client), server_id)
                from_spawn.append(routed - spawned)
                from_listening.append(routed - listening)
                await server.stop()  # says goodbye: the client forgets it at once
                net.children.remove(server)
            rows.append(
                {
                    "server_listens_on": listen.rsplit(":", 1)[0],
                    "samples": samples,
                    "from_listening_s_p50": median(from_listening),
                    "from_listening_s_max": max(from_listening),
                    "from_spawn_s_p50": median(from_spawn),
                    "from_spawn_s_max": max(from_spawn),
                    "from_listening_s": from_listening,
                }
            )
    return rows


# --- SIGKILL under load -----------------------------------------------------------------------


@dataclass(slots=True)
class Load:
    """Workers sending small generations one after another; every outcome is kept."""

    http: aiohttp.ClientSession
    url: str
    workers: int
    outcomes: list[tuple[float, int, str | None]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _count: itertools.count[int] = field(default_factory=itertools.count)

    async def __aenter__(self) -> Load:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _work(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            status, label = await ask(self.http, self.url, f"load {next(self._count)}")
            self.outcomes.append((at, status, label))


async def _state(http: aiohttp.ClientSession, admin: str, device_id: str) -> str | None:
    async with http.get(f"http://{admin}/status") as response:
        document = await response.json()
    for server in document.get("servers", []):
        if server.get("device_id") == device_id:
            return str(server["state"])
    return None


async def until_healthy(http: aiohttp.ClientSession, admin: str, device_id: str) -> None:
    """Poll the client's /status until this server is healthy there."""
    deadline = time.monotonic() + WAIT
    while await _state(http, admin, device_id) != "healthy":
        if time.monotonic() > deadline:
            raise RuntimeError("the server never became healthy")
        await asyncio.sleep(POLL)


async def sigkill(tmp: Path, trials: int, workers: int) -> dict[str, Any]:
    """Kill one of two servers under a request loop; count what failed."""
    results = []
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        lan(tmp, ("client", "a", "b")) as net,
        aiohttp.ClientSession(timeout=timeout) as http,
    ):
        a = await net.start("a", "server")
        await net.start("b", "server")
        admin = f"127.0.0.1:{free_port()}"
        client = await net.start("client", "client", "--admin-listen", admin)
        url, a_id, b_id = client_url(client), net.device_id("a"), net.device_id("b")
        await until_healthy(http, admin, a_id)
        await until_healthy(http, admin, b_id)
        for _ in range(trials):
            async with Load(http, url, workers) as load:
                await asyncio.sleep(KILL_BEFORE)
                killed = time.monotonic()
                a.proc.kill()
                await a.proc.wait()
                await asyncio.sleep(KILL_AFTER)
            failed = [o for o in load.outcomes if o[1] != 200]
            after = [o for o in load.outcomes if o[0] >= killed]
            results.append(
                {
                    "requests": len(load.outcomes),
                    "requests_after_kill": len(after),
                    "failed": len(failed),
                    "failed_statuses": sorted({o[1] for o in failed}),
                    "answered_by_killed_after_kill": sum(
                        1 for o in after if o[2] and a_id.startswith(o[2])
                    ),
                }
            )
            await a.stop()
            net.children.remove(a)
            a = await net.start("a", "server", listen=f"127.0.0.1:{a.port}")  # a restart
            await until_healthy(http, admin, a_id)
    return {
        "trials": trials,
        "workers": workers,
        "failed_total": sum(r["failed"] for r in results),
        "requests_total": sum(r["requests"] for r in results),
        "per_trial": results,
    }


# --- SIGSTOP under load -----------------------------------------------------------------------


async def sigstop(tmp: Path, trials: int) -> dict[str, Any]:
    """Stop one of two servers (no FIN, no RST) under an open request loop.

    The stopped one has the higher priority, so that it takes every request until the client
    sees it is gone: the worst case.
    """
    results = []
    async with lan(tmp, ("client", "a", "b")) as net, aiohttp.ClientSession() as http:
        a = await net.start("a", "server", "--priority", "1")
        await net.start("b", "server")
        admin = f"127.0.0.1:{free_port()}"
        client = await net.start("client", "client", "--admin-listen", admin)
        url, a_id, b_id = client_url(client), net.device_id("a"), net.device_id("b")
        await until_routed(http, url, a_id)
        await until_healthy(http, admin, b_id)
        hang = aiohttp.ClientTimeout(total=HUNG)
        # No connection limit: a cap here would queue requests in this process instead.
        unlimited = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=hang, connector=unlimited) as load_http:
            for trial in range(trials):
                outcomes: list[tuple[float, int, str | None, float]] = []

                async def one(
                    n: int, at: float, trial: int = trial, outcomes: list[Any] = outcomes
                ) -> None:
                    status, label = await ask(load_http, url, f"stop {trial} {n}")
                    outcomes.append((at, status, label, time.monotonic() - at))

                tasks: list[asyncio.Task[None]] = []
                stopped = time.monotonic()
                a.proc.send_signal(signal.SIGSTOP)
                down_at = suspect_at = None
                n = 0
                while time.monotonic() - stopped < STOP_WINDOW:
                    tasks.append(asyncio.create_task(one(n, time.monotonic())))
                    n += 1
                    state = await _state(http, admin, a_id)
                    now = time.monotonic()
                    if suspect_at is None and state != "healthy":
                        suspect_at = now - stopped
                    if down_at is None and state in ("down", None):
                        down_at = now - stopped
                    await asyncio.sleep(OPEN_LOOP_GAP)
                await asyncio.gather(*tasks)
                hung = [o for o in outcomes if o[1] != 200]
                late = [o for o in outcomes if o[1] == 200 and o[3] > LATE]
                results.append(
                    {
                        "suspect_after_s": suspect_at,
                        "down_after_s": down_at,
                        "requests": len(outcomes),
                        "hanging": len(hung),
                        "last_hanging_sent_after_s": max(
                            (o[0] - stopped for o in hung), default=None
                        ),
                        "answered_late": len(late),
                        "slowest_answer_s": max(
                            (o[3] for o in outcomes if o[1] == 200), default=None
                        ),
                    }
                )
                a.proc.send_signal(signal.SIGCONT)
                await until_routed(http, url, a_id)
    downs = [r["down_after_s"] for r in results if r["down_after_s"] is not None]
    return {
        "trials": trials,
        "down_after_s_p50": median(downs),
        "down_after_s_max": max(downs, default=float("nan")),
        "per_trial": results,
    }


# --- the run ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run all three; print their tables; write bench/results/failover.json."""
    with workdir(args.keep) as tmp:
        found = await discovery(tmp / "discovery", args.samples)
        killed = await sigkill(tmp / "sigkill", args.kill_trials, args.workers)
        stopped = await sigstop(tmp / "sigstop", args.stop_trials)
    print(
        table(
            "Server start → a running client routes to it (s; target ≤ 1)",
            ["server listens on", "samples", "p50 from listening", "max", "p50 from spawn", "max"],
            [
                (
                    r["server_listens_on"],
                    r["samples"],
                    r["from_listening_s_p50"],
                    r["from_listening_s_max"],
                    r["from_spawn_s_p50"],
                    r["from_spawn_s_max"],
                )
                for r in found
            ],
        )
    )
    print(
        table(
            f"SIGKILL of one of two servers under {args.workers} request loops (target 0 failed)",
            ["trial", "requests", "after the kill", "failed", "answered by the dead one"],
            [
                (
                    i + 1,
                    r["requests"],
                    r["requests_after_kill"],
                    r["failed"],
                    r["answered_by_killed_after_kill"],
                )
                for i, r in enumerate(killed["per_trial"])
            ],
        )
    )
    print(
        table(
            "SIGSTOP of the preferred one of two servers (s; target: ejected ≤ 5)",
            [
                "trial",
                "suspect after",
                "down after",
                "requests",
                "left hanging",
                "last hanging one sent after",
                f"answered after > {LATE:g} s",
                "slowest answer",
            ],
            [
                (
                    i + 1,
                    r["suspect_after_s"],
                    r["down_after_s"],
                    r["requests"],
                    r["hanging"],
                    r["last_hanging_sent_after_s"],
                    r["answered_late"],
                    r["slowest_answer_s"],
                )
                for i, r in enumerate(stopped["per_trial"])
            ],
        )
    )
    data = {
        "command": "python -m bench.failover",
        "timings": "ollana defaults (probe 2 s, probe timeout 1 s, announce 5 s)",
        "discovery": found,
        "sigkill": killed,
        "sigstop": stopped,
        "notes": {
            "poll_resolution_s": POLL,
            "hanging_means": f"no answer within {HUNG} s (the server was stopped for "
            f"{STOP_WINDOW} s)",
        },
    }
    path = write_results("failover", data)
    print(f"\nwritten {path}")
    return data


if __name__ == "__main__":
    main(__doc__.splitlines()[0], run, add_arguments)
