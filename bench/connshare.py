"""Many clients, one server: failures and connections held when clients burst in turn.

One `ollana serve --mode server` at the default connection cap in front of a paced
`ollana emulate`, and N paired `ollana serve --mode client` processes (N = 2, 8, 32). Each
client in turn sends a burst of requests at once (50 by default, as an agent framework or
a batch of embeddings does), waits for all of them, and the next one starts; the whole turn
runs twice. Measured: requests that did not get a 200, and the server's established
connections over time (read from /proc/net/tcp every 100 ms): the most at once, and how
many are still held a few seconds after the last burst.

    python -m bench.connshare [--clients 2,8,32] [--burst 50] [--rounds 2] [--after 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import table, write_results
from bench.runner import main, workdir
from bench.setups import Child, _await_healthy, child_env, emulator
from ollana.demo import pair

__all__ = ["run"]

MODEL = "llama3.2"
TOKENS = 4  # per request; at TPS, a request takes about 0.1 s
TPS = 40.0
SAMPLE = 0.1  # seconds between samples of the server's connections
STARTING = 4  # client processes started at once
_ESTABLISHED = "01"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--clients", default="2,8,32", help="client counts to run")
    parser.add_argument("--burst", type=int, default=50, help="requests each client sends at once")
    parser.add_argument("--rounds", type=int, default=2, help="turns of every client")
    parser.add_argument("--after", type=float, default=5.0, help="seconds watched after the end")
    parser.add_argument("--name", default="connshare", help="results file name")


def established(port: int) -> int:
    """Established TCP connections whose local port is `port` (IPv4 and IPv6)."""
    count = 0
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table_path) as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                local = fields[1].rsplit(":", 1)[-1] if len(fields) > 3 else ""
                if fields[3:4] == [_ESTABLISHED] and int(local or "0", 16) == port:
                    count += 1
    return count


@contextlib.asynccontextmanager
async def cluster(
    tmp: Path, backend: str, clients: int
) -> AsyncIterator[tuple[Child, list[Child]]]:
    """A server and `clients` paired clients, all ready."""
    homes = [tmp / "server", *(tmp / f"client{i}" for i in range(clients))]
    pair(*homes)
    common = ["--listen", "127.0.0.1:0", "--no-discovery", "--admin-listen", "off"]
    common += ["--log-level", "warn"]
    server = await Child.start(
        "server", ["serve", "--mode", "server", *common, "--ollama", backend],
        tmp / "server.log", child_env(homes[0]),
    )  # fmt: skip
    started: list[Child] = []
    try:
        gate = asyncio.Semaphore(STARTING)

        async def start(index: int) -> Child:
            async with gate:
                log = tmp / f"client{index}.log"
                child = await Child.start(
                    f"client{index}",
                    ["serve", "--mode", "client", *common, "--server",
                     f"127.0.0.1:{server.port}"],
                    log, child_env(homes[index + 1]),
                )  # fmt: skip
                started.append(child)
                await _await_healthy(child.url, log)
                return child

        ordered = await asyncio.gather(*(start(i) for i in range(clients)))
        yield server, list(ordered)
    finally:
        await asyncio.gather(*(c.stop() for c in started))
        await server.stop()


async def burst(session: aiohttp.ClientSession, url: str, size: int) -> list[str]:
    """`size` requests at once; what went wrong with each one that did not get a 200."""

    async def one(index: int) -> str | None:
        body = {"model": MODEL, "prompt": f"hi {index}", "stream": False,
                "options": {"num_predict": TOKENS}}  # fmt: skip
        try:
            async with session.post(url + "/api/generate", json=body) as response:
                text = await response.text()
                return None if response.status == 200 else f"{response.status} {text[:120]}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return repr(exc)

    return [f for f in await asyncio.gather(*(one(i) for i in range(size))) if f is not None]


async def one_run(
    tmp: Path, backend: str, clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Every client bursts in turn, `rounds` times; failures and connections held."""
    async with cluster(tmp, backend, clients) as (server, children):
        samples: list[tuple[float, int]] = []
        start = time.monotonic()
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                samples.append((time.monotonic() - start, established(server.port)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SAMPLE)

        watcher = asyncio.create_task(watch())
        failures: list[str] = []
        failed_bursts = 0
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for _ in range(args.rounds):
                for child in children:
                    failed = await burst(session, child.url, args.burst)
                    failures += failed
                    failed_bursts += bool(failed)
        ended = time.monotonic() - start
        await asyncio.sleep(args.after)
        stop.set()
        await watcher
    during = [n for t, n in samples if t <= ended]
    after = [n for t, n in samples if t > ended]
    return {
        "clients": clients,
        "requests": clients * args.burst * args.rounds,
        "failed": len(failures),
        "bursts_with_failures": failed_bursts,
        "first_failure": failures[0] if failures else None,
        "seconds": round(ended, 2),
        "connections_peak": max(during, default=0),
        "connections_mean": round(sum(during) / len(during), 1) if during else 0,
        "connections_after": after[-1] if after else None,
        "after_seconds": args.after,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run each client count; print the table; write bench/results/<name>.json."""
    counts = [int(n) for n in args.clients.split(",") if n.strip()]
    results = []
    with workdir(args.keep) as tmp:
        async with emulator(tmp, tokens_per_second=TPS) as backend:
            for clients in counts:
                results.append(await one_run(tmp / f"n{clients}", backend.url, clients, args))
    print(
        table(
            f"{args.burst} requests at once from each client in turn, {args.rounds} rounds,"
            " default cap (1,024)",
            [
                "clients",
                "requests",
                "failed",
                "bursts with failures",
                "seconds",
                "connections peak",
                "mean",
                f"held {args.after:g} s after",
            ],
            [
                (
                    r["clients"],
                    r["requests"],
                    r["failed"],
                    r["bursts_with_failures"],
                    r["seconds"],
                    r["connections_peak"],
                    r["connections_mean"],
                    r["connections_after"],
                )
                for r in results
            ],
        )
    )
    for r in results:
        if r["first_failure"]:
            print(f"  {r['clients']} clients, first failure: {r['first_failure']}")
    data = {"burst": args.burst, "rounds": args.rounds, "runs": results}
    print(f"\nwritten: {write_results(args.name, data)}")
    return data


if __name__ == "__main__":
    main(__doc__ or "", run, add_arguments)
