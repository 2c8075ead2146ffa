"""Graceful stop of real `ollana serve` processes: drain, refuse, grace, second signal.

The chain is: test → client mode (plain HTTP) → server mode (mutual TLS, paired) → a small
aiohttp stand-in for Ollama in the test. The stand-in streams NDJSON and holds the stream
half-way until the test lets it go, so a stream is provably in flight when the stop signal
arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ollana.demo import pair as allow_each_other
from tests.support import OllanaProcess
from tests.support.waiting import until

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="POSIX stop signals; Windows has no SIGTERM to send"
)

WAIT = 30.0  # upper bound for things that should happen at once
TOKENS = 12
HOLD_AT = 4  # the stream stops there until the test releases it
COMMON = ("--no-discovery", "--admin-listen", "off", "--listen", "127.0.0.1:0")


class ConnectionPool:
    """A stand-in Ollama: GET /api/version, and POST /api/generate streaming NDJSON.

    options.num_predict tokens are streamed; at options.hold_after the stream waits for
    `release` (set by the test), having set `held`.
    """

    def __init__(self) -> None:
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> ConnectionPool:
        app = web.Application()
        app.router.add_get("/api/version", self._version)
        app.router.add_post("/api/generate", self._generate)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.9.0"})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        options = body.get("options", {})
        count, hold = options.get("num_predict", TOKENS), options.get("hold_after")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for i in range(count):
            if i == hold:
                self.held.set()
                await self.release.wait()
            line = {"model": body["model"], "response": f"t{i} ", "done": False}
            await response.write(json.dumps(line).encode() + b"\n")
            await asyncio.sleep(0.01)
        await response.write(json.dumps({"model": body["model"], "done": True}).encode() + b"\n")
        await response.write_eof()
        return response


@dataclass(frozen=True)
class Homes:
    """The OLLANA_HOMEs of a server and a client that allow each other."""

    server: Path
    client: Path


def pair(tmp: Path) -> Homes:
    """Two device identities, each on the other's allow list (with its certificate)."""
    homes = Homes(tmp / "server-home", tmp / "client-home")
    allow_each_other(homes.server, homes.client)
    return homes


@pytest.fixture
async def upstream() -> AsyncIterator[ConnectionPool]:
    async with ConnectionPool() as up:
        yield up


@dataclass
class Chain:
    """test → client → server → upstream, all running."""

    upstream: ConnectionPool
    server: OllanaProcess
    client: OllanaProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client.port}"


@contextlib.asynccontextmanager
async def chain(
    tmp: Path,
    upstream: ConnectionPool,
    *,
    server: tuple[str, ...] = (),
    client: tuple[str, ...] = (),
) -> AsyncIterator[Chain]:
    """Start a paired server (in front of `upstream`) and a client that uses it."""
    homes = pair(tmp)
    async with (
        await OllanaProcess.start(
            "serve", *COMMON, "--mode", "server", "--ollama", upstream.url, *server,
            home=homes.server, log=tmp / "server.log",
        ) as server_proc,
        await OllanaProcess.start(
            "serve", *COMMON, "--mode", "client", "--server", f"127.0.0.1:{server_proc.port}",
            "--wait-for-server", "20", *client,
            home=homes.client, log=tmp / "client.log",
        ) as client_proc,
    ):  # fmt: skip
        yield Chain(upstream, server_proc, client_proc)


async def wait_for_line(path: Path, pattern: str) -> str:
    """Wait until a line matching `pattern` is in the file; return it."""
    regex = re.compile(pattern)

    def found() -> str | None:
        return next((line for line in path.read_text().splitlines() if regex.search(line)), None)

    line: str = await until(found, f"{pattern!r} in {path}", WAIT, not_yet=(FileNotFoundError,))
    return line


async def exit_code(proc: OllanaProcess) -> int:
    """Wait for the process to exit by itself."""
    return await asyncio.wait_for(proc.proc.wait(), WAIT)


def held_request() -> dict[str, object]:
    options = {"num_predict": TOKENS, "hold_after": HOLD_AT}
    return {"model": "m", "prompt": "p", "stream": True, "options": options}


