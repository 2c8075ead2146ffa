"""The usage store: requests, tokens and generation time per device, model and hour.

One SQLite file in the data dir (``usage.sqlite``, 0600, WAL so that `ollana usage` reads
while a server writes). The event loop only adds to a dict (`record`); a thread writes it
out every `FLUSH_INTERVAL` seconds and at close. Hours older than `HOURS_KEPT_DAYS` are
rolled up into days, days older than `DAYS_KEPT` dropped: the file stays small.

A file that is corrupt, locked or unwritable is logged once, naming it, and metering turns
itself off: the proxy goes on serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from ollana.lifecycle import Service

__all__ = [
    "DAYS_KEPT",
    "FLUSH_INTERVAL",
    "HOURS_KEPT_DAYS",
    "MAX_MODELS",
    "USAGE_FILE",
    "Grouping",
    "UsageStore",
    "UsageStoreError",
    "UsageTotal",
    "read_usage",
]

log = logging.getLogger(__name__)

USAGE_FILE: Final = "usage.sqlite"
FLUSH_INTERVAL: Final = 5.0  # seconds between writes; a crash loses at most this much
HOURS_KEPT_DAYS: Final = 14  # hourly rows older than this many days become daily rows
DAYS_KEPT: Final = 400  # daily rows older than this are dropped
MAX_MODELS: Final = 256  # distinct model names kept per run; more are counted as "other"
BUSY_TIMEOUT: Final = 2.0  # wait for another writer's lock before calling the file locked
HOUR: Final = 3600
DAY: Final = 86400
OTHER: Final = "other"

Grouping = Literal["device", "model", "day"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS usage (
    device TEXT NOT NULL,
    model TEXT NOT NULL,
    start INTEGER NOT NULL,
    span INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    generation_seconds REAL NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (device, model, start, span)
) WITHOUT ROWID
"""
_SUMS: Final = (
    "requests = requests + excluded.requests,"
    " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
    " generated_tokens = generated_tokens + excluded.generated_tokens,"
    " generation_seconds = generation_seconds + excluded.generation_seconds,"
    " errors = errors + excluded.errors"
)
_UPSERT: Final = (
    "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    f" ON CONFLICT (device, model, start, span) DO UPDATE SET {_SUMS}"
)
_ROLL_UP: Final = (
    "INSERT INTO usage SELECT device, model, start - start % 86400, 86400, SUM(requests),"
    " SUM(prompt_tokens), SUM(generated_tokens), SUM(generation_seconds), SUM(errors)"
    " FROM usage WHERE span = 3600 AND start < ? GROUP BY device, model, start - start % 86400"
    f" ON CONFLICT (device, model, start, span) DO UPDATE SET {_SUMS}"
)


class UsageStoreError(Exception):
    """The usage file cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Usage summed over one key (a device ID, a model, or a day as YYYY-MM-DD)."""

    key: str
    requests: int
    prompt_tokens: int
    generated_tokens: int
    generation_seconds: float
    errors: int
    device: str = ""  # with "day": the device of this row


# requests, prompt tokens, generated tokens, generation seconds, errors
_Counts = list[float]


