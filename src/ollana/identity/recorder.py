"""SeenRecorder: a running process's devices heard, written to seen.toml in batches.

Each write of seen.toml reads, rewrites and syncs the whole file (up to a few hundred KB),
so records are gathered and written at most once per FLUSH_INTERVAL, in one change. What
waits is bounded per kind: a flood of hellos can neither grow memory nor push out what
discovery heard (the store prunes the same way).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Final

from ollana.identity.devicefile import SeenDevice
from ollana.identity.store import MAX_HELLO_SEEN, MAX_SEEN, DeviceStore, StoreError
from ollana.lifecycle import Service

__all__ = ["FLUSH_INTERVAL", "SeenRecorder"]

log = logging.getLogger(__name__)

FLUSH_INTERVAL: Final = 1.0


class SeenRecorder(Service):
    """Batches checked records (DeviceStore.seen_record) into one write per interval."""

    def __init__(self, store: DeviceStore, interval: float = FLUSH_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._pending: dict[str, SeenDevice] = {}
        self._hellos = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    async def start(self) -> None:
        """Begin writing batches."""
        self._loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ollana-seen-recorder")

    async def close(self) -> None:
        """Write what waits, then stop; safe to call twice."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(self._flush)

    def add(self, record: SeenDevice) -> bool:
        """Queue a record for the next write (safe from any thread); False if dropped."""
        with self._lock:
            earlier = self._pending.get(record.device_id)
            hello = record.via == "hello"
            if earlier is None:
                full = (
                    self._hellos >= MAX_HELLO_SEEN if hello else len(self._pending) >= MAX_SEEN * 2
                )
                if full:
                    self.dropped += 1
                    return False
                self._hellos += hello
            elif earlier.via == "discovery" and hello:
                return True
            elif earlier.via == "hello" and not hello:
                self._hellos -= 1
            self._pending[record.device_id] = record
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)
        return True

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.interval)  # gathers what arrives meanwhile
            self._wake.clear()
            await asyncio.to_thread(self._flush)

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending, self._hellos = list(self._pending.values()), {}, 0
        if not batch:
            return
        try:
            self.store.record_many(batch)
        except StoreError as exc:
            log.warning("cannot record %d device(s) heard nearby: %s", len(batch), exc)
