"""The waker: one packet per server however many requests wait, and a clear 503 after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ollana.cluster.pool import Pool
from ollana.cluster.router import NoServerError
from ollana.cluster.server import Server
from ollana.config import Settings
from ollana.http.client import ConnectionPool
from ollana.wake import ServerMemory, Waker, wake_destinations

GPU = "ab" * 32


def _no_upstream(server: Server) -> ConnectionPool:
    raise AssertionError("no server joins this pool")


def _waker(tmp_path: Path, sent: list[tuple[str, str | None]], timeout: float) -> Waker:
    memory = ServerMemory.in_home(tmp_path)
    memory.seen(GPU, address="10.0.0.7:11435", mac="aa:bb:cc:dd:ee:ff", models=["big:70b"])
    memory.save()

    def send(mac: str, host: str | None) -> tuple[str, ...]:
        sent.append((mac, host))
        return ("10.0.0.255", "10.0.0.7")

    return Waker(Pool(Settings(), _no_upstream), ServerMemory.in_home(tmp_path),
                 timeout=timeout, send=send)  # fmt: skip


async def test_many_waiting_requests_send_one_packet_then_get_a_503(tmp_path: Path) -> None:
    sent: list[tuple[str, str | None]] = []
    async with _waker(tmp_path, sent, timeout=0.3) as waker:
        assert [s.device_id for s in waker.sleeping()] == [GPU]
        results = await asyncio.gather(
            *(waker.wake_for("big:70b") for _ in range(20)), return_exceptions=True
        )
        assert sent == [("aa:bb:cc:dd:ee:ff", "10.0.0.7")]
        for result in results:
            assert isinstance(result, NoServerError)
            assert result.status == 503
            assert "woken" in str(result) and "did not answer within 0.3 s" in str(result)
        # Asked again at once: waited for again, but no second packet within WAKE_GAP.
        with pytest.raises(NoServerError):
            await waker.wake_for("big:70b")
        assert len(sent) == 1
        remembered = waker.memory.get(GPU)
        assert remembered is not None and remembered.last_woken is not None


async def test_a_model_no_sleeping_server_had_wakes_nothing(tmp_path: Path) -> None:
    sent: list[tuple[str, str | None]] = []
    async with _waker(tmp_path, sent, timeout=0.3) as waker:
        await waker.wake_for("small:1b")  # returns at once: the router goes on as before
    assert sent == []


async def test_a_corrupt_memory_is_logged_by_name_and_not_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = ServerMemory.in_home(tmp_path).path
    path.write_text("{broken")
    async with Waker(
        Pool(Settings(), _no_upstream), ServerMemory.in_home(tmp_path), timeout=1
    ) as waker:
        assert waker.sleeping() == []
    assert str(path) in caplog.text
    assert path.read_text() == "{broken"


def test_a_packet_goes_to_the_broadcast_of_the_interface_that_reaches_it() -> None:
    # An address off every subnet here: the broadcast of the interface its route leaves
    # from (the limited broadcast without a route), then the address itself.
    assert wake_destinations(None) == ("255.255.255.255",)
    found = wake_destinations("198.51.100.7")
    assert found[-1] == "198.51.100.7" and len(found) == 2
