"""Static servers in any start order: a client given `--server HOST:PORT` (no discovery) and
a server that allow each other by device ID only, as users type it, so that the server learns
the client's certificate from a hello alone. Real processes; the client is usable once a
request through it reaches the server's Ollama."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ollana.identity import DeviceStore, load_identity, short_device_id
from ollana.identity.store import SEEN_FILE
from tests.integration.cluster_fixtures import Cluster, Emulator, cluster, until
from tests.support.ports import free_port
from tests.support.process import OllanaProcess

MODEL = "llama3.2:latest"
# Retries shrunk, so that a test waits milliseconds for each one.
RETRIES = {
    "OLLANA_TIMINGS_HELLO_RETRY_FIRST": "0.02",
    "OLLANA_TIMINGS_HELLO_RETRY_MAX": "0.1",
    "OLLANA_TIMINGS_HELLO_RETRY_REFUSED": "0.1",
}


@dataclass
class StaticSetup:
    """A cluster, its emulator, the server's fixed port and the client's admin port."""

    c: Cluster
    ollama: Emulator
    port: int
    admin: int
    session: aiohttp.ClientSession

    def allow(self, home: str, other: str) -> None:
        """`ollana device allow ID` on `home`: the other device's ID, not its certificate."""
        DeviceStore(self.c.homes[home]).allow(self.c.device_id(other))

    async def server(self, name: str = "server") -> OllanaProcess:
        """The server, on the port the client was told."""
        return await self.c.server_process(
            name, self.ollama, "--no-discovery", listen=f"127.0.0.1:{self.port}"
        )

    async def client(self) -> OllanaProcess:
        """The client, knowing the server only by address; requests never wait for it."""
        return await self.c.client_process(
            "client", "--no-discovery", "--server", f"127.0.0.1:{self.port}",
            "--wait-for-server", "0", "--admin-listen", f"127.0.0.1:{self.admin}",
            env=RETRIES,
        )  # fmt: skip

    async def usable(self, client: OllanaProcess) -> bool:
        """Whether a request through the client reaches the server's Ollama."""
        body = {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
        async with self.session.post(f"{client.url}/api/generate", json=body) as response:
            await response.read()
            return response.status == 200

    async def status(self) -> dict[str, Any]:
        """The client's /status entry for its static server."""
        async with self.session.get(f"http://127.0.0.1:{self.admin}/status") as response:
            doc = await response.json()
        (server,) = doc["servers"]
        assert isinstance(server, dict)
        return server


@contextlib.asynccontextmanager
async def static_setup(
    root: Path, *, server_allows_client: bool = True
) -> AsyncIterator[StaticSetup]:
    """Data dirs for a server and a client that allow each other by ID (the client the server
    always; the server the client unless told not to)."""
    async with cluster(root) as c, aiohttp.ClientSession() as session:
        for name in ("server", "client"):
            c.homes[name] = root / name
            load_identity(c.homes[name])
        setup = StaticSetup(c, await c.emulator(MODEL), free_port(), free_port(), session)
        setup.allow("client", "server")
        if server_allows_client:
            setup.allow("server", "client")
        yield setup


async def test_a_client_started_before_its_static_server_uses_it_once_it_listens(
    tmp_path: Path,
) -> None:
    async with static_setup(tmp_path) as s:
        client = await s.client()
        # Nothing listens yet: the introduction is retried, and status says why it waits.
        await until(
            lambda: _problem_has(s, "hello failed"), "the client to say the server is unreachable"
        )
        assert not await s.usable(client)
        await s.server()
        await until(lambda: s.usable(client), "a request through the client")
        await until(lambda: _problem_is(s, None), "the problem to be cleared")


async def test_a_client_started_after_its_static_server_uses_it(tmp_path: Path) -> None:
    async with static_setup(tmp_path) as s:
        await s.server()
        client = await s.client()
        await until(lambda: s.usable(client), "a request through the client")


async def test_a_restarted_static_server_that_forgot_the_client_is_reintroduced(
    tmp_path: Path,
) -> None:
    async with static_setup(tmp_path) as s:
        server = await s.server()
        client = await s.client()
        await until(lambda: s.usable(client), "a request through the client")
        assert await server.stop() == 0
        # A new run that no longer knows the client's certificate (only its allowed ID).
        (s.c.homes["server"] / SEEN_FILE).unlink()
        await until(lambda: _state_is(s, "down"), "the client to find the server down")
        await s.server()
        await until(lambda: s.usable(client), "a request through the restarted server")


async def test_a_static_server_that_allows_the_client_later_is_used_then(
    tmp_path: Path,
) -> None:
    async with static_setup(tmp_path, server_allows_client=False) as s:
        await s.server()
        client = await s.client()
        await until(
            lambda: _problem_has(s, "does not take this device's certificate"),
            "the client to say the server refuses it",
        )
        assert not await s.usable(client)
        ours = s.c.device_id("client")[:16]
        assert f"ollana device allow {ours}" in str((await s.status())["problem"])
        s.allow("server", "client")  # the running server reads its allow list again
        await until(lambda: s.usable(client), "a request through the client")
        await until(lambda: _problem_is(s, None), "the problem to be cleared")


async def test_a_reinstalled_static_server_is_named_once_and_not_used(tmp_path: Path) -> None:
    async with static_setup(tmp_path) as s:
        first = await s.server()
        client = await s.client()
        await until(lambda: s.usable(client), "a request through the client")
        assert await first.stop() == 0
        # Another device at the same address: the same box with a fresh install.
        s.c.homes["box"] = tmp_path / "box"
        s.allow("box", "client")
        await s.server("box")
        box = short_device_id(s.c.device_id("box"))
        await until(lambda: _problem_has(s, f"presents device {box}"), "the change in status")
        problem = str((await s.status())["problem"])
        assert short_device_id(s.c.device_id("server")) in problem
        assert "reinstalled" in problem
        # It keeps being tried (a user may allow it), without a log line each time.
        retries = _count(client, "hello again")
        await until(lambda: _count(client, "hello again") >= retries + 3, "more hellos")
        assert _count(client, "reinstalled") == 1
        assert not await s.usable(client)
        # Allowing the new device (it is the user's box) makes it usable.
        s.allow("client", "box")
        await until(lambda: s.usable(client), "a request through the client")


async def _problem_has(s: StaticSetup, text: str) -> bool:
    return text in str((await s.status()).get("problem"))


async def _problem_is(s: StaticSetup, problem: str | None) -> bool:
    return (await s.status()).get("problem") == problem


async def _state_is(s: StaticSetup, state: str) -> bool:
    return (await s.status()).get("state") == state


def _count(process: OllanaProcess, text: str) -> int:
    return sum(1 for line in process.log.read_text().splitlines() if text in line)
