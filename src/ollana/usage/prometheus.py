"""Prometheus families of a server's usage per device and model, and of its fair queue.

- ``device_requests_total{device,name,model}``, ``device_prompt_tokens_total``,
  ``device_generated_tokens_total``, ``device_generation_seconds_total``,
  ``device_errors_total``: what each device used (``device`` is the short ID, ``name``
  the name given with ``ollana device allow --name``). At most `MAX_PAIRS` device and
  model pairs; more are counted under ``other``.
- ``queue_waiting``, ``queue_running``, ``queue_parallel``, ``queue_full_total``: read
  from the queue at scrape time; ``queue_wait_seconds``: how long waiting requests waited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["MAX_PAIRS", "WAIT_BUCKETS", "DeviceMetrics", "QueueCounts"]

MAX_PAIRS: Final = 512
OTHER: Final = "other"
# From a turn that comes at once to one behind a queue of long generations.
WAIT_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# running, waiting, parallel, refused because full
QueueCounts = Callable[[], tuple[int, int, int, int]]

_Children = tuple[
    Callable[[], None], Callable[[float], None], Callable[[float], None],
    Callable[[float], None], Callable[[], None],
]  # fmt: skip


class DeviceMetrics:
    """Usage counters per device and model, in a mode's registry; cheap per request."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("device", "name", "model")

        def counter(name: str, what: str) -> Counter:
            return Counter(f"ollana_device_{name}", what, labels, registry=registry)

        self._requests = counter("requests", "Requests answered, per device and model.")
        self._prompt = counter("prompt_tokens", "Prompt tokens Ollama reported, per device.")
        self._generated = counter("generated_tokens", "Tokens Ollama generated, per device.")
        self._seconds = counter(
            "generation_seconds", "Generation time Ollama reported (else the time the answer "
            "took), per device and model.",
        )  # fmt: skip
        self._errors = counter("errors", "Requests that ended in an error, per device.")
        self._wait = Histogram(
            "ollana_queue_wait_seconds", "Time a request waited in the fair queue.",
            buckets=WAIT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.waited: Callable[[float], None] = self._wait.observe
        self._children: dict[tuple[str, str, str], _Children] = {}
        self._registry = registry

    def count(
        self,
        device: str,
        name: str,
        model: str,
        *,
        prompt: int,
        generated: int,
        seconds: float,
        error: bool,
    ) -> None:
        """Count one request of `device` (its short ID) for `model`."""
        children = self._children.get((device, name, model))
        if children is None:
            children = self._child(device, name, model)
        requests, prompt_inc, generated_inc, seconds_inc, errors = children
        requests()
        if prompt:
            prompt_inc(prompt)
        if generated:
            generated_inc(generated)
        seconds_inc(seconds)
        if error:
            errors()

    def _child(self, device: str, name: str, model: str) -> _Children:
        key = (device, name, model)
        if len(self._children) >= MAX_PAIRS:
            key = (OTHER, OTHER, OTHER)
            if key in self._children:
                return self._children[key]
        children: _Children = (
            self._requests.labels(*key).inc,
            self._prompt.labels(*key).inc,
            self._generated.labels(*key).inc,
            self._seconds.labels(*key).inc,
            self._errors.labels(*key).inc,
        )
        self._children[key] = children
        return children

    def watch_queue(self, counts: QueueCounts) -> None:
        """Report the queue's gauges from `counts()` at each scrape."""
        self._registry.register(_QueueCollector(counts))


class _QueueCollector(Collector):
    def __init__(self, counts: QueueCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        running, waiting, parallel, full = self._counts()
        what = "in the fair queue in front of Ollama"
        return (
            GaugeMetricFamily("ollana_queue_waiting", f"Requests waiting {what}.", waiting),
            GaugeMetricFamily(
                "ollana_queue_running", f"Requests holding one of Ollama's slots ({what}).", running
            ),
            GaugeMetricFamily("ollana_queue_parallel", "Requests Ollama runs at once.", parallel),
            CounterMetricFamily("ollana_queue_full", f"Requests refused: {what} was full.", full),
        )

    def describe(self) -> Iterable[Metric]:
        return ()
