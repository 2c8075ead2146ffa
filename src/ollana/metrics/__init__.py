"""Prometheus metrics of one running mode, in a registry of its own.

Every family is prefixed ``ollana_``:

- ``requests_total{route,status,server}``: requests answered, by route label (see
  `route_label`), HTTP status and the server that answered (``none``: no single server did).
- ``inflight{server}``: requests sent to a server and not finished yet.
- ``upstream_ttfb_seconds{server}``: from sending a request upstream to its response head.
- ``request_duration_seconds{route}``: from the request's arrival to its last response byte.
- ``retries_total{reason}``, ``failovers_total``: attempts sent again elsewhere; requests that
  a server other than the first one tried answered.
- ``refusals_total{reason}``, ``tls_handshakes_refused_total{reason}``.
- ``pool_servers{state}`` and ``discovery_datagrams_{sent,received,dropped}_total``, read
  from the live objects at scrape time (`watch_pool`, `watch_discovery`): no per-event work.
- ``upstream_connections{server,state}`` (client: its connections to each server) and
  ``connections{holder,state}`` (server: connections held by each device, or by an address
  for peers without an allowed certificate), ``state`` being open or idle; at scrape time.

The hot-path methods cost well under a microsecond each: labelled children are looked up
once and kept, and the four families they change are plain numbers (`tallies`), not
prometheus_client's locked values. Label values are bounded: routes by `route_label`, the others by
`MAX_LABEL_VALUES` distinct values per label, past which new values read ``other``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ollana import __version__
from ollana.activity import Activity
from ollana.metrics.sources import (
    SERVER_STATES,
    PoolView,
    ServerView,
    StatsSource,
    connection_families,
    discovery_families,
    pool_families,
)
from ollana.metrics.tallies import Cell, Family, Histogram, Observations, Tallies
from ollana.ollama_api import ENDPOINTS, OTHER_ROUTE

__all__ = [
    "DURATION_BUCKETS",
    "LOCAL_OLLAMA",
    "MAX_LABEL_VALUES",
    "NO_SERVER",
    "OTHER",
    "SERVER_STATES",
    "TTFB_BUCKETS",
    "Metrics",
    "PoolView",
    "ServerView",
    "StatsSource",
]

log = logging.getLogger(__name__)

# From a loopback hit (1 ms) to a large model loading from disk before its first token.
TTFB_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
# A whole generation may stream for minutes after that.
DURATION_BUCKETS: Final = (*TTFB_BUCKETS, 300.0, 600.0)
MAX_LABEL_VALUES: Final = 256
OTHER: Final = OTHER_ROUTE
NO_SERVER: Final = "none"  # answered without a single server: refused, merged lists, 503
LOCAL_OLLAMA: Final = "ollama"
# The pool's server states, all reported (zeros too) so that a dashboard sees each series.

_ROUTE_VALUES: Final = frozenset({e.route for e in ENDPOINTS} | {OTHER})


MetricSource = Callable[[], Iterable[Metric]]


class _Bounded:
    """The values one label has taken; past `limit` distinct ones, a new value reads "other"."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class _Sources(Collector):
    """Families computed at scrape time from live objects."""

    def __init__(self) -> None:
        self.sources: list[MetricSource] = []

    def collect(self) -> Iterable[Metric]:
        for source in list(self.sources):
            try:
                families = list(source())
            except Exception:
                # One broken source must not take the whole scrape down with it.
                log.exception("metrics source %r failed", source)
                continue
            yield from families

    def describe(self) -> Iterable[Metric]:
        return ()


