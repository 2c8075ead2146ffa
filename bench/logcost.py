"""The cost of one access-log line: µs per `access_log()` call, as a proxy process pays it.

Each case configures logging as `ollana serve` does (text or JSON, to a log file), then
calls `access_log()` in a tight loop inside a running event loop (as the proxy does) and
flushes at the end, so that buffered writes are paid for too. Wall and CPU time per call,
best and median of the rounds. "info off" is the cost with `--log-level warn`.

    python -m bench.logcost [--calls 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import table, write_results
from bench.runner import main, workdir
from ollana.logs import access_log, setup_logging

__all__ = ["run"]

CASES = (
    ("text", "info"),
    ("json", "info"),
    ("text", "warn"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per case")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; print its table; write bench/results/logcost.json."""
    rows: list[dict[str, Any]] = []
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        with workdir(args.keep) as tmp:
            for fmt, level_name in CASES:
                rows.append(_case(tmp / f"{fmt}-{level_name}.log", fmt, level_name, args))
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)
    print(
        table(
            f"access_log() cost (µs per call, {args.calls:,} calls x {args.rounds} rounds)",
            ["format", "level", "wall best", "wall median", "CPU best", "CPU median"],
            [
                (
                    r["format"],
                    r["level"],
                    r["wall_us_best"],
                    r["wall_us_median"],
                    r["cpu_us_best"],
                    r["cpu_us_median"],
                )
                for r in rows
            ],
        )
    )
    data = {
        "command": "python -m bench.logcost",
        "calls": args.calls,
        "rounds": args.rounds,
        "rows": rows,
    }
    path = write_results("logcost", data)
    print(f"\nwritten {path}")
    return data


def _case(path: Path, fmt: str, level: str, args: argparse.Namespace) -> dict[str, Any]:
    setup_logging(level, fmt, path)
    handlers = logging.getLogger().handlers
    calls = args.calls
    peer, server = "127.0.0.1:50000", "3f2a9c01"
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(args.rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(calls):
            access_log(peer, "POST", "/api/chat", 200, i * 1e-6, server=server, route="loaded")
        for handler in handlers:
            handler.flush()
        walls.append((time.perf_counter() - wall) / calls * 1e6)
        cpus.append((time.process_time() - cpu) / calls * 1e6)
    lines = path.read_text().count("\n") if path.exists() else 0
    expected = calls * args.rounds if level == "info" else 0
    if lines != expected:
        raise SystemExit(f"{fmt}/{level}: {lines} lines in the log, expected {expected}")
    return {
        "format": fmt,
        "level": level,
        "wall_us_best": min(walls),
        "wall_us_median": statistics.median(walls),
        "cpu_us_best": min(cpus),
        "cpu_us_median": statistics.median(cpus),
    }


if __name__ == "__main__":
    main(__doc__ or "", run, add_arguments)
