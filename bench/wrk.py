"""Running wrk and reading its report."""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WrkResult", "post_script", "wrk"]

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s)")
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured; latencies in microseconds."""

    requests: int
    seconds: float
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    errors: int


def post_script(directory: Path, body: str) -> Path:
    """A wrk Lua script that POSTs a JSON body."""
    path = directory / "post.lua"
    quoted = body.replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{quoted}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


async def wrk(
    url: str, *, connections: int, threads: int, seconds: float, script: Path | None = None
) -> WrkResult:
    """Run wrk with latency statistics and parse its report."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    args = [binary, f"-c{connections}", f"-t{threads}", f"-d{max(1, round(seconds))}s", "--latency"]
    if script is not None:
        args += ["-s", str(script)]
    proc = await asyncio.create_subprocess_exec(
        *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    return parse(out.decode(errors="replace"))


def parse(text: str) -> WrkResult:
    """Read wrk's --latency report."""
    percentiles = {float(q): float(v) * _UNITS[u] for q, v, u in _PERCENTILE.findall(text)}
    requests = _REQUESTS.search(text)
    rps = _RPS.search(text)
    if requests is None or rps is None or 50.0 not in percentiles:
        raise RuntimeError(f"cannot read wrk's report:\n{text}")
    errors = sum(int(n) for n in _NON_2XX.findall(text))
    socket_errors = _SOCKET.search(text)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return WrkResult(
        requests=int(requests[1]),
        seconds=float(requests[2]) * _UNITS[requests[3]] / 1e6,
        rps=float(rps[1]),
        p50_us=percentiles[50.0],
        p90_us=percentiles.get(90.0, float("nan")),
        p99_us=percentiles.get(99.0, float("nan")),
        errors=errors,
    )
