"""What a running mode did since it started, in memory, for the dashboard's rates and errors.

Per key (client mode: a server's pool key; server mode: a device ID): requests, errors,
tokens, a latency histogram and when it last answered; per model: requests; and the last
errors with their cause. Bounded: `MAX_KEYS` keys and `MAX_MODELS` models (more are
counted under ``other``), `MAX_ERRORS` errors. No bodies: a cause is the text ollana
itself wrote, else empty (the status says the rest).

`finished` is one dict update per request, on the event loop; readers get frozen copies.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LATENCY_BUCKETS",
    "MAX_CAUSE",
    "MAX_ERRORS",
    "MAX_KEYS",
    "MAX_MODELS",
    "OTHER",
    "Activity",
    "RecentError",
    "Tally",
    "bucket_of",
    "quantile",
]

MAX_KEYS: Final = 64
MAX_MODELS: Final = 128
MAX_ERRORS: Final = 20
MAX_CAUSE: Final = 300  # characters of an error's cause kept
OTHER: Final = "other"

# Latency buckets grow by 2**(1/4) (19 %) from 0.25 ms: bucket i holds latencies up to
# _BASE * 2**((i+1)/4); the last one holds everything above 17 minutes.
_BASE: Final = 0.00025
_STEPS_PER_DOUBLING: Final = 4
LATENCY_BUCKETS: Final = 96


def bucket_of(seconds: float) -> int:
    """The latency bucket of a duration in seconds."""
    if seconds <= _BASE:
        return 0
    index = math.ceil(math.log2(seconds / _BASE) * _STEPS_PER_DOUBLING) - 1
    return min(max(index, 0), LATENCY_BUCKETS - 1)


def _upper(index: int) -> float:
    return float(_BASE * 2 ** ((index + 1) / _STEPS_PER_DOUBLING))


def quantile(counts: tuple[int, ...] | list[int], q: float) -> float | None:
    """The `q` quantile (0..1) in seconds of a latency histogram, or None if it is empty.

    Interpolated geometrically inside the bucket it falls in: within 19 % of the truth.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            low = _upper(index - 1) if index > 0 else _BASE / 2
            fraction = (rank - seen) / count
            return float(low * (_upper(index) / low) ** fraction)
        seen += count
    return _upper(len(counts) - 1)


@dataclass(frozen=True, slots=True)
class Tally:
    """What one key did since the start: totals, and its latency histogram."""

    requests: int
    errors: int
    prompt_tokens: int
    generated_tokens: int
    latency: tuple[int, ...]  # counts per latency bucket (see `bucket_of`)
    last: float  # time.monotonic() of its last request


@dataclass(frozen=True, slots=True)
class RecentError:
    """One request that ended with a status of 400 or more (599: the exchange broke)."""

    at: float  # time.time()
    key: str  # the server or device it concerned; "" for none
    status: int
    route: str
    cause: str  # ollana's own error text, or "" when the status came from Ollama


class _Counts:
    __slots__ = ("errors", "generated", "last", "latency", "prompt", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.prompt = 0
        self.generated = 0
        self.latency = [0] * LATENCY_BUCKETS
        self.last = 0.0


class Activity:
    """The running totals of one mode; cheap enough to call once per request."""

    def __init__(self) -> None:
        self._keys: dict[str, _Counts] = {}
        self._models: dict[str, int] = {}
        self._errors: deque[RecentError] = deque(maxlen=MAX_ERRORS)

    def finished(
        self,
        key: str,
        *,
        status: int,
        route: str = "",
        model: str = "",
        latency: float | None = None,
        prompt_tokens: int = 0,
        generated_tokens: int = 0,
        cause: str = "",
        tally: bool = True,
    ) -> None:
        """Count one request that ended; `key` "" is a request no server or device took.

        `tally` False: only an error is kept (a server's health probes are no usage).
        """
        error = status >= 400
        if key and tally:
            counts = self._keys.get(key)
            if counts is None:
                if len(self._keys) >= MAX_KEYS:
                    key = OTHER
                counts = self._keys.setdefault(key, _Counts())
            counts.requests += 1
            counts.errors += error
            counts.prompt += prompt_tokens
            counts.generated += generated_tokens
            counts.last = time.monotonic()
            if latency is not None:
                counts.latency[bucket_of(latency)] += 1
        if model and tally:
            if model not in self._models and len(self._models) >= MAX_MODELS:
                model = OTHER
            self._models[model] = self._models.get(model, 0) + 1
        if error:
            self._errors.append(RecentError(time.time(), key, status, route, cause[:MAX_CAUSE]))

    def tallies(self) -> dict[str, Tally]:
        """A frozen copy of every key's totals."""
        return {
            key: Tally(c.requests, c.errors, c.prompt, c.generated, tuple(c.latency), c.last)
            for key, c in self._keys.items()
        }

    def models(self) -> Mapping[str, int]:
        """Requests per model since the start."""
        return dict(self._models)

    def errors(self) -> list[RecentError]:
        """The last errors, the newest first."""
        return list(reversed(self._errors))
