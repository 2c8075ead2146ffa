"""Discovery on loopback: the broadcast address that reaches every socket, and an inbox."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ollana.discovery import Message
from tests.support.waiting import DEADLINE

__all__ = ["LOOPBACK_BROADCAST", "Inbox"]

# Reaches every socket bound to the port on loopback (Linux); a unicast to a shared port
# reaches only one of them.
LOOPBACK_BROADCAST = "127.255.255.255"


class Inbox:
    """What a DiscoveryService delivered, in order, to await one message at a time."""

    def __init__(self) -> None:
        self.seen: list[tuple[Message, tuple[str, int]]] = []
        self._queue: asyncio.Queue[tuple[Message, tuple[str, int]]] = asyncio.Queue()

    def __call__(self, msg: Message, source: tuple[str, int]) -> None:
        self.seen.append((msg, source))
        self._queue.put_nowait((msg, source))

    async def next(
        self, kind: type[Message] | None = None, where: Callable[[Any], bool] = lambda m: True
    ) -> tuple[Any, tuple[str, int]]:
        """The next delivered message of `kind` that passes `where` (others are skipped)."""
        async with asyncio.timeout(DEADLINE):
            while True:
                msg, source = await self._queue.get()
                if (kind is None or isinstance(msg, kind)) and where(msg):
                    return msg, source
