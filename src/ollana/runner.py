"""Running ollana in the foreground: event loop, signals, mode, staged shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from ollana.app import detect_mode
from ollana.config import Settings
from ollana.modes import ClientMode, ServerMode

__all__ = ["run", "serve"]

log = logging.getLogger(__name__)

Ready = Callable[[ClientMode | ServerMode], None]


def run(settings: Settings, ready: Ready | None = None) -> int:
    """Run until SIGINT/SIGTERM; return the exit code."""
    try:
        import uvloop

        return int(uvloop.run(serve(settings, ready)))
    except ImportError:
        return asyncio.run(serve(settings, ready))


async def serve(settings: Settings, ready: Ready | None = None) -> int:
    """Detect the mode, run it until a stop signal, then shut down in stages."""
    decision = await detect_mode(settings)
    log.info("%s mode: %s", decision.mode, decision.reason)
    mode: ClientMode | ServerMode = (
        ServerMode(settings) if decision.mode == "server" else ClientMode(settings)
    )
    stop = asyncio.Event()
    _install_signals(stop)
    async with mode:
        if ready is not None:
            ready(mode)
        await stop.wait()
        log.info("stopping: no new connections, draining for up to %ss", settings.grace)
    log.info("stopped")
    return 0


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        stop.set()

    names = ["SIGINT", "SIGTERM"] + (["SIGBREAK"] if sys.platform == "win32" else [])
    for name in names:
        signum = getattr(signal, name)
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except NotImplementedError:  # Windows' event loops have no add_signal_handler
            signal.signal(signum, lambda s, _f: loop.call_soon_threadsafe(on_signal, s))
