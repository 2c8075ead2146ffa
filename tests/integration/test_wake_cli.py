"""`ollana wake`: a wake-up packet for a remembered server, then waiting until it answers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ollana.cli import main
from ollana.discovery import DiscoveryService
from ollana.wake import ServerMemory

DEVICE = "e7" * 32
MAC = "02:00:00:00:00:07"

Sent = list[tuple[str, str | None]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """The packets the command sends, recorded instead of broadcast on this machine's LAN."""
    packets: Sent = []

    def send(mac: str, host: str | None) -> tuple[str, ...]:
        packets.append((mac, host))
        return ("127.255.255.255", "127.0.0.1")

    monkeypatch.setattr("ollana.cli.wake.send_magic_packet", send)
    return packets


def remember(home: Path, mac: str = MAC) -> None:
    memory = ServerMemory.in_home(home)
    memory.seen(DEVICE, address="127.0.0.1:11435", mac=mac, name="gpu-box", models=["big:70b"])
    memory.save()


async def wake(home: Path, *args: str, port: int = 1) -> Result:
    """Run the command in a thread: it runs its own event loop."""
    env = {"OLLANA_DISCOVERY_PORT": str(port), "OLLANA_HOME": str(home)}
    return await asyncio.to_thread(CliRunner().invoke, main, ["wake", *args], env=env)


async def test_wake_sends_a_packet_and_waits_until_the_server_answers(
    tmp_path: Path, sent: Sent
) -> None:
    remember(tmp_path)
    async with DiscoveryService(
        role="server", device_id=DEVICE, server_port=11435, discovery_port=0, targets=()
    ) as server:
        assert server.listen_port is not None
        result = await wake(tmp_path, "gpu-box", port=server.listen_port)
    assert result.exit_code == 0, result.output
    assert sent == [(MAC, "127.0.0.1")]
    # At the address its answer came from: whichever of this host's the query reached first.
    assert re.search(r"^gpu-box \(e7e7e7e7\) is up at [\d.]+:11435 after", result.stdout, re.M)
    again = ServerMemory.in_home(tmp_path)
    again.load()
    woken = again.get(DEVICE)
    assert woken is not None and woken.last_woken is not None


async def test_a_server_that_does_not_answer_is_an_error_after_the_timeout(
    tmp_path: Path, sent: Sent
) -> None:
    remember(tmp_path)
    result = await wake(tmp_path, "e7e7e7e7", "--timeout", "0.5")
    assert result.exit_code == 1
    assert "gpu-box (e7e7e7e7) was woken and did not answer within 0.5 s" in result.output
    assert sent == [(MAC, "127.0.0.1")]


@pytest.mark.parametrize(
    ("args", "mac", "message"),
    [
        (["nas"], MAC, "no remembered server is named or has an ID starting 'nas'"),
        (["gpu-box"], "", "no MAC address is known for gpu-box (e7e7e7e7)"),
    ],
)
async def test_what_cannot_be_woken_is_said(
    tmp_path: Path, sent: Sent, args: list[str], mac: str, message: str
) -> None:
    remember(tmp_path, mac)
    result = await wake(tmp_path, *args)
    assert result.exit_code == 1
    assert message in result.output
    assert sent == []


async def test_a_corrupt_memory_is_named(tmp_path: Path, sent: Sent) -> None:
    (tmp_path / "remembered-servers.json").write_text("{")
    result = await wake(tmp_path)
    assert result.exit_code == 1
    assert str(tmp_path / "remembered-servers.json") in result.output
