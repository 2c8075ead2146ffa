"""What every benchmark shares: machine facts, process meters, percentiles, tables, results."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS",
    "Interference",
    "Metered",
    "ProcMeter",
    "RssSampler",
    "busy",
    "machine",
    "median",
    "metered",
    "per_process",
    "percentile",
    "ratio",
    "table",
    "write_results",
]

# BENCH_RESULTS puts results elsewhere (`bench.all --quick` does, to keep real ones).
RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare figures: CPU, cores, kernel, versions, date."""
    import aiohttp

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import uvloop

        loop = f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        loop = "asyncio"
    try:
        import aiohttp._http_parser

        parser = "C"
    except ImportError:
        parser = "pure Python"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "aiohttp_parser": parser,
        "event_loop": loop,
        "nginx": _version(["nginx", "-v"]),
        "wrk": _version(["wrk", "-v"]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        # Other work on the machine skews every figure: this says how quiet it was.
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }


def _version(argv: list[str]) -> str:
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (done.stderr + done.stdout).strip().splitlines()
    return text[0] if text else "unknown"


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds (user + system, and each) and memory of one process at one moment."""

    cpu: float
    rss_mb: float
    hwm_mb: float
    user: float = 0.0
    system: float = 0.0


class ProcMeter:
    """Reads a process's CPU time and memory from /proc (no third-party meter needed)."""

    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        self.name = name

    def usage(self) -> Usage:
        """CPU seconds so far, current RSS and peak RSS (VmHWM) in MB."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        user, system = int(fields[11]) / _TICKS, int(fields[12]) / _TICKS
        status = _status(self.pid)
        rss, hwm = status.get("VmRSS", 0) / 1024, status.get("VmHWM", 0) / 1024
        return Usage(user + system, rss, hwm, user, system)

    def reset_peak(self) -> bool:
        """Restart VmHWM from the current RSS (Linux: clear_refs 5); False where not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Vm"):
            out[key] = int(value.split()[0])
    return out


def busy(seconds: float = 1.0) -> float:
    """The fraction of the machine's CPU time that was busy over `seconds` (from /proc/stat)."""
    import time

    busy0, total0 = _machine_ticks()
    time.sleep(seconds)
    busy1, total1 = _machine_ticks()
    return (busy1 - busy0) / max(1, total1 - total0)


def _tree_ticks(root: int) -> int:
    """CPU ticks of a process and all its descendants, living or reaped."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        # utime + stime + cutime + cstime: children that exited count in their parent.
        ticks[pid] = sum(int(v) for v in fields[11:15])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += children.get(pid, [])
    return total


def _machine_ticks() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


class Interference:
    """How much of the machine other programs used while a block ran (0–1 of all CPUs).

    Busy CPU time minus what this process and everything it started used: a benchmark on a
    shared machine can tell a round that something else disturbed.
    """

    def __init__(self) -> None:
        self.fraction = 0.0

    def __enter__(self) -> Interference:
        self._busy, self._total = _machine_ticks()
        self._ours = _tree_ticks(os.getpid())
        return self

    def __exit__(self, *exc: object) -> None:
        busy, total = _machine_ticks()
        ours = _tree_ticks(os.getpid())
        other = (busy - self._busy) - (ours - self._ours)
        self.fraction = max(0.0, other / max(1, total - self._total))


class RssSampler:
    """Samples the RSS of some processes while a block runs; keeps each one's maximum."""

    def __init__(self, meters: Mapping[str, ProcMeter], interval: float = 0.1) -> None:
        self._meters = meters
        self._interval = interval
        self.peak: dict[str, float] = dict.fromkeys(meters, 0.0)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sample()

    def _sample(self) -> None:
        for name, meter in self._meters.items():
            with contextlib.suppress(OSError):
                self.peak[name] = max(self.peak[name], meter.usage().rss_mb)

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self._interval)


@dataclass(slots=True)
class Metered:
    """What `metered` saw of some processes over a block; filled in as the block ends."""

    before: dict[str, Usage]
    interference: float = 0.0  # Interference.fraction, unrounded
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def metered(procs: Mapping[str, ProcMeter]) -> AsyncIterator[Metered]:
    """Meter `procs` over the block: CPU seconds, peak RSS in MB, and the machine's interference."""
    for meter in procs.values():
        meter.reset_peak()
    result = Metered({name: meter.usage() for name, meter in procs.items()})
    with Interference() as interference:
        async with RssSampler(procs) as sampler:
            yield result
    after = {name: meter.usage() for name, meter in procs.items()}
    before = result.before
    result.interference = interference.fraction
    result.cpu_s = {n: round(after[n].cpu - before[n].cpu, 2) for n in before}
    result.peak_rss_mb = {n: round(max(after[n].hwm_mb, sampler.peak[n]), 1) for n in before}


def per_process(values: Mapping[str, float]) -> str:
    """A table cell of one figure per process: `name value, …`, or — for none."""
    return ", ".join(f"{name} {value:g}" for name, value in values.items()) or "—"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Iterable[float]) -> float:
    """The median; NaN for no values."""
    data = list(values)
    return statistics.median(data) if data else float("nan")


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, rounded; None when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return round(value / reference, 3)


def table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table (also valid Markdown)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = [f"\n{title}\n"]
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with the machine facts; returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), **data}
    path.write_text(json.dumps(_clean(payload), indent=2, allow_nan=False) + "\n")
    return path


def _clean(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured is null."""
    if isinstance(value, float):
        return None if value != value else round(value, 6)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
