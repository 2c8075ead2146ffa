"""A load generator of paced NDJSON streams that timestamps every line as it arrives.

Each line the emulator writes carries `created_at`, stamped just before the write, on the
same machine's clock: arrival time minus created_at is that line's one-way latency through
whatever sits between. Comparing the same figure direct and through a chain gives the
latency the chain adds per chunk, without trusting pacing to be exact.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["StreamResult", "go_time_ns", "latencies_ns", "run_streams"]

STREAM_TIMEOUT_MARGIN = 30.0


@dataclass(slots=True)
class StreamResult:
    """One stream as the client saw it."""

    ok: bool = False
    error: str | None = None
    status: int = 0
    ttft_ns: int | None = None
    created_ns: list[int] = field(default_factory=list)
    arrived_ns: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    out_of_order: int = 0
    done: bool = False


_minutes: dict[str, int] = {}


def go_time_ns(text: str) -> int:
    """Nanoseconds since the epoch of a Go RFC 3339 time (`…T06:33:41.86690327Z`, or ±hh:mm)."""
    minute = text[:16]
    base = _minutes.get(minute)
    if base is None:
        base = calendar.timegm(time.strptime(minute, "%Y-%m-%dT%H:%M")) * 1_000_000_000
        _minutes[minute] = base
    seconds = int(text[17:19])
    rest = text[19:]
    fraction = 0
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        fraction = int(rest[1:end].ljust(9, "0")[:9])
        rest = rest[end:]
    offset = 0
    if rest and rest[0] in "+-":
        offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    return base + (seconds - offset) * 1_000_000_000 + fraction


def latencies_ns(result: StreamResult) -> list[int]:
    """Each line's time from leaving the backend to arriving here."""
    return [a - c for a, c in zip(result.arrived_ns, result.created_ns, strict=True)]


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, delay: float, timeout: float
) -> StreamResult:
    result = StreamResult()
    await asyncio.sleep(delay)
    started = time.time_ns()
    last_created = 0
    try:
        async with (
            asyncio.timeout(timeout),
            session.post(url, data=body, headers={"Content-Type": "application/json"}) as response,
        ):
            result.status = response.status
            if response.status != 200:
                result.error = f"HTTP {response.status}: {(await response.read())[:200]!r}"
                return result
            async for line in response.content:
                arrived = time.time_ns()
                if not line.strip():
                    continue
                item: dict[str, Any] = json.loads(line)
                if "error" in item:
                    result.error = str(item["error"])
                    return result
                created = go_time_ns(item["created_at"])
                if result.ttft_ns is None:
                    result.ttft_ns = arrived - started
                if created < last_created:
                    result.out_of_order += 1
                last_created = created
                result.created_ns.append(created)
                result.arrived_ns.append(arrived)
                if item.get("done"):
                    result.done = True
                else:
                    result.tokens.append(item.get("response", ""))
        result.ok = result.done
        if not result.done:
            result.error = "stream ended without its final line"
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def run_streams(
    base_url: str, count: int, tokens: int, ramp: float, timeout: float
) -> tuple[list[StreamResult], float]:
    """`count` concurrent generate streams of `tokens` tokens, their starts spread over `ramp`.

    Returns the results and the wall time of the whole run.
    """
    body = json.dumps(
        {"model": "llama3.2", "prompt": "Tell me about the sea.",
         "options": {"num_predict": tokens}}
    ).encode()  # fmt: skip
    connector = aiohttp.TCPConnector(limit=0)
    started = time.perf_counter()
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        jobs = [
            _one(session, base_url + "/api/generate", body, ramp * i / count, timeout + ramp)
            for i in range(count)
        ]
        results = await asyncio.gather(*jobs)
    return list(results), time.perf_counter() - started
