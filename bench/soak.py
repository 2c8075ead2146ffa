"""Soak: mixed traffic and faults through emulator → server → client, for minutes on end.

Workers send, at random by weight: streamed chats, whole generations, embeddings, model
lists, streams they drop after the first line (an app closing mid-answer), and malformed
requests (garbage, oversized heads, bad chunking, invalid JSON). Meanwhile the server is
restarted (SIGTERM, as a service manager does) and the emulated Ollama is killed (SIGKILL)
and started again, in turn. The report gives, per kind of request, how many were sent and
how many failed (and how many of those outside the windows in which a fault was being
recovered from), and each process's RSS at the start and at the end.

    python -m bench.soak [--minutes 2] [--workers 8] [--fault-every 20]

Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ProcMeter, percentile, table, write_results
from bench.nginx import free_port
from bench.runner import main, workdir
from bench.setups import Child, child_env, pair

__all__ = ["run"]

WARM_UP = 5.0  # seconds of traffic before the first memory reading
SAMPLE_EVERY = 10.0  # seconds between memory readings
GRACE = 3.0  # after a fault is recovered, errors still count as the fault's for this long
RECOVERY_TIMEOUT = 60.0
REQUEST_TIMEOUT = 60.0
TOKENS_PER_SECOND = 200.0  # emulator pace: a 24-token stream lasts about 0.1 s

WEIGHTS = {
    "chat-stream": 30,
    "generate": 20,
    "embed": 15,
    "tags": 15,
    "drop-mid-stream": 10,
    "malformed": 10,
}
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Tell me a story."}]}
MALFORMED = [
    os.urandom(48) + b"\r\n\r\n",
    b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    + b"".join(b"X-%d: v\r\n" % i for i in range(500))
    + b"\r\n",
    b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    b"Content-Length: 9\r\n\r\n{not json",
    b"GET /api/\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--minutes", type=float, default=2.0, help="how long to run")
    parser.add_argument("--workers", type=int, default=8, help="concurrent request loops")
    parser.add_argument(
        "--fault-every", type=float, default=20.0, help="seconds between faults (0: none)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed")


# --- the chain ------------------------------------------------------------------------------


class Chain:
    """The three processes, on fixed ports so that a restarted one is found where it was."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server_home, self.client_home = tmp / "server-home", tmp / "client-home"
        self.ollama_port, self.server_port = free_port(), free_port()
        self.procs: dict[str, Child] = {}
        self.restarts: Counter[str] = Counter()
        self.first_rss: dict[str, float] = {}

    @property
    def url(self) -> str:
        """Where apps talk to the client."""
        return self.procs["client"].url

    def _args(self, name: str) -> list[str]:
        common = ["--no-discovery", "--admin-listen", "off", "--log-level", "warning"]
        if name == "emulator":
            return [
                "emulate", "--listen", f"127.0.0.1:{self.ollama_port}", "--log-level", "warning",
                "--tokens-per-second", str(TOKENS_PER_SECOND),
            ]  # fmt: skip
        if name == "server":
            return [
                "serve", "--mode", "server", "--listen", f"127.0.0.1:{self.server_port}",
                "--ollama", f"http://127.0.0.1:{self.ollama_port}", "--force-server-mode",
                *common,
            ]  # fmt: skip
        return [
            "serve", "--mode", "client", "--listen", "127.0.0.1:0",
            "--server", f"127.0.0.1:{self.server_port}", "--wait-for-server", "10", *common,
        ]  # fmt: skip

    async def start(self, name: str) -> None:
        """Start one process (again)."""
        home = {"server": self.server_home, "client": self.client_home}.get(name)
        env = child_env(home)
        self.procs[name] = await Child.start(name, self._args(name), self.tmp / f"{name}.log", env)

    async def __aenter__(self) -> Chain:
        pair(self.server_home, self.client_home)
        for name in ("emulator", "server", "client"):
            await self.start(name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name in ("client", "server", "emulator"):
            if name in self.procs:
                await self.procs[name].stop()

    def meter(self, name: str) -> ProcMeter:
        return ProcMeter(self.procs[name].pid, name)

    async def restart(self, name: str, how: signal.Signals) -> float:
        """Stop a process with a signal, start it again; its RSS just before, in MB."""
        child = self.procs[name]
        rss = self.meter(name).usage().rss_mb
        if how == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
        await child.stop()
        await self.start(name)
        self.restarts[name] += 1
        return rss


# --- the load -------------------------------------------------------------------------------


@dataclass
class Tally:
    """What happened to the requests of one kind."""

    requests: int = 0
    ok: int = 0
    refused: int = 0  # malformed requests answered with a 4xx or a close, as they should be
    errors: list[tuple[float, str]] = field(default_factory=list)  # (when it failed, why)
    latencies: list[float] = field(default_factory=list)


class Load:
    """Workers sending a random mix; every outcome is tallied by kind."""

    def __init__(self, chain: Chain, seed: int) -> None:
        self.chain = chain
        self.rng = random.Random(seed)
        self.tallies = {kind: Tally() for kind in WEIGHTS}
        self.stopping = asyncio.Event()

    async def worker(self) -> None:
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self.stopping.is_set():
                kind = self.rng.choices(kinds, weights)[0]
                tally = self.tallies[kind]
                tally.requests += 1
                start = time.monotonic()
                try:
                    outcome = await getattr(self, "_" + kind.replace("-", "_"))(session)
                except (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError) as exc:
                    outcome = f"{type(exc).__name__}: {exc}"[:120]
                end = time.monotonic()
                if outcome is None:
                    tally.ok += 1
                    tally.latencies.append(end - start)
                elif outcome == "refused":
                    tally.refused += 1
                else:
                    tally.errors.append((end, outcome))

    async def _chat_stream(self, session: aiohttp.ClientSession) -> str | None:
        async with session.post(self.chain.url + "/api/chat", json=CHAT) as response:
            if response.status != 200:
                return f"status {response.status}"
            last: dict[str, Any] = {}
            async for line in response.content:
                if line.strip():
                    last = json.loads(line)
            if "error" in last:
                return f"stream error: {last['error']}"[:120]
            return None if last.get("done") else "stream ended before done"

    async def _generate(self, session: aiohttp.ClientSession) -> str | None:
        body = {"model": "qwen2.5:0.5b", "prompt": "Why is the sky blue?", "stream": False}
        async with session.post(self.chain.url + "/api/generate", json=body) as response:
            if response.status != 200:
                return f"status {response.status}"
            return None if (await response.json()).get("done") else "not done"

    async def _embed(self, session: aiohttp.ClientSession) -> str | None:
        body = {"model": "nomic-embed-text", "input": ["one", "two"]}
        async with session.post(self.chain.url + "/api/embed", json=body) as response:
            if response.status != 200:
                return f"status {response.status}"
            return None if len((await response.json())["embeddings"]) == 2 else "wrong count"

    async def _tags(self, session: aiohttp.ClientSession) -> str | None:
        async with session.get(self.chain.url + "/api/tags") as response:
            if response.status != 200:
                return f"status {response.status}"
            return None if (await response.json())["models"] else "no models"

    async def _drop_mid_stream(self, session: aiohttp.ClientSession) -> str | None:
        body = {**CHAT, "options": {"num_predict": 200}}
        async with session.post(self.chain.url + "/api/chat", json=body) as response:
            if response.status != 200:
                return f"status {response.status}"
            await response.content.readline()
            response.close()  # the app goes away mid-answer
        return None

    async def _malformed(self, session: aiohttp.ClientSession) -> str | None:
        data = self.rng.choice(MALFORMED)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.chain.procs["client"].port)
        try:
            writer.write(data)
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), REQUEST_TIMEOUT)
        except ConnectionError:
            raw = b""
        finally:
            writer.close()
        status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.") else None
        return "refused" if status is None or 400 <= status < 500 else f"status {status}"


