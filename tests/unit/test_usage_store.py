"""The usage store: sums per device, model and hour; roll-up; bad files turn it off."""

from __future__ import annotations

import logging
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from ollana.usage.store import (
    DAY,
    HOUR,
    USAGE_FILE,
    UsageStore,
    UsageStoreError,
    UsageTotal,
    read_usage,
)

T0 = 1_780_000_000.0 - 1_780_000_000.0 % DAY  # midnight UTC


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(store: UsageStore, device: str, model: str, prompt: int, generated: int) -> None:
    store.record(
        device, model, prompt_tokens=prompt, generated_tokens=generated, seconds=0.5, error=False
    )


async def test_sums_per_device_model_and_day(tmp_path: Path) -> None:
    clock = Clock(T0 + 10)
    path = tmp_path / USAGE_FILE
    async with UsageStore(path, clock=clock) as store:
        record(store, "aaa", "llama3.2", 10, 100)
        record(store, "aaa", "qwen3", 1, 2)
        clock.now += HOUR  # another hour
        record(store, "bbb", "llama3.2", 5, 50)
        store.record("bbb", "llama3.2", prompt_tokens=0, generated_tokens=0, seconds=1, error=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    by_device = read_usage(path, 0, "device")
    assert by_device == [
        UsageTotal("aaa", 2, 11, 102, 1.0, 0),
        UsageTotal("bbb", 2, 5, 50, 1.5, 1),
    ]
    by_model = read_usage(path, 0, "model")
    assert [(t.key, t.requests, t.generated_tokens) for t in by_model] == [
        ("llama3.2", 3, 150),
        ("qwen3", 1, 2),
    ]
    assert [t.key for t in read_usage(path, T0 + HOUR, "device")] == ["bbb"]
    days = read_usage(path, 0, "day")
    day = time.strftime("%Y-%m-%d", time.gmtime(T0))
    assert [(t.key, t.device, t.requests) for t in days] == [(day, "aaa", 2), (day, "bbb", 2)]


async def test_a_second_run_adds_to_the_first(tmp_path: Path) -> None:
    path = tmp_path / USAGE_FILE
    for _ in range(2):
        async with UsageStore(path, clock=Clock(T0)) as store:
            record(store, "aaa", "m", 1, 2)
    assert read_usage(path, 0, "device") == [UsageTotal("aaa", 2, 2, 4, 1.0, 0)]


async def test_old_hours_are_rolled_up_into_days(tmp_path: Path) -> None:
    path = tmp_path / USAGE_FILE
    clock = Clock(T0 + 5 * HOUR)
    async with UsageStore(path, clock=clock) as store:
        for hour in range(3):
            clock.now = T0 + hour * HOUR
            record(store, "aaa", "m", 1, 10)
            store.flush_soon()
    clock.now = T0 + 30 * DAY
    async with UsageStore(path, clock=clock, hours_kept_days=7, days_kept=400):
        pass
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT start, span, requests, generated_tokens FROM usage").fetchall()
    assert rows == [(int(T0), DAY, 3, 30)]
    assert read_usage(path, 0, "device") == [UsageTotal("aaa", 3, 3, 30, 1.5, 0)]
    clock.now = T0 + 500 * DAY
    async with UsageStore(path, clock=clock, hours_kept_days=7, days_kept=400):
        pass
    assert read_usage(path, 0, "device") == []


async def test_a_corrupt_file_turns_metering_off_and_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / USAGE_FILE
    path.write_bytes(b"this is not a database" * 100)
    caplog.set_level(logging.ERROR)
    async with UsageStore(path) as store:
        assert not store.enabled
        record(store, "aaa", "m", 1, 2)  # ignored, no error
    assert store.error is not None and str(path) in store.error
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0].getMessage()
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was


async def test_a_locked_file_turns_metering_off(tmp_path: Path) -> None:
    path = tmp_path / USAGE_FILE
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE x (y)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        async with UsageStore(path, busy_timeout=0.01) as store:
            assert not store.enabled
        assert store.error is not None and "locked" in store.error and str(path) in store.error
    finally:
        holder.close()


def test_reading_a_missing_or_bad_file(tmp_path: Path) -> None:
    assert read_usage(tmp_path / "none.sqlite", 0, "model") == []
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"x" * 4096)

    with pytest.raises(UsageStoreError, match=str(bad)):
        read_usage(bad, 0, "model")
