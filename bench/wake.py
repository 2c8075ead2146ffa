"""Wake-on-LAN across hosts: from a request for a sleeping server's model to its answer.

The scenario of tests/lan/test_wake.py (network namespaces, root): server A and client C
are paired; A's ollana and Ollama stop; C restarts; C gets two requests for A's model side
by side; a listener on A's port 9 sees the magic packet and a helper starts A's Ollama and
ollana again. "Request to answer" is the first request's time; "host start" is what the
helper took to start A's processes (what a real machine's resume would take instead);
their difference is what ollana adds: noticing the request needs A, the packet, hearing
A's announce, probing it, fetching its model list, forwarding the request.

    python -m bench.wake [--repeat 5] [--timings fast|default]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tests.lan.lab import FAST_TIMINGS, Lab
from tests.lan.netns import Network, unavailable_reason
from tests.lan.wakeup import sleep_and_wake

from bench.common import median, table, write_results
from bench.runner import main, workdir

__all__ = ["run"]

PROFILES: dict[str, dict[str, str]] = {"fast": dict(FAST_TIMINGS), "default": {}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--repeat", type=int, default=5, help="runs")
    parser.add_argument("--timings", choices=["fast", "default"], default="default")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario `--repeat` times; print the figures; write bench/results/wake.json."""
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"bench.wake needs Linux network namespaces: {reason}")
    runs: list[dict[str, Any]] = []
    with workdir(args.keep) as tmp:
        for n in range(args.repeat):
            runs.append(await _once(tmp / str(n), args.timings))
    keys = ("request_to_answer_s", "host_start_s", "added_s")
    summary = {k: median(r[k] for r in runs) for k in keys}
    summary.update({f"{k}_max": max(r[k] for r in runs) for k in keys})
    print(table(
        f"Wake-on-LAN, {args.timings} timings: seconds (median and worst of {len(runs)} runs)",
        ["request to answer", "host start", "added by ollana", "added, worst", "packets / run"],
        [(summary["request_to_answer_s"], summary["host_start_s"], summary["added_s"],
          summary["added_s_max"], median(r["packets"] for r in runs))],
    ))  # fmt: skip
    data = {
        "command": "python -m bench.wake " + " ".join(sys.argv[1:]),
        "timings": PROFILES[args.timings] or "ollana's defaults",
        "summary": summary,
        "runs": runs,
    }
    print(f"results: {write_results('wake', data)}")
    return data


async def _once(where: Path, profile: str) -> dict[str, Any]:
    network = Network(where)
    lab = Lab(network, timings=PROFILES[profile])
    try:
        result = await sleep_and_wake(network, lab, requests=2, restart_client=True)
    finally:
        await lab.close()
        network.close()
    if any(reply.status != 200 for reply in result.replies):
        raise RuntimeError(f"a request failed: {[r.status for r in result.replies]}")
    return {
        "request_to_answer_s": round(result.request_to_answer, 4),
        "host_start_s": round(result.host_start, 4),
        "added_s": round(result.overhead, 4),
        "packets": len(result.packets),
    }


if __name__ == "__main__":
    main(__doc__.splitlines()[0], run, add_arguments)
