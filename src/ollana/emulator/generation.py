"""Running a generation: pacing, writing each token as it is due, noticing the client leave."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ollana.emulator.state import EmulatorStats

__all__ = ["LineFormat", "Timing", "keep_alive_of", "run_stream", "run_whole"]


@dataclass(slots=True)
class Timing:
    """The checkpoints of one request, in perf_counter nanoseconds."""

    start: int = field(default_factory=time.perf_counter_ns)
    loaded: int = 0
    first: int = 0
    end: int = 0

    def mark_loaded(self) -> None:
        """The model is ready: load_duration ends here."""
        self.loaded = time.perf_counter_ns()

    def metrics(self, prompt_tokens: int, eval_count: int) -> dict[str, int]:
        """api.Metrics in nanoseconds; like Go's omitempty, zero values are left out."""
        end = self.end or time.perf_counter_ns()
        loaded = self.loaded or self.start
        first = self.first or loaded
        values = {
            "total_duration": max(1, end - self.start),
            "load_duration": max(1, loaded - self.start),
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": max(1, first - loaded),
            "eval_count": eval_count,
            "eval_duration": max(1, end - first),
        }
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True, slots=True)
class LineFormat:
    """One streamed line per token: only the stamp and the token change between lines."""

    head: bytes
    middle: bytes
    tail: bytes
    stamp: Callable[[], str]  # the line's time, taken as it is written, as Ollama does

    def __call__(self, piece: str) -> bytes:
        """The line that carries `piece`, stamped now."""
        return b"".join((self.head, self.stamp().encode(), self.middle, piece.encode(), self.tail))


async def run_stream(
    request: web.Request,
    stats: EmulatorStats,
    interval: float,
    timing: Timing,
    *,
    content_type: str,
    pieces: Iterable[str],
    line: Callable[[str], bytes],
    final: Callable[[], bytes],
) -> web.StreamResponse:
    """Stream `line(piece)` per token, paced `interval` seconds apart, then `final()`.

    Each line is built after its pacing wait and sent in one write, so its stamp is the moment
    it leaves and each token reaches the client as soon as it is due. A client that goes away
    (a failed write, or the handler cancelled) counts as a cancelled generation.
    """
    response = web.StreamResponse(headers={"Content-Type": content_type})
    stats.begin()
    try:
        await response.prepare(request)
        timing.first = time.perf_counter_ns()
        if interval > 0:
            loop = asyncio.get_running_loop()
            due = loop.time()
            for piece in pieces:
                due += interval
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await response.write(line(piece))
        else:
            for piece in pieces:
                await response.write(line(piece))
        timing.end = time.perf_counter_ns()
        await response.write(final())
        await response.write_eof()
    except ConnectionResetError:
        stats.cancel()
        return response
    except asyncio.CancelledError:
        stats.cancel()
        raise
    stats.finish()
    return response


async def run_whole(stats: EmulatorStats, interval: float, count: int, timing: Timing) -> None:
    """A generation answered at once: wait as long as the stream would have taken."""
    stats.begin()
    timing.first = time.perf_counter_ns()
    try:
        if interval > 0 and count:
            await asyncio.sleep(interval * count)
    except asyncio.CancelledError:
        stats.cancel()
        raise
    timing.end = time.perf_counter_ns()
    stats.finish()


def keep_alive_of(body: dict[str, Any]) -> int | None:
    """The request's keep_alive in nanoseconds (already decoded), if it gave one."""
    value = body.get("keep_alive")
    return value if isinstance(value, int) else None
