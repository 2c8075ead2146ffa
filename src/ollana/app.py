"""Mode detection, and the parts each mode runs, started and stopped in order."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp

from ollana.config import HostPort, Settings
from ollana.ollama_api import model_names

__all__ = [
    "ModeDecision",
    "OllamaInfo",
    "OllamaWatch",
    "detect_mode",
    "probe_ollama",
    "who_listens",
]

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
        self.since = time.monotonic()

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Probe until cancelled; call on_change on every change of state, version or models."""
        while True:
            info = await probe_ollama(self.url, self.timeout, session)
            up = info.reachable and not info.is_ollana
            models = await self._models(session) if up else ()
            if (up, info.version, models) != (self.up, self.version, self.models):
                if up != self.up:
                    log.info("Ollama at %s is %s", self.url, "up" if up else "down")
                    self.since = time.monotonic()
                self.up, self.version, self.models = up, info.version, models
                if self.on_change is not None:
                    self.on_change(self)
            await asyncio.sleep(self.interval)

    async def _models(self, session: aiohttp.ClientSession) -> tuple[str, ...]:
        try:
            async with session.get(
                self.url + "/api/tags", timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                body = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return self.models
        return tuple(sorted(model_names(body)))


async def who_listens(address: HostPort) -> str:
    """Best effort: ' by Ollama 0.5.7' or ' by another ollana' for an address in use."""
    info = await probe_ollama(f"http://{HostPort(address.connect_host, address.port)}")
    if info.is_ollana:
        return " by another ollana"
    if info.reachable and info.version:
        return f" by Ollama {info.version}"
    return " by another program"
