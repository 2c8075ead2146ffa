"""The /status document of a running ollana, built from what its mode exposes.

``GET /status`` answers one JSON object (``schema`` 1; fields are only ever added)::

    {
      "schema": 1,
      "version": "0.7.0",                 # ollana's version
      "mode": "client",                   # "client" or "server"
      "device_id": "64 hex digits",       # this device's ID; null before it is known
      "pid": 4242,
      "started": "2026-01-02T03:04:05Z",  # UTC, to the second
      "uptime_seconds": 12.3,
      "listen": "127.0.0.1:11434",        # the mode's endpoint, as bound
      "open": false, "read_only": false, "discovery": true,
      "ollama": null,                     # server mode: the local Ollama, see below
      "servers": [ … ],                   # client mode: the pool, see below; [] in server mode
      "nearby": [ … ],                    # devices heard on the network that are not allowed
      "sleeping": [ … ],                  # client mode: remembered servers not up now
      "counters": { … }                   # see below
    }

``ollama`` (server mode)::

    {"url": "http://127.0.0.1:11434", "up": true, "version": "0.5.7", "since_seconds": 30.1,
     "models": ["llama3.2:latest"], "loaded": ["llama3.2:latest"]}  # installed, in memory

Each of ``servers`` (sorted by address)::

    {
      "key": "device ID, else address",  "address": "192.168.1.20:11435",
      "device_id": "64 hex digits" | null,
      "state": "healthy" | "suspect" | "down",
      "static": false,                   # given with --server rather than discovered
      "priority": 0,
      "inflight": 1,                     # requests on it now
      "latency_ms": 1.9 | null,          # EWMA of liveness probes
      "ollama_version": "0.5.7" | null,
      "models": ["llama3.2:latest"],     # installed (/api/tags)
      "loaded": ["llama3.2:latest"],     # in memory (/api/ps)
      "last_seen_seconds_ago": 0.4 | null,  # last discovery datagram heard from it
      "requests": 12, "failures": 0,     # since it joined the pool
      "problem": null | "why it cannot be used",  # e.g. a static server not answering,
                                         # refusing our certificate, or another device now
      "connections": {"open": 3, "idle": 2}  # this client's connections to it
    }

Each of ``nearby``::

    {"device_id": "64 hex digits", "address": "192.168.1.30", "role": "server",
     "last_seen": "2026-01-02T03:04:05Z"}

Each of ``sleeping`` (remembered across restarts, to be woken by Wake-on-LAN)::

    {"device_id": "64 hex digits", "name": "gpu-box", "address": "192.168.1.20:11435",
     "mac": "aa:bb:cc:dd:ee:ff" | "", "models": ["llama3.2:latest"],
     "last_seen": "2026-01-02T03:04:05Z", "last_woken": "2026-01-02T09:00:00Z" | null}

``counters`` (totals since start)::

    {
      "requests": 120,                   # answered, any status
      "requests_by_status": {"1xx": 0, "2xx": 118, "3xx": 0, "4xx": 1, "5xx": 1},
      "inflight": 1,
      "retries": 2, "failovers": 1,
      "refusals": {"origin": 1},         # by reason
      "tls_refused": {"unknown-device": 3},
      "discovery": {"sent": 10, "received": 31, "send_errors": 0,
                    "dropped": {"own": 10}}   # present when discovery runs
    }

plus whatever the mode adds through `StatusSource.counters()`; server mode adds
``connections`` (open now) and ``connections_by_device``: for each device ID holding
connections (``"address 192.168.1.30"`` for peers without an allowed certificate),
``{"open": 3, "idle": 2}``.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from ollana import __version__
from ollana.cluster.server import ServerSnapshot
from ollana.config import HostPort, Settings
from ollana.identity import SeenDevice
from ollana.metrics import Metrics
from ollana.wake.memory import RememberedServer

__all__ = [
    "SCHEMA_VERSION", "OllamaView", "StatusSource", "status_document", "totals",
]  # fmt: skip

SCHEMA_VERSION: Final = 1
_COUNTED: Final = (
    "ollana_requests", "ollana_inflight", "ollana_retries", "ollana_failovers",
    "ollana_refusals", "ollana_tls_handshakes_refused", "ollana_discovery_",
)  # fmt: skip


class OllamaView(Protocol):
    """Server mode's watch on its local Ollama (local_ollama.OllamaWatch)."""

    @property
    def url(self) -> str:
        """Where the local Ollama is."""
        ...

    @property
    def up(self) -> bool:
        """Whether it answered the last probe."""
        ...

    @property
    def version(self) -> str | None:
        """The version it reported."""
        ...

    @property
    def since(self) -> float:
        """time.monotonic() of the last change of `up`."""
        ...

    @property
    def models(self) -> tuple[str, ...]:
        """The models it has installed (/api/tags)."""
        ...

    @property
    def loaded(self) -> tuple[str, ...]:
        """The models it has in memory (/api/ps)."""
        ...


