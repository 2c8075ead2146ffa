"""SeenRecorder: devices heard are written in batches, bounded per kind."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ollana.identity import DeviceStore, SeenDevice
from ollana.identity.recorder import SeenRecorder
from ollana.identity.store import MAX_HELLO_SEEN
from tests.support.certs import make_cert
from tests.support.waiting import until


class CountingStore(DeviceStore):
    """A store that counts its writes of seen.toml."""

    writes = 0

    def record_many(self, records: object) -> int:
        self.writes += 1
        return super().record_many(records)  # type: ignore[arg-type]


def record(store: DeviceStore, via: str, index: int) -> SeenDevice:
    device_id, der = make_cert()
    checked = store.seen_record(device_id, f"192.0.2.{index % 250}:1", "client", der, via=via)
    assert checked is not None
    return checked


async def test_a_flood_of_hellos_is_one_bounded_write(tmp_path: Path) -> None:
    store = CountingStore(tmp_path)
    heard = record(store, "discovery", 0)
    flood = [record(store, "hello", i) for i in range(MAX_HELLO_SEEN + 20)]
    async with SeenRecorder(store, interval=0.05) as recorder:
        taken = [recorder.add(r) for r in [heard, *flood]]
        await until(lambda: heard.device_id in store.seen(), "the batch written")
    assert store.writes == 1
    assert taken.count(False) == 20 and recorder.dropped == 20
    seen = store.seen()
    assert len([s for s in seen.values() if s.via == "hello"]) == MAX_HELLO_SEEN
    assert heard.device_id in seen


async def test_what_waits_is_written_on_close(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    heard = record(store, "discovery", 1)
    recorder = SeenRecorder(store, interval=60)
    await recorder.start()
    recorder.add(heard)
    await asyncio.sleep(0)
    await recorder.close()
    await recorder.close()
    assert heard.device_id in store.seen()
