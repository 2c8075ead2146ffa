"""An attempt whose server is abandoned fails over; any other cancellation stays one."""

from __future__ import annotations

import asyncio

import pytest

from ollana.cluster.exchange import unless_abandoned
from ollana.cluster.server import Server
from ollana.config import HostPort
from ollana.http import UpstreamError


def server() -> Server:
    return Server(HostPort("10.0.0.5", 11435), scheme="https", device_id=None, static=True,
                  priority=0)  # fmt: skip


def abandon(s: Server) -> None:
    """What the pool does to a server that answers nothing at all."""
    for task in s.attempts - s.abandoned:
        s.abandoned.add(task)
        task.cancel()


async def waiting(s: Server) -> tuple[asyncio.Task[object], asyncio.Event]:
    started = asyncio.Event()

    async def attempt() -> object:
        started.set()
        await asyncio.Event().wait()  # a server that never answers
        raise AssertionError("unreachable")

    task = asyncio.create_task(unless_abandoned(s, attempt(), replayable=True))
    await started.wait()
    return task, started


async def test_an_abandoned_attempt_becomes_the_servers_failure() -> None:
    s = server()
    task, _ = await waiting(s)
    assert s.attempts == {task}
    abandon(s)
    with pytest.raises(UpstreamError) as caught:
        await task
    assert caught.value.reason == "ejected" and caught.value.retryable
    assert task.cancelling() == 0  # the request goes on, to the next server
    assert not s.attempts and not s.abandoned


async def test_a_cancelled_request_stays_cancelled() -> None:
    s = server()
    task, _ = await waiting(s)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not s.attempts and not s.abandoned


async def test_cancelled_and_abandoned_at_once_stays_cancelled() -> None:
    s = server()
    task, _ = await waiting(s)
    abandon(s)
    task.cancel()
    abandon(s)  # twice: counted once
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not s.attempts and not s.abandoned
