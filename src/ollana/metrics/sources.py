"""Families computed at scrape time from live objects: the pool, a listener, discovery."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ollana.discovery import DiscoveryStats

__all__ = [
    "SERVER_STATES",
    "PoolView",
    "ServerView",
    "StatsSource",
    "connection_families",
    "discovery_families",
    "pool_families",
]

# The pool's server states, all reported (zeros too) so that a dashboard sees each series.
SERVER_STATES: Final = ("healthy", "suspect", "down")

Label = Callable[[str], str]  # bounds a label's values (see metrics._Bounded)


class ServerView(Protocol):
    """What `watch_pool` reads of one server."""

    @property
    def state(self) -> str:
        """healthy, suspect or down."""
        ...

    @property
    def label(self) -> str:
        """How metrics name the server."""
        ...

    @property
    def connections_open(self) -> int:
        """Connections to it, in use or idle."""
        ...

    @property
    def connections_idle(self) -> int:
        """Connections to it waiting in the pool."""
        ...


class PoolView(Protocol):
    """The client's Pool, as `watch_pool` and the status document read it."""

    def snapshots(self) -> Sequence[ServerView]:
        """Frozen copies of every server."""
        ...


class StatsSource(Protocol):
    """What `watch_discovery` reads: a DiscoveryService."""

    def stats(self) -> DiscoveryStats:
        """A snapshot of the datagram counters."""
        ...


def pool_families(pool: PoolView, servers: Label) -> Iterable[Metric]:
    """``ollana_pool_servers{state}`` and ``ollana_upstream_connections{server,state}``."""
    counts = dict.fromkeys(SERVER_STATES, 0)
    snapshots = pool.snapshots()
    for snapshot in snapshots:
        counts[str(snapshot.state)] = counts.get(str(snapshot.state), 0) + 1
    family = GaugeMetricFamily(
        "ollana_pool_servers", "Servers known to the pool, by state.", labels=("state",)
    )
    for state, count in counts.items():
        family.add_metric((state,), count)
    connections = GaugeMetricFamily(
        "ollana_upstream_connections",
        "This client's connections to each server, by state (open, idle).",
        labels=("server", "state"),
    )
    for snapshot in snapshots:
        label = servers(snapshot.label)
        connections.add_metric((label, "open"), snapshot.connections_open)
        connections.add_metric((label, "idle"), snapshot.connections_idle)
    return (family, connections)


def connection_families(held: Mapping[str, tuple[int, int]], holders: Label) -> Iterable[Metric]:
    """``ollana_connections{holder,state}`` from a listener's (open, idle) per holder."""
    family = GaugeMetricFamily(
        "ollana_connections",
        "Connections to this server by holder (a device ID, or the address of peers"
        " without an allowed certificate) and state (open, idle).",
        labels=("holder", "state"),
    )
    for holder, (open_, idle) in sorted(held.items()):
        label = holders(holder)
        family.add_metric((label, "open"), open_)
        family.add_metric((label, "idle"), idle)
    return (family,)


def discovery_families(stats: DiscoveryStats) -> Iterable[Metric]:
    """The discovery service's datagram counters."""
    prefix, what = "ollana_discovery_", "Discovery datagrams"
    dropped = CounterMetricFamily(
        f"{prefix}datagrams_dropped", f"{what} received and dropped, by reason.",
        labels=("reason",),
    )  # fmt: skip
    for reason, count in sorted(stats.dropped.items()):
        dropped.add_metric((reason,), count)
    unanswered = CounterMetricFamily(
        f"{prefix}unanswered", "Queries delivered but not answered, by reason.",
        labels=("reason",),
    )  # fmt: skip
    for reason, count in sorted(stats.unanswered.items()):
        unanswered.add_metric((reason,), count)
    return (
        unanswered,
        CounterMetricFamily(f"{prefix}datagrams_sent", f"{what} sent.", stats.sent),
        CounterMetricFamily(f"{prefix}datagrams_received", f"{what} received.", stats.received),
        dropped,
        CounterMetricFamily(
            f"{prefix}send_errors", f"{what} that could not be sent.", stats.send_errors
        ),
    )
