"""Choosing a server for each request, and retrying on the next one when that is safe."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

import aiohttp
from multidict import CIMultiDict

from ollana.cluster.exchange import Exchange, unless_abandoned
from ollana.cluster.models import Route
from ollana.cluster.pool import Pool
from ollana.cluster.server import Server, ServerState
from ollana.http import UpstreamError, open_upstream
from ollana.http.relay import CROWDED
from ollana.identity.ids import MIN_PIN_LENGTH, DeviceIdError, parse_device_id
from ollana.ollama_api import BLOBS_PATH

__all__ = ["AFFINITY_ENTRIES", "CROWDED_WAIT", "NoServerError", "Router", "WakeHook", "order"]

if TYPE_CHECKING:
    from ollana.metrics import Metrics

log = logging.getLogger(__name__)

AFFINITY_ENTRIES: Final = 4096
# A server that had no connection to spare (its 503 says so) is asked again after this,
# until the request's wait for a server runs out: its other devices' idle connections are
# being closed to make room.
CROWDED_WAIT: Final = 0.2
# Answered statuses another server may not give: Ollama's full queue, a cloud model's rate
# limit, a cloud model on an Ollama not signed in to ollama.com (its only 401 on a model).
RETRY_STATUSES: Final = frozenset({503, 429, 401})
RESPONSE_ID_WITHIN: Final = 4096  # a Responses answer names its id in its first event
_RESPONSE_ID: Final = re.compile(rb'"id"\s*:\s*"(resp[_-][^"\\]{1,120})"')


class NoServerError(Exception):
    """No server could take the request; the message says what was tried."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


class WakeHook(Protocol):
    """Asked when no routable server has a request's model (ollana.wake implements it)."""

    async def wake_for(self, model: str) -> None:
        """Wake a sleeping server that has `model` and wait for it; NoServerError if it
        did not come up; return at once if there is none."""


class _Recent(OrderedDict[str, str]):
    """A bounded map of recent keys (conversations, blob digests) to the server that took them."""

    def remember(self, key: str, server: str) -> None:
        self[key] = server
        self.move_to_end(key)
        if len(self) > AFFINITY_ENTRIES:
            self.popitem(last=False)


