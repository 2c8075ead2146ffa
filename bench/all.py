"""Every benchmark, one after another (each in its own process), then the results table.

    python -m bench.all [--quick]

--quick shortens every run (for checking the harness, not for figures).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench.common import busy

__all__ = ["main"]

# Every benchmark, in the order run, with the options that shorten it for --quick.
QUICK: dict[str, list[str]] = {
    "idle": ["--settle", "1"],
    "small": ["--seconds", "1", "--repeat", "1"],
    "streams": ["--levels", "1,100", "--tokens", "10"],
    "burst": ["--levels", "10,100", "--rounds", "1", "--gap", "1"],
    "large": ["--mib", "64"],
    "split": ["--seconds", "1"],
    "logcost": ["--calls", "2000", "--rounds", "2"],
}
RUN_TIMEOUT = 900.0
QUIET = 0.10  # busy fraction of all CPUs under which the machine counts as quiet


def main() -> None:
    """Run each benchmark module; stop at the first that fails."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, to check the harness")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. small,idle")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each benchmark, wait up to this long for the machine to be idle",
    )
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n] or list(QUICK)
    report = [sys.executable, "-m", "bench.report"]
    scratch: str | None = None
    if args.quick and "BENCH_RESULTS" not in os.environ:
        # Short runs make poor figures: they go to a scratch directory, not bench/results.
        scratch = tempfile.mkdtemp(prefix="ollana-bench-quick-")
        os.environ["BENCH_RESULTS"] = scratch
        report.append("--no-write")
        print(f"(quick: results go to {scratch}, removed at the end)")
    try:
        for name in chosen:
            extra = QUICK[name] if args.quick else []
            if args.wait_quiet:
                _wait_quiet(args.wait_quiet)
            started = time.monotonic()
            print(f"\n=== bench.{name} {' '.join(extra)}", flush=True)
            done = subprocess.run(
                [sys.executable, "-m", f"bench.{name}", *extra], timeout=RUN_TIMEOUT, check=False
            )
            print(f"=== bench.{name}: {time.monotonic() - started:.0f}s", flush=True)
            if done.returncode != 0:
                sys.exit(done.returncode)
        subprocess.run(report, timeout=60, check=True)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _wait_quiet(limit: float) -> None:
    """Wait (at most `limit` seconds) until other work leaves the CPUs mostly idle."""
    deadline = time.monotonic() + limit
    while True:
        load = busy(2.0)
        if load < QUIET or time.monotonic() >= deadline:
            print(f"(CPU {load:.0%} busy before this run)", flush=True)
            return


if __name__ == "__main__":
    main()
