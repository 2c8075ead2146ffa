"""Emulators for tests: in-process on a free port, or as a real `ollana emulate` process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from aiohttp import web

from ollana.emulator import STATS_KEY, EmulatorConfig, EmulatorStats, create_app, serving

__all__ = [
    "EmulatorProcess",
    "RunningEmulator",
    "emulator_process",
    "running_emulator",
]

_LISTENING = re.compile(r"^Ollama emulator listening on (http://\S+:(\d+))$")


@dataclass(frozen=True, slots=True)
class RunningEmulator:
    """An emulator serving in this process."""

    url: str
    port: int
    app: web.Application

    @property
    def stats(self) -> EmulatorStats:
        """Its counters and installed models."""
        return self.app[STATS_KEY]


@contextlib.asynccontextmanager
async def running_emulator(config: EmulatorConfig | None = None) -> AsyncIterator[RunningEmulator]:
    """Serve an emulator on 127.0.0.1 and a free port for the duration of the block."""
    app = create_app(config or EmulatorConfig())
    async with serving(app, "127.0.0.1", 0) as port:
        yield RunningEmulator(f"http://127.0.0.1:{port}", port, app)


@dataclass(frozen=True, slots=True)
class EmulatorProcess:
    """A running `ollana emulate` process and the URL it printed."""

    process: subprocess.Popen[str]
    url: str
    port: int


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[EmulatorProcess]:
    """Run `ollana emulate --listen 127.0.0.1:0 ARGS…`; it is stopped with SIGTERM afterwards."""
    command = [sys.executable, "-m", "ollana", "emulate", "--listen", "127.0.0.1:0", *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = _LISTENING.match(line)
        if match is None:
            process.kill()
            _, errors = process.communicate()
            raise AssertionError(f"no listening line, got {line!r}; stderr: {errors}")
        yield EmulatorProcess(process, match.group(1), int(match.group(2)))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
