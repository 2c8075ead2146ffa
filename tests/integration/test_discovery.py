"""Discovery between real UDP sockets on loopback: both roles, limits, shared ports, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ollana.config import HostPort, Limits, Timings
from ollana.discovery import (
    Announce,
    DiscoveryService,
    Goodbye,
    Message,
    Query,
    decode,
    encode,
)
from ollana.identity import DeviceStore
from tests.support import ollana_env
from tests.support.discovery import LOOPBACK_BROADCAST, Inbox

DEVICE_A = "a" * 64
DEVICE_B = "b" * 64
DEVICE_C = "c" * 64
SERVER_PORT = 11435
FAST = Timings(announce_interval=0.2, query_interval=0.2)
# Periodic traffic far away, so that a datagram seen during a test is one the test caused.
QUIET = Timings(announce_interval=3600.0, query_interval=3600.0)
HANG_GUARD = 10.0  # fails a test that would otherwise wait forever; never reached when it works

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="loopback broadcast (127.255.255.255) and 127.0.0.2 are Linux behaviour",
)


def loopback(port: int | None) -> HostPort:
    assert port is not None
    return HostPort("127.0.0.1", port)


class Peer:
    """A plain UDP socket on loopback, speaking the protocol by hand."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)

    def send(self, data: bytes | Message, port: int | None, host: str = "127.0.0.1") -> None:
        assert port is not None
        self.sock.sendto(data if isinstance(data, bytes) else encode(data), (host, port))

    async def receive(self) -> tuple[Message, tuple[str, int]]:
        async with asyncio.timeout(HANG_GUARD):
            data, source = await asyncio.get_running_loop().sock_recvfrom(self.sock, 2048)
        return decode(data), source

    def pending(self) -> int:
        """How many datagrams wait in the socket now."""
        count = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                self.sock.recv(2048)
                count += 1
        return count


