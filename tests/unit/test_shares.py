"""Shares: who gives up a connection for a newcomer, and when a newcomer is refused."""

from __future__ import annotations

from dataclasses import dataclass

from ollana.http.shares import Shares


@dataclass(eq=False)
class Conn:
    idle_since: float | None = None
    evicted: bool = False

    def evict(self) -> None:
        self.evicted = True


def fill(
    shares: Shares[Conn], holder: str, count: int, idle_from: float | None = 0.0
) -> list[Conn]:
    conns = []
    for index in range(count):
        conn = Conn(None if idle_from is None else idle_from + index)
        assert shares.admit(holder, conn)
        conns.append(conn)
    return conns


def test_a_newcomer_past_the_cap_closes_the_oldest_idle_connection_of_the_largest_holder() -> None:
    shares: Shares[Conn] = Shares(total=10, each=0)
    a = fill(shares, "a", 7, idle_from=100.0)
    c = fill(shares, "c", 3, idle_from=0.0)  # older, but c holds fewer
    newcomer = Conn()
    assert shares.admit("b", newcomer)
    assert [x.evicted for x in a] == [True] + [False] * 6
    assert not any(x.evicted for x in c)
    assert shares.counts() == {"a": (6, 6), "b": (1, 0), "c": (3, 3)}
    assert shares.held == 10 and shares.evicted == 1


def test_busy_connections_are_never_closed_and_the_newcomer_is_refused() -> None:
    shares: Shares[Conn] = Shares(total=4, each=0)
    fill(shares, "a", 4, idle_from=None)
    assert not shares.admit("b", Conn())
    assert shares.held == 4 and shares.count("b") == 0


def test_holders_near_equal_do_not_take_from_each_other() -> None:
    shares: Shares[Conn] = Shares(total=8, each=0)
    fill(shares, "a", 4)
    fill(shares, "b", 3)
    fill(shares, "b", 1)
    # b holds 4 and would hold 5; a holds 4: b's own idle one makes the room.
    b_conns_before = shares.count("b")
    assert shares.admit("b", Conn())
    assert shares.count("a") == 4 and shares.count("b") == b_conns_before


def test_a_holder_at_its_ceiling_makes_room_among_its_own_idle_ones_or_is_refused() -> None:
    shares: Shares[Conn] = Shares(total=0, each=3)
    own = fill(shares, "a", 3)
    assert shares.admit("a", Conn())
    assert own[0].evicted and shares.count("a") == 3
    busy: Shares[Conn] = Shares(total=0, each=2)
    fill(busy, "a", 2, idle_from=None)
    assert not busy.admit("a", Conn())


def test_release_is_safe_twice_and_after_eviction() -> None:
    shares: Shares[Conn] = Shares(total=2, each=0)
    (first,) = fill(shares, "a", 1)
    shares.release("a", first)
    shares.release("a", first)
    assert shares.held == 0 and shares.counts() == {}


def test_with_any_idle_a_busy_newcomer_takes_the_oldest_idle_connection_of_anyone() -> None:
    # Every device holds its fair share; the newcomer's own are all busy.
    for any_idle, admitted in ((False, False), (True, True)):
        shares: Shares[Conn] = Shares(total=8, each=0, any_idle=any_idle)
        a = fill(shares, "a", 4, idle_from=50.0)
        b = fill(shares, "b", 2, idle_from=10.0)  # idle the longest
        fill(shares, "c", 2, idle_from=None)  # busy
        assert shares.admit("c", Conn()) is admitted
        assert [x.evicted for x in b] == [admitted, False]
        assert not any(x.evicted for x in a)


def test_with_any_idle_a_newcomer_is_still_refused_when_nothing_is_idle() -> None:
    shares: Shares[Conn] = Shares(total=4, each=0, any_idle=True)
    fill(shares, "a", 2, idle_from=None)
    fill(shares, "b", 2, idle_from=None)
    assert not shares.admit("c", Conn())
    assert shares.held == 4
