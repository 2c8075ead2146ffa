"""Mode detection, and the parts each mode runs, started and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import aiohttp

from ollana.config import HostPort, Settings

__all__ = ["ModeDecision", "OllamaInfo", "detect_mode", "probe_ollama"]

log = logging.getLogger(__name__)

DETECT_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class OllamaInfo:
    """What GET /api/version told us about whatever listens at the Ollama address."""

    reachable: bool
    version: str | None = None
    is_ollana: bool = False


@dataclass(frozen=True, slots=True)
class ModeDecision:
    """The mode to run in, and why."""

    mode: Literal["server", "client"]
    reason: str


async def probe_ollama(
    url: str, timeout: float = DETECT_TIMEOUT, session: aiohttp.ClientSession | None = None
) -> OllamaInfo:
    """Ask GET /api/version at an Ollama URL; an ollana answering there is told apart."""
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.get(
            url.rstrip("/") + "/api/version", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            if any(k.lower().startswith("x-ollana-") for k in response.headers):
                return OllamaInfo(True, None, is_ollana=True)
            body = await response.json(content_type=None)
            if response.status == 200 and isinstance(body, dict):
                version = body.get("version")
                return OllamaInfo(True, version if isinstance(version, str) else None)
            return OllamaInfo(False)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return OllamaInfo(False)
    finally:
        if own:
            await session.close()


async def detect_mode(settings: Settings) -> ModeDecision:
    """Server mode when a real Ollama answers at the Ollama address, client mode otherwise."""
    if settings.force_server_mode:
        return ModeDecision("server", "--force-server-mode")
    if settings.mode != "auto":
        return ModeDecision(settings.mode, f"--mode {settings.mode}")
    info = await probe_ollama(settings.ollama)
    if info.is_ollana:
        return ModeDecision("client", f"{settings.ollama} is another ollana, not Ollama")
    if info.reachable:
        return ModeDecision("server", f"Ollama {info.version or '?'} answers at {settings.ollama}")
    return ModeDecision("client", f"no Ollama answers at {settings.ollama}")


class OllamaWatch:
    """Probes the local Ollama; `up` flips, and callbacks run, when it comes and goes."""

    def __init__(self, url: str, interval: float, timeout: float) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.up = False
        self.version: str | None = None
        self.changed = asyncio.Event()
        self.since = time.monotonic()

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Probe forever; set `changed` on every transition."""
        while True:
            info = await probe_ollama(self.url, self.timeout, session)
            up = info.reachable and not info.is_ollana
            if up != self.up:
                self.up = up
                self.version = info.version
                self.since = time.monotonic()
                log.info("Ollama at %s is %s", self.url, "up" if up else "down")
                self.changed.set()
            await asyncio.sleep(self.interval)


@contextlib.asynccontextmanager
async def running_task(coro: object, name: str) -> AsyncIterator[asyncio.Task[None]]:
    """Run a coroutine as a task for the duration of a block; cancel and await it after."""
    task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def local_address(address: HostPort) -> HostPort:
    """The address to reach a listener on this machine."""
    return HostPort(address.connect_host, address.port)
