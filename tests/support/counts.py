"""Reading a mode's counters in tests."""

from __future__ import annotations

from ollana.metrics import Metrics


def by_reason(metrics: Metrics, family: str) -> dict[str, int]:
    """A counter family's values by reason."""
    return {
        sample.labels["reason"]: int(sample.value)
        for metric in metrics.counted()
        for sample in metric.samples
        if sample.name == f"{family}_total"
    }