class UsageStore(Service):
    """Writes usage to its file off the event loop; `record` is safe on the loop."""

    def __init__(
        self,
        path: Path,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        hours_kept_days: int = HOURS_KEPT_DAYS,
        days_kept: int = DAYS_KEPT,
        busy_timeout: float = BUSY_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._interval = flush_interval
        self._hours_kept = hours_kept_days * DAY
        self._days_kept = days_kept * DAY
        self._clock = clock
        self._pending: dict[tuple[str, str, int], _Counts] = {}
        self._models: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self.error: str | None = None  # why metering turned itself off
        self.enabled = True

    # --- the event loop's side ------------------------------------------------------------

    def record(
        self,
        device: str,
        model: str,
        *,
        prompt_tokens: int,
        generated_tokens: int,
        seconds: float,
        error: bool,
    ) -> None:
        """Count one request; a dict update under a lock, written out later."""
        if not self.enabled:
            return
        if model not in self._models:
            if len(self._models) >= MAX_MODELS:
                model = OTHER
            self._models.add(model)
        now = self._clock()
        key = (device, model, int(now - now % HOUR))
        with self._lock:
            counts = self._pending.get(key)
            if counts is None:
                self._pending[key] = [1, prompt_tokens, generated_tokens, seconds, int(error)]
            else:
                counts[0] += 1
                counts[1] += prompt_tokens
                counts[2] += generated_tokens
                counts[3] += seconds
                counts[4] += error

    async def start(self) -> None:
        """Open (or create) the file and start the writer; a bad file turns metering off."""
        try:
            await asyncio.to_thread(self._open)
        except UsageStoreError as exc:
            self._fail(str(exc))
            return
        self._thread = threading.Thread(target=self._run, name="usage store", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Write what is pending and close the file; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            await asyncio.shield(asyncio.to_thread(thread.join))
        elif self._db is not None:
            self._db.close()

    def flush_soon(self) -> None:
        """Ask the writer to write now (tests, and `/usage` before it reads)."""
        self._wake.set()

    # --- the writer thread ------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            db = sqlite3.connect(self.path, timeout=self._busy_timeout, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise UsageStoreError(f"{self.path}: cannot open the usage store: {exc}") from None
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(_SCHEMA)
            db.commit()
        except sqlite3.Error as exc:
            db.close()
            raise UsageStoreError(f"{self.path}: {_why(exc)}") from None
        self._db = db

    def _run(self) -> None:
        rolled = 0.0
        try:
            while True:
                self._wake.wait(self._interval)
                self._wake.clear()
                stopping = self._stopping
                self._flush()
                now = self._clock()
                if now - rolled >= HOUR:
                    self._roll_up(now)
                    rolled = now
                if stopping:
                    return
        except sqlite3.Error as exc:
            self._fail(f"{self.path}: {_why(exc)}")
        finally:
            if self._db is not None:
                self._db.close()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending or self._db is None:
            return
        rows = [(*key, HOUR, *counts) for key, counts in pending.items()]
        with self._db:
            self._db.executemany(_UPSERT, rows)

    def _roll_up(self, now: float) -> None:
        if self._db is None:
            return
        hours_before = int(now - self._hours_kept)
        hours_before -= hours_before % DAY  # whole days only, so a day is rolled up once
        with self._db:
            self._db.execute(_ROLL_UP, (hours_before,))
            self._db.execute("DELETE FROM usage WHERE span = ? AND start < ?", (HOUR, hours_before))
            days_before = int(now - self._days_kept)
            self._db.execute("DELETE FROM usage WHERE span = ? AND start < ?", (DAY, days_before))

    def _fail(self, why: str) -> None:
        self.enabled = False
        self.error = why
        with self._lock:
            self._pending.clear()
        log.error("usage is not recorded: %s", why)


def _why(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"{text} (another program holds it)"
    if "not a database" in text or "malformed" in text:
        return f"{text}: move it aside to start a new one"
    return text


@contextmanager
def _reader(path: Path) -> Iterator[sqlite3.Connection | None]:
    if not path.exists():
        yield None
        return
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    except sqlite3.Error as exc:
        raise UsageStoreError(f"{path}: {_why(exc)}") from None
    with closing(db):
        yield db


def read_usage(path: Path, since: float, by: Grouping) -> list[UsageTotal]:
    """Usage since `since` (unix seconds), summed per device, per model or per day and device.

    Rows are hours and, further back, days: `since` is rounded down to the row it falls in.
    Raises UsageStoreError naming the file when it cannot be read.
    """
    if by == "day":
        key, group = "strftime('%Y-%m-%d', start, 'unixepoch')", "1, device"
        extra = "device"
    else:
        key, group, extra = by, "1", "''"
    query = (
        f"SELECT {key}, SUM(requests), SUM(prompt_tokens), SUM(generated_tokens),"
        f" SUM(generation_seconds), SUM(errors), {extra} FROM usage"
        f" WHERE start + span > ? GROUP BY {group} ORDER BY 1"
    )
    with _reader(path) as db:
        if db is None:
            return []
        try:
            rows = db.execute(query, (since,)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise UsageStoreError(f"{path}: {_why(exc)}") from None
        except sqlite3.Error as exc:
            raise UsageStoreError(f"{path}: {_why(exc)}") from None
    return [
        UsageTotal(str(k), int(r), int(p), int(g), float(s), int(e), str(d))
        for k, r, p, g, s, e, d in rows
    ]
