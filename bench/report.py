"""The results table: reads bench/results/*.json, prints Markdown, updates both READMEs.

python -m bench.report [--no-write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS, table
from bench.split import TABLE_HEADER, TABLE_KEYS

__all__ = ["render"]

HERE = Path(__file__).resolve().parent
# Each file with the markers gets the same table: bench/README.md and the project's own.
READMES = (HERE / "README.md", HERE.parent / "README.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text}{unit}"


def _ratio(value: Any, reference: Any) -> str:
    if not value or not reference:
        return "—"
    return f"{value / reference:.2f}×"


def _pair(row: dict[str, Any], a: str, b: str, unit: str) -> str:
    if not row:
        return "—"
    return f"{_fmt(row.get(a))} / {_fmt(row.get(b))}{unit}"


def _small(data: dict[str, Any]) -> list[list[str]]:
    by = {(r["request"], r["target"]): r for r in data["rows"]}
    rows = []
    logs = data.get("access_log", True)
    for request in dict.fromkeys(r["request"] for r in data["rows"]):
        d, o, n = (by.get((request, t), {}) for t in ("direct", "ollana", "nginx"))
        label = request if logs else f"{request}, no access logs"
        if logs:
            rows += [
                [f"{label}: latency p50 / p99, 1 connection", _pair(d, "p50_us", "p99_us", " µs"),
                 _pair(o, "p50_us", "p99_us", " µs"), _pair(n, "p50_us", "p99_us", " µs"),
                 _ratio(o.get("p50_us"), n.get("p50_us"))],
                [f"{label}: added p50 latency", "—", _fmt(o.get("added_p50_us"), " µs"),
                 _fmt(n.get("added_p50_us"), " µs"),
                 _ratio(o.get("added_p50_us"), n.get("added_p50_us"))],
            ]  # fmt: skip
        rows += [
            [f"{label}: throughput, {data.get('connections', 32)} connections",
             _fmt(d.get("rps"), " req/s"), _fmt(o.get("rps"), " req/s"),
             _fmt(n.get("rps"), " req/s"), _ratio(o.get("rps"), n.get("rps"))],
            [f"{label}: CPU per request, each proxy process", "—",
             _procs(o.get("cpu_us_per_request"), " µs"),
             _procs(n.get("cpu_us_per_request"), " µs"), ""],
        ]  # fmt: skip
    return rows


def _streams(data: dict[str, Any]) -> list[list[str]]:
    by = {(r["streams"], r["target"]): r for r in data["rows"]}
    rows = []
    for level in dict.fromkeys(r["streams"] for r in data["rows"]):
        d, o, n = (by.get((level, t), {}) for t in ("direct", "ollana", "nginx"))
        rows += [
            [f"{_n(level)}: complete, in order", _complete(d), _complete(o), _complete(n), ""],
            [f"{_n(level)}: time to first token p50 / p99", _pair(d, *_TTFT),
             _pair(o, *_TTFT), _pair(n, *_TTFT), ""],
            [f"{_n(level)}: added time to first token p50", "—",
             _fmt(o.get("added_ttft_p50_ms"), " ms"), _fmt(n.get("added_ttft_p50_ms"), " ms"), ""],
            [f"{_n(level)}: per-chunk latency p50 / p99", _pair(d, *_CHUNK),
             _pair(o, *_CHUNK), _pair(n, *_CHUNK), ""],
            [f"{_n(level)}: CPU seconds, each process", "—", _procs(o.get("cpu_s"), " s"),
             _procs(n.get("cpu_s"), " s"), ""],
            [f"{_n(level)}: peak RSS, each process", "—", _procs(o.get("peak_rss_mb"), " MB"),
             _procs(n.get("peak_rss_mb"), " MB"), ""],
        ]  # fmt: skip
    return rows


def _burst(data: dict[str, Any]) -> list[list[str]]:
    by = {(r["streams"], r.get("kind", "cold"), r["target"]): r for r in data["rows"]}
    rows = []
    for level, kind in dict.fromkeys((r["streams"], r.get("kind", "cold")) for r in data["rows"]):
        d, o, n = (by.get((level, kind, t), {}) for t in ("direct", "ollana", "nginx"))
        name = f"burst of {level:,} within {data.get('spread_ms', 1):g} ms, {kind}"
        added = ("added_ttft_p50_ms", "added_ttft_p99_ms", " ms")
        rows += [
            [f"{name}: complete", *(f"{r['ok']}/{r['of']}" if r else "—" for r in (d, o, n)), ""],
            [f"{name}: added time to first token p50 / p99", "—", _pair(o, *added),
             _pair(n, *added), _ratio(o.get("added_ttft_p50_ms"), n.get("added_ttft_p50_ms"))],
            [f"{name}: per-chunk latency p99", _fmt(d.get("chunk_p99_ms"), " ms"),
             _fmt(o.get("chunk_p99_ms"), " ms"), _fmt(n.get("chunk_p99_ms"), " ms"),
             _ratio(o.get("chunk_p99_ms"), n.get("chunk_p99_ms"))],
        ]  # fmt: skip
    return rows


def _n(level: int) -> str:
    return f"{level:,} stream" + ("" if level == 1 else "s")


_TTFT = ("ttft_p50_ms", "ttft_p99_ms", " ms")
_CHUNK = ("chunk_p50_ms", "chunk_p99_ms", " ms")


def _complete(row: dict[str, Any]) -> str:
    if not row:
        return "—"
    lost, reordered = row.get("lost_chunks", 0), row.get("reordered", 0)
    text = f"{row.get('ok')}/{row.get('streams')}"
    return text if not (lost or reordered) else f"{text} ({lost} lost, {reordered} reordered)"


def _large(data: dict[str, Any]) -> list[list[str]]:
    by = {(r["case"], r["target"]): r for r in data["rows"]}
    gib = data["bytes"] / 2**30
    rows = []
    for case in ("upload", "download"):
        d, o, n = (by.get((case, t), {}) for t in ("direct", "ollana", "nginx"))
        rows += [
            [f"{gib:g} GiB {case}: throughput", _fmt(d.get("mb_s"), " MB/s"),
             _fmt(o.get("mb_s"), " MB/s"), _fmt(n.get("mb_s"), " MB/s"),
             _ratio(o.get("mb_s"), n.get("mb_s"))],
            [f"{gib:g} GiB {case}: peak RSS, each process", "—",
             _procs(o.get("peak_rss_mb"), " MB"), _procs(n.get("peak_rss_mb"), " MB"), ""],
        ]  # fmt: skip
    return rows


def _idle(data: dict[str, Any]) -> list[list[str]]:
    by: dict[str, dict[str, float]] = {}
    pss: dict[str, dict[str, float]] = {}
    for r in data["rows"]:
        by.setdefault(r["chain"], {})[r["process"]] = r["rss_start_mb"]
        pss.setdefault(r["chain"], {})[r["process"]] = r["pss_start_mb"]
    return [
        ["idle RSS after start, each process", "—", _procs(by.get("ollana"), " MB"),
         _procs(by.get("nginx"), " MB"), ""],
        ["idle PSS after start, each process", "—", _procs(pss.get("ollana"), " MB"),
         _procs(pss.get("nginx"), " MB"), ""],
    ]  # fmt: skip


def _lan(data: dict[str, Any] | None) -> list[str]:
    """Discovery and failover tables, from the multi-host harness (`python -m bench.lan`)."""
    summary = (data or {}).get("summary") or {}
    discovery, failover = summary.get("discovery") or [], summary.get("failover") or []
    if not discovery and not failover:
        return ["", "Discovery and failover: pending (`python -m bench.lan`, needs root)."]
    lines = ["", "Discovery and failover across hosts (`python -m bench.lan`; seconds, median):"]
    if discovery:
        head = ["timings", "case", "seen", "usable (from start)", "usable (from ready)", "runs"]
        keys = ["profile", "case", "seen_from_start_s", "usable_from_start_s",
                "usable_from_ready_s", "runs"]  # fmt: skip
        lines += ["", table("", head, [[_fmt(r.get(k)) for k in keys] for r in discovery])]
    if failover:
        head = ["timings", "fault", "ejected", "failed requests", "of", "slowest request", "runs"]
        keys = ["profile", "fault", "ejected_s", "failed", "requests", "slowest_s", "runs"]
        lines += ["", table("", head, [[_fmt(r.get(k)) for k in keys] for r in failover])]
    return [line.strip() if line.startswith("\n") else line for line in lines]


def _procs(values: dict[str, float] | None, unit: str) -> str:
    if not values:
        return "—"
    return ", ".join(f"{name} {_fmt(value)}{unit}" for name, value in values.items())


def _machine(data: dict[str, Any]) -> str:
    m = data.get("machine") or {}
    others = [r.get("interference") for r in data.get("rows") or []]
    disturbed = max((v for v in others if isinstance(v, int | float)), default=None)
    noise = "" if disturbed is None else f"; other programs used up to {disturbed:.0%} of the CPUs"
    return (
        f"- `{data.get('command')}`: {m.get('cpu')}, {m.get('cores')} cores, Linux "
        f"{m.get('kernel')}, Python {m.get('python')}, aiohttp {m.get('aiohttp')} "
        f"({m.get('aiohttp_parser')} parser), {m.get('event_loop')}, {m.get('nginx')}; "
        f"{m.get('date')}{noise}"
    )


def render() -> str:
    """The whole results section, as Markdown."""
    sections = [
        ("small", _small),
        ("small-no-access-log", _small),
        ("streams", _streams),
        ("burst", _burst),
        ("large", _large),
        ("idle", _idle),
    ]
    rows: list[list[str]] = []
    runs: list[str] = []
    for name, render_rows in sections:
        data = _load(name)
        if data is None:
            continue
        rows += render_rows(data)
        runs.append(_machine(data))
    header = ["figure", "direct", "ollana chain", "nginx chain", "ollana ÷ nginx"]
    text = table("", header, rows).strip()
    lines = [text, *_lan(_load("lan")), "", "Where and when each part ran:", ""]
    lines += runs
    split = _load("split")
    if split is not None:
        lines += ["", "Where one hop's CPU goes (`python -m bench.split`):", ""]
        lines += [_machine(split), ""]
        cells = [[r[k] for k in TABLE_KEYS] for r in split["rows"]]
        lines.append(table("", TABLE_HEADER, cells).strip())
    return "\n".join(lines) + "\n"


def main() -> None:
    """Print the results section and put it into each README between its markers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true", help="only print")
    args = parser.parse_args()
    text = render()
    print(text)
    if args.no_write:
        return
    for readme in READMES:
        content = readme.read_text() if readme.exists() else ""
        if BEGIN in content and END in content:
            head, rest = content.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
            print(f"updated {readme}")


if __name__ == "__main__":
    main()
