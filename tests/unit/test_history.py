"""The in-process history behind the dashboard: the activity tally and its 15-minute ring."""

from __future__ import annotations

import json

import pytest

from ollana.activity import (
    LATENCY_BUCKETS,
    MAX_ERRORS,
    MAX_KEYS,
    OTHER,
    Activity,
    bucket_of,
    quantile,
)
from ollana.admin.history import RATE_WINDOW, History, HistorySampler
from tests.support.waiting import until

A, B = "aa" * 32, "bb" * 32


def test_latency_buckets_are_ordered_and_bounded() -> None:
    durations = [0.0, 0.0001, 0.001, 0.0012, 0.01, 0.1, 1.0, 30.0, 600.0, 1e9]
    buckets = [bucket_of(d) for d in durations]
    assert buckets == sorted(buckets)
    assert buckets[0] == 0 and buckets[-1] == LATENCY_BUCKETS - 1
    assert bucket_of(0.001) != bucket_of(0.0012)  # 20 % apart: told apart


@pytest.mark.parametrize("seconds", [0.0008, 0.004, 0.25, 3.0, 45.0])
def test_quantile_of_one_duration_is_within_a_bucket_of_it(seconds: float) -> None:
    counts = [0] * LATENCY_BUCKETS
    counts[bucket_of(seconds)] = 10
    for q in (0.5, 0.99):
        estimate = quantile(counts, q)
        assert estimate is not None and seconds / 1.2 <= estimate <= seconds * 1.2


def test_quantiles_split_a_mixed_histogram() -> None:
    counts = [0] * LATENCY_BUCKETS
    counts[bucket_of(0.01)] += 98
    counts[bucket_of(2.0)] += 2
    p50, p99 = quantile(counts, 0.5), quantile(counts, 0.99)
    assert p50 is not None and p50 < 0.012
    assert p99 is not None and p99 > 1.6
    assert quantile([0] * LATENCY_BUCKETS, 0.5) is None


def test_activity_counts_per_key_and_model_and_keeps_the_last_errors() -> None:
    activity = Activity()
    activity.finished(A, status=200, model="llama3.2:latest", latency=0.01, generated_tokens=7)
    activity.finished(A, status=502, route="/api/chat", model="llama3.2:latest", latency=0.02)
    activity.finished("", status=503, route="/api/chat", cause="no ollana server is available")
    tallies = activity.tallies()
    assert set(tallies) == {A}  # a request no server took is only an error
    assert (tallies[A].requests, tallies[A].errors, tallies[A].generated_tokens) == (2, 1, 7)
    assert sum(tallies[A].latency) == 2
    assert activity.models() == {"llama3.2:latest": 2}
    errors = activity.errors()
    assert [(e.key, e.status, e.cause) for e in errors] == [
        ("", 503, "no ollana server is available"),  # the newest first
        (A, 502, ""),
    ]
    for n in range(MAX_ERRORS + 5):
        activity.finished(A, status=500 + n % 2, cause="x" * 1000)
    assert len(activity.errors()) == MAX_ERRORS
    assert all(len(e.cause) <= 300 for e in activity.errors())


def test_activity_is_bounded_in_keys_and_models() -> None:
    activity = Activity()
    for n in range(MAX_KEYS + 10):
        activity.finished(f"{n:064x}", status=200, model=f"model-{n}")
    tallies = activity.tallies()
    assert len(tallies) == MAX_KEYS + 1  # and "other" for the rest
    assert tallies[OTHER].requests == 10
    assert len(activity.models()) <= 129


def test_history_keeps_what_changed_per_sample_and_its_rates() -> None:
    activity = Activity()
    history = History(100.0, interval=5.0, window=60.0)
    for _ in range(10):
        activity.finished(A, status=200, latency=0.1, generated_tokens=20)
    history.add(105.0, activity.tallies())
    history.add(110.0, activity.tallies())  # nothing happened in this one
    activity.finished(B, status=500, latency=1.0)
    history.add(115.0, activity.tallies())

    samples = history.samples
    assert [s.at for s in samples] == [105.0, 110.0, 115.0]
    assert set(samples[0].keys) == {A} and samples[1].keys == {} and set(samples[2].keys) == {B}
    assert (samples[0].keys[A].requests, samples[0].keys[A].tokens) == (10, 200)

    doc = history.document(116.0, activity.tallies(), {A: "gpu-box"})
    json.dumps(doc)
    assert doc["ago"] == [11.0, 6.0, 1.0]
    total = doc["total"]
    assert isinstance(total, dict)
    assert total["requests_per_second"] == [2.0, 0.0, 0.2]
    assert total["tokens_per_second"] == [40.0, 0.0, 0.0]
    assert total["errors"] == [0, 0, 1]
    keys = doc["keys"]
    assert isinstance(keys, dict)
    a = keys[A]
    assert a["name"] == "gpu-box" and a["requests"] == 10 and a["generated_tokens"] == 200
    assert a["requests_per_second"] == [2.0, 0.0, 0.0]
    now = a["now"]
    assert now["span_seconds"] == 16.0  # younger than the rate window: since the start
    assert now["requests_per_second"] == round(10 / 16, 3)
    assert now["tokens_per_second"] == 12.5
    assert 80 <= now["p50_ms"] <= 120 and 80 <= now["p99_ms"] <= 120
    assert keys[B]["now"]["errors"] == 1


def test_history_now_counts_what_happened_since_the_last_sample() -> None:
    activity = Activity()
    history = History(0.0, interval=5.0, window=900.0)
    history.add(5.0, activity.tallies())
    activity.finished(A, status=200, latency=0.05)
    activity.finished(A, status=200, latency=0.05)
    doc = history.document(7.0, activity.tallies())
    now = doc["now"]
    assert isinstance(now, dict)
    assert now["requests_per_second"] == round(2 / 7, 3)
    assert doc["total"] == {"requests_per_second": [0.0], "tokens_per_second": [0.0], "errors": [0]}


def test_history_forgets_beyond_its_window_and_rates_cover_the_last_minute() -> None:
    activity = Activity()
    history = History(0.0, interval=5.0, window=900.0)
    at = 0.0
    for _ in range(400):  # 2,000 s of one request a second
        for _ in range(5):
            activity.finished(A, status=200, latency=0.01)
        at += 5.0
        history.add(at, activity.tallies())
    assert len(history.samples) == 180  # 15 minutes
    assert history.samples[0].at == at - 895.0
    doc = history.document(at, activity.tallies())
    now = doc["now"]
    assert isinstance(now, dict)
    assert now["span_seconds"] == RATE_WINDOW
    assert now["requests_per_second"] == 1.0
    # A few KB: what the ring holds of an active key, as JSON.
    assert len(json.dumps(doc)) < 16_000


async def test_sampler_samples_while_started_and_stops_on_close() -> None:
    activity = Activity()
    sampler = HistorySampler(activity, interval=0.01)
    async with sampler:
        activity.finished(A, status=200, latency=0.01, model="m")
        activity.finished("", status=503, route="/api/chat", cause="none available")
        await until(lambda: any(A in s.keys for s in sampler.history.samples), "a sample of A")
        doc = sampler.document({})
    assert doc["models"] == {"m": 1}
    errors = doc["errors"]
    assert isinstance(errors, list) and errors[0]["cause"] == "none available"
    assert errors[0]["status"] == 503 and errors[0]["time"].endswith("Z")
    await sampler.close()  # twice is fine
