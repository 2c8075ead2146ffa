"""One server as the client's pool knows it: its state, what it holds, its connections."""

from __future__ import annotations

import asyncio
import enum
import math
from dataclasses import dataclass
from typing import Any

from ollana.config import HostPort
from ollana.http.client import ConnectionPool, Response

__all__ = ["Server", "ServerSnapshot", "ServerState"]


class ServerState(enum.StrEnum):
    """Where a server stands: only healthy and suspect servers are routed to."""

    HEALTHY = "healthy"
    SUSPECT = "suspect"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """A server as status pages and tests see it."""

    key: str
    address: str
    device_id: str | None
    state: ServerState
    static: bool
    priority: int
    inflight: int
    latency_ms: float | None
    ollama_version: str | None
    models: tuple[str, ...]
    loaded: tuple[str, ...]
    last_seen_ago: float | None
    requests: int
    failures: int
    problem: str | None = None  # why it cannot be used, when something more than its state says
    connections_open: int = 0  # to this server, in use or idle
    connections_idle: int = 0
    label: str = ""  # how logs and metrics name it


class Server:
    """One server in the pool, with its own keep-alive connection pool."""

    __slots__ = (
        "abandoned",
        "address",
        "alternate",
        "attempts",
        "base_url",
        "device_id",
        "down_reason",
        "failures",
        "inflight",
        "label",
        "last_ok",
        "last_seen",
        "latency",
        "loaded",
        "models",
        "models_digest",
        "models_failed",
        "models_known",
        "models_task",
        "ollama_version",
        "priority",
        "probe_task",
        "problem",
        "queue",
        "refreshed",
        "requests",
        "state",
        "static",
        "streams",
        "total_failures",
        "upstream",
    )  # fmt: skip

    def __init__(
        self, address: HostPort, *, scheme: str, device_id: str | None, static: bool, priority: int
    ) -> None:
        self.address = address
        self.alternate: HostPort | None = None  # where else it was heard, if anywhere
        self.device_id = device_id
        self.static = static
        self.priority = priority
        host = f"[{address.host}]" if ":" in address.host else address.host
        self.base_url = f"{scheme}://{host}:{address.port}"
        self.label = device_id[:12] if device_id else str(address)
        self.state = ServerState.SUSPECT
        self.failures = 0
        self.down_reason = ""  # why it was last marked down, for the errors apps see
        self.total_failures = 0
        self.inflight = 0
        self.requests = 0
        self.queue = 0  # requests waiting in the server's own queue, as it last announced
        self.latency: float | None = None
        self.last_seen: float | None = None
        self.last_ok: float | None = None
        self.models: frozenset[str] = frozenset()
        self.loaded: frozenset[str] = frozenset()
        self.models_digest: str | None = None
        self.models_known = False
        self.models_failed = False  # the last attempt to list them failed
        self.refreshed = -math.inf  # never: time.monotonic() may be small after a boot
        self.models_task: asyncio.Task[None] | None = None
        self.ollama_version: str | None = None
        self.upstream: ConnectionPool | None = None  # where requests are forwarded
        self.probe_task: asyncio.Task[None] | None = None
        self.problem: str | None = None
        # What is in flight here; ejecting the server ends them (a vanished server never
        # answers): waiting attempts go to the next server, streams end with their error.
        # Attempts are the requests' own tasks: the pool cancels them, noting which in
        # `abandoned`, and the router turns that cancellation into this server's failure.
        self.attempts: set[asyncio.Task[Any]] = set()
        self.abandoned: set[asyncio.Task[Any]] = set()
        self.streams: set[Response] = set()

    @property
    def key(self) -> str:
        """Stable identity in the pool: the device ID, else the address."""
        return self.device_id or str(self.address)

    @property
    def routable(self) -> bool:
        """Whether requests may go here."""
        return self.state is not ServerState.DOWN

    def snapshot(self, now: float) -> ServerSnapshot:
        """A frozen copy for status pages."""
        return ServerSnapshot(
            key=self.key,
            address=str(self.address),
            device_id=self.device_id,
            state=self.state,
            static=self.static,
            priority=self.priority,
            inflight=self.inflight,
            latency_ms=None if self.latency is None else round(self.latency * 1000, 3),
            ollama_version=self.ollama_version,
            models=tuple(sorted(self.models)),
            loaded=tuple(sorted(self.loaded)),
            last_seen_ago=None if self.last_seen is None else round(now - self.last_seen, 3),
            requests=self.requests,
            failures=self.total_failures,
            problem=self.problem,
            connections_open=0 if self.upstream is None else self.upstream.opened,
            connections_idle=0 if self.upstream is None else self.upstream.idle,
            label=self.label,
        )
