"""The fair queue on the event loop: waiting, release order, leaving, a full queue."""

from __future__ import annotations

import asyncio

import pytest

from ollana.proxy.admission import FairQueue, QueueFull
from tests.support.waiting import until


async def test_waiters_start_round_robin_and_a_cancelled_one_leaves_at_once() -> None:
    changes: list[int] = []
    waits: list[float] = []
    queue = FairQueue(1, 10, on_change=changes.append, on_wait=waits.append)
    started: list[str] = []

    async def request(device: str, name: str, hold: asyncio.Event) -> None:
        async with queue.slot(device):
            started.append(name)
            await hold.wait()

    holds = {name: asyncio.Event() for name in ("a0", "a1", "a2", "b0", "gone")}
    tasks = {"a0": asyncio.create_task(request("a", "a0", holds["a0"]))}
    await until(lambda: started == ["a0"], "the first request to start")
    for name, device in (("a1", "a"), ("a2", "a"), ("gone", "c"), ("b0", "b")):
        tasks[name] = asyncio.create_task(request(device, name, holds[name]))
    await until(lambda: queue.queued == 4, "four waiting")
    tasks["gone"].cancel()  # its app went away while it waited
    await until(lambda: queue.queued == 3, "the cancelled one to leave")
    assert queue.snapshot().waiting == {"a": 2, "b": 1}
    for name in ("a0", "b0", "a1", "a2"):
        holds[name].set()
        await tasks[name]
    assert started == ["a0", "b0", "a1", "a2"]
    snap = queue.snapshot()
    assert (snap.running, snap.queued, snap.waited, snap.refused) == (0, 0, 3, 0)
    assert len(waits) == 3 and changes[-1] == 0
    with pytest.raises(asyncio.CancelledError):
        await tasks["gone"]


async def test_a_full_queue_refuses_at_once() -> None:
    queue = FairQueue(1, 1)
    await queue.acquire("a")
    waiter = asyncio.create_task(queue.acquire("a"))
    await until(lambda: queue.queued == 1, "one waiting")
    with pytest.raises(QueueFull, match="--max-queue 1"):
        await queue.acquire("b")
    assert queue.snapshot().refused == 1
    queue.release("a")
    await waiter
    queue.release("a")
    assert queue.snapshot().running == 0


async def test_a_waiter_cancelled_as_it_is_released_hands_its_slot_on() -> None:
    queue = FairQueue(1, 10)
    await queue.acquire("a")
    first = asyncio.create_task(queue.acquire("b"))
    second = asyncio.create_task(queue.acquire("c"))
    await until(lambda: queue.queued == 2, "two waiting")
    first.cancel()
    queue.release("a")  # picks b's future, already cancelled: b's task gives the slot to c
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    snap = queue.snapshot()
    assert (snap.running, snap.queued) == (1, 0)


async def test_each_model_has_its_own_slots_and_the_cap_counts_them_all() -> None:
    queue = FairQueue(1, 1)
    started: list[str] = []
    hold = asyncio.Event()

    async def request(device: str, model: str, name: str) -> None:
        async with queue.slot(device, model):
            started.append(name)
            await hold.wait()

    chat = asyncio.create_task(request("a", "llama3.2", "chat"))
    embed = asyncio.create_task(request("b", "nomic-embed-text", "embed"))
    # Ollama runs each loaded model with its own slots: the embedding does not wait.
    await until(lambda: sorted(started) == ["chat", "embed"], "both models to start")
    second = asyncio.create_task(request("b", "llama3.2", "second chat"))
    await until(lambda: queue.queued == 1, "the second chat to wait for its model's slot")
    await queue.acquire("c", "mistral")  # a free slot of its own: it runs, queue or not
    queue.release("c", "mistral")
    with pytest.raises(QueueFull):
        await queue.acquire("c", "nomic-embed-text")  # it would wait: the queue is full
    hold.set()
    await asyncio.gather(chat, embed, second)
    assert started[-1] == "second chat"
    snap = queue.snapshot()
    assert (snap.running, snap.queued, snap.refused) == (0, 0, 1)