Start = Callable[..., Awaitable[DiscoveryService]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start services (discovery port 0, fast timings unless told); all closed at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start_(**kwargs: Any) -> DiscoveryService:
            kwargs.setdefault("discovery_port", 0)
            kwargs.setdefault("timings", FAST)
            if kwargs["role"] == "server":
                kwargs.setdefault("server_port", SERVER_PORT)
                kwargs.setdefault("device_id", DEVICE_A)
            return await stack.enter_async_context(DiscoveryService(**kwargs))

        yield start_


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.sock.close()


# --- the two roles ------------------------------------------------------------------------


async def test_a_client_finds_a_running_server_by_query(start: Start) -> None:
    server_inbox, client_inbox = Inbox(), Inbox()
    server = await start(role="server", ollama_version="0.12.3", on_message=server_inbox)
    client = await start(
        role="client", device_id=DEVICE_B, cert_der=b"\x30\x03abc",
        targets=[loopback(server.listen_port)], on_message=client_inbox,
    )  # fmt: skip
    announce, source = await client_inbox.next(Announce)
    assert (announce.device, announce.port, announce.ollama) == (DEVICE_A, SERVER_PORT, "0.12.3")
    assert announce.instance == server.instance
    assert source == ("127.0.0.1", server.reply_port)
    # The server heard the query, certificate included: that is how it learns clients.
    query, source = await server_inbox.next(Query)
    assert (query.device, query.cert, query.role) == (DEVICE_B, b"\x30\x03abc", "client")
    assert source == ("127.0.0.1", client.reply_port)


async def test_a_server_started_later_is_found_by_its_unsolicited_announce(start: Start) -> None:
    inbox = Inbox()
    client = await start(role="client", device_id=DEVICE_B, on_message=inbox, targets=())
    server = await start(role="server", targets=[loopback(client.listen_port)])
    announce, source = await inbox.next(Announce)
    assert announce.instance == server.instance
    assert source == ("127.0.0.1", server.reply_port)
    assert client.stats().sent == 0  # nothing was asked: the server spoke first


async def test_a_client_queries_again_while_it_needs_servers(start: Start) -> None:
    inbox = Inbox()
    server = await start(role="server", on_message=inbox)
    client = await start(role="client", targets=[loopback(server.listen_port)])
    for _ in range(3):
        query, _ = await inbox.next(Query)
        assert query.instance == client.instance


async def test_goodbye_on_stop(start: Start) -> None:
    inbox = Inbox()
    client = await start(role="client", on_message=inbox)
    server = DiscoveryService(
        role="server", device_id=DEVICE_A, server_port=SERVER_PORT, discovery_port=0,
        targets=[loopback(client.listen_port)], timings=FAST,
    )  # fmt: skip
    async with server:
        await inbox.next(Announce)
    goodbye, _ = await inbox.next(Goodbye)
    assert (goodbye.instance, goodbye.device) == (server.instance, DEVICE_A)
    await server.close()  # a second close is harmless


async def test_cancelling_the_owner_says_goodbye_and_stays_cancelled(start: Start) -> None:
    inbox = Inbox()
    client = await start(role="client", on_message=inbox)

    async def run_server() -> None:
        async with DiscoveryService(
            role="server", device_id=DEVICE_A, server_port=SERVER_PORT, discovery_port=0,
            targets=[loopback(client.listen_port)], timings=FAST,
        ):  # fmt: skip
            await asyncio.Event().wait()

    task = asyncio.create_task(run_server())
    announce, _ = await inbox.next(Announce)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    goodbye, _ = await inbox.next(Goodbye)
    assert goodbye.instance == announce.instance


async def test_an_unavailable_server_says_goodbye_and_stops_answering(
    start: Start, peer: Peer
) -> None:
    inbox, server_inbox = Inbox(), Inbox()
    client = await start(role="client", on_message=inbox)
    server = await start(
        role="server", targets=[loopback(client.listen_port)], timings=QUIET,
        on_message=server_inbox,
    )  # fmt: skip
    await inbox.next(Announce)
    await inbox.next(Announce)  # the second announce of the start (as mDNS does)
    server.set_available(False)
    await inbox.next(Goodbye)
    sent = server.stats().sent
    peer.send(Query(instance="asker"), server.listen_port)
    await server_inbox.next(Query, where=lambda m: m.instance == "asker")
    assert server.stats().sent == sent  # heard, not answered
    assert peer.pending() == 0
    # Back: announced at once (the next periodic announce is an hour away).
    server.set_available(True)
    await inbox.next(Announce)
    peer.send(Query(instance="asker2"), server.listen_port)
    answer, _ = await peer.receive()
    assert isinstance(answer, Announce)


async def test_a_server_available_late_announces_twice(start: Start, peer: Peer) -> None:
    port = peer.sock.getsockname()[1]
    server = await start(role="server", targets=[loopback(port)], timings=QUIET, available=False)
    # The periodic announce is an hour away: each second announce is the repeat.
    for _ in range(2):
        server.set_available(True)
        for _ in range(2):
            announce, _ = await peer.receive()
            assert isinstance(announce, Announce)
            assert announce.instance == server.instance
        # Back after a goodbye, long after the start: announced twice again.
        server.set_available(False)
        goodbye, _ = await peer.receive()
        assert isinstance(goodbye, Goodbye)


async def test_a_new_models_digest_is_announced_at_once(start: Start) -> None:
    inbox = Inbox()
    client = await start(role="client", on_message=inbox)
    server = await start(role="server", targets=[loopback(client.listen_port)], timings=QUIET)
    for _ in range(2):
        first, _ = await inbox.next(Announce)
        assert first.models == ""
    server.update_announce(models="0123abcd")
    changed, _ = await inbox.next(Announce)
    assert changed.models == "0123abcd"
    with pytest.raises(ValueError, match="models"):
        server.update_announce(models="NOT A DIGEST")


async def test_one_answer_per_second_to_one_querier(start: Start, peer: Peer) -> None:
    server = await start(role="server", targets=(), timings=QUIET)
    other = Peer()
    try:
        peer.send(Query(instance="first"), server.listen_port)
        peer.send(Query(instance="again"), server.listen_port)
        other.send(Query(instance="other"), server.listen_port)
        await peer.receive()
        await other.receive()  # answered after the second query was handled
        assert server.stats().sent == 2
        assert peer.pending() == 0
    finally:
        other.sock.close()


def test_discovery_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        inbox = Inbox()
        async with DiscoveryService(role="client", discovery_port=0, on_message=inbox) as client:
            server = DiscoveryService(
                role="server", device_id=DEVICE_A, server_port=SERVER_PORT, discovery_port=0,
                targets=[loopback(client.listen_port), HostPort("127.0.0.1", 0)], timings=FAST,
            )  # fmt: skip
            async with server:
                await inbox.next(Announce)
                assert server.stats().send_errors >= 1  # the port-0 target, tolerated
            goodbye, _ = await inbox.next(Goodbye)
            assert goodbye.instance == server.instance

    uvloop.run(scenario())


# --- hostile and broken input -------------------------------------------------------------


async def test_malformed_datagrams_are_counted_and_the_service_keeps_working(
    start: Start, peer: Peer
) -> None:
    server = await start(role="server", targets=(), timings=QUIET)
    junk = [
        b"",
        b"LA",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"LANA\x07\x01{}",
        b"LANA\x01\x09{}",
        b"LANA\x01\x01[1]",
        b"LANA\x01\x01" + b"[" * 1300,
        b'LANA\x01\x02{"device":"nope","port":1}',
        b"LANA\x01\x01{}" + b" " * 2000,
    ]
    for data in junk:
        peer.send(data, server.listen_port)
    peer.send(b"LANA", server.listen_port)  # a bare query of ollana 0.x: answered
    answer, _ = await peer.receive()
    assert isinstance(answer, Announce)
    stats = server.stats()
    assert dict(stats.dropped) == {
        "short": 2, "magic": 1, "version": 1, "type": 1, "json": 2, "field": 1, "size": 1,
    }  # fmt: skip
    assert (stats.received, stats.delivered) == (len(junk) + 1, 1)


@linux_only
async def test_a_flood_from_one_address_is_dropped(start: Start, peer: Peer) -> None:
    inbox = Inbox()
    server = await start(
        role="server", targets=(), timings=QUIET, on_message=inbox,
        limits=Limits(datagram_rate=0.001),  # a burst of one, refilled in ~17 minutes
    )  # fmt: skip
    for i in range(10):
        peer.send(Query(instance=f"flood{i}"), server.listen_port)
    other = Peer("127.0.0.2")
    try:
        other.send(Query(instance="other"), server.listen_port)
        await inbox.next(Query, where=lambda m: m.instance == "other")
    finally:
        other.sock.close()
    assert server.stats().dropped["rate"] == 9
    assert [m.instance for m, _ in inbox.seen] == ["flood0", "other"]


async def test_own_datagrams_are_ignored_and_a_cloned_identity_is_a_conflict(
    start: Start, peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox()
    client = await start(role="client", device_id=DEVICE_A, on_message=inbox, targets=())
    own = Announce(instance=client.instance, device=DEVICE_B, port=1)
    clone = Announce(instance="clone", device=DEVICE_A, port=1)
    with caplog.at_level(logging.WARNING, logger="ollana.discovery"):
        for msg in (own, clone, clone, Announce(instance="peer", device=DEVICE_C, port=1)):
            peer.send(msg, client.listen_port)
        await inbox.next(Announce, where=lambda m: m.instance == "peer")
    assert [m.instance for m, _ in inbox.seen] == ["peer"]
    assert dict(client.stats().dropped) == {"own": 1, "conflict": 2}
    conflicts = [r for r in caplog.records if "device's ID" in r.getMessage()]
    assert len(conflicts) == 1  # logged once


async def test_a_target_that_fails_does_not_stop_the_others(start: Start) -> None:
    inbox = Inbox()
    server = await start(role="server", targets=())
    client = await start(
        role="client", on_message=inbox,
        targets=[
            HostPort("127.0.0.1", 0),  # sendto() fails: EINVAL
            HostPort("no-such-host.invalid", 11436),  # does not resolve
            loopback(server.listen_port),
        ],
    )  # fmt: skip
    await inbox.next(Announce)
    assert client.stats().send_errors >= 2


async def test_a_handler_that_raises_does_not_stop_discovery(
    start: Start, peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox()

    def handler(msg: Message, source: tuple[str, int]) -> None:
        inbox(msg, source)
        raise RuntimeError("bug in a handler")

    client = await start(role="client", on_message=handler, targets=())
    with caplog.at_level(logging.ERROR, logger="ollana.discovery"):
        peer.send(Announce(instance="one", device=DEVICE_B, port=1), client.listen_port)
        peer.send(Announce(instance="two", device=DEVICE_B, port=1), client.listen_port)
        await inbox.next(Announce, where=lambda m: m.instance == "two")
    assert any("handler failed" in r.getMessage() for r in caplog.records)


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:  # no SO_REUSE*: exclusive
        holder.bind(("0.0.0.0", 0))
        taken = holder.getsockname()[1]
        service = DiscoveryService(role="client", discovery_port=taken)
        with pytest.raises(OSError, match=f"cannot bind UDP 0.0.0.0:{taken} for discovery"):
            await service.start()
        await service.close()


# --- several processes on one host (one shared discovery port) ----------------------------


@linux_only
async def test_a_broadcast_reaches_every_service_sharing_the_port(start: Start) -> None:
    first, second = Inbox(), Inbox()
    a = await start(role="client", on_message=first)
    await start(role="client", on_message=second, discovery_port=a.listen_port)
    server = await start(role="server", targets=[HostPort(LOOPBACK_BROADCAST, a.listen_port)])
    for inbox in (first, second):
        announce, _ = await inbox.next(Announce)
        assert announce.instance == server.instance


@linux_only
async def test_a_unicast_datagram_reaches_one_service_sharing_the_port(
    start: Start, peer: Peer
) -> None:
    first, second = Inbox(), Inbox()
    a = await start(role="client", on_message=first)
    await start(role="client", on_message=second, discovery_port=a.listen_port)
    peer.send(Announce(instance="unicast", device=DEVICE_B, port=1), a.listen_port)
    # Then a broadcast from the same socket: once both have it, the unicast one was handled.
    peer.send(
        Announce(instance="barrier", device=DEVICE_B, port=1), a.listen_port, LOOPBACK_BROADCAST
    )
    for inbox in (first, second):
        await inbox.next(where=lambda m: m.instance == "barrier")
    got = [any(m.instance == "unicast" for m, _ in inbox.seen) for inbox in (first, second)]
    assert sorted(got) == [False, True]


@linux_only
async def test_a_server_and_a_client_sharing_the_port_find_each_other(start: Start) -> None:
    inbox = Inbox()
    server = await start(role="server", targets=(), timings=QUIET)
    port = server.listen_port
    # The query is a broadcast, heard by the server beside the client; the answer goes to
    # the client's own reply port, not to the shared one.
    await start(
        role="client", discovery_port=port, on_message=inbox,
        targets=[HostPort(LOOPBACK_BROADCAST, port)],
    )  # fmt: skip
    announce, _ = await inbox.next(Announce)
    assert announce.instance == server.instance


@linux_only
async def test_every_server_sharing_the_port_answers_a_broadcast_query(start: Start) -> None:
    inbox = Inbox()
    a = await start(role="server", targets=(), timings=QUIET)
    b = await start(role="server", targets=(), timings=QUIET, discovery_port=a.listen_port)
    await start(
        role="client", on_message=inbox, targets=[HostPort(LOOPBACK_BROADCAST, a.listen_port)]
    )
    heard = {(await inbox.next(Announce))[0].instance for _ in range(2)}
    assert heard == {a.instance, b.instance}


# --- a host with no default route (a network namespace) -----------------------------------

NO_ROUTE_SCRIPT = """
import asyncio, json
from ollana.discovery import Announce, DiscoveryService, TargetSet

async def main():
    heard = asyncio.get_running_loop().create_future()
    def on_message(msg, source):
        if isinstance(msg, Announce) and not heard.done():
            heard.set_result(source[0])
    async with DiscoveryService(role="client", discovery_port=0, on_message=on_message) as client:
        targets = TargetSet(client.listen_port)  # this host's broadcasts and 255.255.255.255
        async with DiscoveryService(
            role="server", device_id="ab" * 32, server_port=11435, discovery_port=0, targets=targets
        ) as server:
            source = await asyncio.wait_for(heard, 10)
            print(json.dumps({"source": source, "targets": [str(t) for t in targets()],
                              "send_errors": server.stats().send_errors}))

asyncio.run(main())
"""


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace with one veth pair, 10.77.0.1/24, and no default route."""
    if not sys.platform.startswith("linux") or shutil.which("ip") is None:
        pytest.skip("needs Linux network namespaces and iproute2")
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    name = f"ollana-disc-{uuid.uuid4().hex[:8]}"
    created = subprocess.run(
        ["ip", "netns", "add", name], check=False, capture_output=True, text=True
    )
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")
    try:
        for command in (
            "ip link set lo up",
            "ip link add v0 type veth peer name v1",
            "ip link set v0 up",
            "ip link set v1 up",
            "ip addr add 10.77.0.1/24 dev v0",  # no 'brd +': the kernel still routes .255
        ):
            subprocess.run(["ip", "netns", "exec", name, *command.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.lan
async def test_no_default_route_discovery_works_through_the_directed_broadcast(netns: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, sys.executable, "-c", NO_ROUTE_SCRIPT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(HANG_GUARD * 3):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["source"] == "10.77.0.1"
    assert result["targets"][0].startswith("10.77.0.255:")
    assert result["send_errors"] >= 1  # 255.255.255.255: ENETUNREACH, tolerated


# --- ollana discover ----------------------------------------------------------------------


async def run_discover(home: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollana", "discover", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ollana_env(home),
    )  # fmt: skip
    async with asyncio.timeout(HANG_GUARD * 3):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_ollana_discover_lists_a_running_server(start: Start, tmp_path: Path) -> None:
    server = await start(role="server", ollama_version="0.12.3", timings=QUIET, targets=())
    port = str(server.listen_port)
    code, out, err = await run_discover(tmp_path, "--json", "--port", port, "--target", "127.0.0.1")
    assert code == 0, err
    found = json.loads(out)
    assert len(found) == 1  # heard at several addresses, listed once
    assert found[0]["device"] == DEVICE_A
    assert (found[0]["instance"], found[0]["port"]) == (server.instance, SERVER_PORT)
    assert (found[0]["role"], found[0]["ollama"], found[0]["paired"]) == ("server", "0.12.3", False)

    DeviceStore(tmp_path).allow(DEVICE_A)
    code, out, err = await run_discover(tmp_path, "--port", port, "--target", "127.0.0.1")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["ADDRESS", "PORT", "ROLE", "OLLAMA", "PAIRED", "DEVICE"]
    assert row.split()[1:] == [str(SERVER_PORT), "server", "0.12.3", "yes", "-".join(["a" * 8] * 8)]


async def test_ollana_discover_says_when_nobody_answers(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = str(silent.getsockname()[1])
        code, out, err = await run_discover(tmp_path, "--port", port, "--timeout", "0.3")
        assert (code, out) == (0, "")
        assert "No ollana server answered within 0.3 s" in err
        code, out, _ = await run_discover(tmp_path, "--json", "--port", port, "--timeout", "0.3")
        assert (code, json.loads(out)) == (0, [])


async def test_ollana_discover_rejects_a_bad_target(tmp_path: Path) -> None:
    code, _, err = await run_discover(tmp_path, "--target", "10.0.0.1:http")
    assert code != 0
    assert "discovery target '10.0.0.1:http'" in err
