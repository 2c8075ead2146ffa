"""Connections as a shared resource: who holds how many, and whose to close for a newcomer.

A listener groups its connections by holder (a device, or a source address) and keeps two
caps: one in total and one per holder. A newcomer that would pass the total is admitted by
closing the oldest idle connection of the holder with the most, as long as that holder
keeps at least as many as the newcomer's holder then has; a holder at its own cap makes
room among its own idle connections. With `any_idle` (devices, whose clients hold a
burst's connections for a while), an idle connection is worth less than a request waiting
for one: past every fair share, the oldest idle connection of any holder goes next. Only
when nobody has an idle connection to spare is the newcomer refused. The bookkeeping is
free of I/O: closing is the member's own business.
"""

from __future__ import annotations

from typing import Final, Generic, Protocol, TypeVar

__all__ = ["FAIR_MARGIN", "Member", "Shares"]

# A holder gives up a connection only while it holds at least this many more than the
# newcomer's holder will: two devices near equal do not take turns closing each other's.
FAIR_MARGIN: Final = 2


class Member(Protocol):
    """A connection as the bookkeeping sees it."""

    @property
    def idle_since(self) -> float | None:
        """When it began waiting for its next request (loop time); None while in use."""
        ...

    def evict(self) -> None:
        """Close it gracefully: it was chosen to make room."""
        ...


M = TypeVar("M", bound=Member)


class Shares(Generic[M]):
    """Connections by holder, with a cap in total and per holder (0: none)."""

    __slots__ = ("_groups", "any_idle", "each", "evicted", "held", "total")

    def __init__(self, total: int, each: int, *, any_idle: bool = False) -> None:
        self.total = total
        self.each = each
        self.any_idle = any_idle
        self.held = 0
        self.evicted = 0  # connections closed to make room, since start
        self._groups: dict[str, dict[M, None]] = {}

    def admit(self, holder: str, member: M) -> bool:
        """Take `member` into `holder`'s share, closing others' idle ones if need be.

        False (nothing changed) when there is no room and nobody can give any.
        """
        group = self._groups.get(holder)
        count = len(group) if group is not None else 0
        if self.each > 0 and count >= self.each:
            victim = _oldest_idle(group) if group is not None else None
            if victim is None:
                return False
            self._evict(holder, victim)
            count -= 1
        if self.total > 0 and self.held >= self.total and not self._reclaim(holder, count):
            return False
        if group is None:
            group = self._groups[holder] = {}
        group[member] = None
        self.held += 1
        return True

    def release(self, holder: str, member: M) -> None:
        """`member` closed; a second call, or one for an evicted member, does nothing."""
        group = self._groups.get(holder)
        if group is None or group.pop(member, 0) is not None:
            return
        self.held -= 1
        if not group:
            del self._groups[holder]

    def count(self, holder: str) -> int:
        """How many connections `holder` has."""
        group = self._groups.get(holder)
        return len(group) if group is not None else 0

    def counts(self) -> dict[str, tuple[int, int]]:
        """(open, idle) per holder."""
        return {
            holder: (len(group), sum(1 for m in group if m.idle_since is not None))
            for holder, group in self._groups.items()
        }

    def _reclaim(self, holder: str, count: int) -> bool:
        """Close one idle connection of the largest holder that can spare one."""
        ranked = sorted(self._groups.items(), key=lambda item: len(item[1]), reverse=True)
        for other, group in ranked:
            if other == holder or len(group) < count + 1 + FAIR_MARGIN:
                continue
            victim = _oldest_idle(group)
            if victim is not None:
                self._evict(other, victim)
                return True
        own = self._groups.get(holder)
        victim = _oldest_idle(own) if own is not None else None
        if victim is not None:
            self._evict(holder, victim)
            return True
        if not self.any_idle:
            return False
        oldest: tuple[str, M] | None = None
        since = 0.0
        for other, group in self._groups.items():
            candidate = _oldest_idle(group)
            if candidate is not None:
                idle = candidate.idle_since
                assert idle is not None
                if oldest is None or idle < since:
                    oldest, since = (other, candidate), idle
        if oldest is None:
            return False
        self._evict(*oldest)
        return True

    def _evict(self, holder: str, member: M) -> None:
        self.release(holder, member)
        self.evicted += 1
        member.evict()


def _oldest_idle(group: dict[M, None]) -> M | None:
    oldest: M | None = None
    since = 0.0
    for member in group:
        idle = member.idle_since
        if idle is not None and (oldest is None or idle < since):
            oldest, since = member, idle
    return oldest