class Router:
    """Orders candidate servers and opens each request on the first one that takes it."""

    def __init__(
        self,
        pool: Pool,
        wait_for_server: float,
        metrics: Metrics,
        *,
        waker: WakeHook | None = None,
        explain: Callable[[], list[str]] | None = None,
        nobody: Callable[[], str] = lambda: "no server has been heard of",
    ) -> None:
        self._pool = pool
        self.waker = waker
        self._metrics = metrics
        self._wait = wait_for_server
        # More reasons no server is usable (unpaired ones), and what to say when none is known.
        self._explain = explain
        self._nobody = nobody
        self._conversations = _Recent()
        self._blobs = _Recent()
        self._responses = _Recent()  # Responses API answer IDs -> the server that made them
        self._last_blob: str | None = None
        self.crowded_wait = CROWDED_WAIT

    def candidates(self, route: Route) -> list[Server]:
        """Routable servers for a request, best first (see `order`)."""
        servers = order(self._pool.healthy(), route, self._sticky(route))
        made = self._responses.get(route.previous_response or "")
        if made is not None:
            # Only the server that made a response knows it: first, whatever its tier.
            servers.sort(key=lambda s: s.key != made)
        return servers

    def response_watch(
        self, server: Server, then: Callable[[bytes], None] | None = None
    ) -> Callable[[bytes], None]:
        """A relay's `on_chunk` that keeps which server made a Responses answer's `id`.

        It looks at most RESPONSE_ID_WITHIN bytes into the answer; `then` sees every chunk.
        """
        seen = bytearray()

        def watch(chunk: bytes) -> None:
            if then is not None:
                then(chunk)
            if len(seen) >= RESPONSE_ID_WITHIN:
                return
            seen.extend(chunk[: RESPONSE_ID_WITHIN - len(seen)])
            found = _RESPONSE_ID.search(seen)
            if found is not None:
                self._responses.remember(found[1].decode("ascii", "replace"), server.key)
                seen.extend(bytes(RESPONSE_ID_WITHIN))  # done: look no further

        return watch

    async def unload_elsewhere(
        self, method: str, path_qs: str, headers: CIMultiDict[str], body: bytes, exchange: Exchange
    ) -> None:
        """Send a keep_alive 0 unload to every other server that has the model loaded."""
        route = exchange.route

        async def unload(server: Server) -> None:
            assert server.upstream is not None
            sent = Exchange(self._pool, self._metrics, server, route)
            try:
                response = await open_upstream(server.upstream, method, path_qs, headers, body)
            except UpstreamError as exc:
                sent.failed()
                log.info("unload of %s on %s failed: %s", route.model, server.label, exc)
                return
            sent.answered(response)
            status = 599
            try:
                async with response:
                    await response.content.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.info("unload of %s on %s failed: %s", route.model, server.label, exc)
            finally:
                sent.finish(status)

        others = [
            s
            for s in self._pool.healthy()
            if s is not exchange.server and route.model in s.loaded and s.upstream is not None
        ]
        await asyncio.gather(*(unload(s) for s in others))

    def _sticky(self, route: Route) -> str | None:
        if route.blobs:
            for digest in route.blobs:
                if digest in self._blobs:
                    return self._blobs[digest]
            if route.path.startswith(BLOBS_PATH):
                # A model's files are uploaded one blob each, then one create uses them all:
                # a new blob joins the ones uploaded before it.
                return self._last_blob
        if route.conversation is not None:
            return self._conversations.get(route.conversation)
        return None

    async def open(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes | aiohttp.StreamReader | None,
        route: Route,
    ) -> Exchange:
        """Send the request to the best server; on a failure before any response byte, the next.

        The returned exchange holds the server and its answer; `Exchange.finish()` ends it.
        """
        deadline = time.monotonic() + self._wait
        await self._await_model_lists(route, deadline)
        if self.waker is not None:
            await self._wake_unless_served(self.waker, route)
        missing = self.unreachable_holder(route)
        if missing is not None:
            # Not Ollama's 404 "try pulling it": that would send the user to download it again.
            raise NoServerError(missing)
        tried: dict[str, str] = {}  # server label -> why it did not take the request
        # By identity: a server heard again at a new address is a new entry, worth a try.
        attempted: list[Server] = []
        crowded: list[Server] = []
        while True:
            candidates = [s for s in self.candidates(route) if not any(s is t for t in attempted)]
            if not candidates:
                remaining = deadline - time.monotonic()
                if crowded and remaining > 0:
                    await asyncio.sleep(min(self.crowded_wait, remaining))
                    attempted = [t for t in attempted if not any(t is c for c in crowded)]
                    crowded.clear()
                    continue
                # One that answered 503 is still routable: waiting would not change its mind.
                busy = any(t.routable for t in attempted)
                if busy or remaining <= 0 or not self._pool.expecting():
                    break
                if not await self._pool.wait_changed(remaining):
                    break
                continue
            metrics = self._metrics
            for index, server in enumerate(candidates):
                assert server.upstream is not None
                attempted.append(server)
                if route.path.startswith(BLOBS_PATH):
                    # Taken now, not once it answered: uploads sent side by side follow it.
                    self._last_blob = server.key
                exchange = Exchange(self._pool, metrics, server, route)
                started = time.perf_counter()
                try:
                    attempt = open_upstream(
                        server.upstream,
                        method,
                        path_qs,
                        headers,
                        body,
                        # The last candidate's answer goes back as Ollama wrote it.
                        retry_statuses=_retry_statuses(route, candidates[index + 1 :]),
                    )
                    replayable = not isinstance(body, aiohttp.StreamReader)
                    response = await unless_abandoned(server, attempt, replayable)
                except UpstreamError as exc:
                    exchange.failed()
                    tried[server.label] = str(exc)
                    if exc.status not in RETRY_STATUSES:
                        self._pool.passive_failure(server, str(exc))
                    log.info("%s %s via %s failed: %s", method, route.path, server.label, exc)
                    if exc.reason == CROWDED and exc.retryable:
                        crowded.append(server)
                        metrics.retry(exc.reason)
                        continue
                    if not exc.retryable:
                        raise NoServerError(str(exc), exc.status) from exc
                    metrics.retry(exc.reason)
                    continue
                except BaseException:
                    exchange.failed()
                    raise
                metrics.upstream_ttfb(server.label, time.perf_counter() - started)
                if tried:
                    metrics.failover()
                self._remember(route, server)
                exchange.answered(response)
                return exchange
        pin = f" matching {route.pin!r}" if route.pin else ""
        if not tried:
            raise NoServerError(
                f"no Ollama server{pin} is reachable through ollana: {self.why_none()}"
            )
        what = "; ".join(f"{label}: {why}" for label, why in tried.items())
        raise NoServerError(f"no Ollama server{pin} could take the request ({what})")

    def why_none(self) -> str:
        """Why no server can take requests: each known one and its trouble, or what was asked."""
        reasons = self._pool.unusable() + (self._explain() if self._explain else [])
        return "; ".join(reasons) if reasons else self._nobody()

    def unreachable_holder(self, route: Route) -> str | None:
        """An error for a model that only servers that are down have, or None."""
        model = route.model
        if model is None or route.pin or route.mutating:
            return None
        if any(model in s.models for s in self._pool.healthy()):
            return None
        holders = [s for s in self._pool if not s.routable and model in s.models]
        if not holders:
            return None
        names = ", ".join(f"server {s.label} at {s.address}" for s in holders)
        return f"model {model!r} is on {names}, which is unreachable now ({self.why_none()})"

    async def _wake_unless_served(self, waker: WakeHook, route: Route) -> None:
        """Only a sleeping server has the model: wake it and wait for it (see ollana.wake).

        A pull or a delete wakes nothing, and neither does a pinned request.
        """
        model = route.model
        if model is None or route.pin or route.mutating:
            return
        if not any(model in s.models for s in self._pool.healthy()):
            await waker.wake_for(model)

    async def _await_model_lists(self, route: Route, deadline: float) -> None:
        """Wait while a model no known list has may be on a server whose list is on its way.

        Servers are routable as soon as they are heard of, before their /api/tags came back:
        without this, a request sent as the client starts goes to whichever is first.
        """
        model = route.model
        if model is None or route.pin:
            return
        while True:
            servers = self._pool.healthy()
            if any(model in s.models for s in servers) or all(
                s.models_known or s.models_failed or s.failures for s in servers
            ):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._pool.expecting():
                return
            if not await self._pool.wait_changed(remaining):
                return

    def _remember(self, route: Route, server: Server) -> None:
        if route.conversation is not None:
            self._conversations.remember(route.conversation, server.key)
        for digest in route.blobs:
            self._blobs.remember(digest, server.key)


