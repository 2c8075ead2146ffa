"""A server's discovery answers cannot be turned against someone: small, local, budgeted.

A query's source address is whatever its sender wrote. Answers go only to neighbours (a
directly connected subnet, loopback, a configured target); one without a certificate gets
an answer without one; and all answers together stay within a budget per second.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
import time
from collections.abc import AsyncIterator

import pytest

from ollana.config import Timings
from ollana.discovery import Announce, DiscoveryService, Query, decode, encode
from ollana.discovery.protocol import MAGIC, split_signature
from ollana.discovery.signing import Signer
from ollana.discovery.targets import LocalNetworks
from ollana.identity import Identity, load_identity
from tests.support.waiting import DEADLINE, until

QUIET = Timings(announce_interval=3600.0, query_interval=3600.0)
SMALL = 320  # bytes: an answer without certificate or signature, whatever its fields hold
BUDGET = 5.0
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="sends from 127.0.x.y (Linux loopback)"
)


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return load_identity(tmp_path_factory.mktemp("home"))


@pytest.fixture
async def server(identity: Identity) -> AsyncIterator[DiscoveryService]:
    async with DiscoveryService(
        role="server", device_id=identity.device_id, cert_der=identity.cert_der,
        server_port=11435, ollama_version="0.12.3", models_digest="0123456789abcdef",
        discovery_port=0, timings=QUIET, bind_host="127.0.0.1", reply_budget=BUDGET,
        sign=Signer.from_key_file(identity.key_path),
    ) as service:  # fmt: skip
        yield service


async def ask(port: int | None, query: bytes, host: str = "127.0.0.1") -> bytes:
    """Send one query from host; the answer's bytes."""
    assert port is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.setblocking(False)
        sock.sendto(query, (host, port))
        async with asyncio.timeout(DEADLINE):
            data, _ = await asyncio.get_running_loop().sock_recvfrom(sock, 2048)
        return data


async def test_an_unauthenticated_query_gets_a_small_answer(
    server: DiscoveryService, identity: Identity
) -> None:
    for query in (MAGIC, encode(Query(instance="q"))):
        answer = await ask(server.listen_port, query)
        msg = decode(answer)
        assert isinstance(msg, Announce) and msg.cert is None and msg.port == 11435
        assert split_signature(answer) is None
        assert len(answer) <= SMALL, len(answer)
    # A query that says who it is (as ollana clients' do) gets the certificate, signed.
    query = encode(Query(instance="q", device=identity.device_id, cert=identity.cert_der))
    answer = await ask(server.listen_port, query)
    full = decode(answer)
    assert isinstance(full, Announce) and full.cert == identity.cert_der
    assert split_signature(answer) is not None
    assert len(answer) <= len(query) * 1.5


@linux_only
async def test_a_flood_of_queries_from_many_addresses_gets_a_budget_of_answers(
    server: DiscoveryService,
) -> None:
    port = server.listen_port
    assert port is not None
    count = 100
    start = time.monotonic()
    socks = []
    try:
        for n in range(count):  # each address once: the limit per querier lets every one by
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind((f"127.0.3.{n + 1}", 0))
            sock.sendto(MAGIC, ("127.0.0.1", port))
        await until(lambda: server.stats().received >= count, "the queries are read")
    finally:
        for sock in socks:
            sock.close()
    elapsed = time.monotonic() - start
    stats = server.stats()
    assert stats.sent <= BUDGET * (elapsed + 1.0), (stats.sent, elapsed)
    assert stats.unanswered["budget"] == count - stats.sent


def test_only_neighbours_are_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    networks = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv4Network("192.168.1.0/24"))
    monkeypatch.setattr("ollana.discovery.targets.interface_networks", lambda: networks)
    local = LocalNetworks()
    local.refresh(["10.9.9.9"])
    assert local.answerable("192.168.1.77")
    assert local.answerable("127.0.0.1")
    assert local.answerable("10.9.9.9")  # a configured target, though routed
    assert not local.answerable("192.168.2.77")  # routed: maybe a forged source
    assert not local.answerable("8.8.8.8")
    assert not local.answerable("not an address")
    monkeypatch.setattr("ollana.discovery.targets.interface_networks", lambda: None)
    local.refresh()
    assert local.answerable("8.8.8.8")  # a platform that cannot list them: as before