class PoolView(Protocol):
    """The client's pool, as the status document reads it."""

    def snapshots(self) -> Sequence[ServerSnapshot]:
        """Frozen copies of every server."""
        ...


class StatusSource(Protocol):
    """What a running mode offers the status page (ClientMode and ServerMode satisfy it)."""

    @property
    def mode(self) -> str:
        """ "client" or "server"."""
        ...

    @property
    def settings(self) -> Settings:
        """The settings the mode runs with."""
        ...

    @property
    def started_at(self) -> float:
        """time.time() when the mode started."""
        ...

    @property
    def device_id(self) -> str | None:
        """This device's ID (64 hex digits)."""
        ...

    @property
    def port(self) -> int:
        """The port the mode's endpoint is bound to."""
        ...

    @property
    def pool(self) -> PoolView | None:
        """Client mode's pool; None in server mode."""
        ...

    @property
    def ollama(self) -> OllamaView | None:
        """Server mode's local Ollama; None in client mode."""
        ...

    def nearby(self) -> Sequence[SeenDevice]:
        """Devices heard on the network that are not allowed; called once per /status."""
        ...

    def dismiss(self, device_id: str) -> bool:
        """Forget a nearby device and stop listing it (file I/O: called off the event loop)."""
        ...

    def device_names(self) -> Mapping[str, str]:
        """The names of allowed devices by ID (file I/O: called off the event loop)."""
        ...

    def counters(self) -> Mapping[str, object]:
        """The mode's own counters (open connections, …), added to the metrics' totals."""
        ...

    def sleeping(self) -> Sequence[RememberedServer]:
        """Client mode: remembered servers that are not up now."""
        ...