def _retry_statuses(route: Route, following: list[Server]) -> frozenset[int]:
    """Which answers of a server send the request on to the next: none for the last one.

    A 429 or 401 is worth another try only where the model is too; anywhere else the answer
    would be "not found", worse than the rate limit or the sign-in link.
    """
    if not following:
        return frozenset()
    model = route.model
    if model is not None and any(model in s.models for s in following):
        return RETRY_STATUSES
    return frozenset({503})


def order(servers: list[Server], route: Route, sticky: str | None = None) -> list[Server]:
    """Servers best first.

    With a model: those that have it loaded, then installed, then those whose list is not
    known yet, then the rest (so that Ollama itself answers a missing model as it does).
    Within a tier: healthy before suspect, priority, fewest in flight (with what waits in the
    server's own queue), lowest latency.
    The `sticky` server (a conversation's or a blob's earlier one) leads its tier.
    """
    if route.pin:
        host = route.pin.strip().lower()
        try:
            prefix: str | None = parse_device_id(route.pin, min_digits=MIN_PIN_LENGTH)
        except DeviceIdError:
            prefix = None  # not an ID: a host, or host:port
        servers = [s for s in servers if _matches(s, prefix, host)]
    model = route.model
    if model is None:
        servers = sorted(servers, key=_rank)
    else:
        servers = sorted(servers, key=lambda s: (_tier(s, model), *_rank(s)))
    if sticky is not None:
        for index, server in enumerate(servers):
            if server.key == sticky:
                if model is None or _tier(server, model) == _tier(servers[0], model):
                    servers.insert(0, servers.pop(index))
                break
    return servers


def _tier(server: Server, model: str) -> int:
    if model in server.loaded:
        return 0
    if model in server.models:
        return 1
    return 2 if not server.models_known else 3


def _rank(server: Server) -> tuple[bool, int, int, float]:
    latency = server.latency if server.latency is not None else math.inf
    # Busy: what we have in flight there, plus what waits in its own queue (other devices').
    busy = server.inflight + server.queue
    return (server.state is not ServerState.HEALTHY, -server.priority, busy, latency)


def _matches(server: Server, prefix: str | None, host: str) -> bool:
    if prefix is not None and server.device_id and server.device_id.startswith(prefix):
        return True
    return host in (server.address.host.lower(), str(server.address).lower())
