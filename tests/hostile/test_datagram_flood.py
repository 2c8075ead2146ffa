"""Ten thousand hostile datagrams at a running client, then a real server it must still find.

The client (`ollana serve --mode client`) listens for discovery on a port of its own. The
flood comes from hundreds of loopback addresses (127.0.x.y), so that the per-address rate
limit lets most of it through to the decoder: random bytes, truncated headers, unknown
versions and types, bad JSON, fields of the wrong type, nesting as deep as a datagram
allows, oversized datagrams, and well-formed announces for devices nobody paired. After
it, the process is alive, its memory has not grown with the flood, it finds a real server
that announces itself, and goodbyes forged in that server's name do not remove it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ollana.demo import pair
from ollana.discovery import MAX_DATAGRAM, Announce, Goodbye, Query, decode, encode
from tests.hostile.support import HANG_GUARD, rss_kib
from tests.support import OllanaProcess, free_port
from tests.support.waiting import until_read

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"),
        reason="reads memory from /proc and sends from 127.0.x.y (Linux loopback)",
    ),
]

FLOOD = 10_000
WARM_UP = 2_000  # sent first, so that what is allocated once is in the first reading
SOURCES = 500  # distinct 127.0.x.y senders: 20 datagrams each, within one address's burst
GROWTH_KIB = 8 * 1024
BATCH = 100  # datagrams sent before waiting for the client to read them (UDP buffers are small)
MAGIC, VERSION = b"LANA", 1


def header(version: int = VERSION, kind: int = 2) -> bytes:
    return MAGIC + bytes((version, kind))


def hex_id(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(64))


def hostile(rng: random.Random, index: int) -> bytes:
    """The index-th datagram of the flood: every kind in turn, with random contents."""
    kind = index % 12
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 2 * MAX_DATAGRAM))
    if kind == 1:
        return header()[: rng.randrange(0, 6)]  # truncated header
    if kind == 2:
        return header(version=rng.choice([0, 2, 7, 255])) + b"{}"
    if kind == 3:
        return header(kind=rng.choice([0, 4, 9, 255])) + b"{}"
    if kind == 4:
        return header() + rng.choice([b"{", b"{'a': 1}", b"nul", b"\xff\xfe", b"[]", b"1e999"])
    if kind == 5:
        fields = {"instance": rng.choice([5, None, [], "x" * 40, "a b"]), "device": 7, "port": "x"}
        return header() + json.dumps(fields).encode()
    if kind == 6:
        depth = (MAX_DATAGRAM - 8) // 2
        return header() + b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    if kind == 7:  # past the size limit; now and then far past it
        return header() + rng.randbytes(60_000 if index % 1200 == 7 else rng.randrange(1400, 8000))
    if kind == 8:
        body = {"instance": "x", "device": hex_id(rng), "port": rng.choice([0, 70000, -1])}
        return header() + json.dumps(body).encode()
    if kind == 9:
        body = {"instance": "x", "device": hex_id(rng), "cert": "!!notbase64!!", "port": 1}
        return header() + json.dumps(body).encode()
    if kind == 10:  # a well-formed announce from a device nobody paired
        return encode(
            Announce(instance=f"f{index}", device=hex_id(rng), port=rng.randrange(1, 65535))
        )
    # a goodbye in the name of a device never heard
    return encode(Goodbye(instance=f"g{index}", device=hex_id(rng)))


@contextlib.contextmanager
def senders(count: int) -> Iterator[list[socket.socket]]:
    socks = []
    try:
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind((f"127.0.{2 + i // 250}.{1 + i % 250}", 0))
        yield socks
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Client:
    process: OllanaProcess
    discovery_port: int
    admin: str
    session: aiohttp.ClientSession

    async def status(self) -> dict[str, Any]:
        async with self.session.get(self.admin + "/status") as response:
            assert response.status == 200
            document: dict[str, Any] = await response.json()
            return document

    async def received(self) -> int:
        return int((await self.status())["counters"]["discovery"]["received"])

    async def settled(self) -> int:
        """Wait until the client has read what it was sent (its count stops moving)."""
        last = -1
        async with asyncio.timeout(HANG_GUARD):
            while (now := await self.received()) != last:
                last = now
                await asyncio.sleep(0.02)
        return last

    async def wait_for(self, check: Any, what: str) -> dict[str, Any]:
        """Poll /status until check(status) holds."""
        status: dict[str, Any] = await until_read(self.status, check, what, HANG_GUARD)
        return status


async def flood(client: Client, rng: random.Random, count: int, start: int = 0) -> int:
    """Send `count` hostile datagrams in batches; how many the client read."""
    target = ("127.0.0.1", client.discovery_port)
    first = await client.received()
    with senders(SOURCES) as socks:
        for n in range(count):
            with contextlib.suppress(OSError):  # e.g. EMSGSIZE for the largest
                socks[n % SOURCES].sendto(hostile(rng, start + n), target)
            if n % BATCH == BATCH - 1:
                await client.settled()
    return await client.settled() - first


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    pair(tmp_path / "client-home", tmp_path / "server-home")
    port, admin = free_port(socket.SOCK_DGRAM), free_port()
    async with (
        await OllanaProcess.start(
            "serve", "--mode", "client", "--listen", "127.0.0.1:0",
            "--discovery-port", str(port), "--discovery-target", "127.0.0.1",
            "--admin-listen", f"127.0.0.1:{admin}", "--wait-for-server", "30",
            home=tmp_path / "client-home", log=tmp_path / "client.log",
        ) as process,
        aiohttp.ClientSession() as session,
    ):  # fmt: skip
        yield Client(process, port, f"http://127.0.0.1:{admin}", session)


async def test_a_flood_of_hostile_datagrams_changes_nothing(client: Client, tmp_path: Path) -> None:
    rng = random.Random(20260101)
    await flood(client, rng, WARM_UP)
    before = rss_kib(client.process.proc.pid)
    read = await flood(client, rng, FLOOD, start=WARM_UP)
    after = rss_kib(client.process.proc.pid)

    assert client.process.proc.returncode is None
    assert after - before < GROWTH_KIB, f"RSS {before} KiB -> {after} KiB over {FLOOD} datagrams"
    assert read > FLOOD // 2, f"only {read} of {FLOOD} datagrams reached the client"
    dropped = (await client.status())["counters"]["discovery"]["dropped"]
    for reason in ("size", "magic", "version", "type", "json", "field"):
        assert dropped.get(reason, 0) > 0, dropped  # the flood reached the decoder

    # A real server announcing itself is still found, and used.
    async with running_server(tmp_path, client.discovery_port) as server:
        status = await client.wait_for(
            lambda s: any(x["state"] == "healthy" for x in s["servers"]), "server not found"
        )
        (found,) = [x for x in status["servers"] if x["state"] == "healthy"]
        body = {"model": "llama3.2", "prompt": "hi", "stream": False}
        async with client.session.post(client.process.url + "/api/generate", json=body) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["done"] is True

        # Goodbyes in its name that it did not sign: from another address, another run, or
        # replayed (a paired server's datagrams count only with its signature).
        instance = await server_instance(server.discovery_port)
        device = found["device_id"]
        forged = [
            (f"127.0.0.{rng.randrange(2, 250)}", Goodbye(instance=instance, device=device, ts=9e9)),
            ("127.0.0.1", Goodbye(instance="someone-else", device=device, ts=9e9)),
            ("127.0.0.1", Goodbye(instance=instance, device=device, ts=1.0)),
        ]
        dropped_before = refused((await client.status())["counters"]["discovery"]["dropped"])
        for host, goodbye in forged:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((host, 0))
                sock.sendto(encode(goodbye), ("127.0.0.1", client.discovery_port))
        status = await client.wait_for(
            lambda s: (
                refused(s["counters"]["discovery"]["dropped"]) >= dropped_before + len(forged)
            ),
            "the forged goodbyes were not all dropped",
        )
        assert [x["device_id"] for x in status["servers"] if x["state"] == "healthy"] == [device]

        # Its own goodbye, on a graceful stop, still removes it at once.
        assert await server.process.stop(signal.SIGTERM) == 0
        await client.wait_for(
            lambda s: all(x["device_id"] != device for x in s["servers"]), "goodbye not heard"
        )
    assert client.process.proc.returncode is None


def refused(dropped: dict[str, int]) -> int:
    """Datagrams dropped for not being what they claim: unsigned or badly signed."""
    return dropped.get("unsigned", 0) + dropped.get("forged", 0)


@dataclass
class Server:
    process: OllanaProcess
    discovery_port: int


@contextlib.asynccontextmanager
async def running_server(tmp_path: Path, client_port: int) -> AsyncIterator[Server]:
    """An emulated Ollama and a server mode in front of it, announcing to the client's port."""
    port = free_port(socket.SOCK_DGRAM)
    async with (
        await OllanaProcess.start(
            "emulate", "--listen", "127.0.0.1:0", "--log-level", "warning",
            home=tmp_path / "emulator-home", log=tmp_path / "emulator.log",
        ) as emulator,
        await OllanaProcess.start(
            "serve", "--mode", "server", "--listen", "127.0.0.1:0", "--ollama", emulator.url,
            "--discovery-port", str(port), "--discovery-target", f"127.0.0.1:{client_port}",
            "--admin-listen", "off", env={"OLLANA_TIMINGS_ANNOUNCE_INTERVAL": "1"},
            home=tmp_path / "server-home", log=tmp_path / "server.log",
        ) as process,
    ):  # fmt: skip
        yield Server(process, port)


async def server_instance(port: int) -> str:
    """Ask a server who it is, as a client's query does; its answer names its run."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.sendto(encode(Query(instance="asker")), ("127.0.0.1", port))
        async with asyncio.timeout(HANG_GUARD):
            data, _ = await loop.sock_recvfrom(sock, 2048)
    answer = decode(data)
    assert isinstance(answer, Announce)
    return answer.instance


async def test_announces_of_made_up_devices_are_remembered_in_bounded_number(
    client: Client,
) -> None:
    rng = random.Random(7)
    target = ("127.0.0.1", client.discovery_port)
    with senders(SOURCES) as socks:
        for n in range(3000):  # 6 from each address: all within the rate limit
            announce = Announce(instance=f"m{n}", device=hex_id(rng), port=11435)
            socks[n % SOURCES].sendto(encode(announce), target)
            if n % BATCH == BATCH - 1:
                await client.settled()
    assert (await client.status())["counters"]["unpaired_servers"] <= 1024
