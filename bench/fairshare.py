"""A fair share of one server: a greedy device and a polite one behind one paced Ollama.

The backend is `ollana emulate --tokens-per-second N --parallel 2`: two generations at
once, the rest first come, first served, as Ollama runs them. In front of it an ollana
server, run twice: with its fair queue (`--ollama-parallel 2`) and without it
(`--ollama-parallel 0`: Ollama's own queue decides). Two paired devices talk to it over
mutual TLS, each with its own certificate:

- greedy: 32 concurrent chat streams, each sent again as soon as it ends;
- polite: one chat at a time, the next as soon as the last one ends.

Figures: the polite device's time to first token (median, p95, max) and its answers,
each device's tokens a second, and Jain's fairness index over those two rates
((a + b)^2 / 2(a^2 + b^2): 1 is an even split, 0.5 all to one).

Then the CPU cost of metering: the server's CPU seconds per stream with usage recorded
(the default) and with `--no-usage`, the queue off, unpaced-parallel streams, rounds
alternating; the median of each.

    python -m bench.fairshare [--seconds 20] [--tps 50] [--tokens 20] [--greedy 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ProcMeter, median, percentile, table, write_results
from bench.runner import main, workdir
from bench.setups import Child, child_env

__all__ = ["run"]

MODEL = "llama3.2"
WARMUP = 3.0  # seconds the greedy device runs before the polite one starts counting
CPU_STREAMS = 200  # streams per metering round
CPU_CONCURRENCY = 16
CPU_TPS = 500.0  # tokens a second per stream in the metering rounds
CPU_TOKENS = 100
CPU_ROUNDS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per run")
    parser.add_argument("--tps", type=float, default=50.0, help="emulator tokens a second")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per answer")
    parser.add_argument("--greedy", type=int, default=32, help="the greedy device's streams")
    parser.add_argument("--parallel", type=int, default=2, help="the emulator's parallelism")


@dataclass(slots=True)
class Device:
    """A paired device: its TLS context, and what it received."""

    name: str
    context: Any
    tokens_in_window: int = 0
    answers: int = 0
    ttft: list[float] = field(default_factory=list)


def devices(tmp: Path) -> tuple[Path, Device, Device]:
    """Three data dirs that allow each other: the server's, greedy's and polite's."""
    from ollana.demo import pair
    from ollana.identity import load_identity
    from ollana.identity.tls import client_context

    homes = [tmp / n for n in ("server", "greedy", "polite")]
    pair(*homes)
    greedy, polite = (Device(home.name, client_context(load_identity(home))) for home in homes[1:])
    return homes[0], greedy, polite


@contextlib.asynccontextmanager
async def child(
    name: str, args: list[str], tmp: Path, home: Path | None = None
) -> AsyncIterator[Child]:
    """`python -m ollana ARGS` until the block ends."""
    started = await Child.start(name, args, tmp / f"{name}.log", child_env(home))
    try:
        yield started
    finally:
        await started.stop()


def server_args(ollama: str, *extra: str) -> list[str]:
    """`ollana serve` in server mode on loopback, quiet."""
    return [
        "serve", "--mode", "server", "--listen", "127.0.0.1:0", "--no-discovery",
        "--admin-listen", "off", "--log-level", "warn", "--ollama", ollama, *extra,
    ]  # fmt: skip


