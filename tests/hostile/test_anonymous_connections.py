"""Peers without an allowed certificate cannot use up a server's connections.

A certificate-less peer is refused and its connection closed; a TCP connection that never
starts TLS is closed at the handshake timeout and counted; anonymous connections have a
small budget of their own, so that a paired device still gets in at a small cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ollana.identity import load_identity
from ollana.identity.tls import client_context
from ollana.modes import ServerMode
from tests.integration.cluster_fixtures import Cluster, cluster, healthy_with_models, until
from tests.support.counts import by_reason

MODEL = "llama3.2:latest"
GET_TAGS = b"GET /api/tags HTTP/1.1\r\nHost: ollana\r\n\r\n"


@pytest.fixture
async def lan(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path) as c:
        c.pair("server", "client")
        yield c


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def anonymous(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection without a certificate."""
    return await asyncio.open_connection("127.0.0.1", port, ssl=client_context(None))


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


async def test_a_peer_without_a_certificate_is_refused_then_its_connection_closed(
    lan: Cluster,
) -> None:
    server = await lan.server("server", await lan.emulator(MODEL))
    reader, writer = await anonymous(server.port)
    try:
        # Keep-alive asked for: the refusal still ends the connection.
        writer.write(GET_TAGS)
        answer = await asyncio.wait_for(read_until_closed(reader), 20.0)
    finally:
        await close(writer)
    assert answer.startswith(b"HTTP/1.1 403")
    assert b"connection: close" in answer.lower()
    await until(lambda: server.listener.connections == 0, "the refused connection gone")


async def test_a_silent_tcp_connection_is_closed_at_the_handshake_timeout(lan: Cluster) -> None:
    limits = {"limits.handshake_timeout": 0.5, "limits.header_timeout": 60}
    server = await lan.server("server", await lan.emulator(MODEL), **limits)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        # Not a byte sent, not even a ClientHello.
        assert await asyncio.wait_for(read_until_closed(reader), 20.0) == b""
    finally:
        await close(writer)
    await until(
        lambda: by_reason(server.metrics, "ollana_tls_handshakes_refused").get("handshake-timeout"),
        "the silent connection counted",
    )


async def test_plain_http_and_old_tls_are_counted_by_reason(lan: Cluster) -> None:
    server = await lan.server("server", await lan.emulator(MODEL))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(GET_TAGS)
    await asyncio.wait_for(read_until_closed(reader), 20.0)
    await close(writer)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection("127.0.0.1", server.port, ssl=old)

    def failed() -> dict[str, int]:
        return by_reason(server.metrics, "ollana_tls_handshakes_refused")

    await until(lambda: len(failed()) == 2, lambda: f"failed handshakes counted: {failed()}")
    counted = failed()
    assert counted == {"not-tls": 1, "tls-version": 1}


async def test_anonymous_connections_cannot_lock_a_paired_device_out(lan: Cluster) -> None:
    limits = {
        "limits.max_connections": 20, "limits.anonymous_connections": 4,
        "limits.anonymous_per_address": 2, "limits.header_timeout": 60,
    }  # fmt: skip
    server: ServerMode = await lan.server("server", await lan.emulator(MODEL), **limits)
    held = [await anonymous(server.port) for _ in range(20)]
    try:
        # Twenty idle anonymous connections: they hold at most their budget.
        await until(
            lambda: server.listener.held().get("address 127.0.0.1", (0, 0))[0] == 2,
            "anonymous connections held to their budget",
        )
        client = await lan.client("client")
        device = lan.device_id("server")
        await until(lambda: healthy_with_models(client, [device]), "the paired client gets in")
    finally:
        for _, writer in held:
            await close(writer)


async def test_silent_connections_give_way_to_a_paired_devices_handshake(lan: Cluster) -> None:
    limits = {"limits.max_connections": 4, "limits.handshake_timeout": 60}
    server = await lan.server("server", await lan.emulator(MODEL), **limits)
    silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(10)]
    try:
        # Ten connections that never start TLS: the oldest are dropped as new ones come.
        device = client_context(load_identity(lan.homes["client"]))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=device)
        writer.write(b"GET /api/version HTTP/1.1\r\nHost: ollana\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(read_until_closed(reader), 20.0)
        await close(writer)
        assert answer.startswith(b"HTTP/1.1 200")
        refused = by_reason(server.metrics, "ollana_tls_handshakes_refused")
        assert refused.get("crowded-out", 0) >= 6
    finally:
        for _, w in silent:
            await close(w)
