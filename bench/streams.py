"""Paced token streams: added time to first token and per-chunk latency, CPU, peak RSS.

The backend is `ollana emulate --tokens-per-second N`. For 1, 100 and 1,000 concurrent
`/api/generate` streams (their starts spread over a short ramp), every line's arrival is
compared with the `created_at` the emulator stamped on it; each stream's tokens must equal
the reference sequence and arrive in order.

    python -m bench.streams [--levels 1,100,1000] [--tokens 40] [--tps 10]
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from bench.common import metered, per_process, percentile, table, write_results
from bench.runner import main, workdir
from bench.setups import Target, direct, emulator, nginx_chain, ollana_chain
from bench.streamload import StreamResult, latencies_ns, run_streams

__all__ = ["run"]

# The load comes from one device: at the default share (768) streams past it would wait
# for a connection or fail (bench.connshare measures sharing); here the cap is the total.
DEVICE_CONNECTIONS = 1024

RAMP_PER_STREAM = 0.002  # seconds between stream starts: 1,000 streams start over 2 s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument(
        "--device-connections", type=int, default=DEVICE_CONNECTIONS,
        help="the server's max_device_connections (the load is one device)",
    )  # fmt: skip
    parser.add_argument(
        "--levels", default="1,100,1000", help="concurrent streams, comma-separated"
    )
    parser.add_argument("--tokens", type=int, default=40, help="tokens per stream")
    parser.add_argument("--tps", type=float, default=10.0, help="tokens a second per stream")
    parser.add_argument(
        "--ramp-ms", type=float, default=RAMP_PER_STREAM * 1000, help="ms between stream starts"
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; print its table; write bench/results/streams.json."""
    levels = [int(n) for n in args.levels.split(",") if n.strip()]
    rows: list[dict[str, Any]] = []
    with workdir(args.keep) as tmp:
        async with emulator(tmp, args.tps) as backend, contextlib.AsyncExitStack() as stack:
            targets = [
                direct(backend.url),
                await stack.enter_async_context(
                    ollana_chain(tmp, backend.url, server_env=_server_env(args))
                ),
                await stack.enter_async_context(nginx_chain(tmp, backend.port)),
            ]
            reference, _ = await run_streams(backend.url, 1, args.tokens, 0.0, _timeout(args))
            if not reference[0].ok:
                raise RuntimeError(f"the emulator did not stream: {reference[0].error}")
            expected = reference[0].tokens
            for level in levels:
                for target in targets:
                    rows.append(await _level(target, level, expected, args))
    _added(rows)
    print(
        table(
            f"Paced streams ({args.tokens} tokens at {args.tps:g}/s each; "
            "latencies in ms; added = minus direct)",
            [
                "streams",
                "path",
                "ok",
                "lost",
                "reordered",
                "TTFT p50",
                "added TTFT p50",
                "added TTFT p99",
                "chunk p50",
                "chunk p99",
                "added chunk p99",
                "CPU s per process",
                "peak RSS MB per process",
            ],
            [
                (
                    r["streams"],
                    r["target"],
                    f"{r['ok']}/{r['streams']}",
                    r["lost_chunks"],
                    r["reordered"],
                    r["ttft_p50_ms"],
                    r["added_ttft_p50_ms"],
                    r["added_ttft_p99_ms"],
                    r["chunk_p50_ms"],
                    r["chunk_p99_ms"],
                    r["added_chunk_p99_ms"],
                    per_process(r["cpu_s"]),
                    per_process(r["peak_rss_mb"]),
                )
                for r in rows
            ],
        )
    )
    data = {
        "command": "python -m bench.streams",
        "tokens_per_stream": args.tokens,
        "tokens_per_second": args.tps,
        "ramp_seconds_per_stream": args.ramp_ms / 1000,
        "max_device_connections": args.device_connections,
        "rows": rows,
    }
    path = write_results("streams", data)
    print(f"\nwritten {path}")
    return data


def _server_env(args: argparse.Namespace) -> dict[str, str]:
    """One device (the load) may hold this many connections at the server (its fair share)."""
    return {"OLLANA_LIMITS_MAX_DEVICE_CONNECTIONS": str(args.device_connections)}


def _timeout(args: argparse.Namespace) -> float:
    return float(args.tokens / args.tps * 3 + 30)


async def _level(
    target: Target, level: int, expected: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    async with metered(target.procs) as meters:
        results, wall = await run_streams(
            target.url, level, args.tokens, args.ramp_ms / 1000 * level if level > 1 else 0.0,
            _timeout(args),
        )  # fmt: skip
    return {
        "streams": level,
        "target": target.name,
        "wall_s": round(wall, 3),
        "interference": round(meters.interference, 3),
        **_judge(results, expected),
        "cpu_s": meters.cpu_s,
        "peak_rss_mb": meters.peak_rss_mb,
    }


def _judge(results: list[StreamResult], expected: list[str]) -> dict[str, Any]:
    """Counts of good streams, lost and reordered chunks, and latency percentiles in ms."""
    ok = lost = reordered = 0
    errors: dict[str, int] = {}
    ttft: list[float] = []
    chunks: list[float] = []
    for result in results:
        tokens = result.tokens
        reordered += result.out_of_order
        if tokens != expected and sorted(tokens) == sorted(expected):
            reordered += 1
        lost += max(0, len(expected) - len(tokens)) + (0 if result.done else 1)
        why = result.error
        if why is None and tokens != expected and len(tokens) >= len(expected):
            why = "tokens differ from the reference"
        if result.ok and tokens == expected:
            ok += 1
        if why:
            errors[why[:120]] = errors.get(why[:120], 0) + 1
        if result.ttft_ns is not None:
            ttft.append(result.ttft_ns / 1e6)
        chunks.extend(ns / 1e6 for ns in latencies_ns(result))
    return {
        "ok": ok,
        "lost_chunks": lost,
        "reordered": reordered,
        "errors": errors,
        "chunks": len(chunks),
        "ttft_p50_ms": percentile(ttft, 50),
        "ttft_p99_ms": percentile(ttft, 99),
        "chunk_p50_ms": percentile(chunks, 50),
        "chunk_p99_ms": percentile(chunks, 99),
        "chunk_max_ms": max(chunks, default=float("nan")),
    }


def _added(rows: list[dict[str, Any]]) -> None:
    by = {(r["streams"], r["target"]): r for r in rows}
    for row in rows:
        base = by[(row["streams"], "direct")]
        for key in ("ttft_p50_ms", "ttft_p99_ms", "chunk_p50_ms", "chunk_p99_ms"):
            row[f"added_{key}"] = row[key] - base[key]


if __name__ == "__main__":
    main(__doc__ or "", run, add_arguments)