# --- faults and memory ----------------------------------------------------------------------


async def recovered(url: str) -> float:
    """Seconds until the client answers a model list again."""
    start = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() - start < RECOVERY_TIMEOUT:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url + "/api/tags") as response:
                    if response.status == 200 and (await response.json())["models"]:
                        return time.monotonic() - start
            await asyncio.sleep(0.1)
    raise RuntimeError("the chain did not recover from a fault")


async def faults(chain: Chain, every: float, stop: asyncio.Event) -> list[dict[str, Any]]:
    """Restart the server and kill the emulated Ollama, in turn, every `every` seconds."""
    done: list[dict[str, Any]] = []
    plan = [
        ("server", signal.SIGTERM, "server restart"),
        ("emulator", signal.SIGKILL, "ollama crash"),
    ]
    while every > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            break
        name, how, what = plan[len(done) % len(plan)]
        start = time.monotonic()
        rss = await chain.restart(name, how)
        await recovered(chain.url)
        end = time.monotonic()
        done.append({
            "what": what, "start": start, "end": end + GRACE,
            "recovered_after_s": round(end - start, 2), "rss_before_mb": round(rss, 1),
        })  # fmt: skip
    return done


async def sample_memory(chain: Chain, stop: asyncio.Event, start: float) -> list[dict[str, float]]:
    """Every process's RSS, every SAMPLE_EVERY seconds."""
    timeline: list[dict[str, float]] = []
    while not stop.is_set():
        row = {"t_s": round(time.monotonic() - start, 1)}
        for name in chain.procs:
            with contextlib.suppress(OSError, ValueError):
                row[name] = round(chain.meter(name).usage().rss_mb, 1)
        timeline.append(row)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)
    return timeline


