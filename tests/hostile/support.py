"""Helpers for the hostile tests: a running chain of processes, raw exchanges, memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ollana.demo import pair
from ollana.identity import load_identity
from ollana.identity.tls import client_context
from tests.support import OllanaProcess

__all__ = [
    "HANG_GUARD",
    "Chain",
    "Outcome",
    "exchange",
    "parse_response",
    "rss_kib",
    "running_chain",
]

HANG_GUARD = (
    20.0  # fails an exchange that would otherwise wait forever; never reached when it works
)
QUIET = ("--admin-listen", "off", "--log-level", "warning")


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass(frozen=True)
class Outcome:
    """What came back for one raw request: a status and body, or nothing before the close."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    raw: bytes

    @property
    def closed(self) -> bool:
        """The connection was closed without an answer."""
        return self.status is None

    def error(self) -> object:
        """The `error` of an Ollama-style JSON body (None when there is none)."""
        if not self.headers.get("content-type", "").startswith("application/json"):
            return None
        try:
            document = json.loads(self.body)
        except ValueError:
            return None
        return document.get("error") if isinstance(document, dict) else None

    def __str__(self) -> str:
        return "closed" if self.closed else f"{self.status} {self.body[:120]!r}"


def parse_response(raw: bytes) -> Outcome:
    """The first response in raw bytes read until the peer closed."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        return Outcome(None, {}, b"", raw)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    return Outcome(status, headers, rest[: int(length)] if length else rest, raw)


async def exchange(
    port: int,
    data: bytes,
    *,
    tls: ssl.SSLContext | None = None,
    half_close: bool = False,
    timeout: float = HANG_GUARD,
) -> Outcome:
    """Send raw bytes, read until the server closes; the first response in what came."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="ollana" if tls else None
        )
        try:
            with contextlib.suppress(ConnectionError):
                writer.write(data)
                await writer.drain()
                if half_close and writer.can_write_eof():
                    writer.write_eof()
            raw = b""
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
    return parse_response(raw)


@dataclass
class Chain:
    """An emulated Ollama, a server in front of it and a client using it; all processes."""

    emulator: OllanaProcess
    server: OllanaProcess
    client: OllanaProcess
    client_home: Path

    def client_tls(self) -> ssl.SSLContext:
        """TLS as the paired client device speaks it to the server."""
        return client_context(load_identity(self.client_home))

    def processes(self) -> dict[str, OllanaProcess]:
        """The processes by role."""
        return {"emulator": self.emulator, "server": self.server, "client": self.client}


@contextlib.asynccontextmanager
async def running_chain(
    tmp: Path,
    *,
    client_env: Mapping[str, str] | None = None,
    server_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Chain]:
    """Start emulator → server (mutual TLS, paired) → client (the server given statically)."""
    server_home, client_home = tmp / "server-home", tmp / "client-home"
    pair(server_home, client_home)
    async with contextlib.AsyncExitStack() as stack:
        emulator = await stack.enter_async_context(
            await OllanaProcess.start(
                "emulate", "--listen", "127.0.0.1:0", "--log-level", "warning",
                home=tmp / "emulator-home", log=tmp / "emulator.log",
            )
        )  # fmt: skip
        server = await stack.enter_async_context(
            await OllanaProcess.start(
                "serve", "--mode", "server", "--listen", "127.0.0.1:0", "--no-discovery",
                "--ollama", emulator.url, *QUIET,
                home=server_home, env=server_env, log=tmp / "server.log",
            )
        )  # fmt: skip
        client = await stack.enter_async_context(
            await OllanaProcess.start(
                "serve", "--mode", "client", "--listen", "127.0.0.1:0", "--no-discovery",
                "--server", f"127.0.0.1:{server.port}", "--wait-for-server", "20", *QUIET,
                home=client_home, env=client_env, log=tmp / "client.log",
            )
        )  # fmt: skip
        yield Chain(emulator, server, client, client_home)