async def chat(
    session: aiohttp.ClientSession,
    url: str,
    device: Device,
    tokens: int,
    window: tuple[float, float],
) -> None:
    """One streamed chat: time to first token, tokens received inside the window."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{device.name} {time.monotonic_ns()}"}],
        "options": {"num_predict": tokens},
    }
    sent = time.monotonic()
    first = None
    async with session.post(url, json=body, ssl=device.context) as response:
        async for line in response.content:
            if not line.strip():
                continue
            now = time.monotonic()
            if first is None:
                first = now - sent
            if b'"done":false' in line and window[0] <= now <= window[1]:
                device.tokens_in_window += 1
    if window[0] <= sent and first is not None:
        device.ttft.append(first)
        device.answers += 1


async def share(args: argparse.Namespace, tmp: Path, ollama: str, fair: bool) -> dict[str, Any]:
    """One run: the greedy device's streams and the polite device's chats, for a while."""
    server_home, greedy, polite = devices(tmp / ("fair" if fair else "fifo"))
    parallel = str(args.parallel if fair else 0)
    extra = ["--ollama-parallel", parallel, "--max-queue", "1000"]
    async with child("server", server_args(ollama, *extra), tmp, server_home) as server:
        url = f"https://127.0.0.1:{server.port}/api/chat"
        start = time.monotonic()
        window = (start + WARMUP, start + WARMUP + args.seconds)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def loop(device: Device) -> None:
                while time.monotonic() < window[1]:
                    await chat(session, url, device, args.tokens, window)

            greedy_tasks = [asyncio.create_task(loop(greedy)) for _ in range(args.greedy)]
            await asyncio.sleep(WARMUP)
            await loop(polite)
            for task in greedy_tasks:
                task.cancel()
            await asyncio.gather(*greedy_tasks, return_exceptions=True)
    rates = [d.tokens_in_window / args.seconds for d in (greedy, polite)]
    jain = sum(rates) ** 2 / (2 * sum(r * r for r in rates)) if any(rates) else float("nan")
    return {
        "fair_queue": fair,
        "polite_answers": polite.answers,
        "polite_ttft_p50_s": median(polite.ttft),
        "polite_ttft_p95_s": percentile(polite.ttft, 95),
        "polite_ttft_max_s": max(polite.ttft, default=float("nan")),
        "greedy_tokens_per_s": round(rates[0], 2),
        "polite_tokens_per_s": round(rates[1], 2),
        "jain_index": round(jain, 3),
    }


async def metering_cost(tmp: Path, ollama: str, usage: bool) -> float:
    """The server's CPU seconds per stream over one round of paced streams."""
    server_home, device, _ = devices(tmp / f"cpu-{usage}-{time.monotonic_ns()}")
    extra = ["--ollama-parallel", "0"] + ([] if usage else ["--no-usage"])
    async with child("cpu-server", server_args(ollama, *extra), tmp, server_home) as server:
        url = f"https://127.0.0.1:{server.port}/api/chat"
        meter = ProcMeter(server.pid, "server")
        everything = (0.0, float("inf"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await chat(session, url, device, CPU_TOKENS, everything)  # connections, caches
            before = meter.usage().cpu
            left = CPU_STREAMS

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await chat(session, url, device, CPU_TOKENS, everything)

            await asyncio.gather(*(worker() for _ in range(CPU_CONCURRENCY)))
            return (meter.usage().cpu - before) / CPU_STREAMS


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both runs and the metering rounds; prints the tables, writes results/fairshare.json."""
    with workdir(args.keep) as tmp:
        paced = [
            "emulate", "--listen", "127.0.0.1:0", "--log-level", "warn",
            "--tokens-per-second", str(args.tps), "--parallel", str(args.parallel),
        ]  # fmt: skip
        async with child("emulator", paced, tmp) as emulator:
            runs = [await share(args, tmp, emulator.url, fair) for fair in (False, True)]
        fast = ["emulate", "--listen", "127.0.0.1:0", "--log-level", "warn"]
        fast += ["--tokens-per-second", str(CPU_TPS)]
        cost: dict[str, list[float]] = {"usage": [], "no-usage": []}
        async with child("cpu-emulator", fast, tmp) as emulator:
            for _ in range(CPU_ROUNDS):
                for usage in (True, False):
                    per_stream = await metering_cost(tmp, emulator.url, usage)
                    cost["usage" if usage else "no-usage"].append(per_stream)
    headers = ["queue", "polite answers", "TTFT p50 s", "p95 s", "max s", "greedy tok/s",
               "polite tok/s", "Jain"]  # fmt: skip
    rows = [
        ["fair" if r["fair_queue"] else "Ollama's FIFO", r["polite_answers"],
         r["polite_ttft_p50_s"], r["polite_ttft_p95_s"], r["polite_ttft_max_s"],
         r["greedy_tokens_per_s"], r["polite_tokens_per_s"], r["jain_index"]]
        for r in runs
    ]  # fmt: skip
    title = (
        f"Greedy ({args.greedy} streams) and polite (1) devices, parallel {args.parallel},"
        f" {args.tps:g} tok/s, {args.tokens} tokens"
    )
    print(table(title, headers, rows))
    medians = {k: median(v) * 1e6 for k, v in cost.items()}
    cpu_rows = [[k, round(medians[k]), ", ".join(f"{v * 1e6:.0f}" for v in cost[k])] for k in cost]
    print(table(f"Server CPU per stream ({CPU_TOKENS} tokens, {CPU_STREAMS} streams a round)",
                ["server", "median µs", "rounds µs"], cpu_rows))  # fmt: skip
    data = {
        "settings": {k: v for k, v in vars(args).items() if k != "keep"},
        "runs": runs,
        "cpu_us_per_stream": {k: round(v, 1) for k, v in medians.items()},
        "cpu_rounds_us": {k: [round(x * 1e6, 1) for x in v] for k, v in cost.items()},
    }
    print(f"\nwrote {write_results('fairshare', data)}")
    return data


if __name__ == "__main__":
    main("A fair share of one server between devices, and the cost of metering.", run,
         add_arguments)  # fmt: skip
