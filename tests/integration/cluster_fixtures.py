"""Clusters on loopback for routing and failover tests: emulators, servers and clients, paired.

Every member shares one free UDP discovery port and sends to the loopback broadcast address
(127.255.255.255 reaches every socket bound to the port; a unicast to a shared port reaches
only one of them). The port stays reserved by an `Observer` socket for the whole test, which
also records every datagram so that tests can await announces and goodbyes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
from aiohttp import web

from ollana.cluster.server import ServerState
from ollana.config import Settings, load_settings
from ollana.demo import pair
from ollana.discovery import DecodeError, Message, decode
from ollana.emulator import (
    STATS_KEY,
    STORE_KEY,
    EmulatorConfig,
    EmulatorStats,
    ModelStore,
    create_app,
    serving,
)
from ollana.identity import load_identity
from ollana.modes import ClientMode, ServerMode
from tests.support.discovery import LOOPBACK_BROADCAST
from tests.support.process import OllanaProcess
from tests.support.waiting import DEADLINE, until

__all__ = [
    "DEADLINE",
    "FAST_TIMINGS",
    "LOOPBACK_BROADCAST",
    "PIN",
    "Cluster",
    "Emulator",
    "Observer",
    "Outcome",
    "RequestLoop",
    "cluster",
    "healthy_with_models",
    "read_events",
    "until",
]

PIN = "X-Ollana-Server"
# Fast protocol timings, so that a test waits milliseconds, not seconds, for each event.
FAST_TIMINGS: Mapping[str, str] = {
    "timings.probe_interval": "0.2",
    "timings.probe_timeout": "1.0",
    "timings.announce_interval": "0.5",
    "timings.query_interval": "0.5",
    "timings.forget_after": "3600",
}

M = TypeVar("M", bound=Message)


# --- discovery traffic ----------------------------------------------------------------------


class Observer(asyncio.DatagramProtocol):
    """Holds the discovery port for a test and records every datagram sent to it."""

    def __init__(self) -> None:
        self.heard: list[tuple[float, Message, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls) -> tuple[Observer, int]:
        """Bind a shared socket to a free port on every address; returns it and the port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", 0))
        sock.setblocking(False)
        observer = cls()
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: observer, sock=sock)
        return observer, int(sock.getsockname()[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            message = decode(data)
        except DecodeError:
            return
        self.heard.append((time.monotonic(), message, str(addr[0])))

    def close(self) -> None:
        """Release the port."""
        if self.transport is not None:
            self.transport.close()

    def of(self, kind: type[M], device: str, since: float = 0.0) -> list[M]:
        """Messages of one kind from one device, heard since a monotonic time."""
        return [
            m for t, m, _ in self.heard if t >= since and isinstance(m, kind) and m.device == device
        ]


# --- Ollama stand-ins ------------------------------------------------------------------------


@dataclass(slots=True)
class Emulator:
    """An in-process emulator that a test may stop (as if Ollama went away) and start again."""

    config: EmulatorConfig
    port: int = 0
    app: web.Application | None = None
    _stack: contextlib.AsyncExitStack | None = None

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats(self) -> EmulatorStats:
        """Counters and installed models."""
        assert self.app is not None
        return self.app[STATS_KEY]

    @property
    def store(self) -> ModelStore:
        """Its installed models and blobs."""
        assert self.app is not None
        return self.app[STORE_KEY]

    @property
    def installed(self) -> frozenset[str]:
        """Installed models, as /api/tags names them."""
        return self.stats.installed

    async def start(self) -> Emulator:
        """Serve (again on the same port, when it served before)."""
        self._stack = contextlib.AsyncExitStack()
        self.app = create_app(self.config)
        self.port = await self._stack.enter_async_context(serving(self.app, "127.0.0.1", self.port))
        return self

    async def stop(self) -> None:
        """Stop serving; safe to call twice."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


# --- the cluster -----------------------------------------------------------------------------


@dataclass(slots=True)
class Cluster:
    """Members of one test's LAN on loopback; everything started is stopped at the end."""

    root: Path
    stack: contextlib.AsyncExitStack
    observer: Observer
    discovery_port: int
    homes: dict[str, Path] = field(default_factory=dict)

    def pair(self, *names: str) -> None:
        """Create the data dirs of these members and make them all allow each other."""
        for name in names:
            self.homes[name] = self.root / name
        pair(*self.homes.values())

    def device_id(self, name: str) -> str:
        """A member's device ID."""
        return load_identity(self.homes[name]).device_id

    def settings(self, name: str, flags: Mapping[str, object]) -> Settings:
        """In-process settings: loopback, the shared discovery port, fast timings."""
        if name not in self.homes:
            self.pair(name)
        base: dict[str, object] = {
            "home": str(self.homes[name]),
            "listen": "127.0.0.1:0",
            "admin_listen": "off",
            "grace": 1.0,
            "discovery_port": self.discovery_port,
            "discovery_targets": (LOOPBACK_BROADCAST,),
            "wait_for_server": 2.0,
            # The emulator runs any number of requests at once, where Ollama queues them:
            # no fair queue unless a test asks for one.
            "ollama_parallel": 0,
            **FAST_TIMINGS,
        }
        home = self.homes[name]
        return load_settings({**base, **flags}, env={}, config_file=home / "config.toml")

    async def emulator(self, *models: str, tokens_per_second: float | None = None) -> Emulator:
        """An in-process emulator with these models."""
        emulator = Emulator(EmulatorConfig(models=models, tokens_per_second=tokens_per_second))
        await emulator.start()
        self.stack.push_async_callback(emulator.stop)
        return emulator

    async def server(self, name: str, ollama: Emulator | str, /, **flags: object) -> ServerMode:
        """An in-process server in front of an emulator, announcing itself."""
        url = ollama if isinstance(ollama, str) else ollama.url
        settings = self.settings(name, {"mode": "server", "ollama": url, **flags})
        return await self.stack.enter_async_context(ServerMode(settings))

    async def client(self, name: str = "client", /, **flags: object) -> ClientMode:
        """An in-process client; discovers the servers unless told `discovery=False`."""
        settings = self.settings(name, {"mode": "client", **flags})
        return await self.stack.enter_async_context(ClientMode(settings))

    def process_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a child ollana: fast timings."""
        env = {"OLLANA_" + k.replace(".", "_").upper(): v for k, v in FAST_TIMINGS.items()}
        env["OLLANA_GRACE"] = "2"
        env.update(extra or {})
        return env

    def process_args(self, mode: str, listen: str = "127.0.0.1:0") -> list[str]:
        """Command-line arguments of a child ollana in this cluster."""
        return [
            "serve",
            "--mode",
            mode,
            "--listen",
            listen,
            "--admin-listen",
            "off",
            "--discovery-port",
            str(self.discovery_port),
            "--discovery-target",
            LOOPBACK_BROADCAST,
            "--log-level",
            "debug",
        ]

    async def server_process(
        self,
        name: str,
        ollama: Emulator | str,
        *args: str,
        listen: str = "127.0.0.1:0",
        env: Mapping[str, str] | None = None,
    ) -> OllanaProcess:
        """`ollana serve --mode server` as a child process in front of an emulator."""
        if name not in self.homes:
            self.pair(name)
        url = ollama if isinstance(ollama, str) else ollama.url
        process = await OllanaProcess.start(
            *self.process_args("server", listen),
            "--ollama",
            url,
            *args,
            home=self.homes[name],
            env=self.process_env(env),
            log=self.root / f"{name}-{time.monotonic_ns()}.log",
        )
        return await self.stack.enter_async_context(process)

    async def client_process(
        self, name: str, *args: str, env: Mapping[str, str] | None = None
    ) -> OllanaProcess:
        """`ollana serve --mode client` as a child process."""
        if name not in self.homes:
            self.pair(name)
        process = await OllanaProcess.start(
            *self.process_args("client"),
            *args,
            home=self.homes[name],
            env=self.process_env(env),
            log=self.root / f"{name}-{time.monotonic_ns()}.log",
        )
        return await self.stack.enter_async_context(process)


@contextlib.asynccontextmanager
async def cluster(root: Path) -> AsyncIterator[Cluster]:
    """A cluster for one test; its members stop, in reverse order, when the block ends."""
    observer, port = await Observer.open()
    try:
        async with contextlib.AsyncExitStack() as stack:
            yield Cluster(root, stack, observer, port)
    finally:
        observer.close()


# --- the client's view -----------------------------------------------------------------------


def healthy_with_models(client: ClientMode, device_ids: Iterable[str]) -> bool:
    """Whether every one of these servers is healthy and its model list is known."""
    for device_id in device_ids:
        server = client.pool.find(device_id)
        if server is None or server.state is not ServerState.HEALTHY or not server.models_known:
            return False
    return True


def read_events(body: bytes, content_type: str) -> list[Any]:
    """The JSON objects of an NDJSON body or the data events of an SSE body, in order."""
    if content_type.startswith("text/event-stream"):
        events = []
        for block in body.decode().split("\n\n"):
            data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
            if data and data[0] != "[DONE]":
                events.append(json.loads("\n".join(data)))
        return events
    return [json.loads(line) for line in body.splitlines() if line.strip()]


# --- load --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request of a loop: its status, the server that answered and any client error."""

    at: float
    status: int
    server: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether it succeeded."""
        return self.error is None and self.status == 200


class RequestLoop:
    """Workers that send one small request after another to a client; `async with` runs them."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        workers: int = 2,
        path: str = "/api/generate",
        body: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url.rstrip("/") + path
        self.body = dict(
            body or {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 3}}
        )
        self.workers = workers
        self.outcomes: list[Outcome] = []
        self._sent = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RequestLoop:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE))
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Let every worker finish its request, then stop; safe to call twice."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _work(self) -> None:
        assert self._session is not None
        while not self._stop.is_set():
            at = time.monotonic()
            self._sent += 1
            # Each request its own conversation, so that affinity does not pick the server.
            body = {**self.body, "prompt": f"{self.body.get('prompt', '')} {self._sent}"}
            try:
                async with self._session.post(self.url, json=body) as response:
                    await response.read()
                    outcome = Outcome(at, response.status, response.headers.get(PIN))
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = Outcome(at, 0, None, repr(exc))
            self.outcomes.append(outcome)

    @property
    def failures(self) -> list[Outcome]:
        """The requests that did not succeed."""
        return [o for o in self.outcomes if not o.ok]

    def servers_since(self, since: float) -> set[str | None]:
        """Who answered the requests sent since a monotonic time."""
        return {o.server for o in self.outcomes if o.at >= since}

    async def more(self, count: int, since: float | None = None) -> None:
        """Wait until `count` more requests were answered (after `since`, when given)."""
        start = len(self.outcomes) if since is None else 0
        await until(
            lambda: (
                sum(1 for o in self.outcomes[start:] if since is None or o.at >= since) >= count
            ),
            f"{count} more requests",
        )
