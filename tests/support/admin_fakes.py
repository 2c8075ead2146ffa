"""Stand-ins for what a running mode shows its admin API: a pool, a watched Ollama, discovery."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

from ollana.cluster.server import ServerSnapshot, ServerState
from ollana.config import Settings
from ollana.discovery import DiscoveryStats
from ollana.identity import SeenDevice
from ollana.wake import RememberedServer

__all__ = ["DEVICE", "FakeDiscovery", "FakePool", "FakeSource", "FakeWatch", "snapshot"]

DEVICE = "cd" * 32  # the device ID of the fake mode itself


def snapshot(n: int, state: ServerState = ServerState.HEALTHY, **changes: object) -> ServerSnapshot:
    """Server number `n` (device ID and address from it) as the pool shows it."""
    device = f"{n:02x}" * 32
    fields: dict[str, object] = {
        "key": device, "address": f"10.0.0.{n}:11435", "device_id": device, "state": state,
        "static": False, "priority": 0, "inflight": 0, "latency_ms": 2.5,
        "ollama_version": "0.5.7", "models": ("llama3.2:latest",), "loaded": (),
        "last_seen_ago": 0.5, "requests": 3, "failures": 0,
    }  # fmt: skip
    fields.update(changes)
    return ServerSnapshot(**fields)  # type: ignore[arg-type]


@dataclasses.dataclass
class FakePool:
    """A pool whose servers the test changes between reads."""

    servers: list[ServerSnapshot]

    def snapshots(self) -> Sequence[ServerSnapshot]:
        """The servers as they are now."""
        return list(self.servers)


@dataclasses.dataclass(frozen=True)
class FakeWatch:
    """The local Ollama as server mode watches it."""

    url: str = "http://127.0.0.1:11434"
    up: bool = True
    version: str | None = "0.5.7"
    since: float = 0.0
    models: tuple[str, ...] = ("llama3.2:latest", "qwen2.5:0.5b")
    loaded: tuple[str, ...] = ("llama3.2:latest",)


@dataclasses.dataclass(frozen=True)
class FakeSource:
    """What a running mode offers status; the pool inside may change."""

    pool: FakePool | None = None
    mode: str = "client"
    settings: Settings = dataclasses.field(default_factory=Settings)
    started_at: float = dataclasses.field(default_factory=lambda: time.time() - 90)
    device_id: str | None = DEVICE
    port: int = 41234
    ollama: FakeWatch | None = None
    seen: tuple[SeenDevice, ...] = ()
    extra: Mapping[str, object] = dataclasses.field(default_factory=dict)
    remembered: tuple[RememberedServer, ...] = ()
    dismissed: set[str] = dataclasses.field(default_factory=set)

    def nearby(self) -> Sequence[SeenDevice]:
        """Devices heard on the LAN."""
        return [d for d in self.seen if d.device_id not in self.dismissed]

    def dismiss(self, device_id: str) -> bool:
        """Forget a nearby device."""
        found = any(d.device_id == device_id for d in self.nearby())
        self.dismissed.add(device_id)
        return found

    def device_names(self) -> Mapping[str, str]:
        """Names of allowed devices."""
        return {}

    def sleeping(self) -> Sequence[RememberedServer]:
        """Remembered servers not up now."""
        return self.remembered

    def counters(self) -> Mapping[str, object]:
        """The mode's own counters."""
        return self.extra


@dataclasses.dataclass
class FakeDiscovery:
    """A discovery service's counters, changed by the test between scrapes."""

    sent: int = 2
    received: int = 5
    delivered: int = 4
    dropped: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"own": 1})
    send_errors: int = 0

    def stats(self) -> DiscoveryStats:
        """The counters as they are now."""
        return DiscoveryStats(
            self.sent, self.received, self.delivered, dict(self.dropped), self.send_errors
        )
