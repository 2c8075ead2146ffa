"""The things a benchmark runs: backends, and the three ways to reach them.

- direct: the load generator talks to the backend itself;
- ollana: client mode → server mode (mutual TLS) → backend, as two real processes;
- nginx: the same shape with two nginx processes (mutual TLS between them).

Everything listens on 127.0.0.1, on ports the OS (or a free-port probe, for nginx) picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.common import ProcMeter
from bench.nginx import Nginx, back_config, backend_config, free_port, front_config, make_cert
from ollana.demo import pair

__all__ = [
    "Child",
    "Target",
    "direct",
    "emulator",
    "nginx_chain",
    "ollana_chain",
    "pair",
    "static_backend",
]

READY = re.compile(rb"listening on (?P<url>\S+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 40.0
HEALTHY_TIMEOUT = 15.0
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
# The interpreter that runs ollana and the emulator: BENCH_PYTHON compares another one
# (its environment must import ollana: install it there, or point PYTHONPATH at src/).
PYTHON = os.environ.get("BENCH_PYTHON") or sys.executable


@dataclass(slots=True)
class Target:
    """Where a load generator sends requests, and the processes in the way to meter."""

    name: str
    url: str
    procs: dict[str, ProcMeter] = field(default_factory=dict)


class Child:
    """One `ollana …` process; `url` comes from the 'listening on' line it prints."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.url = ""
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.url.rsplit(":", 1)[1].rstrip("/"))

    @classmethod
    async def start(cls, name: str, args: list[str], log: Path, env: Mapping[str, str]) -> Child:
        """Start `python -m ollana ARGS…`; return once it says where it listens."""
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                PYTHON, "-m", "ollana", *args,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err,
                env=dict(env),
            )  # fmt: skip
        child = cls(proc, name)
        try:
            await asyncio.wait_for(child._ready(log), START_TIMEOUT)
        except BaseException:
            await child.stop()
            raise
        child._drain = asyncio.create_task(child._read_rest())
        return child

    async def _ready(self, log: Path) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            if match := READY.search(line):
                self.url = match["url"].decode().replace("https://", "http://")
                return
        await self.proc.wait()
        raise RuntimeError(f"{self.name} exited before listening:\n{_tail(log)}")

    async def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)
        return self.proc.returncode


def _tail(log: Path) -> str:
    """The end of a log, to say why a process did not start."""
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


def child_env(home: Path | None = None) -> dict[str, str]:
    """A clean environment: no proxies, no inherited OLLANA_*/OLLAMA_* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OLLANA_", "OLLAMA_")) and k.upper() not in _PROXY_VARS
    }
    env["PYTHONUNBUFFERED"] = "1"
    # The emulator runs any number of streams at once: no fair queue in front of it, so
    # that the figures are the proxy's own (bench.fairshare turns it on by flag).
    env["OLLANA_OLLAMA_PARALLEL"] = "0"
    if home is not None:
        env["OLLANA_HOME"] = str(home)
    return env


@contextlib.asynccontextmanager
async def emulator(tmp: Path, tokens_per_second: float | None = None) -> AsyncIterator[Child]:
    """`ollana emulate` on a free loopback port, paced if asked."""
    args = ["emulate", "--listen", "127.0.0.1:0", "--log-level", "warn"]
    if tokens_per_second:
        args += ["--tokens-per-second", str(tokens_per_second)]
    child = await Child.start("emulator", args, tmp / "emulator.log", child_env())
    try:
        yield child
    finally:
        await child.stop()


@contextlib.asynccontextmanager
async def static_backend(tmp: Path, big_file: Path | None = None) -> AsyncIterator[Nginx]:
    """nginx answering Ollama's small endpoints with static bodies (and /big from a file)."""
    port = free_port()
    with Nginx(tmp, "backend", backend_config(tmp, port, big_file), port) as nginx:
        yield nginx


def direct(url: str) -> Target:
    """The backend itself, nothing in between."""
    return Target("direct", url)


# The client may open connections ahead of demand (off by default: they count against a
# server's per-device share); the benchmarks measure with it on.
PRECONNECT = 1024


@contextlib.asynccontextmanager
async def ollana_chain(
    tmp: Path,
    backend_url: str,
    *,
    access_log: bool = True,
    server_env: Mapping[str, str] | None = None,
    client_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Target]:
    """ollana client → ollana server (mutual TLS) → backend, as two paired processes.

    `server_env` and `client_env` add OLLANA_* settings to each one's environment.

    With `access_log` (ollana's default) each request is logged at INFO; without, the
    level is WARNING, which also silences the access log.
    """
    os.makedirs(tmp, exist_ok=True)
    server_home, client_home = tmp / "ollana-server", tmp / "ollana-client"
    pair(server_home, client_home)
    common = ["--listen", "127.0.0.1:0", "--no-discovery", "--admin-listen", "off"]
    common += ["--log-level", "info" if access_log else "warn"]
    server = await Child.start(
        "ollana server",
        ["serve", "--mode", "server", *common, "--ollama", backend_url],
        tmp / "ollana-server.log",
        {**child_env(server_home), **(server_env or {})},
    )
    try:
        client = await Child.start(
            "ollana client",
            [
                *("serve", "--mode", "client", *common),
                *("--server", f"127.0.0.1:{server.port}", "--limit", f"preconnect={PRECONNECT}"),
            ],
            tmp / "ollana-client.log",
            {**child_env(client_home), **(client_env or {})},
        )
        try:
            await _await_healthy(client.url, tmp / "ollana-client.log")
            yield Target(
                "ollana",
                client.url,
                {
                    "client": ProcMeter(client.pid, "client"),
                    "server": ProcMeter(server.pid, "server"),
                },
            )
        finally:
            await client.stop()
    finally:
        await server.stop()


async def _await_healthy(url: str, log: Path) -> None:
    """Until the client has a healthy server: its first probe has to answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEALTHY_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/api/version") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the ollana chain did not become ready:\n{_tail(log)}")


@contextlib.asynccontextmanager
async def nginx_chain(
    tmp: Path, backend_port: int, *, access_log: bool = True
) -> AsyncIterator[Target]:
    """nginx front → nginx back (mutual TLS, client certificate required) → backend.

    With `access_log` (nginx's default, as ollana's) each request is logged to a file.
    """
    os.makedirs(tmp, exist_ok=True)
    front_cert, back_cert = make_cert(tmp, "front"), make_cert(tmp, "back")
    back_port, front_port = free_port(), free_port()
    back_conf = back_config(
        tmp, back_port, backend_port, back_cert, front_cert, access_log=access_log
    )
    front_conf = front_config(
        tmp, front_port, back_port, front_cert, back_cert, access_log=access_log
    )
    back = Nginx(tmp, "back", back_conf, back_port)
    front = Nginx(tmp, "front", front_conf, front_port)
    with back, front:
        procs = {}
        for name, nginx in (("front", front), ("back", back)):
            worker = nginx.worker_pid()
            if worker is not None:
                procs[name] = ProcMeter(worker, name)
        async with (
            aiohttp.ClientSession() as session,
            session.get(front.url + "/api/version") as response,
        ):
            if response.status >= 500:
                raise RuntimeError(f"the nginx chain answers {response.status}:\n{front.errors()}")
        yield Target("nginx", front.url, procs)