# --- the run --------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; print its tables; write bench/results/soak.json."""
    seconds = args.minutes * 60
    with workdir(args.keep) as tmp:
        async with Chain(tmp) as chain:
            await recovered(chain.url)
            load = Load(chain, args.seed)
            began = time.monotonic()
            workers = [asyncio.create_task(load.worker()) for _ in range(args.workers)]
            await asyncio.sleep(WARM_UP)
            start_rss = {n: chain.meter(n).usage().rss_mb for n in chain.procs}
            stop = asyncio.Event()
            memory = asyncio.create_task(sample_memory(chain, stop, began))
            faulting = asyncio.create_task(faults(chain, args.fault_every, stop))
            await asyncio.sleep(max(0.0, seconds - WARM_UP))
            stop.set()
            fault_log = await faulting
            load.stopping.set()
            await asyncio.gather(*workers)
            timeline = await memory
            usage = {n: chain.meter(n).usage() for n in chain.procs}
            restarts = dict(chain.restarts)
            alive = {n: c.proc.returncode is None for n, c in chain.procs.items()}
    return report(args, load, fault_log, start_rss, usage, restarts, alive, timeline, began)


def report(
    args: argparse.Namespace,
    load: Load,
    fault_log: list[dict[str, Any]],
    start_rss: dict[str, float],
    usage: dict[str, Any],
    restarts: dict[str, int],
    alive: dict[str, bool],
    timeline: list[dict[str, float]],
    began: float,
) -> dict[str, Any]:
    """Tables on stdout, and the results file."""
    windows = [(f["start"], f["end"]) for f in fault_log]

    def outside(when: float) -> bool:
        return not any(a <= when <= b for a, b in windows)

    kinds = {}
    for kind, t in load.tallies.items():
        reasons = Counter(why for _, why in t.errors)
        kinds[kind] = {
            "requests": t.requests, "ok": t.ok, "refused_as_expected": t.refused,
            "errors": len(t.errors),
            "errors_outside_faults": sum(1 for when, _ in t.errors if outside(when)),
            "p50_ms": round(percentile(t.latencies, 50) * 1000, 1) if t.latencies else None,
            "p99_ms": round(percentile(t.latencies, 99) * 1000, 1) if t.latencies else None,
            "error_reasons": dict(reasons.most_common(5)),
        }  # fmt: skip
    processes = {
        name: {
            "rss_start_mb": round(start_rss[name], 1),
            "rss_end_mb": round(u.rss_mb, 1),
            "rss_peak_mb": round(u.hwm_mb, 1),
            "restarts": restarts.get(name, 0),
            "alive_at_end": alive[name],
        }
        for name, u in usage.items()
    }
    totals = {
        "requests": sum(k["requests"] for k in kinds.values()),
        "errors": sum(k["errors"] for k in kinds.values()),
        "errors_outside_faults": sum(k["errors_outside_faults"] for k in kinds.values()),
    }
    print(table(
        f"Soak, {args.minutes:g} min, {args.workers} workers, a fault every {args.fault_every:g} s",
        ["kind", "requests", "ok", "refused", "errors", "outside faults", "p50 ms", "p99 ms"],
        [[k, v["requests"], v["ok"], v["refused_as_expected"], v["errors"],
          v["errors_outside_faults"], v["p50_ms"], v["p99_ms"]] for k, v in kinds.items()],
    ))  # fmt: skip
    print(table(
        "Processes",
        ["process", "RSS start MB", "RSS end MB", "peak MB", "restarts", "alive"],
        [[n, p["rss_start_mb"], p["rss_end_mb"], p["rss_peak_mb"], p["restarts"],
          p["alive_at_end"]] for n, p in processes.items()],
    ))  # fmt: skip
    for f in fault_log:
        f["at_s"] = round(f.pop("start") - began, 1)
        f.pop("end")
    data = {
        "minutes": args.minutes, "workers": args.workers, "fault_every_s": args.fault_every,
        **totals, "kinds": kinds, "processes": processes, "faults": fault_log,
        "rss_timeline": timeline,
    }  # fmt: skip
    path = write_results("soak", data)
    print(
        f"\n{totals['requests']} requests, {totals['errors']} errors "
        f"({totals['errors_outside_faults']} outside faults); {len(fault_log)} faults; {path}"
    )
    return data


if __name__ == "__main__":
    main(__doc__ or "", run, add_arguments)