class Metrics:
    """The metrics of one running mode; its hot-path methods are safe on the event loop."""

    # The classic text format: understood by every Prometheus version and scraper.
    content_type: Final = CONTENT_TYPE_PLAIN_0_0_4

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.activity = Activity()
        reg = self.registry
        self._requests = Family(
            "counter", "ollana_requests", "Requests answered, by route, HTTP status and server.",
            ("route", "status", "server"),
        )  # fmt: skip
        self._inflight = Family(
            "gauge", "ollana_inflight", "Requests sent to a server and not finished yet.",
            ("server",),
        )  # fmt: skip
        self._ttfb = Histogram(
            "ollana_upstream_ttfb_seconds",
            "Time from sending a request upstream to its response head.",
            ("server",), TTFB_BUCKETS,
        )  # fmt: skip
        self._duration = Histogram(
            "ollana_request_duration_seconds",
            "Time from a request's arrival to its last response byte.",
            ("route",), DURATION_BUCKETS,
        )  # fmt: skip
        reg.register(Tallies((self._requests, self._inflight, self._ttfb, self._duration)))
        self._retries = Counter(
            "ollana_retries", "Attempts that failed before any response byte and were sent "
            "to the next server, by reason.", ("reason",), registry=reg,
        )  # fmt: skip
        self._failovers = Counter(
            "ollana_failovers", "Requests answered by a server other than the first one tried.",
            registry=reg,
        )  # fmt: skip
        self._refusals = Counter(
            "ollana_refusals", "Requests refused by ollana itself, by reason.",
            ("reason",), registry=reg,
        )  # fmt: skip
        self._tls_refusals = Counter(
            "ollana_tls_handshakes_refused", "TLS handshakes or peers refused, by reason.",
            ("reason",), registry=reg,
        )  # fmt: skip
        self._sources = _Sources()
        reg.register(self._sources)
        self._sources.sources.append(_info)
        if process:
            ProcessCollector(namespace="ollana", registry=reg)
        self._servers = _Bounded(MAX_LABEL_VALUES)
        self._reasons = _Bounded(MAX_LABEL_VALUES)
        self._holders = _Bounded(MAX_LABEL_VALUES)
        self._request_children: dict[tuple[str, int, str], Cell] = {}
        self._inflight_children: dict[str, Cell] = {}
        self._ttfb_children: dict[str, Observations] = {}
        self._duration_children: dict[str, Observations] = {}
        self._reason_children: dict[tuple[int, str], Callable[[], None]] = {}
        self._failover_inc = self._failovers.inc

    # --- the hot path -----------------------------------------------------------------------

    def request_started(self, server: str) -> None:
        """A request (or a retry of one) was sent to `server`: its in-flight gauge goes up.

        Every call is matched by exactly one `attempt_failed(server)` or
        `request_finished(..., server, ...)`.
        """
        gauge = self._inflight_children.get(server)
        if gauge is None:
            gauge = self._inflight_child(server)
        gauge.value += 1

    def attempt_failed(self, server: str) -> None:
        """The attempt sent to `server` failed before any response byte: its in-flight goes down.

        The request itself goes on (`retry`) or ends (`request_finished` with `NO_SERVER`).
        """
        gauge = self._inflight_children.get(server)
        if gauge is None:
            gauge = self._inflight_child(server)
        gauge.value -= 1

    def request_finished(self, route: str, status: int, server: str, seconds: float) -> None:
        """A request ended (last byte sent, or broken): count it and its duration.

        `route` comes from `route_label`; `status` is the status sent (599 when the
        exchange broke before it completed); `server` answered it, or is `NO_SERVER`
        when none did. Unless `server` is `NO_SERVER`, its in-flight gauge goes down.
        """
        key = (route, status, server)
        count = self._request_children.get(key)
        if count is None:
            count = self._request_child(key)
        count.value += 1
        if server != NO_SERVER:
            gauge = self._inflight_children.get(server)
            if gauge is None:
                gauge = self._inflight_child(server)
            gauge.value -= 1
        durations = self._duration_children.get(route)
        if durations is None:
            durations = self._duration_child(route)
        durations.observe(seconds)

    def upstream_ttfb(self, server: str, seconds: float) -> None:
        """`server` sent a response head (any status) `seconds` after the request was sent."""
        ttfbs = self._ttfb_children.get(server)
        if ttfbs is None:
            ttfbs = self._ttfb_child(server)
        ttfbs.observe(seconds)

    def retry(self, reason: str) -> None:
        """An attempt failed before any response byte; the request goes to the next server.

        Reasons are short constants: "connect", "reset", "tls", "busy" (a 503), "ejected".
        """
        self._reason(self._retries, 0, reason)()

    def failover(self) -> None:
        """A request was answered by a server other than the first one tried (once per request)."""
        self._failover_inc()

    def refused(self, reason: str) -> None:
        """ollana refused a request itself: "host", "origin", "limits", "read-only", …."""
        self._reason(self._refusals, 1, reason)()

    def tls_refused(self, reason: str) -> None:
        """A TLS handshake or peer was refused: "unknown-device", "disabled", "handshake", …."""
        self._reason(self._tls_refusals, 2, reason)()

    # --- children, made once per label set ----------------------------------------------------

    def _inflight_child(self, server: str) -> Cell:
        label = self._servers(server)
        gauge = self._inflight.cell(label)
        if label == server:
            self._inflight_children[server] = gauge
        return gauge

    def _request_child(self, key: tuple[str, int, str]) -> Cell:
        route, status, server = key
        label_route = route if route in _ROUTE_VALUES else OTHER
        label_server = self._servers(server)
        valid = 100 <= status <= 599
        label_status = str(status) if valid else OTHER
        count = self._requests.cell(label_route, label_status, label_server)
        if (label_route, label_server) == (route, server) and valid:
            self._request_children[key] = count
        return count

    def _duration_child(self, route: str) -> Observations:
        label = route if route in _ROUTE_VALUES else OTHER
        durations = self._duration.child(label)
        if label == route:
            self._duration_children[route] = durations
        return durations

    def _ttfb_child(self, server: str) -> Observations:
        label = self._servers(server)
        ttfbs = self._ttfb.child(label)
        if label == server:
            self._ttfb_children[server] = ttfbs
        return ttfbs

    def _reason(self, family: Counter, slot: int, reason: str) -> Callable[[], None]:
        inc = self._reason_children.get((slot, reason))
        if inc is None:
            label = self._reasons(reason)
            inc = family.labels(label).inc
            if label == reason:
                self._reason_children[(slot, reason)] = inc
        return inc

    # --- live sources ---------------------------------------------------------------------

    def add_source(self, source: MetricSource) -> Callable[[], None]:
        """Add families computed at scrape time; returns a function that removes them."""
        self._sources.sources.append(source)

        def remove() -> None:
            if source in self._sources.sources:
                self._sources.sources.remove(source)

        return remove

    def watch_pool(self, pool: PoolView) -> Callable[[], None]:
        """Report ``ollana_pool_servers{state}`` from the pool at each scrape."""
        return self.add_source(lambda: pool_families(pool, self._servers))

    def watch_connections(
        self, held: Callable[[], Mapping[str, tuple[int, int]]]
    ) -> Callable[[], None]:
        """Report ``ollana_connections{holder,state}`` from a listener at each scrape."""
        return self.add_source(lambda: connection_families(held(), self._holders))

    def watch_discovery(self, service: StatsSource) -> Callable[[], None]:
        """Report the discovery service's datagram counters at each scrape."""
        return self.add_source(lambda: discovery_families(service.stats()))

    # --- reading --------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every family."""
        return generate_latest(self.registry)

    def counted(self) -> Iterable[Metric]:
        """The counter and gauge families only (no histograms, no process): for totals."""
        yield self._requests.collect()
        yield self._inflight.collect()
        for metric in (self._retries, self._failovers, self._refusals, self._tls_refusals):
            yield from metric.collect()
        yield from self._sources.collect()


def _info() -> Iterable[Metric]:
    family = InfoMetricFamily("ollana_build", "The running ollana.")
    family.add_metric((), {"version": __version__})
    return (family,)
