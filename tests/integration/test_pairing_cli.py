"""`ollana pair` between real processes on loopback: a code pairs a client with a server."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from ollana.identity import DeviceStore, load_identity
from tests.support.ports import free_port
from tests.support.process import OllanaProcess, ollana_env
from tests.support.waiting import until

FAST = {"OLLANA_TIMINGS_PROBE_INTERVAL": "0.3", "OLLANA_WAIT_FOR_SERVER": "1"}
CODE_LINE = re.compile(r"ollana pair (?P<code>\d{6})")


@dataclass
class Pair:
    root: Path
    server: OllanaProcess
    client: OllanaProcess
    admin: int

    @property
    def server_home(self) -> Path:
        return self.root / "server"

    @property
    def client_home(self) -> Path:
        return self.root / "client"


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async with contextlib.AsyncExitStack() as stack:
        ollama = await OllanaProcess.start(
            "emulate", "--listen", "127.0.0.1:0", "--log-level", "error", home=tmp_path / "ollama"
        )
        await stack.enter_async_context(ollama)
        admin = free_port()
        server = await OllanaProcess.start(
            "serve", "--mode", "server", "--listen", "127.0.0.1:0", "--ollama", ollama.url,
            "--no-discovery", "--admin-listen", f"127.0.0.1:{admin}", "--name", "the server",
            home=tmp_path / "server", env=FAST,
        )  # fmt: skip
        await stack.enter_async_context(server)
        client = await OllanaProcess.start(
            "serve", "--mode", "client", "--listen", "127.0.0.1:0", "--no-discovery",
            "--server", f"127.0.0.1:{server.port}", "--admin-listen", "off",
            "--name", "the laptop", home=tmp_path / "client", env=FAST,
        )  # fmt: skip
        await stack.enter_async_context(client)
        yield Pair(tmp_path, server, client, admin)


async def run(home: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollana", "pair", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ollana_env(home),
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def open_window(pair: Pair) -> tuple[asyncio.subprocess.Process, str]:
    """`ollana pair` on the server's machine: the running process, and the code it shows."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollana", "pair", "--admin", f"127.0.0.1:{pair.admin}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=ollana_env(pair.server_home),
    )  # fmt: skip
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert line, "ollana pair ended before showing a code"
        found = CODE_LINE.search(line)
        if found:
            return proc, found["code"]


async def generate(url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False}
        ) as response,  # fmt: skip
    ):
        await response.read()
        return response.status


async def test_a_code_pairs_both_ways_and_requests_then_go_through(pair: Pair) -> None:
    assert await generate(pair.client.url) == 503  # not paired: the server refuses us
    host, code = await open_window(pair)
    status, out, err = await run(
        pair.client_home, code, "--server", f"127.0.0.1:{pair.server.port}", "--name", "the laptop"
    )
    assert status == 0, err
    server_id = load_identity(pair.server_home).device_id
    client_id = load_identity(pair.client_home).device_id
    assert "the server" in out and server_id[:8] in out.replace("-", "")
    host_out, host_err = await asyncio.wait_for(host.communicate(), 15)
    assert host.returncode == 0, host_err
    assert "the laptop" in host_out.decode() and client_id[:8] in host_out.decode()
    # Each allows the other, with its certificate and name.
    on_server = DeviceStore(pair.server_home).allowed()[client_id]
    on_client = DeviceStore(pair.client_home).allowed()[server_id]
    assert (on_server.name, on_server.cert_der) == (
        "the laptop",
        load_identity(pair.client_home).cert_der,
    )
    assert (on_client.name, on_client.cert_der) == (
        "the server",
        load_identity(pair.server_home).cert_der,
    )

    async def through() -> bool:
        return await generate(pair.client.url) == 200

    await until(through, "a request through the client succeeds", timeout=20)


async def test_wrong_codes_close_the_window_and_the_right_one_then_fails(pair: Pair) -> None:
    host, code = await open_window(pair)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    target = f"127.0.0.1:{pair.server.port}"
    for attempt in range(3):
        status, _, err = await run(pair.client_home, wrong, "--server", target)
        assert status == 1
        assert "wrong pairing code" in err, (attempt, err)
    status, _, err = await run(pair.client_home, code, "--server", target)
    assert status == 1
    assert "no pairing window" in err
    _, host_err = await asyncio.wait_for(host.communicate(), 15)
    assert host.returncode == 1
    assert "too many wrong attempts" in host_err.decode()
    assert DeviceStore(pair.server_home).allowed() == {}
    assert DeviceStore(pair.client_home).allowed() == {}
