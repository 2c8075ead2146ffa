"""Waiting for a condition the code under test brings about, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pprint import pformat
from typing import Any

__all__ = ["DEADLINE", "POLL", "until", "until_read"]

DEADLINE = 30.0  # fails a wait that would otherwise hang; never reached when things work
POLL = 0.01


async def until(
    check: Callable[[], object],
    what: str | Callable[[], str],
    timeout: float = DEADLINE,
    *,
    not_yet: tuple[type[Exception], ...] = (),
    poll: float = POLL,
) -> Any:
    """Poll `check` (a function or coroutine function) until it gives something truthy; return it.

    An exception of a `not_yet` type counts as "not yet" (shown if the deadline passes); `what`
    may be a function, to describe the state at the deadline.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
        except not_yet as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            told = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout} s waiting for {told} (last: {last!r})")
        await asyncio.sleep(poll)


async def until_read(
    read: Callable[[], Awaitable[Any]],
    test: Callable[[Any], object],
    what: str,
    timeout: float = DEADLINE,
) -> Any:
    """Await `read()` until its value passes `test`; return that value, or fail showing the last."""
    seen: list[object] = [None]

    async def passed() -> tuple[object] | None:
        seen[0] = value = await read()
        return (value,) if test(value) else None  # a 1-tuple is truthy whatever the value

    found = await until(passed, lambda: f"{what}; last read:\n{pformat(seen[0])}", timeout)
    return found[0]
