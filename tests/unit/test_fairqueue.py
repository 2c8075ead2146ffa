"""The fair scheduler: order of release and counts, never timings."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from ollana.proxy.fairqueue import DeviceLimit, FairScheduler


def of(limits: dict[str, DeviceLimit]) -> Callable[[str], DeviceLimit]:
    return lambda device: limits.get(device, DeviceLimit())


def drain_one_by_one(s: FairScheduler[str], running: list[str]) -> list[str]:
    """Finish the oldest running request until none runs; the order requests started in."""
    order: list[str] = []
    while running:
        device = running.pop(0).split("#")[0]
        for _, ticket in s.finish(device):
            order.append(ticket)
            running.append(ticket)
    return order


def test_a_single_request_waits_one_turn_behind_32() -> None:
    s: FairScheduler[str] = FairScheduler(parallel=2, max_queue=100)
    verdicts = [s.arrive("greedy", f"greedy#{i}") for i in range(32)]
    assert verdicts[:2] == ["run", "run"] and set(verdicts[2:]) == {"queued"}
    assert s.arrive("polite", "polite#0") == "queued"
    assert (s.running, s.queued) == (2, 31)
    assert s.finish("greedy") == [("polite", "polite#0")]  # the very next slot
    assert s.waiting() == {"greedy": 30}
    assert s.running_by_device() == {"greedy": 1, "polite": 1}


def test_a_polite_device_sending_one_at_a_time_never_waits_more_than_one_turn() -> None:
    s: FairScheduler[str] = FairScheduler(parallel=2, max_queue=100)
    for i in range(32):
        s.arrive("greedy", f"g{i}")
    turns = []
    for n in range(10):
        s.arrive("polite", f"p{n}")
        finished = 0
        while True:
            finished += 1
            started = s.finish("greedy")
            if any(device == "polite" for device, _ in started):
                break
        turns.append(finished)
        s.arrive("greedy", f"g-again{n}")  # greedy keeps its backlog up
        assert [device for device, _ in s.finish("polite")] == ["greedy"]
    assert turns == [1] * 10


def test_two_busy_devices_alternate_and_each_keeps_its_own_order() -> None:
    s: FairScheduler[str] = FairScheduler(parallel=1, max_queue=100)
    for i in range(4):
        s.arrive("a", f"a#{i}")
    for i in range(4):
        s.arrive("b", f"b#{i}")
    order = drain_one_by_one(s, ["a#0"])
    assert order == ["b#0", "a#1", "b#1", "a#2", "b#2", "a#3", "b#3"]
    assert (s.running, s.queued) == (0, 0)


def test_three_devices_round_robin() -> None:
    s: FairScheduler[str] = FairScheduler(parallel=1, max_queue=100)
    s.arrive("a", "a#0")
    for device in "abc":
        for i in range(1, 3) if device == "a" else range(2):
            s.arrive(device, f"{device}#{i}")
    order = drain_one_by_one(s, ["a#0"])
    assert order == ["b#0", "c#0", "a#1", "b#1", "c#1", "a#2"]


def test_beyond_max_queue_the_answer_is_full_at_once() -> None:
    s: FairScheduler[str] = FairScheduler(parallel=2, max_queue=3)
    verdicts = [s.arrive("a", f"a#{i}") for i in range(5)] + [s.arrive("b", "b#0")]
    assert verdicts == ["run", "run", "queued", "queued", "queued", "full"]
    assert (s.running, s.queued) == (2, 3)
    s.finish("a")
    assert s.arrive("b", "b#1") == "queued"


def test_max_queue_zero_means_no_waiting() -> None:
    s: FairScheduler[str] = FairScheduler(parallel=1, max_queue=0)
    assert [s.arrive("a", "1"), s.arrive("b", "2")] == ["run", "full"]


def test_a_device_at_its_own_limit_waits_while_others_pass() -> None:
    limits = {"batch": DeviceLimit(max_concurrent=1)}
    s: FairScheduler[str] = FairScheduler(parallel=3, max_queue=100, limit_of=of(limits))
    assert [s.arrive("batch", f"batch#{i}") for i in range(3)] == ["run", "queued", "queued"]
    assert s.arrive("chat", "chat#0") == "run"  # a free slot, and batch is at its limit
    assert s.arrive("chat", "chat#1") == "run"
    assert s.arrive("chat", "chat#2") == "queued"
    assert s.finish("chat") == [("chat", "chat#2")]
    assert s.finish("batch") == [("batch", "batch#1")]
    assert s.running_by_device() == {"batch": 1, "chat": 2}


def test_a_default_limit_applies_to_every_device() -> None:
    s: FairScheduler[str] = FairScheduler(
        parallel=4, max_queue=10, limit_of=lambda device: DeviceLimit(max_concurrent=2)
    )
    assert [s.arrive("a", str(i)) for i in range(3)] == ["run", "run", "queued"]


def test_weight_two_gets_two_slots_for_each_one() -> None:
    limits = {"heavy": DeviceLimit(weight=2.0)}
    s: FairScheduler[str] = FairScheduler(parallel=1, max_queue=100, limit_of=of(limits))
    s.arrive("light", "light#0")
    for i in range(6):
        s.arrive("heavy", f"heavy#{i}")
    for i in range(1, 4):
        s.arrive("light", f"light#{i}")
    order = "".join(t[0] for t in drain_one_by_one(s, ["light#0"]))
    # light#0 ran first, so heavy is owed a turn; then two for heavy per one for light.
    assert order == "hhhlhhlhl"


def test_a_waiting_request_that_leaves_is_gone_and_one_started_is_not_waiting() -> None:
    s: FairScheduler[str] = FairScheduler(parallel=1, max_queue=10)
    s.arrive("a", "a#0")
    s.arrive("b", "b#0")
    s.arrive("b", "b#1")
    assert s.leave("b", "b#0") is True
    assert s.queued == 1
    assert s.finish("a") == [("b", "b#1")]
    assert s.leave("b", "b#1") is False  # running now: the caller gives its slot back
    assert s.finish("b") == []
    assert (s.running, s.queued, s.waiting()) == (0, 0, {})


def test_finishing_what_is_not_running_is_an_error() -> None:
    s: FairScheduler[str] = FairScheduler(parallel=1, max_queue=10)
    with pytest.raises(ValueError, match="no request"):
        s.finish("a")
    with pytest.raises(ValueError, match="parallel"):
        FairScheduler(parallel=0, max_queue=1)


@pytest.mark.parametrize("seed", range(20))
def test_counts_stay_consistent_under_random_traffic(seed: int) -> None:
    rng = random.Random(seed)
    limits = {"d0": DeviceLimit(max_concurrent=1), "d1": DeviceLimit(weight=3)}
    s: FairScheduler[int] = FairScheduler(parallel=3, max_queue=8, limit_of=of(limits))
    running: dict[int, str] = {}
    waiting: dict[int, str] = {}
    for n in range(2000):
        action = rng.random()
        if action < 0.5:
            device = f"d{rng.randrange(4)}"
            verdict = s.arrive(device, n)
            if verdict == "run":
                running[n] = device
            elif verdict == "queued":
                waiting[n] = device
        elif action < 0.85 and running:
            ticket = rng.choice(sorted(running))
            for device, started in s.finish(running.pop(ticket)):
                assert waiting.pop(started) == device
                running[started] = device
        elif waiting:
            ticket = rng.choice(sorted(waiting))
            assert s.leave(waiting.pop(ticket), ticket)
        assert (s.running, s.queued) == (len(running), len(waiting))
        assert s.running <= 3 and s.queued <= 8
        per_device = {d: list(running.values()).count(d) for d in set(running.values())}
        assert s.running_by_device() == per_device
        assert per_device.get("d0", 0) <= 1
        if s.running < 3 and waiting:  # a free slot: nobody who may run is waiting
            assert set(waiting.values()) == {"d0"} and per_device.get("d0") == 1
