"""A graceful stop is not an attack: its goodbye arrives once per broadcast address.

A server sends every datagram to each of its targets (each interface's broadcast and
255.255.255.255), so a peer hears its goodbye more than once. The first removes the server;
the copies must not be counted as forgeries (a quiet LAN shows none).
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ollana.demo import pair
from tests.support import OllanaProcess, free_port
from tests.support.discovery import LOOPBACK_BROADCAST
from tests.support.waiting import until_read

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the loopback broadcast address (Linux)"
)


async def test_a_graceful_stop_counts_no_forged_goodbye(tmp_path: Path) -> None:
    pair(tmp_path / "client-home", tmp_path / "server-home")
    port, admin = free_port(socket.SOCK_DGRAM), free_port()
    async with (
        await OllanaProcess.start(
            "serve", "--mode", "client", "--listen", "127.0.0.1:0",
            "--discovery-port", str(port), "--discovery-target", "127.0.0.1",
            "--admin-listen", f"127.0.0.1:{admin}",
            home=tmp_path / "client-home", log=tmp_path / "client.log",
        ),
        await OllanaProcess.start(
            "emulate", "--listen", "127.0.0.1:0", "--log-level", "warning",
            home=tmp_path / "emulator-home", log=tmp_path / "emulator.log",
        ) as emulator,
        await OllanaProcess.start(
            "serve", "--mode", "server", "--listen", "127.0.0.1:0", "--ollama", emulator.url,
            "--discovery-port", str(free_port(socket.SOCK_DGRAM)), "--admin-listen", "off",
            # Two targets that both reach the client: every datagram arrives twice.
            "--discovery-target", f"127.0.0.1:{port}",
            "--discovery-target", f"{LOOPBACK_BROADCAST}:{port}",
            home=tmp_path / "server-home", log=tmp_path / "server.log",
        ) as server,
        aiohttp.ClientSession() as session,
    ):  # fmt: skip

        async def status() -> dict[str, Any]:
            async with session.get(f"http://127.0.0.1:{admin}/status") as response:
                document: dict[str, Any] = await response.json()
                return document

        def servers(document: dict[str, Any]) -> list[str]:
            return [s["state"] for s in document["servers"]]

        await until_read(status, lambda s: servers(s) == ["healthy"], "the server is used")
        assert await server.stop(signal.SIGTERM) == 0
        after = await until_read(status, lambda s: servers(s) == [], "the goodbye is heard")
        after = await until_read(
            status,
            lambda s: s["counters"]["discovery"]["dropped"].get("duplicate"),
            "the goodbye's copy is heard",
        )
        assert "forged" not in after["counters"]["discovery"]["dropped"], after["counters"]
