"""Discovery and failover across hosts, on the namespace LAN of the LAN tests (needs root).

Discovery: how long a client takes to hold servers healthy (usable) and to first list them
(seen), when the client starts among running servers (its query is answered) and when a
server starts among running clients (its announce is heard); from the process start and
from its "listening" line.

Failover: servers A and B, client C under a request loop (3 workers); A fails in each way in
turn and is restored. C's /status is read every 20 ms: "ejected" is when A is no longer
routable there (down or gone), "last routed" when its per-server request counter last rose,
which is when the last request went to A. From the loop: requests that failed, and the
slowest one that started around the fault (the price of a request caught on A).

    python -m bench.lan [--repeat 3] [--timings fast|default|both]

"fast" is the timings the LAN tests use (probe every 0.5 s, announce every 1 s); "default"
is ollana's own (probe every 2 s, announce every 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.lan.lab import FAST_TIMINGS, Cluster, Lab, eventually, short
from tests.lan.netns import Host, Network, unavailable_reason
from tests.lan.procs import RequestLoop

from bench.common import median, table, write_results
from bench.runner import main, workdir

__all__ = ["run"]

SAMPLE = 0.02
GENERATE = b'{"model": "llama3.2", "prompt": "warm", "stream": false}'
PROFILES: dict[str, dict[str, str]] = {"fast": dict(FAST_TIMINGS), "default": {}}
# How long each fault lasts before A is restored: long enough for every profile's probes.
WINDOW = {"fast": 6.0, "default": 14.0}
FAULTS = ("crash", "stop", "vanish", "ollama-down")
DEADLINE = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--timings", choices=["fast", "default", "both"], default="both")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; print its tables; write bench/results/lan.json."""
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"bench.lan needs Linux network namespaces: {reason}")
    profiles = ["fast", "default"] if args.timings == "both" else [args.timings]
    discovery: list[dict[str, Any]] = []
    failover: list[dict[str, Any]] = []
    with workdir(args.keep) as tmp:
        for profile in profiles:
            for n in range(args.repeat):
                base = tmp / f"{profile}-{n}"
                discovery += await _in_network(base / "d", profile, _discovery)
                failover += await _in_network(base / "f", profile, _failover)
    summary = _summarize(discovery, failover)
    _print(summary)
    data = {
        "command": "python -m bench.lan " + " ".join(sys.argv[1:]),
        "profiles": {p: PROFILES[p] or "ollana's defaults" for p in profiles},
        "repeat": args.repeat,
        "summary": summary,
        "discovery_runs": discovery,
        "failover_runs": failover,
    }
    path = write_results("lan", data)
    print(f"\nwritten {path}")
    return data


async def _in_network(
    where: Path,
    profile: str,
    measure: Callable[[Network, Lab, str], Awaitable[list[dict[str, Any]]]],
) -> list[dict[str, Any]]:
    network = Network(where)
    lab = Lab(network, timings=PROFILES[profile])
    try:
        return await measure(network, lab, profile)
    finally:
        await lab.close()
        network.close()


async def _until(check: Callable[[], Awaitable[bool]]) -> float:
    """Poll every SAMPLE seconds until `check`; the time it first held."""
    async with asyncio.timeout(DEADLINE):
        while True:
            if await _safe(check):
                return time.monotonic()
            await asyncio.sleep(SAMPLE)