def status_document(
    source: StatusSource,
    metrics: Metrics,
    nearby: Sequence[SeenDevice] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """The /status JSON object of a running mode (see the module docstring for its schema).

    `nearby` is `source.nearby()` and `names` `source.device_names()` when the caller read
    them already (off the event loop).
    """
    names = source.device_names() if names is None else names
    uptime = max(0.0, time.time() - source.started_at)
    settings = source.settings
    address = settings.listen_address(server_mode=source.mode == "server")
    pool = source.pool
    servers = sorted(pool.snapshots(), key=lambda s: (s.address, s.key)) if pool is not None else []
    counters = totals(metrics)
    counters.update(source.counters())
    return {
        "schema": SCHEMA_VERSION,
        "version": __version__,
        "mode": source.mode,
        "device_id": source.device_id,
        "name": settings.name,
        "pid": os.getpid(),
        "started": _iso(source.started_at),
        "uptime_seconds": round(uptime, 3),
        "listen": str(HostPort(address.host, source.port)),
        "open": settings.open,
        "read_only": settings.refuses_management,
        "discovery": settings.discovery,
        "ollama": _ollama(source.ollama, time.monotonic()),
        "servers": [_server(s, names) for s in servers],
        "nearby": [_nearby(d) for d in (source.nearby() if nearby is None else nearby)],
        "sleeping": [_sleeping(s) for s in source.sleeping()],
        "counters": counters,
    }


def totals(metrics: Metrics) -> dict[str, object]:
    """The `counters` object: the metrics' counters summed over servers and routes."""
    by_status = dict.fromkeys(("1xx", "2xx", "3xx", "4xx", "5xx"), 0)
    sums: dict[str, int] = {}
    reasons: dict[str, dict[str, int]] = {}
    for family in metrics.counted():
        if not family.name.startswith(_COUNTED):
            continue
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, int(sample.value)
            if name.endswith("_created"):
                continue
            sums[name] = sums.get(name, 0) + value
            if name == "ollana_requests_total" and f"{labels['status'][:1]}xx" in by_status:
                by_status[f"{labels['status'][:1]}xx"] += value
            elif "reason" in labels:
                group = reasons.setdefault(name, {})
                group[labels["reason"]] = group.get(labels["reason"], 0) + value
    document: dict[str, object] = {
        "requests": sums.get("ollana_requests_total", 0),
        "requests_by_status": by_status,
        "inflight": sums.get("ollana_inflight", 0),
        "retries": sums.get("ollana_retries_total", 0),
        "failovers": sums.get("ollana_failovers_total", 0),
        "refusals": dict(sorted(reasons.get("ollana_refusals_total", {}).items())),
        "tls_refused": dict(sorted(reasons.get("ollana_tls_handshakes_refused_total", {}).items())),
    }
    if "ollana_discovery_datagrams_sent_total" in sums:
        dropped = reasons.get("ollana_discovery_datagrams_dropped_total", {})
        document["discovery"] = {
            "sent": sums["ollana_discovery_datagrams_sent_total"],
            "received": sums.get("ollana_discovery_datagrams_received_total", 0),
            "send_errors": sums.get("ollana_discovery_send_errors_total", 0),
            "dropped": dict(sorted(dropped.items())),
            "unanswered": dict(
                sorted(reasons.get("ollana_discovery_unanswered_total", {}).items())
            ),
        }
    return document


def _ollama(ollama: OllamaView | None, now: float) -> dict[str, object] | None:
    if ollama is None:
        return None
    return {
        "url": ollama.url,
        "up": ollama.up,
        "version": ollama.version,
        "since_seconds": round(max(0.0, now - ollama.since), 3),
        "models": list(ollama.models),
        "loaded": list(ollama.loaded),
    }


def _server(s: ServerSnapshot, names: Mapping[str, str]) -> dict[str, object]:
    return {
        "key": s.key,
        "address": s.address,
        "device_id": s.device_id,
        "name": names.get(s.device_id or "", ""),
        "state": s.state.value,
        "static": s.static,
        "priority": s.priority,
        "inflight": s.inflight,
        "latency_ms": s.latency_ms,
        "ollama_version": s.ollama_version,
        "models": list(s.models),
        "loaded": list(s.loaded),
        "last_seen_seconds_ago": s.last_seen_ago,
        "requests": s.requests,
        "failures": s.failures,
        "problem": s.problem,
        "connections": {"open": s.connections_open, "idle": s.connections_idle},
    }


def _nearby(device: SeenDevice) -> dict[str, object]:
    return {
        "device_id": device.device_id,
        "name": device.name,
        "address": device.address,
        "role": device.role,
        "last_seen": _iso(device.last_seen.timestamp()),
    }


def _sleeping(server: RememberedServer) -> dict[str, object]:
    woken = server.last_woken
    return {
        "device_id": server.device_id,
        "name": server.name,
        "address": server.addresses[0] if server.addresses else None,
        "mac": server.mac,
        "models": list(server.models),
        "last_seen": _iso(server.last_seen),
        "last_woken": None if woken is None else _iso(woken),
    }


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(round(timestamp), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
