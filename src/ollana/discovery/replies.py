"""Rate limits of the discovery service, and when it answers (so that it is no reflector).

A query's source address is whatever its sender wrote, and the answer goes there: answers go
only to neighbours (see `LocalNetworks`), one a second to one querier, and within a budget
per second in all, whoever asks. No I/O beyond reading the interfaces on `refresh`.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from typing import Final

from ollana.discovery.targets import LocalNetworks

__all__ = ["MAX_SOURCES", "REPLY_BUDGET", "REPLY_GAP", "RateLimit", "ReplyPolicy"]

MAX_SOURCES: Final = 1024  # per-source rate state kept, least recently seen forgotten first
REPLY_GAP: Final = 1.0  # at most one answer per second to one querier (address and port)
# Answers sent a second in all (and burst), whoever asks: a flood of queries from many
# addresses gets at most this many answers, not one each.
REPLY_BUDGET: Final = 20.0


class RateLimit:
    """Token buckets per key (burst = one second's worth), forgetting the least recent keys."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate, self._burst = rate, burst
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def allow(self, key: Hashable, now: float) -> bool:
        """Take a token for key if one is there."""
        if self._rate <= 0:
            return True
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)
        return allowed


class ReplyPolicy:
    """Whether to answer a datagram from a source now; counts the ones left unanswered."""

    def __init__(self, budget: float = REPLY_BUDGET) -> None:
        self._local = LocalNetworks()
        self._per_source = RateLimit(1.0 / REPLY_GAP, 1.0)
        self._budget = RateLimit(budget, max(1.0, budget))
        self._unanswered: Counter[str] = Counter()

    def refresh(self, targets: Iterable[str]) -> None:
        """Read the interfaces again; targets (configured addresses) are answered too."""
        self._local.refresh(targets)

    def allow(self, source: tuple[str, int], now: float) -> bool:
        """Whether source may get an answer now (taking a token if so)."""
        if not self._local.answerable(source[0]):
            why = "remote"  # not on a subnet of ours: maybe a forged source
        elif not self._per_source.allow(source, now):
            why = "rate"
        elif not self._budget.allow(None, now):
            why = "budget"
        else:
            return True
        self._unanswered[why] += 1
        return False

    def unanswered(self) -> Mapping[str, int]:
        """Datagrams not answered, by reason."""
        return dict(self._unanswered)
