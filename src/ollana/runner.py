"""Running ollana: event loop, signals, mode, staged shutdown.

Shutdown stages, one log line each: a stop signal arrives; the listener stops accepting at
once; the mode closes (discovery goodbye, in-flight requests get up to `grace` seconds, then
what is left is cancelled); the process exits 0. A second stop signal exits at once with
128 + the signal number, as a shell reports a death by signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from ollana import lifecycle
from ollana.config import Settings, check_mode
from ollana.logs import reopen_logs
from ollana.modes import ClientMode, ServerMode
from ollana.modes.detect import detect_mode

__all__ = ["SHUTDOWN_MARGIN", "STOP_SIGNALS", "run", "serve"]

log = logging.getLogger(__name__)

Mode = ClientMode | ServerMode
Ready = Callable[[Mode], None]
# Runs once the mode is known, before anything binds; raises to stop (another ollana here).
Check = Callable[[Settings, str], Awaitable[None]]

# The HTTP server waits up to a grace period for requests, cancels them, then waits up to
# one more for them to unwind; past that and this margin, we stop waiting and exit non-zero.
SHUTDOWN_MARGIN: Final = 5.0

# Ctrl-C is SIGINT everywhere; Ctrl-Break (and a service wrapper's stop) is SIGBREAK on Windows.
STOP_SIGNALS: Final = ("SIGINT", "SIGTERM") + (("SIGBREAK",) if sys.platform == "win32" else ())


def run(
    settings: Settings,
    ready: Ready | None = None,
    *,
    on_abort: Callable[[], None] | None = None,
    on_hangup: Callable[[], None] | None = None,
    check: Check | None = None,
) -> int:
    """Run until a stop signal, then shut down in stages; return the exit code.

    `on_abort` runs before an immediate exit on a second stop signal (remove the pid file);
    `on_hangup` runs on SIGHUP after the log files were reopened; `check` runs before binding.
    """
    _raise_open_file_limit()
    main = serve(settings, ready, on_abort=on_abort, on_hangup=on_hangup, check=check)
    return lifecycle.run(main)


def _raise_open_file_limit() -> None:
    """A proxy holds two sockets per stream: take the hard limit, not the common 1,024."""
    try:
        import resource
    except ImportError:  # Windows has no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.debug("open-file limit stays at %d: %s", soft, exc)


async def serve(
    settings: Settings,
    ready: Ready | None = None,
    *,
    on_abort: Callable[[], None] | None = None,
    on_hangup: Callable[[], None] | None = None,
    check: Check | None = None,
) -> int:
    """Detect the mode, run it until a stop signal, then shut down in stages."""
    stop = _Stop(on_abort)
    # SIGHUP reopens the log file; without one, it keeps its usual meaning (the terminal went).
    hangup = functools.partial(_hangup, on_hangup) if settings.log_file is not None else None
    with _signals(stop, hangup):
        decision = await detect_mode(settings)
        log.info("%s mode: %s", decision.mode, decision.reason)
        check_mode(settings, decision.mode, decision.reason)
        if check is not None:
            await check(settings, decision.mode)
        if stop.signal is not None:
            log.info("%s before start: not starting", stop.signal)
            return 0
        mode: Mode = ServerMode(settings) if decision.mode == "server" else ClientMode(settings)
        await mode.__aenter__()
        try:
            if ready is not None:
                ready(mode)
            await stop.event.wait()
        except BaseException:
            await mode.close()
            raise
        return await _shutdown(mode, settings.grace, stop.signal or "stop")


async def _shutdown(mode: Mode, grace: float, why: str) -> int:
    """The staged stop of a running mode; returns the exit code."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await mode.listener.stop_accepting()
    log.info(
        "%s: no longer accepting connections; draining %d open connection(s) for up to %gs",
        why, mode.listener.connections, grace,
    )  # fmt: skip
    try:
        async with asyncio.timeout(2 * grace + SHUTDOWN_MARGIN):
            await mode.close()
    except TimeoutError:
        log.error("not stopped %.1fs after the stop signal: exiting anyway", loop.time() - started)
        return 1
    except Exception:
        log.exception("error while stopping")
        return 1
    elapsed = loop.time() - started
    if elapsed >= grace:
        log.warning("grace period of %gs over: requests still running were cancelled", grace)
    log.info("stopped after %.1fs", elapsed)
    return 0


class _Stop:
    """The first stop signal sets `event`; the second one ends the process at once."""

    def __init__(self, on_abort: Callable[[], None] | None) -> None:
        self.event = asyncio.Event()
        self.signal: str | None = None
        self._on_abort = on_abort

    def __call__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = name
            self.event.set()
            return
        code = 128 + signum
        log.warning("second stop signal (%s): exiting now with code %d", name, code)
        try:
            if self._on_abort is not None:
                self._on_abort()
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(code)


def _hangup(extra: Callable[[], None] | None) -> None:
    files = reopen_logs()
    if extra is not None:
        extra()
    log.info("SIGHUP: reopened %s", ", ".join(map(str, files)) or "no log file")


def _hand_over(
    loop: asyncio.AbstractEventLoop, action: Callable[[], None], signum: int, frame: object
) -> None:
    loop.call_soon_threadsafe(action)


@contextlib.contextmanager
def _signals(stop: _Stop, hangup: Callable[[], None] | None) -> Iterator[None]:
    """Route stop signals (and SIGHUP, when logging to a file) to the loop, for a block."""
    loop = asyncio.get_running_loop()
    wanted: dict[int, Callable[[], None]] = {}
    for name in STOP_SIGNALS:
        signum = int(getattr(signal, name))
        wanted[signum] = functools.partial(stop, signum)
    if hangup is not None and hasattr(signal, "SIGHUP"):
        wanted[int(signal.SIGHUP)] = hangup
    via_loop: list[int] = []
    previous: dict[int, Any] = {}
    for signum, action in wanted.items():
        try:
            loop.add_signal_handler(signum, action)
            via_loop.append(signum)
        except NotImplementedError:
            # Windows event loops have no add_signal_handler: a plain handler hands over.
            previous[signum] = signal.signal(signum, functools.partial(_hand_over, loop, action))
    try:
        yield
    finally:
        for signum in via_loop:
            loop.remove_signal_handler(signum)
        for signum, old in previous.items():
            signal.signal(signum, old)
