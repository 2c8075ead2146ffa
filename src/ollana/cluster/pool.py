"""The client's pool of servers: state, liveness probes, passive ejection."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Final

from ollana.cluster.models import Route
from ollana.cluster.server import Server, ServerSnapshot, ServerState
from ollana.config import HostPort, Settings
from ollana.http.client import FETCH_ERRORS, ConnectionPool, describe
from ollana.lifecycle import Service
from ollana.ollama_api import model_names

__all__ = ["EWMA_ALPHA", "Pool"]

log = logging.getLogger(__name__)

EWMA_ALPHA: Final = 0.3
PROBE_JITTER: Final = 0.05
FAILURES_TO_EJECT: Final = 2

UpstreamFactory = Callable[["Server"], ConnectionPool]


class Pool(Service):
    """Known servers and their health; probes each one, ejects and restores them."""

    def __init__(
        self, settings: Settings, upstream_factory: UpstreamFactory, *, scheme: str = "https"
    ) -> None:
        self._settings = settings
        self._timings = settings.timings
        self._upstream_factory = upstream_factory
        self._scheme = scheme
        self._servers: dict[str, Server] = {}
        self._changed = asyncio.Event()
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()
        self._started = time.monotonic()

    async def start(self) -> None:
        """Add the static servers (`--server`) and start probing them."""
        self._started = time.monotonic()
        for static in self._settings.servers:
            self.add(static.address, static=True, priority=static.priority)

    def __iter__(self) -> Iterator[Server]:
        return iter(self._servers.values())

    def __len__(self) -> int:
        return len(self._servers)

    # --- membership -----------------------------------------------------------------------

    def add(
        self,
        address: HostPort,
        *,
        device_id: str | None = None,
        static: bool = False,
        priority: int = 0,
    ) -> Server:
        """Add a server (or return the one already known by that ID or address) and probe it."""
        server = self._find(address, device_id)
        if server is not None:
            # One server is heard at several addresses (each interface's broadcast): it moves
            # only when the address it had stopped working. The other one is kept in reserve,
            # for a server that never answers where it was first heard (one listening on
            # loopback only is also heard from this host's LAN address).
            if server.address != address and not server.static:
                if server.routable:
                    server.alternate = address
                else:
                    self._move(server, address)
                    server = self._servers[server.key]
            if not server.static:
                server.priority = priority
            return server
        server = Server(
            address, scheme=self._scheme, device_id=device_id, static=static, priority=priority
        )
        self._start(server)
        log.info("server %s added (%s)", server.label, "static" if static else "discovered")
        return server

    def find(self, device_id: str) -> Server | None:
        """The server with this device ID, if it is in the pool."""
        return self._servers.get(device_id)

    def identify(self, server: Server, device_id: str) -> None:
        """A server first known by address has proven which device it is."""
        if server.device_id == device_id or self._servers.get(server.key) is not server:
            return
        del self._servers[server.key]
        server.device_id = device_id
        server.label = device_id[:12]
        self._servers[server.key] = server
        self._notify()

    def heard(self, server: Server, models_digest: str = "", queue: int = 0) -> None:
        """Discovery heard from this server: it is alive, so a failing one is probed at once.

        (A server that refused us a moment ago may trust us now: it answers our query after
        it learnt our certificate.) A new digest of its model lists has them fetched again;
        `queue` is how many requests wait in its own queue.
        """
        server.last_seen = time.monotonic()
        server.queue = queue
        if server.state is ServerState.DOWN or server.failures:
            self._restart_probe(server)
        if models_digest and models_digest != server.models_digest:
            server.models_digest = models_digest
            self.refresh_models_soon(server)

    def probe_now(self, server: Server) -> None:
        """Probe this server at once (it was just reintroduced), whatever its state."""
        if self._servers.get(server.key) is server:
            self._restart_probe(server)

    def trouble(self, server: Server, problem: str | None) -> None:
        """Say why a server cannot be used (status shows it); None once it can."""
        if server.problem != problem:
            server.problem = problem
            self._notify()

    # --- what passes through ----------------------------------------------------------------

    def began(self, server: Server) -> None:
        """A request was sent to this server."""
        server.inflight += 1
        server.requests += 1

    def ended(self, server: Server) -> None:
        """A request sent to this server ended (answered, failed or abandoned)."""
        server.inflight -= 1

    def learned(
        self,
        server: Server,
        *,
        installed: frozenset[str] | None = None,
        loaded: frozenset[str] | None = None,
    ) -> None:
        """A model list of this server was read (by anyone): keep it and wake who waits."""
        if installed is not None:
            server.models, server.models_known = installed, True
        if loaded is not None:
            server.loaded = loaded
        self._notify()

    def used(self, server: Server, route: Route) -> None:
        """A request naming a model succeeded here: what it tells of the server's models.

        Known at once, so that the next request (`ollama cp a b && ollama run b`) finds it;
        the refresh corrects the guess (a pull whose stream ended in an error).
        """
        model = route.model
        if model is None:
            return
        if route.mutating:
            if route.path == "/api/delete":
                server.models = server.models - {model}
                server.loaded = server.loaded - {model}
            elif route.target is not None:
                server.models = server.models | {route.target}
            self.refresh_models_soon(server)
        elif route.unload:
            if model not in server.loaded:
                return
            server.loaded = server.loaded - {model}
        elif model not in server.loaded:
            # Ollama loads a model on first use; the slow refresh corrects this guess.
            server.loaded = server.loaded | {model}
            server.models = server.models | {model}
        else:
            return
        self._notify()

    def remove(self, server: Server, reason: str) -> None:
        """Forget a discovered server at once (goodbye); static ones are only marked down."""
        if server.static:
            self._set_state(server, ServerState.DOWN, reason)
            return
        if self._servers.pop(server.key, None) is None:
            return
        log.info("server %s removed: %s", server.label, reason)
        self._stop(server)
        self._notify()

    def _find(self, address: HostPort, device_id: str | None) -> Server | None:
        if device_id is not None and device_id in self._servers:
            return self._servers[device_id]
        # A static server is keyed by its address until (and after) its ID is known.
        return self._servers.get(str(address))

    def _move(self, server: Server, address: HostPort) -> None:
        if self._servers.get(server.key) is not server:
            return  # already replaced or removed: a late failure of an old entry
        log.info("server %s moved to %s", server.label, address)
        self._servers.pop(server.key, None)
        self._stop(server)
        fresh = Server(
            address,
            scheme=self._scheme,
            device_id=server.device_id,
            static=False,
            priority=server.priority,
        )
        fresh.last_seen = server.last_seen  # heard there too: not one to forget
        self._start(fresh)

    def _start(self, server: Server) -> None:
        server.upstream = self._upstream_factory(server)
        self._servers[server.key] = server
        self._restart_probe(server)
        self._notify()

    def _try_alternate(self, server: Server) -> bool:
        """Never answered where it was first heard: move it to where else it was, if anywhere."""
        if server.last_ok is not None or server.alternate is None or server.static:
            return False
        self._move(server, server.alternate)
        return True

    def _stop(self, server: Server) -> None:
        for task in (server.probe_task, server.models_task):
            if task is not None:
                task.cancel()
        if server.upstream is not None:
            # Idle connections close now; those in flight (a draining server's streams)
            # when their answers end.
            task = asyncio.create_task(server.upstream.close())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # --- health -----------------------------------------------------------------------------

    def healthy(self) -> list[Server]:
        """Servers that may take requests now."""
        return [s for s in self._servers.values() if s.routable]

    def expecting(self) -> bool:
        """Whether a usable server may be about to appear, so that a request should wait.

        In the first `wait_for_server` seconds after start (discovery's first answers, the
        first probes), and while a server has been heard of but not probed yet.
        """
        if time.monotonic() - self._started < self._settings.wait_for_server:
            return True
        return any(s.last_ok is None and s.failures == 0 for s in self._servers.values())

    def unusable(self) -> list[str]:
        """Why each known server cannot take requests now, one phrase each."""
        now = time.monotonic()
        reasons = []
        for server in self._servers.values():
            if server.routable:
                continue
            since = now - (server.last_ok or self._started)
            why = server.problem or server.down_reason or "not answering"
            reasons.append(
                f"server {server.label} at {server.address} is down ({why}) for {since:.0f} s"
            )
        return reasons

    def passive_failure(self, server: Server, reason: str) -> None:
        """A connect error or reset on a real request: eject at once."""
        if self._try_alternate(server):
            return
        server.total_failures += 1
        server.failures = FAILURES_TO_EJECT
        self._set_state(server, ServerState.DOWN, reason)

    async def wait_changed(self, timeout: float) -> bool:
        """Wait until the pool changes; False on timeout."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def snapshots(self) -> list[ServerSnapshot]:
        """Frozen copies of every server, for status."""
        now = time.monotonic()
        return [s.snapshot(now) for s in self._servers.values()]

    def _set_state(self, server: Server, state: ServerState, reason: str) -> None:
        if server.state is state:
            return
        level = logging.INFO if state is not ServerState.SUSPECT else logging.DEBUG
        log.log(level, "server %s is %s (%s)", server.label, state, reason)
        if state is ServerState.DOWN:
            server.down_reason = reason
        server.state = state
        self._notify()

    def _abandon(self, server: Server) -> None:
        """It answers nothing at all: what waits on it goes elsewhere or ends with its error."""
        for task in server.attempts - server.abandoned:
            server.abandoned.add(task)
            task.cancel()
        for stream in server.streams:
            stream.close()

    def _notify(self) -> None:
        self._changed.set()

    def _restart_probe(self, server: Server) -> None:
        if server.probe_task is not None:
            server.probe_task.cancel()
        server.probe_task = asyncio.create_task(
            self._probe_loop(server), name=f"probe {server.key}"
        )

    async def _probe_loop(self, server: Server) -> None:
        interval = self._timings.probe_interval
        while True:
            await self._probe(server)
            if self._forgettable(server):
                self.remove(server, "not heard from and not answering")
                return
            if server.failures == 1:
                # One failure in a row: confirm it at once, so that a server that went silent
                # is out within one interval and two timeouts.
                continue
            await asyncio.sleep(interval * random.uniform(1 - PROBE_JITTER, 1 + PROBE_JITTER))

    async def _probe(self, server: Server) -> None:
        assert server.upstream is not None
        started = time.perf_counter()
        try:
            status, body = await server.upstream.fetch_json(
                "/api/version", self._timings.probe_timeout
            )
            if status != 200:
                error = body.get("error") if isinstance(body, dict) else None
                raise ValueError(f"answered {status}" + (f": {error}" if error else ""))
        except FETCH_ERRORS as exc:
            if self._try_alternate(server):
                return
            server.failures += 1
            if server.failures >= FAILURES_TO_EJECT:
                self._set_state(server, ServerState.DOWN, f"probe failed: {describe(exc)}")
                # Only silence ends what is in flight on it: an error answer or a refused
                # connection (a server draining its requests refuses new ones) says it is
                # there, and its streams may still be going.
                if isinstance(exc, TimeoutError):
                    self._abandon(server)
            elif server.state is ServerState.HEALTHY:
                self._set_state(server, ServerState.SUSPECT, f"probe failed: {describe(exc)}")
            return
        elapsed = time.perf_counter() - started
        server.latency = (
            elapsed
            if server.latency is None
            else EWMA_ALPHA * elapsed + (1 - EWMA_ALPHA) * server.latency
        )
        server.failures = 0
        server.last_ok = time.monotonic()
        if isinstance(body, dict) and isinstance(body.get("version"), str):
            server.ollama_version = body["version"]
        self._set_state(server, ServerState.HEALTHY, "probe answered")
        if time.monotonic() - server.refreshed > self._timings.models_refresh:
            # Beside the probes, not in their way: its timeout is five probes' long.
            self.refresh_models_soon(server)

    async def refresh_models(self, server: Server) -> None:
        """Fetch a server's installed (/api/tags) and loaded (/api/ps) models."""
        started = time.monotonic()
        server.models_failed = False  # under way: worth waiting for
        try:
            installed, loaded = await asyncio.gather(
                self._names(server, "/api/tags"), self._names(server, "/api/ps")
            )
        except FETCH_ERRORS as exc:
            # Not marked refreshed: the next probe that answers tries again (an announce is
            # often heard before the server knows our certificate and lets us in).
            log.debug("models of %s not refreshed: %r", server.label, exc)
            server.models_failed = True
            self._notify()
            return
        if installed != server.models or not server.models_known:
            log.info("server %s has %d models", server.label, len(installed))
        server.refreshed, server.models_failed = started, False
        self.learned(server, installed=installed, loaded=loaded)

    def refresh_models_soon(self, server: Server) -> None:
        """Refresh a server's models in the background (after a change went through it)."""
        if server.models_task is None or server.models_task.done():
            server.models_task = asyncio.create_task(self.refresh_models(server))

    async def _names(self, server: Server, path: str) -> frozenset[str]:
        assert server.upstream is not None
        # Longer than a probe: a list can be long, and nothing waits on it.
        status, body = await server.upstream.fetch_json(path, self._timings.probe_timeout * 5)
        if status != 200:
            raise ValueError(f"{path} answered {status}")
        return frozenset(model_names(body))

    def _forgettable(self, server: Server) -> bool:
        if server.static or server.state is not ServerState.DOWN:
            return False
        heard = server.last_seen or 0.0
        return time.monotonic() - heard > self._timings.forget_after

    # --- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop probing and close every connection pool; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        servers = list(self._servers.values())
        self._servers.clear()
        tasks = [t for s in servers for t in (s.probe_task, s.models_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for upstream in [s.upstream for s in servers if s.upstream is not None]:
            await upstream.close()
        await asyncio.gather(*self._background, return_exceptions=True)
