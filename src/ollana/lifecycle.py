"""The shape of everything ollana starts and stops: `async with` starts, leaving closes."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = ["Service", "run"]

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run a process's main coroutine to its end: on uvloop where it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class Service(abc.ABC):
    """Started by `start()` or `async with`; closed by `close()` (safe twice) or leaving it."""

    __slots__ = ()

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin: bind, open, spawn what it runs."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End what `start()` began; safe to call twice, and after a failed start."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
