"""A ConnectionPool with a preconnect ceiling opens connections ahead of rising demand."""

from __future__ import annotations

import asyncio
import socket

import pytest
from multidict import CIMultiDict

from ollana.http import ConnectionPool
from ollana.http.client import ConnectFailed
from tests.support.held import held_server
from tests.support.waiting import until


class Connects:
    """The pool's handshake check, used here to note each new connection's local port."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    def __call__(self, transport: asyncio.Transport) -> None:
        self.ports.append(transport.get_extra_info("sockname")[1])


async def one(pool: ConnectionPool) -> None:
    async with await pool.request("GET", "/", CIMultiDict(), None) as response:
        await response.content.read()


async def test_the_next_request_finds_a_connection_opened_ahead() -> None:
    connects = Connects()
    async with (
        held_server() as server,
        ConnectionPool("127.0.0.1", server.port, check=connects, preconnect=8) as pool,
    ):
        first = asyncio.create_task(one(pool))
        await until(lambda: server.waiting == 1 and pool.idle == 1, "one opened ahead")
        assert len(connects.ports) == 2
        second = asyncio.create_task(one(pool))
        await until(lambda: server.waiting == 2 and pool.idle == 1, "topped up again")
        # The second request went out on the connection opened while the first was in use.
        assert server.ports[1] == connects.ports[1]
        server.go.set()
        await asyncio.gather(first, second)
        assert pool.opened == 3  # two used, one more ahead: kept while demand lasts


async def test_nothing_is_opened_ahead_past_the_ceiling() -> None:
    connects = Connects()
    async with (
        held_server() as server,
        ConnectionPool("127.0.0.1", server.port, check=connects, preconnect=2) as pool,
    ):
        tasks = [asyncio.create_task(one(pool))]
        await until(lambda: pool.idle == 1, "one opened ahead")
        tasks.append(asyncio.create_task(one(pool)))
        await until(lambda: server.waiting == 2, "two in use")
        # The second took the one opened ahead; the ceiling (2) allows no other.
        assert pool.opened == 2 and pool.idle == 0
        assert len(connects.ports) == 2
        server.go.set()
        await asyncio.gather(*tasks)


async def test_a_burst_opens_no_more_than_its_own_connections_and_one_ahead() -> None:
    connects = Connects()
    async with (
        held_server() as server,
        ConnectionPool("127.0.0.1", server.port, check=connects, preconnect=100) as pool,
    ):
        tasks = [asyncio.create_task(one(pool)) for _ in range(20)]
        await until(lambda: server.waiting == 20, "twenty in use")
        # The first request, finding the pool idle, opened one ahead; the rest found
        # requests connecting and opened none.
        assert len(connects.ports) <= 21
        server.go.set()
        await asyncio.gather(*tasks)


async def test_a_pool_without_a_ceiling_opens_nothing_ahead() -> None:
    connects = Connects()
    async with (
        held_server() as server,
        ConnectionPool("127.0.0.1", server.port, check=connects) as pool,
    ):
        tasks = [asyncio.create_task(one(pool)) for _ in range(3)]
        await until(lambda: server.waiting == 3, "three in use")
        server.go.set()
        await asyncio.gather(*tasks)
        assert len(connects.ports) == 3


async def test_closing_the_pool_closes_what_was_opened_ahead() -> None:
    async with held_server() as server:
        pool = ConnectionPool("127.0.0.1", server.port, preconnect=8)
        task = asyncio.create_task(one(pool))
        await until(lambda: server.waiting == 1 and pool.idle == 1, "one opened ahead")
        await pool.close()
        assert pool.idle == 0
        await until(lambda: pool.opened == 1, "the one opened ahead closed")
        server.go.set()
        await task
        await pool.close()  # twice is fine


async def test_a_failed_connect_ahead_leaves_the_request_to_say_why() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here
    async with ConnectionPool("127.0.0.1", port, preconnect=8) as pool:
        for _ in range(2):
            with pytest.raises(ConnectFailed):
                await one(pool)
        assert pool.opened == 0
