"""A load generator of paced NDJSON streams that timestamps every line as it arrives.

Each line the emulator writes carries `created_at`, stamped just before the write, on the
same machine's clock: arrival time minus created_at is that line's one-way latency through
whatever sits between. Comparing the same figure direct and through a chain gives the
latency the chain adds per chunk, without trusting pacing to be exact.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = [
    "RssSampler",
    "StreamResult",
    "go_time_ns",
    "latencies_ns",
    "run_streams",
    "stamps_ahead",
]

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


def stamps_ahead(reference: StreamResult, interval: float) -> bool:
    """Whether a paced emulator stamps each line before its pacing sleep rather than after.

    Then a line's own stamp is one interval early, and the next line's stamp (taken as soon
    as this one was written) marks when this one left; the last line is stamped as it goes.
    """
    gaps = sorted(
        a - c for a, c in zip(reference.arrived_ns[:-1], reference.created_ns[:-1], strict=True)
    )
    return bool(gaps) and gaps[len(gaps) // 2] > interval * 1e9 / 2


def latencies_ns(result: StreamResult, ahead: bool) -> list[int]:
    """Each line's time from leaving the backend to arriving here."""
    arrived, created = result.arrived_ns, result.created_ns
    if not ahead or not arrived:
        return [a - c for a, c in zip(arrived, created, strict=True)]
    sent = [*created[1:], created[-1]]
    return [a - c for a, c in zip(arrived, sent, strict=True)]


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


class RssSampler:
    """Samples the RSS of some processes while a block runs; keeps each one's maximum."""

    def __init__(self, meters: dict[str, Any], interval: float = 0.1) -> None:
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
