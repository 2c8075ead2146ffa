"""Profile both ollana processes under load with py-spy; print where their time goes.

Starts the static backend and the ollana chain, loads it with wrk (small requests) or with
paced streams, and records each process with py-spy meanwhile. Writes the collapsed stacks
(what flamegraph.pl and speedscope read) to bench/results/profiles/, and prints the top
functions of each process.

    pip install py-spy       # into the same environment; py-spy needs ptrace (root, or
                             # kernel.yama.ptrace_scope=0)
    python -m bench.profile [--load small|streams] [--seconds 8] [--rate 250]

py-spy samples wall-clock stacks of running threads: time a process spends waiting to be
scheduled inside a system call shows up under that call. CPU per request comes from
`bench.small` (from /proc); this tells which code it goes to.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS
from bench.runner import main, workdir
from bench.setups import emulator, ollana_chain, static_backend
from bench.streamload import run_streams
from bench.wrk import wrk

__all__ = ["run", "summarize"]

OUT = RESULTS / "profiles"
TOP = 25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This tool's options."""
    parser.add_argument("--load", choices=["small", "streams"], default="small")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the recording")
    parser.add_argument("--rate", type=int, default=250, help="samples a second")
    parser.add_argument("--tag", default="", help="added to the output file names")
    parser.add_argument("--streams", type=int, default=300, help="concurrent streams (streams)")
    parser.add_argument("--ramp", type=float, default=0.6, help="seconds over which they start")
    parser.add_argument(
        "--device-connections", type=int, default=1024,
        help="the server's max_device_connections (the load is one device)",
    )  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Record both processes under the chosen load; print the summaries."""
    here = Path(sys.executable).parent / "py-spy"
    spy = str(here) if here.exists() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    OUT.mkdir(parents=True, exist_ok=True)
    name = f"{args.load}{'-' + args.tag if args.tag else ''}"
    with workdir(args.keep) as tmp:
        backend_cm = static_backend(tmp) if args.load == "small" else emulator(tmp, 10.0)
        async with (
            backend_cm as backend,
            ollana_chain(tmp, backend.url, server_env=_server_env(args)) as chain,
        ):
            records = {proc: OUT / f"{name}-{proc}.txt" for proc in chain.procs}
            spies = [
                await _record(spy, meter.pid, records[proc], args)
                for proc, meter in chain.procs.items()
            ]
            await asyncio.sleep(0.5)
            if args.load == "small":
                url = chain.url + "/api/version"
                await wrk(url, connections=32, threads=2, seconds=args.seconds)
            else:
                tokens = round(args.seconds * 10)
                await run_streams(chain.url, args.streams, tokens, args.ramp, args.seconds * 4)
            for spy_proc in spies:
                await asyncio.wait_for(spy_proc.wait(), args.seconds + 30)
    summaries = {}
    for proc, path in records.items():
        if not path.exists():
            print(f"py-spy wrote nothing for {proc} (is ptrace allowed?)")
            continue
        summaries[proc] = summarize(path)
        print(f"\n{proc} ({path}):\n{summaries[proc]}")
    return {"profiles": {p: str(path) for p, path in records.items()}}


def _server_env(args: argparse.Namespace) -> dict[str, str]:
    return {"OLLANA_LIMITS_MAX_DEVICE_CONNECTIONS": str(args.device_connections)}


async def _record(
    spy: str, pid: int, out: Path, args: argparse.Namespace
) -> asyncio.subprocess.Process:
    """Start py-spy on a process (without pausing it at each sample)."""
    argv = [spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--nonblocking"]
    argv += ["--duration", str(round(args.seconds)), "--format", "raw", "--output", str(out)]
    return await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


def summarize(path: Path, top: int = TOP) -> str:
    """The functions with most samples, on their own and with what they call."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples; own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("with callees (below the event loop):")
    # The frames every stack starts with (interpreter, command line, event loop) say nothing.
    outer = max(inclusive.values(), default=0) * 0.97
    shown = [(f, n) for f, n in inclusive.most_common(top * 4) if n < outer]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in shown[:top]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """'func (path/to/module.py:12)' → 'func (module.py)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name


if __name__ == "__main__":
    main(__doc__ or "", run, add_arguments)
