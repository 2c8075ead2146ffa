"""The last 15 minutes of a running mode, kept in the process: `GET /history` on the admin API.

A `HistorySampler` reads the mode's `Activity` every `SAMPLE_INTERVAL` seconds into a
`History`, a ring of `WINDOW` seconds that stores what changed per key in each sample
(requests, errors, generated tokens, the latency buckets that moved): a few KB, so that
the dashboard's first paint shows the rates of the last minutes.

``GET /history`` answers::

    {
      "interval_seconds": 5.0, "window_seconds": 900.0, "rate_window_seconds": 60.0,
      "ago": [895.0, …, 0.4],          # seconds before now of each sample's end, oldest first
      "total": {"requests_per_second": […], "tokens_per_second": […], "errors": […]},
      "now": {…},                      # the last minute, see below
      "keys": {"<server key or device ID>": {
          "name": "gpu-box", "requests_per_second": […], "tokens_per_second": […],
          "errors": […], "now": {…}, "requests": 12, "failed": 1, "prompt_tokens": 300,
          "generated_tokens": 900, "last_seen_seconds_ago": 3.2}},
      "models": {"llama3.2:latest": 12},     # requests since start
      "errors": [{"time": "2026-01-02T03:04:05Z", "key": "…", "status": 503,
                  "route": "/api/chat", "cause": "no ollana server is available…"}]
    }

``now`` (over the last `RATE_WINDOW` seconds, or since the start when younger)::

    {"span_seconds": 60.0, "requests_per_second": 0.5, "tokens_per_second": 12.1,
     "errors": 0, "p50_ms": 120.0 | null, "p99_ms": 900.0 | null}

Keys are servers (client mode: the pool's key, the device ID else the address) or devices
(server mode: the device ID; ``anonymous`` for peers without a certificate).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from ollana.activity import LATENCY_BUCKETS, Activity, Tally, quantile
from ollana.lifecycle import Service

__all__ = [
    "RATE_WINDOW", "SAMPLE_INTERVAL", "WINDOW", "Delta", "History", "HistorySampler", "Sample",
]  # fmt: skip

SAMPLE_INTERVAL: Final = 5.0
WINDOW: Final = 900.0  # 15 minutes
RATE_WINDOW: Final = 60.0  # what "now" means: the last minute


@dataclass(frozen=True, slots=True)
class Delta:
    """What one key did during one sample."""

    requests: int
    errors: int
    tokens: int
    latency: tuple[tuple[int, int], ...]  # (bucket, count) of the buckets that moved


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample: when it ended (time.monotonic()), how long it covered, what changed."""

    at: float
    span: float
    keys: Mapping[str, Delta]


_ZERO = Tally(0, 0, 0, 0, (0,) * LATENCY_BUCKETS, 0.0)


def _delta(now: Tally, then: Tally) -> Delta | None:
    requests = now.requests - then.requests
    if requests <= 0:
        return None
    moved = tuple(
        (i, a - b) for i, (a, b) in enumerate(zip(now.latency, then.latency, strict=True)) if a > b
    )
    return Delta(
        requests, now.errors - then.errors, now.generated_tokens - then.generated_tokens, moved
    )


