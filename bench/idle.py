"""Idle footprint: memory of each process of both chains after start, and after some use.

RSS counts shared library pages in every process that maps them; PSS shares them out, so
it is the fairer figure for "what this process costs". Both come from /proc.

    python -m bench.idle [--settle 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ProcMeter, table, write_results
from bench.runner import main, workdir
from bench.setups import Target, nginx_chain, ollana_chain, static_backend

__all__ = ["run"]

USE_REQUESTS = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle before reading")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; print its table; write bench/results/idle.json."""
    rows: list[dict[str, Any]] = []
    with workdir(args.keep) as tmp:
        async with static_backend(tmp) as backend:
            async with ollana_chain(tmp / "ollana", backend.url) as chain:
                rows += await _footprint(chain, args.settle)
            async with nginx_chain(tmp / "nginx", backend.port) as chain:
                rows += await _footprint(chain, args.settle)
    print(
        table(
            "Idle footprint (MB)",
            [
                "chain",
                "process",
                "RSS after start",
                "PSS after start",
                f"RSS after {USE_REQUESTS} requests",
                f"PSS after {USE_REQUESTS} requests",
            ],
            [
                (
                    r["chain"],
                    r["process"],
                    r["rss_start_mb"],
                    r["pss_start_mb"],
                    r["rss_used_mb"],
                    r["pss_used_mb"],
                )
                for r in rows
            ],
        )
    )
    data = {"command": "python -m bench.idle", "settle_s": args.settle, "rows": rows}
    path = write_results("idle", data)
    print(f"\nwritten {path}")
    return data


async def _footprint(chain: Target, settle: float) -> list[dict[str, Any]]:
    meters = dict(chain.procs)
    await asyncio.sleep(settle)
    start = {name: _memory(meter) for name, meter in meters.items()}
    async with aiohttp.ClientSession() as session:
        for _ in range(USE_REQUESTS):
            async with session.get(chain.url + "/api/version") as response:
                await response.read()
    await asyncio.sleep(settle)
    used = {name: _memory(meter) for name, meter in meters.items()}
    return [
        {
            "chain": chain.name,
            "process": name,
            "rss_start_mb": start[name][0],
            "pss_start_mb": start[name][1],
            "rss_used_mb": used[name][0],
            "pss_used_mb": used[name][1],
        }
        for name in meters
    ]


def _memory(meter: ProcMeter) -> tuple[float, float]:
    """RSS and PSS in MB."""
    rss = round(meter.usage().rss_mb, 1)
    pss = float("nan")
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{meter.pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = round(int(line.split()[1]) / 1024, 1)
                break
    return rss, pss


if __name__ == "__main__":
    main(__doc__ or "", run, add_arguments)
