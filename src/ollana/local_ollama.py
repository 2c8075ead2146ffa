"""The Ollama at the configured address: what answers there, watched while server mode runs."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from multidict import CIMultiDict
from yarl import URL

from ollana.config import HostPort
from ollana.http import FETCH_ERRORS, ConnectionPool, is_ollana
from ollana.ollama_api import PS_PATH, TAGS_PATH, VERSION_PATH, model_names

__all__ = [
    "DETECT_TIMEOUT",
    "OllamaInfo",
    "OllamaWatch",
    "ollama_pool",
    "probe_ollama",
    "who_listens",
]

log = logging.getLogger(__name__)

DETECT_TIMEOUT: Final = 1.0
_MAX_ANSWER: Final = 1 << 20  # a version answer is a few bytes; a model list, some KB


@dataclass(frozen=True, slots=True)
class OllamaInfo:
    """What GET /api/version told us about whatever listens at the Ollama address."""

    reachable: bool
    version: str | None = None
    is_ollana: bool = False


def ollama_pool(
    url: str, *, connect_timeout: float = DETECT_TIMEOUT, read_timeout: float = 300.0
) -> tuple[ConnectionPool, str]:
    """A connection pool to the Ollama at `url`, and the path prefix (OLLAMA_HOST's) it takes."""
    parsed = URL(url)
    https = parsed.scheme == "https"
    pool = ConnectionPool(
        parsed.raw_host or "127.0.0.1",
        parsed.port or (443 if https else 80),
        # An https Ollama is verified as any web server is.
        ssl_context=ssl.create_default_context() if https else None,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        label=f"Ollama at {parsed.host}:{parsed.port}",
    )
    return pool, parsed.raw_path.rstrip("/")


async def _get(pool: ConnectionPool, target: str, timeout: float) -> tuple[int, bool, object]:
    """GET `target`: its status, whether an ollana answered, and its JSON body."""
    async with asyncio.timeout(timeout):
        response = await pool.request("GET", target, CIMultiDict(), None)
        async with response:
            body = await response.content.read(_MAX_ANSWER)
    return response.status, is_ollana(response.headers), json.loads(body)


async def probe_ollama(
    url: str, timeout: float = DETECT_TIMEOUT, pool: tuple[ConnectionPool, str] | None = None
) -> OllamaInfo:
    """Ask GET /api/version at an Ollama URL; an ollana answering there is told apart."""
    own = pool is None
    upstream, prefix = pool or ollama_pool(url, connect_timeout=timeout)
    try:
        status, ollana, body = await _get(upstream, prefix + VERSION_PATH, timeout)
    except FETCH_ERRORS:
        return OllamaInfo(False)
    finally:
        if own:
            await upstream.close()
    if ollana:
        return OllamaInfo(True, None, is_ollana=True)
    if status == 200 and isinstance(body, dict):
        version = body.get("version")
        return OllamaInfo(True, version if isinstance(version, str) else None)
    return OllamaInfo(False)


class OllamaWatch:
    """Probes the local Ollama: whether it is up, its version and its models' digest."""

    def __init__(
        self,
        url: str,
        interval: float,
        timeout: float,
        on_change: Callable[[OllamaWatch], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.interval = interval
        self.timeout = timeout
        self.on_change = on_change
        self.up = False
        self.version: str | None = None
        self.models: tuple[str, ...] = ()
        self.loaded: tuple[str, ...] = ()  # in memory (/api/ps): for the dashboard only
        self.since = time.monotonic()

    async def run(self) -> None:
        """Probe until cancelled; call on_change on every change of state, version or models."""
        pool = ollama_pool(self.url, connect_timeout=self.timeout)
        try:
            while True:
                info = await probe_ollama(self.url, self.timeout, pool)
                up = info.reachable and not info.is_ollana
                models = await self._models(pool) if up else ()
                self.loaded = await self._models(pool, PS_PATH, self.loaded) if up else ()
                if (up, info.version, models) != (self.up, self.version, self.models):
                    if up != self.up:
                        log.info("Ollama at %s is %s", self.url, "up" if up else "down")
                        self.since = time.monotonic()
                    self.up, self.version, self.models = up, info.version, models
                    if self.on_change is not None:
                        self.on_change(self)
                await asyncio.sleep(self.interval)
        finally:
            await asyncio.shield(pool[0].close())

    async def _models(
        self, pool: tuple[ConnectionPool, str], path: str = TAGS_PATH, known: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        upstream, prefix = pool
        try:
            _, _, body = await _get(upstream, prefix + path, self.timeout)
        except FETCH_ERRORS:
            return known if path != TAGS_PATH else self.models
        return tuple(sorted(model_names(body)))


async def who_listens(address: HostPort) -> str:
    """Best effort: ' by Ollama 0.5.7' or ' by another ollana' for an address in use."""
    info = await probe_ollama(f"http://{HostPort(address.connect_host, address.port)}")
    if info.is_ollana:
        return " by another ollana"
    if info.reachable and info.version:
        return f" by Ollama {info.version}"
    return " by another program"