async def read_rest(response: aiohttp.ClientResponse) -> list[dict[str, object]] | None:
    """The remaining NDJSON objects, or None when the connection broke mid-stream."""
    try:
        return [json.loads(line) async for line in response.content if line.strip()]
    except aiohttp.ClientPayloadError:
        return None


def completed(rest: list[dict[str, object]] | None) -> bool:
    """Whether the rest of a held stream arrived whole: every token, then done."""
    if rest is None:
        return False
    tokens = [c.get("response") for c in rest[:-1]]
    return tokens == [f"t{i} " for i in range(1, TOKENS)] and rest[-1].get("done") is True


async def assert_refused(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()


@contextlib.asynccontextmanager
async def held_stream(c: Chain) -> AsyncIterator[aiohttp.ClientResponse]:
    """A stream through the chain, held by the upstream after its first tokens."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(c.url + "/api/generate", json=held_request()) as response,
    ):
        assert response.status == 200, await response.text()
        assert json.loads(await response.content.readline())["response"] == "t0 "
        await asyncio.wait_for(c.upstream.held.wait(), WAIT)
        yield response


@pytest.mark.parametrize(
    ("stopped", "signum"),
    [
        ("server", signal.SIGTERM),
        ("client", signal.SIGTERM),
        ("client", signal.SIGINT),
    ],
    ids=["server-SIGTERM", "client-SIGTERM", "client-SIGINT"],
)
async def test_stream_in_flight_completes_and_new_connections_are_refused(
    tmp_path: Path, upstream: ConnectionPool, stopped: str, signum: int
) -> None:
    # Ample for the rest of the stream (a tenth of a second), short enough to fail fast.
    grace = ("--grace", "10")
    async with chain(tmp_path, upstream, server=grace, client=grace) as c:
        proc = c.server if stopped == "server" else c.client
        async with held_stream(c) as response:
            await proc.send_signal(signum)
            line = await wait_for_line(proc.log, "no longer accepting connections")
            assert line.split(": ")[1] == signal.Signals(signum).name
            await assert_refused(proc.port)
            assert proc.proc.returncode is None  # still draining
            upstream.release.set()
            assert completed(await read_rest(response))
        assert await exit_code(proc) == 0
        await wait_for_line(proc.log, "stopped after")


async def test_second_signal_exits_at_once(tmp_path: Path, upstream: ConnectionPool) -> None:
    # A grace period far longer than WAIT: only the second signal can end the process in time.
    async with chain(tmp_path, upstream, client=("--grace", "600")) as c:
        async with held_stream(c) as response:
            await c.client.send_signal(signal.SIGTERM)
            await wait_for_line(c.client.log, "no longer accepting connections")
            await c.client.send_signal(signal.SIGTERM)
            assert await exit_code(c.client) == 128 + signal.SIGTERM
            assert not completed(await read_rest(response))
        await wait_for_line(c.client.log, r"second stop signal \(SIGTERM\): exiting now")


@pytest.mark.parametrize("stopped", ["server", "client"])
async def test_grace_period_over_cancels_the_rest_and_exits_zero(
    tmp_path: Path, upstream: ConnectionPool, stopped: str
) -> None:
    grace = ("--grace", "0.5")
    flags = {"server": grace} if stopped == "server" else {"client": grace}
    async with chain(tmp_path, upstream, **flags) as c:
        proc = c.server if stopped == "server" else c.client
        async with held_stream(c) as response:
            await proc.send_signal(signal.SIGTERM)
            assert await exit_code(proc) == 0
            rest = await read_rest(response)
        assert not completed(rest)
        if stopped == "server":
            # The client stays up and ends the broken stream with one error object.
            assert rest is not None and "error" in rest[-1]
        await wait_for_line(proc.log, r"grace period of 0\.5s over")


async def test_idle_stop_logs_each_stage(tmp_path: Path) -> None:
    async with await OllanaProcess.start(
        "serve", *COMMON, "--mode", "client", "--server", "127.0.0.1:1",
        home=tmp_path / "home", log=tmp_path / "client.log",
    ) as client:  # fmt: skip
        await client.send_signal(signal.SIGINT)
        assert await exit_code(client) == 0
    log = client.log.read_text()
    stages = ["client mode", "listening on", "SIGINT: no longer accepting", "stopped after"]
    positions = [log.find(stage) for stage in stages]
    assert -1 not in positions, log
    assert positions == sorted(positions), log