class History:
    """A ring of samples of an Activity's tallies; pure: the caller says what time it is."""

    def __init__(self, start: float, *, interval: float = SAMPLE_INTERVAL, window: float = WINDOW):
        self.interval = interval
        self.window = window
        self._samples: deque[Sample] = deque(maxlen=max(1, round(window / interval)))
        self._last: dict[str, Tally] = {}
        self._last_at = start

    @property
    def samples(self) -> list[Sample]:
        """The samples kept, the oldest first."""
        return list(self._samples)

    def add(self, at: float, tallies: Mapping[str, Tally]) -> Sample:
        """Take a sample at `at` (time.monotonic()) of the cumulative `tallies`."""
        keys = {}
        for key, tally in tallies.items():
            delta = _delta(tally, self._last.get(key, _ZERO))
            if delta is not None:
                keys[key] = delta
        sample = Sample(at, max(0.0, at - self._last_at), keys)
        self._samples.append(sample)
        self._last = dict(tallies)
        self._last_at = at
        return sample

    def recent(self, at: float, tallies: Mapping[str, Tally]) -> list[Sample]:
        """The samples within `RATE_WINDOW` of `at`, plus what changed since the last one."""
        partial = Sample(at, 0.0, {})
        if at > self._last_at:
            changed = {}
            for key, tally in tallies.items():
                delta = _delta(tally, self._last.get(key, _ZERO))
                if delta is not None:
                    changed[key] = delta
            partial = Sample(at, at - self._last_at, changed)
        since = at - RATE_WINDOW
        kept = [s for s in self._samples if s.at - s.span >= since - 1e-9]
        return [*kept, partial]

    def document(
        self,
        at: float,
        tallies: Mapping[str, Tally],
        names: Mapping[str, str] | None = None,
    ) -> dict[str, object]:
        """The /history object (see the module docstring), as of `at` (time.monotonic())."""
        names = names or {}
        samples = self.samples
        recent = self.recent(at, tallies)
        keys: dict[str, object] = {}
        for key in sorted(set(tallies) | {k for s in samples for k in s.keys}):
            tally = tallies.get(key, _ZERO)
            series = _series(samples, key)
            series.update(
                name=names.get(key, ""),
                now=_now(recent, key),
                requests=tally.requests,
                failed=tally.errors,
                prompt_tokens=tally.prompt_tokens,
                generated_tokens=tally.generated_tokens,
                last_seen_seconds_ago=round(max(0.0, at - tally.last), 3) if tally.last else None,
            )
            keys[key] = series
        return {
            "interval_seconds": self.interval,
            "window_seconds": self.window,
            "rate_window_seconds": RATE_WINDOW,
            "ago": [round(max(0.0, at - s.at), 3) for s in samples],
            "total": _series(samples, None),
            "now": _now(recent, None),
            "keys": keys,
        }


def _pick(sample: Sample, key: str | None) -> Iterable[Delta]:
    if key is None:
        return sample.keys.values()
    delta = sample.keys.get(key)
    return () if delta is None else (delta,)


def _series(samples: list[Sample], key: str | None) -> dict[str, object]:
    requests, tokens, errors = [], [], []
    for sample in samples:
        deltas = list(_pick(sample, key))
        span = sample.span or 1.0
        requests.append(round(sum(d.requests for d in deltas) / span, 3))
        tokens.append(round(sum(d.tokens for d in deltas) / span, 3))
        errors.append(sum(d.errors for d in deltas))
    return {"requests_per_second": requests, "tokens_per_second": tokens, "errors": errors}


def _now(recent: list[Sample], key: str | None) -> dict[str, object]:
    span = sum(s.span for s in recent)
    latency = [0] * LATENCY_BUCKETS
    requests = tokens = errors = 0
    for sample in recent:
        for delta in _pick(sample, key):
            requests += delta.requests
            tokens += delta.tokens
            errors += delta.errors
            for bucket, count in delta.latency:
                latency[bucket] += count
    p50, p99 = quantile(latency, 0.5), quantile(latency, 0.99)
    return {
        "span_seconds": round(span, 3),
        "requests_per_second": round(requests / span, 3) if span > 0 else 0.0,
        "tokens_per_second": round(tokens / span, 3) if span > 0 else 0.0,
        "errors": errors,
        "p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "p99_ms": None if p99 is None else round(p99 * 1000, 1),
    }


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(round(timestamp), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class HistorySampler(Service):
    """Samples an Activity into a History every `interval` seconds while started."""

    def __init__(
        self,
        activity: Activity,
        *,
        interval: float = SAMPLE_INTERVAL,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.activity = activity
        self._clock = clock
        self.history = History(clock(), interval=interval, window=window)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin sampling."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="history sampler")

    async def close(self) -> None:
        """Stop sampling; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.history.interval)
            self.history.add(self._clock(), self.activity.tallies())

    def document(self, names: Mapping[str, str] | None = None) -> dict[str, object]:
        """The /history object as of now, with the activity's models and last errors."""
        document = self.history.document(self._clock(), self.activity.tallies(), names)
        document["models"] = dict(sorted(self.activity.models().items()))
        document["errors"] = [
            {"time": _iso(e.at), "key": e.key, "status": e.status, "route": e.route,
             "cause": e.cause}
            for e in self.activity.errors()
        ]  # fmt: skip
        return document
