"""Counters, gauges and histograms for the request path, kept as plain numbers.

prometheus_client guards every value with a lock, so that threads may share it: seven
locked increments per request through a proxy (a counter, a gauge up and down, two
histograms of two values each) cost about 3 µs of a hop's CPU. ollana changes these
families only on its event loop and reads them there at scrape time, so plain integers and
floats do, and exposition is built from them then (`Tallies.collect`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["Cell", "Family", "Histogram", "Observations", "Tallies"]


class Cell:
    """One labelled counter or gauge value."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Observations:
    """One labelled histogram: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count `value` in the first bucket whose bound is at least it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class Family:
    """A counter or gauge family: one `Cell` per label values."""

    __slots__ = ("cells", "help", "kind", "labels", "name")

    def __init__(self, kind: str, name: str, help_: str, labels: Sequence[str]) -> None:
        self.kind, self.name, self.help, self.labels = kind, name, help_, tuple(labels)
        self.cells: dict[tuple[str, ...], Cell] = {}

    def cell(self, *values: str) -> Cell:
        """The value for these label values, made at zero the first time."""
        cell = self.cells.get(values)
        if cell is None:
            cell = self.cells[values] = Cell()
        return cell

    def collect(self) -> Metric:
        """The family as prometheus_client exposes it."""
        make = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = make(self.name, self.help, labels=self.labels)
        for values, cell in self.cells.items():
            family.add_metric(values, cell.value)
        return family


class Histogram:
    """A histogram family: one `Observations` per label values."""

    __slots__ = ("bounds", "children", "help", "labels", "les", "name")

    def __init__(
        self, name: str, help_: str, labels: Sequence[str], bounds: Sequence[float]
    ) -> None:
        self.name, self.help, self.labels = name, help_, tuple(labels)
        self.bounds = tuple(bounds)
        # As prometheus_client writes `le` for bounds of this size: 0.001, 1.0, 120.0.
        self.les = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        self.children: dict[tuple[str, ...], Observations] = {}

    def child(self, *values: str) -> Observations:
        """The histogram for these label values, made empty the first time."""
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Observations(self.bounds)
        return child

    def collect(self) -> Metric:
        """The family as prometheus_client exposes it (cumulative buckets)."""
        family = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        for values, child in self.children.items():
            running, buckets = 0, []
            for le, count in zip(self.les, child.counts, strict=True):
                running += count
                buckets.append((le, running))
            family.add_metric(values, buckets, child.sum)
        return family


class Tallies(Collector):
    """The families kept here, collected together at scrape time (register it once)."""

    def __init__(self, families: Iterable[Family | Histogram]) -> None:
        self.families = tuple(families)

    def collect(self) -> Iterable[Metric]:
        """Every family, as prometheus_client exposes it."""
        return [family.collect() for family in self.families]

    def describe(self) -> Iterable[Metric]:
        """Nothing ahead of time: the label values come as requests do."""
        return ()
