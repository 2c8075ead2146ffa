"""A ConnectionPool keeps idle what recent demand needs, and no more, over real sockets."""

from __future__ import annotations

import asyncio

from multidict import CIMultiDict

from ollana.http import ConnectionPool
from ollana.http.client.connection_pool import IDLE_SPARE
from tests.support.held import Held, held_server
from tests.support.waiting import until

# No hold, a fast decay: what a pool keeps long after a burst, in a moment.
FAST_DECAY = {"demand_hold": 0.0, "demand_decay": 0.05, "trim_interval": 0.02}


async def burst(pool: ConnectionPool, server: Held, count: int) -> None:
    """`count` requests in use at once, then all answered and given back."""
    server.go.clear()

    async def one() -> None:
        async with await pool.request("GET", "/", CIMultiDict(), None) as response:
            await response.content.read()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await until(lambda: server.waiting == count, f"{count} requests in use at once")
    server.go.set()
    await asyncio.gather(*tasks)


async def test_a_burst_reuses_the_connections_the_last_one_left() -> None:
    async with held_server() as server, ConnectionPool("127.0.0.1", server.port) as pool:
        await burst(pool, server, 20)
        assert pool.idle == 20  # recent demand was 20: all kept for the hold
        await burst(pool, server, 20)
        assert len(server.transports) == 20  # the second burst opened none


async def test_idle_connections_beyond_recent_demand_close_as_it_decays() -> None:
    async with (
        held_server() as server,
        ConnectionPool("127.0.0.1", server.port, **FAST_DECAY) as pool,
    ):
        await burst(pool, server, 20)
        await until(lambda: pool.opened <= IDLE_SPARE, "the idle surplus closed")
        assert pool.idle == pool.opened
        # What stays is warm: a request now reuses one of them.
        await burst(pool, server, 1)
        assert len(server.transports) == 20


async def test_a_burst_is_kept_for_the_hold_while_a_pool_without_one_lets_go() -> None:
    async with (
        held_server() as server,
        ConnectionPool("127.0.0.1", server.port, **FAST_DECAY) as unheld,
        ConnectionPool("127.0.0.1", server.port, **{**FAST_DECAY, "demand_hold": 3600}) as kept,
    ):
        await burst(unheld, server, 10)
        await burst(kept, server, 10)
        # The pool without a hold is the clock: its decay has run its course…
        await until(lambda: unheld.opened <= IDLE_SPARE, "the unheld pool's surplus closed")
        # …and the same decay, trimmed as often, has not touched the held burst.
        assert kept.idle == 10


async def test_a_steady_load_keeps_its_connections() -> None:
    async with (
        held_server() as server,
        ConnectionPool("127.0.0.1", server.port, **FAST_DECAY) as pool,
    ):
        for _ in range(5):
            await burst(pool, server, 3)
        # Three at a time, again and again: never more than 3 + the spare opened.
        assert len(server.transports) <= 3 + IDLE_SPARE
