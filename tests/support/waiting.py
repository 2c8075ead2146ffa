"""Waiting for a condition the code under test brings about, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

__all__ = ["DEADLINE", "POLL", "until"]

DEADLINE = 30.0  # fails a wait that would otherwise hang; never reached when things work
POLL = 0.01


async def until(check: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Poll `check` (a function or a coroutine function) until it gives something truthy."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return
        await asyncio.sleep(POLL)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