async def _safe(check: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await check()
    except (OSError, RuntimeError, ValueError):
        return False  # the admin API is not up yet


# --- discovery ----------------------------------------------------------------------------


async def _discovery(network: Network, lab: Lab, profile: str) -> list[dict[str, Any]]:
    lan = network.lan()
    a, b, c, d = (network.host(name, lan) for name in ("a", "b", "c", "d"))
    cluster = Cluster(lab, [a, b, d], [c], {})
    await lab.pair(c.home, a.home, b.home, d.home)
    for host in (a, b, d):
        await cluster.start_ollama(host)
    for host in (a, b):
        await cluster.start_ollana(host)
    both = {cluster.ids["a"], cluster.ids["b"]}
    # First time: the servers learn the client's certificate from its first query.
    rows = [await _watch_start(cluster, c, c, both, "client starts, first time")]
    await cluster.ollana["c"].stop(signal.SIGTERM)
    rows.append(await _watch_start(cluster, c, c, both, "client starts, paired before"))
    await cluster.ollana["b"].stop(signal.SIGTERM)
    await _until(lambda: _absent(lab, c, cluster.ids["b"]))
    rows.append(
        await _watch_start(cluster, b, c, {cluster.ids["b"]}, "server starts, paired before")
    )
    # A server new to the LAN: it has allowed C's ID but never heard from C.
    rows.append(await _watch_start(cluster, d, c, {cluster.ids["d"]}, "server starts, first time"))
    return [{"profile": profile, **row} for row in rows]


async def _watch_start(
    cluster: Cluster, starts: Host, client: Host, ids: set[str], case: str
) -> dict[str, Any]:
    lab = cluster.lab
    spawned = time.monotonic()
    await cluster.start_ollana(starts)
    ready = time.monotonic()

    async def seen() -> bool:
        return ids <= set(await lab.pool(client))

    async def usable() -> bool:
        return ids <= await lab.healthy(client)

    listed = await _until(seen)
    healthy = await _until(usable)
    return {
        "case": case,
        "seen_from_start_s": listed - spawned,
        "usable_from_start_s": healthy - spawned,
        "usable_from_ready_s": healthy - ready,
    }


async def _absent(lab: Lab, client: Host, device: str) -> bool:
    return device not in await lab.pool(client)


# --- failover -----------------------------------------------------------------------------


async def _failover(network: Network, lab: Lab, profile: str) -> list[dict[str, Any]]:
    lan = network.lan()
    a, b, c = (network.host(name, lan) for name in ("a", "b", "c"))
    cluster = await Cluster.start(lab, [a, b], [c])
    loop = await lab.request_loop(c, workers=3, timeout=DEADLINE)
    rows = []
    try:
        for fault in FAULTS:
            await _warm(lab, loop, cluster, a)
            row = await _one_fault(lab, loop, cluster, a, fault, WINDOW[profile])
            rows.append({"profile": profile, "fault": fault, **row})
    finally:
        await loop.stop()
    return rows


async def _warm(lab: Lab, loop: RequestLoop, cluster: Cluster, host: Host) -> None:
    """A healthy, holding the model (a pinned request), and taking some of the loop's load."""
    client, label = cluster.clients[0], cluster.short(host)
    await lab.wait_healthy(client, {cluster.ids[host.label]}, timeout=DEADLINE)
    await client.http("POST", 11434, "/api/generate", GENERATE, {"X-Ollana-Server": label})
    since = time.monotonic()
    await eventually(lambda: loop.served(label, since), timeout=DEADLINE, what="A takes load")


async def _one_fault(
    lab: Lab, loop: RequestLoop, cluster: Cluster, a: Host, fault: str, window: float
) -> dict[str, Any]:
    client, device = cluster.clients[0], cluster.ids["a"]
    samples: list[tuple[float, str | None, int]] = []

    async def sample() -> None:
        while True:
            try:
                server = (await lab.pool(client)).get(device)
            except (OSError, RuntimeError, ValueError):
                server = None
            state = None if server is None else server["state"]
            samples.append((time.monotonic(), state, 0 if server is None else server["requests"]))
            await asyncio.sleep(SAMPLE)

    sampler = asyncio.create_task(sample())
    await asyncio.sleep(0.2)  # a baseline of samples before the fault
    start = time.monotonic()
    if fault == "crash":
        await cluster.ollana["a"].kill()
    elif fault == "stop":
        await cluster.ollana["a"].stop(signal.SIGTERM)
    elif fault == "vanish":
        a.cut()
    else:
        await cluster.ollama["a"].stop(signal.SIGTERM)
    await asyncio.sleep(window)  # the fault lasts this long: a measurement window
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    if fault in ("crash", "stop"):
        await cluster.start_ollana(a)
    elif fault == "vanish":
        a.restore()
    else:
        await cluster.start_ollama(a)
    ejected = next((t for t, state, _ in samples if t >= start and state in (None, "down")), None)
    last_routed = start
    for (_, _, before), (t, _, after) in itertools.pairwise(samples):
        if t >= start and after > before:
            last_routed = t
    await _warm(lab, loop, cluster, a)
    around = [r for r in loop.records if start - 1.0 <= r.start <= start + window]
    return {
        "ejected_s": None if ejected is None else ejected - start,
        "last_routed_s": last_routed - start,
        "requests": len(around),
        "failed": sum(not r.ok for r in around),
        "slowest_s": max((r.end - r.start for r in around), default=None),
        "answered_by_a_after_s": max(
            (r.end - start for r in around if r.ok and r.server == short(device) and r.end > start),
            default=None,
        ),
    }


# --- output -------------------------------------------------------------------------------


def _summarize(discovery: list[dict[str, Any]], failover: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"discovery": [], "failover": []}
    for profile in dict.fromkeys(r["profile"] for r in discovery):
        for case in dict.fromkeys(r["case"] for r in discovery):
            runs = [r for r in discovery if (r["profile"], r["case"]) == (profile, case)]
            out["discovery"].append({
                "profile": profile, "case": case, "runs": len(runs),
                **{k: median(r[k] for r in runs)
                   for k in ("seen_from_start_s", "usable_from_start_s", "usable_from_ready_s")},
                "usable_from_start_max_s": max(r["usable_from_start_s"] for r in runs),
            })  # fmt: skip
    for profile in dict.fromkeys(r["profile"] for r in failover):
        for fault in FAULTS:
            runs = [r for r in failover if (r["profile"], r["fault"]) == (profile, fault)]
            ejected = [r["ejected_s"] for r in runs if r["ejected_s"] is not None]
            out["failover"].append({
                "profile": profile, "fault": fault, "runs": len(runs),
                "ejected_s": median(ejected), "ejected_max_s": max(ejected, default=None),
                "last_routed_s": median(r["last_routed_s"] for r in runs),
                "last_routed_max_s": max(r["last_routed_s"] for r in runs),
                "failed": sum(r["failed"] for r in runs),
                "requests": sum(r["requests"] for r in runs),
                "slowest_s": max((r["slowest_s"] or 0.0) for r in runs),
            })  # fmt: skip
    return out


def _print(summary: dict[str, Any]) -> None:
    print(table(
        "Discovery: seconds until the client lists / can use the servers (median of runs)",
        ["timings", "case", "runs", "listed (from start)", "usable (from start)",
         "usable (from ready)", "usable, worst"],
        [(r["profile"], r["case"], r["runs"], r["seen_from_start_s"], r["usable_from_start_s"],
          r["usable_from_ready_s"], r["usable_from_start_max_s"]) for r in summary["discovery"]],
    ))  # fmt: skip
    print(table(
        "Failover: seconds from the fault until no request goes to the failed server",
        ["timings", "fault", "runs", "ejected (median)", "ejected (worst)",
         "last routed (median)", "last routed (worst)", "failed / requests", "slowest request"],
        [(r["profile"], r["fault"], r["runs"], r["ejected_s"], r["ejected_max_s"],
          r["last_routed_s"], r["last_routed_max_s"], f"{r['failed']} / {r['requests']}",
          r["slowest_s"]) for r in summary["failover"]],
    ))  # fmt: skip


if __name__ == "__main__":
    main(__doc__.splitlines()[0], run, add_arguments)
