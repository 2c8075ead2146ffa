"""Run `ollana …` as a real subprocess and wait for the line that says it listens."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["OllanaProcess", "ollana_env"]

READY = re.compile(rb"listening on (?P<url>\S+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def ollana_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a child ollana: its own home, no proxies, no inherited OLLANA_*."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OLLANA_", "OLLAMA_")) and k.upper() not in _PROXY_VARS
    }
    env["OLLANA_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    # The emulator runs any number of requests at once, where Ollama queues them: no fair
    # queue in front of it unless a test asks for one.
    env["OLLANA_OLLAMA_PARALLEL"] = "0"
    env.update(extra or {})
    return env


class OllanaProcess:
    """One `ollana` child process; `url` and `port` come from its 'listening on' line."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.url = ""
        self.port = 0
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, *args: str, home: Path, env: Mapping[str, str] | None = None, log: Path | None = None
    ) -> OllanaProcess:
        """Start `ollana ARGS…` and return once it printed that it listens."""
        log = log or home / f"ollana-{args[0]}.log"
        home.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ollana", *args,
                stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL,
                env=ollana_env(home, env),
            )  # fmt: skip
        self = cls(proc, log)
        try:
            await asyncio.wait_for(self._await_ready(), START_TIMEOUT)
        except BaseException:
            await self.kill()
            raise
        self._reader = asyncio.create_task(self._drain())
        return self

    async def _await_ready(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                code = await self.proc.wait()
                raise RuntimeError(
                    f"ollana exited with {code} before listening:\n{self.log.read_text()}"
                )
            self.lines.append(line.decode(errors="replace"))
            match = READY.search(line)
            if match:
                self.url = match["url"].decode()
                self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
                return

    async def _drain(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    async def send_signal(self, signum: int = signal.SIGTERM) -> None:
        """Send a signal (SIGTERM by default)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signum)

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it to exit; returns its exit code."""
        await self.send_signal(signum)
        try:
            code = await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            await self.kill()
            raise
        await self._finish_reader()
        return code

    async def kill(self) -> None:
        """SIGKILL, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()
        await self._finish_reader()

    async def _finish_reader(self) -> None:
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    async def __aenter__(self) -> OllanaProcess:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.returncode is None:
            await self.kill()
        await self._finish_reader()
        if self.proc.stdout is not None:
            self.proc._transport.close()  # type: ignore[attr-defined]
