"""Where a proxy hop's CPU goes: aiohttp's server alone, then with each kind of upstream client.

Three minimal one-process proxies in front of the static nginx backend, each measured with
wrk (32 connections) for CPU microseconds per request (user + system, from /proc):

- server: aiohttp's low-level server answering by itself (the floor of any aiohttp hop);
- aiohttp client: the same server forwarding through an aiohttp ClientSession (what
  ollana's hops do, without TLS, routing, guard, metrics or logs);
- lean client: the same server forwarding through a minimal keep-alive HTTP/1.1 client
  built on aiohttp's C response parser (a sketch of "a leaner protocol layer": GET only,
  Content-Length or chunked answers, no timeouts, no TLS).

    python -m bench.split [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from bench.common import Interference, ProcMeter, table, write_results
from bench.runner import main, workdir
from bench.setups import static_backend
from bench.wrk import wrk

__all__ = ["TABLE_HEADER", "TABLE_KEYS", "run"]

KINDS = ("server", "aiohttp client", "lean client")
# The results table, here and in bench.report: one column per row key.
TABLE_HEADER = ("hop", "req/s", "CPU µs/req", "user µs", "system µs", "µs over the bare server")
TABLE_KEYS = ("hop", "rps", "cpu_us_per_request", "user_us", "system_us", "over_server_us")
START_TIMEOUT = 15.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "BACKEND"), help=argparse.SUPPRESS)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the comparison; print its table; write bench/results/split.json."""
    if args.serve:
        from bench.splitserve import serve

        await serve(args.serve[0], args.serve[1])
        return {}
    rows = []
    with workdir(args.keep) as tmp:
        async with static_backend(tmp) as backend:
            for kind in KINDS:
                rows.append(await _measure(kind, backend.url, args.seconds))
    floor = rows[0]["cpu_us_per_request"]
    for row in rows:
        row["over_server_us"] = round(row["cpu_us_per_request"] - floor, 1)
    title = "CPU per request of one hop (wrk, 32 connections, GET /api/version)"
    print(table(title, TABLE_HEADER, [[r[k] for k in TABLE_KEYS] for r in rows]))
    data = {"command": "python -m bench.split", "seconds": args.seconds, "rows": rows}
    path = write_results("split", data)
    print(f"\nwritten {path}")
    return data


async def _measure(kind: str, backend: str, seconds: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.split", "--serve", kind, backend,
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        url = line.decode().strip().rsplit(" ", 1)[-1]
        if not url.startswith("http://"):
            raise RuntimeError(f"the {kind} hop did not start")
        await wrk(url + "/api/version", connections=32, threads=2, seconds=1)
        meter = ProcMeter(proc.pid, kind)
        with Interference() as interference:
            before = meter.usage()
            result = await wrk(url + "/api/version", connections=32, threads=2, seconds=seconds)
            after = meter.usage()
    finally:
        proc.terminate()
        await proc.wait()
    n = max(1, result.requests)
    user = (after.user - before.user) / n * 1e6
    system = (after.system - before.system) / n * 1e6
    return {
        "hop": kind,
        "rps": round(result.rps),
        "cpu_us_per_request": round(user + system, 1),
        "user_us": round(user, 1),
        "system_us": round(system, 1),
        "errors": result.errors,
        "interference": round(interference.fraction, 3),
    }


if __name__ == "__main__":
    main(__doc__ or "", run, add_arguments)
