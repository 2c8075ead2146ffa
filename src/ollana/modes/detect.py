"""Which mode `ollana serve` runs in, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ollana.config import Settings
from ollana.local_ollama import probe_ollama

__all__ = ["ModeDecision", "detect_mode"]


@dataclass(frozen=True, slots=True)
class ModeDecision:
    """The mode to run in, and why."""

    mode: Literal["server", "client"]
    reason: str


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
