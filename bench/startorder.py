"""Static servers in each start order, with ollana's default timings.

A client given `--server 127.0.0.1:PORT` (no discovery) and a server that allow each other
by device ID only (as users type it), each sample in fresh data dirs, so that the server
learns the client's certificate from a hello alone. Each figure is the time from the event
that makes the client usable to the first request answered through it:

- client first: the client runs (for HEAD_START s) before the server listens; from the
  server's "listening" line;
- server first: from the client's "listening" line (the server listened before);
- server restarted: both ran, the server stopped for GAP s and starts again on its port;
  from its "listening" line;
- allow list edited: the server did not allow the client; both ran for HEAD_START s; from
  the write of the server's allow list.

    python -m bench.startorder [--samples 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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
POLL = 0.01  # seconds between requests while waiting: the resolution of every figure
HEAD_START = 3.0  # seconds the client runs alone (or refused) first: its retries back off
GAP = 2.0  # seconds a restarted server stays down
WAIT = 60.0  # never wait longer than this


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--samples", type=int, default=5, help="runs of each start order")


@dataclass(slots=True)
class Pair:
    """One sample's data dirs, the server's fixed port and the processes started."""

    root: Path
    ollama_url: str
    port: int = field(default_factory=free_port)
    children: list[Child] = field(default_factory=list)
    _logs: itertools.count[int] = field(default_factory=itertools.count)

    def allow(self, home: str, other: str) -> None:
        """`ollana device allow ID` in `home`: the other's ID only."""
        from ollana.identity import DeviceStore, load_identity

        DeviceStore(self.root / home).allow(load_identity(self.root / other).device_id)

    async def start(self, name: str) -> Child:
        """The server on its port, or the client that knows it by address."""
        argv = ["serve", "--mode", name, "--no-discovery", "--admin-listen", "off"]
        if name == "server":
            argv += ["--listen", f"127.0.0.1:{self.port}", "--ollama", self.ollama_url]
        else:
            argv += ["--listen", "127.0.0.1:0", "--server", f"127.0.0.1:{self.port}"]
        env = child_env(self.root / name)
        env["OLLANA_WAIT_FOR_SERVER"] = "0"  # a request answers 503 at once while it waits
        log = self.root / f"{name}-{next(self._logs)}.log"
        child = await Child.start(name, argv, log, env)
        self.children.append(child)
        return child

    async def close(self) -> None:
        """Stop every process still running."""
        for child in self.children:
            await child.stop()


@contextlib.asynccontextmanager
async def pair(root: Path, ollama_url: str, *, server_allows: bool = True) -> AsyncIterator[Pair]:
    """Fresh data dirs that allow each other by ID (the server the client, if told)."""
    from ollana.identity import load_identity

    for name in ("server", "client"):
        load_identity(root / name)
    running = Pair(root, ollama_url)
    running.allow("client", "server")
    if server_allows:
        running.allow("server", "client")
    try:
        yield running
    finally:
        await running.close()


async def usable(http: aiohttp.ClientSession, client: Child) -> float:
    """Poll the client until a request is answered through it; the monotonic time."""
    body = {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.post(client.url.rstrip("/") + "/api/generate", json=body) as response:
                await response.read()
                if response.status == 200:
                    return time.monotonic()
        await asyncio.sleep(POLL)
    raise RuntimeError("the client never became usable")


async def client_first(p: Pair, http: aiohttp.ClientSession) -> float:
    client = await p.start("client")
    await asyncio.sleep(HEAD_START)
    await p.start("server")
    listening = time.monotonic()
    return await usable(http, client) - listening


async def server_first(p: Pair, http: aiohttp.ClientSession) -> float:
    await p.start("server")
    client = await p.start("client")
    listening = time.monotonic()
    return await usable(http, client) - listening


async def restarted(p: Pair, http: aiohttp.ClientSession) -> float:
    server = await p.start("server")
    client = await p.start("client")
    await usable(http, client)
    await server.stop()
    await asyncio.sleep(GAP)
    await p.start("server")
    listening = time.monotonic()
    return await usable(http, client) - listening


async def allow_edited(p: Pair, http: aiohttp.ClientSession) -> float:
    await p.start("server")
    client = await p.start("client")
    await asyncio.sleep(HEAD_START)
    p.allow("server", "client")
    edited = time.monotonic()
    return await usable(http, client) - edited


Order = Callable[[Pair, aiohttp.ClientSession], Awaitable[float]]
ORDERS: dict[str, tuple[Order, bool]] = {
    "client first": (client_first, True),
    "server first": (server_first, True),
    "server restarted": (restarted, True),
    "allow list edited": (allow_edited, False),
}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every start order, `samples` times each, in fresh data dirs."""
    rows: list[dict[str, Any]] = []
    with workdir(args.keep) as tmp:
        async with emulator(tmp) as ollama, aiohttp.ClientSession() as http:
            for name, (order, server_allows) in ORDERS.items():
                times = []
                for n in range(args.samples):
                    root = tmp / f"{name.replace(' ', '-')}-{n}"
                    async with pair(root, ollama.url, server_allows=server_allows) as p:
                        times.append(await order(p, http))
                rows.append(
                    {
                        "order": name,
                        "samples": len(times),
                        "s_p50": median(times),
                        "s_max": max(times),
                        "s_min": min(times),
                    }
                )
                print(f"{name}: {', '.join(f'{t:.3f}' for t in times)} s")
    print(
        table(
            "Static server: from usable-making event to first answered request (s)",
            ["order", "samples", "p50", "min", "max"],
            [(r["order"], r["samples"], r["s_p50"], r["s_min"], r["s_max"]) for r in rows],
        )
    )
    data = {
        "command": "python -m bench.startorder",
        "timings": "ollana defaults (hello retries 0.1 s doubling to 1 s, 3 s once it answers;"
        " probe 2 s; allow list watched every 0.5 s)",
        "orders": rows,
        "notes": {"poll_resolution_s": POLL, "head_start_s": HEAD_START, "restart_gap_s": GAP},
    }
    path = write_results("startorder", data)
    print(f"\nwritten {path}")
    return data


if __name__ == "__main__":
    main(__doc__.splitlines()[0], run, add_arguments)
