"""Processes inside a host: started with `ip netns exec`, read line by line, stopped by pid."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lan.netns import Host

__all__ = ["READY", "NsProcess", "Record", "RequestLoop"]

READY = re.compile(r"listening on (?P<url>\S+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class NsProcess:
    """One process in a host; stdout is kept line by line, stderr goes to a log file."""

    def __init__(self, name: str, host: Host, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.host = host
        self.proc = proc
        self.log = log
        self.lines: list[str] = []
        self.url = ""
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        host: Host,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str],
        log: Path,
        ready: re.Pattern[str] = READY,
    ) -> NsProcess:
        """Start `argv` inside `host`; return once a stdout line matches `ready`."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                *host.argv(*argv),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err,
                env=dict(env),
            )  # fmt: skip
        self = cls(name, host, proc, log)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                line = await self._await_line(ready)
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.create_task(self._read())
        match = ready.search(line)
        self.url = match["url"] if match and "url" in match.groupdict() else ""
        return self

    async def _await_line(self, pattern: re.Pattern[str]) -> str:
        """Read stdout up to the first line matching `pattern`; fail if it exits first."""
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if pattern.search(line):
                return line
        code = await self.proc.wait()
        raise RuntimeError(
            f"{self.name} in {self.host.label} exited ({code}) before printing "
            f"{pattern.pattern!r}:\n{self.log_tail()}"
        )

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        """Its process id (that of the command itself: `ip netns exec` execs it)."""
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Whether it has not exited."""
        return self.proc.returncode is None

    def send_signal(self, signum: int) -> None:
        """Send a signal, if it still runs."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal it and wait for it to exit; returns the exit code."""
        self.send_signal(signum)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        finally:
            if self.running:
                await self.close()
        await self._finish()
        return code

    async def kill(self) -> None:
        """SIGKILL, as a crash would, and wait for it."""
        await self.stop(signal.SIGKILL)

    async def close(self) -> None:
        """Kill it if it still runs and release its pipes; safe to call twice."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        await self._finish()

    async def _finish(self) -> None:
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        transport = getattr(self.proc, "_transport", None)
        if transport is not None:
            transport.close()

    def log_tail(self, lines: int = 40, skip: str | None = None) -> str:
        """The end of its stderr log (without the lines that contain `skip`)."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        kept = [line for line in text if skip is None or skip not in line]
        return "\n".join(kept[-lines:])


@dataclass(frozen=True, slots=True)
class Record:
    """One request of a request loop."""

    worker: int
    seq: int
    start: float
    end: float
    status: int | None
    server: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        """Answered with a finished generation."""
        return self.status == 200 and self.error is None

    def __str__(self) -> str:
        took = self.end - self.start
        what = self.error or "ok"
        when = f"t={self.start:.3f} +{took:.3f}s"
        return f"w{self.worker}#{self.seq} {when} {self.status} {self.server} {what}"


class RequestLoop:
    """The request loop of `traffic.py loop`, read as it runs."""

    def __init__(self, proc: NsProcess, workers: int) -> None:
        self.proc = proc
        self.workers = workers
        self._records: list[Record] = []
        self._parsed = 0

    @property
    def records(self) -> list[Record]:
        """Every request finished so far, in the order they finished."""
        for line in self.proc.lines[self._parsed :]:
            data: dict[str, Any] = json.loads(line)
            if "worker" in data:
                self._records.append(Record(**data))
        self._parsed = len(self.proc.lines)
        return self._records

    def since(self, t: float) -> list[Record]:
        """Requests that started at or after `t` (time.monotonic())."""
        return [r for r in self.records if r.start >= t]

    def served(self, server: str, after: float) -> bool:
        """Whether a request that started after `after` was answered by `server`."""
        return any(r.ok and r.server == server for r in self.since(after))

    def settled(self, away_from: str, after: float, count: int) -> bool:
        """Every request in flight at `after` has finished, and `count` that started later
        were answered, none by `away_from`."""
        later = self.since(after)
        done = [r for r in later if r.ok]
        # Workers send one request at a time: one that started a request after `after`
        # has finished every earlier one.
        moved_on = len({r.worker for r in later}) == self.workers
        return moved_on and len(done) >= count and all(r.server != away_from for r in done)

    def report(self, only: Callable[[Record], bool] = lambda r: True, last: int = 60) -> str:
        """The requests, one per line, for assertion messages."""
        return "\n".join(str(r) for r in self.records if only(r))[-last * 120 :]

    async def stop(self) -> list[Record]:
        """Stop starting requests, let the ones in flight finish, return every record."""
        await self.proc.stop(signal.SIGTERM)
        return self.records
