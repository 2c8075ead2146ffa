"""Discovery and failover between real processes on loopback.

Servers run as `ollana serve` processes, so that they can be killed and signalled; where the
test needs to see the client's pool, the client runs in-process, otherwise as a process too.
Every member shares one discovery port and sends to the loopback broadcast address.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ollana.cluster.server import ServerState
from ollana.discovery import Announce, Goodbye, Query, interface_broadcasts
from ollana.emulator import EmulatorConfig, create_app, serving
from ollana.modes import ClientMode
from tests.integration.cluster_fixtures import (
    DEADLINE,
    PIN,
    Cluster,
    RequestLoop,
    cluster,
    healthy_with_models,
    read_events,
    until,
)
from tests.support.ports import refused_address
from tests.support.process import OllanaProcess

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGKILL"), reason="kills processes with POSIX signals"
)

MODEL = "llama3.2:latest"
HANG_GUARD = 5.0  # a request that takes longer than this once it should be done is hanging
ONLY_A = "qwen2.5:0.5b"  # a's alone: a request for it shows whether the client routes to a


@pytest.fixture
async def lan(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path) as c:
        c.pair("a", "b", "slow", "client")
        yield c


async def ask(url: str, model: str = MODEL) -> tuple[int, str | None]:
    """One small generation through a client: its status and the server that answered."""
    body = {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/api/generate", json=body) as response,
    ):
        await response.read()
        return response.status, response.headers.get(PIN)


async def routed_to(url: str, device_id: str, model: str = MODEL) -> bool:
    """Whether the next request through this client is answered by this server."""
    status, label = await ask(url, model)
    return status == 200 and label is not None and device_id.startswith(label)


def state(client: ClientMode, device_id: str) -> ServerState | None:
    """A server's state in the client's pool; None once it was removed."""
    server = client.pool.find(device_id)
    return None if server is None else server.state


def client_url(client: ClientMode | OllanaProcess) -> str:
    return f"http://127.0.0.1:{client.port}"


# --- discovery between processes --------------------------------------------------------------


async def test_a_client_process_finds_a_server_process(lan: Cluster) -> None:
    emulator = await lan.emulator(MODEL)
    await lan.server_process("a", emulator)
    client = await lan.client_process("client")
    await until(lambda: routed_to(client_url(client), lan.device_id("a")), "routed to a")
    # Answered as the local Ollama would: the same body as asking it directly.
    body = {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 5}}
    async with aiohttp.ClientSession() as http:
        async with http.post(client_url(client) + "/api/generate", json=body) as response:
            via = await response.json()
        async with http.post(emulator.url + "/api/generate", json=body) as response:
            direct = await response.json()
    assert via["response"] == direct["response"]


async def test_a_running_client_finds_a_new_server_by_its_announce(lan: Cluster) -> None:
    emulator = await lan.emulator(MODEL)
    # The client asks once, at start, when nobody answers; after that only an announce helps.
    client = await lan.client_process(
        "client", env={"OLLANA_TIMINGS_QUERY_INTERVAL": "3600", "OLLANA_WAIT_FOR_SERVER": "0"}
    )
    client_id, server_id = lan.device_id("client"), lan.device_id("a")
    await until(lambda: lan.observer.of(Query, client_id), "the client's query")
    status, _ = await ask(client_url(client))
    assert status == 503  # nobody there yet
    started = time.monotonic()
    await lan.server_process("a", emulator)
    await until(lambda: routed_to(client_url(client), server_id), "routed to the new server")
    assert lan.observer.of(Announce, server_id, since=started)
    assert not lan.observer.of(Query, client_id, since=started), "found by a query instead"


async def test_a_request_waits_for_a_server_to_appear(lan: Cluster) -> None:
    emulator = await lan.emulator(MODEL)
    client = await lan.client(wait_for_server=DEADLINE)
    pending = asyncio.create_task(ask(client_url(client)))
    await until(lambda: client.listener.connections > 0, "the request to arrive")
    assert not pending.done()
    # Listening on every address: the client may first hear it at this host's LAN address.
    await lan.server_process("a", emulator, listen="0.0.0.0:0")
    status, label = await asyncio.wait_for(pending, DEADLINE)
    assert status == 200 and label is not None and lan.device_id("a").startswith(label)


async def test_a_request_keeps_waiting_when_the_servers_it_found_fail(lan: Cluster) -> None:
    emulator = await lan.emulator(MODEL)
    dead = refused_address()
    # Probes far apart: the dead server stays routable until the request itself fails on it.
    client = await lan.client(
        wait_for_server=DEADLINE, servers=(dead,), **{"timings.probe_interval": 3600}
    )
    pending = asyncio.create_task(ask(client_url(client)))
    await until(lambda: all(s.state is ServerState.DOWN for s in client.pool), "dead one tried")
    await lan.server_process("a", emulator, listen="0.0.0.0:0")
    status, label = await asyncio.wait_for(pending, DEADLINE)
    assert status == 200 and label is not None and lan.device_id("a").startswith(label)


@pytest.mark.skipif(not interface_broadcasts(), reason="needs a non-loopback IPv4 interface")
async def test_a_server_first_heard_where_it_does_not_listen_is_still_reached(
    lan: Cluster,
) -> None:
    emulator = await lan.emulator(MODEL)
    # Probes far apart: the client must find the right address from the announces alone.
    client = await lan.client(**{"timings.probe_interval": 3600})
    await lan.server("a", emulator)  # on 127.0.0.1 only
    await until(lambda: healthy_with_models(client, [lan.device_id("a")]), "a healthy", 3.0)


# --- failover ----------------------------------------------------------------------------------


async def two_servers(
    lan: Cluster, *a_args: str, **client_flags: object
) -> tuple[ClientMode, dict[str, Any]]:
    """Servers a and b as processes, each in front of its own emulator, and a client."""
    processes = {}
    emulators = {}
    for name in ("a", "b"):
        emulators[name] = await lan.emulator(MODEL, *([ONLY_A] if name == "a" else []))
        args = a_args if name == "a" else ()
        processes[name] = await lan.server_process(name, emulators[name], *args)
    client = await lan.client(**client_flags)
    ids = [lan.device_id(n) for n in processes]
    await until(lambda: healthy_with_models(client, ids), "both servers healthy")
    return client, {"processes": processes, "emulators": emulators}


async def both_used(loop: RequestLoop, lan: Cluster) -> None:
    labels = {lan.device_id(n)[:12] for n in ("a", "b")}
    await until(lambda: labels <= loop.servers_since(0.0), "requests on both servers")


async def test_sigkill_of_one_of_two_servers_fails_no_request(lan: Cluster) -> None:
    client, parts = await two_servers(lan)
    a = lan.device_id("a")
    async with RequestLoop(client_url(client), MODEL, workers=3) as loop:
        await both_used(loop, lan)
        await parts["processes"]["a"].kill()
        await until(lambda: state(client, a) is ServerState.DOWN, "a ejected")
        ejected = time.monotonic()
        await loop.more(30, since=ejected)
    assert loop.failures == [], loop.failures[:5]
    assert loop.servers_since(ejected) == {lan.device_id("b")[:12]}


async def test_sigterm_says_goodbye_and_the_server_is_removed_at_once(lan: Cluster) -> None:
    # A server that fails is only marked down; only a goodbye removes it (forget_after is long).
    client, parts = await two_servers(lan)
    a = lan.device_id("a")
    async with RequestLoop(client_url(client), MODEL, workers=3) as loop:
        await both_used(loop, lan)
        stopping = time.monotonic()
        await parts["processes"]["a"].send_signal(signal.SIGTERM)
        await until(lambda: state(client, a) is None, "a removed from the pool")
        assert lan.observer.of(Goodbye, a, since=stopping)
        assert await asyncio.wait_for(parts["processes"]["a"].proc.wait(), DEADLINE) == 0
        await loop.more(20)
    assert loop.failures == [], loop.failures[:5]


async def test_a_restarted_server_is_routed_to_again(lan: Cluster) -> None:
    client, parts = await two_servers(lan)
    a = lan.device_id("a")
    first = parts["processes"]["a"]
    async with RequestLoop(client_url(client), MODEL, workers=3) as loop:
        await both_used(loop, lan)
        await first.kill()
        await until(lambda: state(client, a) is ServerState.DOWN, "a ejected")
        # The same device on the same port, as a restarted server is.
        restarted = time.monotonic()
        await lan.server_process("a", parts["emulators"]["a"], listen=f"127.0.0.1:{first.port}")
        await until(lambda: state(client, a) is ServerState.HEALTHY, "a healthy again")
        await until(lambda: routed_to(client_url(client), a, ONLY_A), "routed to a again")
        await loop.more(10, since=restarted)
    assert loop.failures == [], loop.failures[:5]


async def test_a_server_whose_ollama_stops_goes_silent_and_comes_back(lan: Cluster) -> None:
    client, parts = await two_servers(lan)
    a, b = lan.device_id("a"), lan.device_id("b")
    async with RequestLoop(client_url(client), MODEL, workers=3) as loop:
        await both_used(loop, lan)
        stopping = time.monotonic()
        await parts["emulators"]["a"].stop()
        await until(lambda: lan.observer.of(Goodbye, a, since=stopping), "a's goodbye")
        await until(lambda: state(client, a) is None, "a removed from the pool")
        silent = time.monotonic()
        # b keeps announcing; a, without its Ollama, says nothing and answers no query.
        await until(lambda: len(lan.observer.of(Announce, b, since=silent)) >= 3, "b announcing")
        assert lan.observer.of(Announce, a, since=silent) == []
        await loop.more(20, since=silent)
        assert loop.servers_since(silent) == {b[:12]}
        # a's own model is nowhere now: Ollama's 404, from b.
        assert await ask(client_url(client), ONLY_A) == (404, b[:12])
        # Ollama is back (on its old port): so is the server.
        back = time.monotonic()
        await parts["emulators"]["a"].start()
        await until(lambda: lan.observer.of(Announce, a, since=back), "a announcing again")
        await until(lambda: routed_to(client_url(client), a, ONLY_A), "routed to a again")
        await loop.more(10, since=back)
    # Once the server said goodbye, nothing fails. (A request that raced the stop itself
    # may fail: see the test of a request that Ollama drops unanswered.)
    assert [f for f in loop.failures if f.at >= silent] == []


# --- a stream that breaks half-way -------------------------------------------------------------

STREAMS = {
    "ndjson": (
        "/api/chat",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "go on"}],
            "options": {"num_predict": 100_000},
        },
    ),
    "sse": (
        "/v1/chat/completions",
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": 100_000,
            "messages": [{"role": "user", "content": "go on"}],
        },
    ),
}


async def broken_stream(url: str, kind: str, breaker: Any) -> tuple[int, str, list[Any]]:
    """Start a long stream, break it after its first event, read to the end; the events."""
    path, body = STREAMS[kind]
    async with aiohttp.ClientSession() as http, http.post(url + path, json=body) as response:
        first = await response.content.readline()
        assert first.strip()
        await breaker()
        async with asyncio.timeout(DEADLINE):  # the stream must end, not hang
            rest = await response.read()
        return (
            response.status,
            response.content_type,
            read_events(first + rest, response.content_type),
        )


def check_one_error_at_the_end(kind: str, events: list[Any]) -> None:
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1, events[-3:]
    assert events[-1] is errors[0], "the error object is not the last thing sent"
    assert len(events) > 1
    if kind == "ndjson":
        message = errors[0]["error"]
        assert not any(e.get("done") for e in events)
    else:
        message = errors[0]["error"]["message"]
        assert not any(c.get("finish_reason") for e in events for c in e.get("choices", []))
    # What happened, where, on one line: not a parser's wording.
    assert isinstance(message, str)
    assert message.startswith(("server ", "Ollama at ")) and "mid-answer" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("kind", sorted(STREAMS))
async def test_a_server_dying_mid_stream_ends_it_with_one_error_object(
    lan: Cluster, kind: str
) -> None:
    emulator = await lan.emulator(MODEL, tokens_per_second=50)
    server = await lan.server_process("a", emulator)
    client = await lan.client()
    await until(lambda: healthy_with_models(client, [lan.device_id("a")]), "a healthy")
    status, content_type, events = await broken_stream(client_url(client), kind, server.kill)
    assert status == 200
    assert content_type == ("application/x-ndjson" if kind == "ndjson" else "text/event-stream")
    check_one_error_at_the_end(kind, events)
    assert emulator.stats.finished == 0


@pytest.mark.parametrize("kind", sorted(STREAMS))
async def test_ollama_dying_mid_stream_ends_it_with_one_error_object(
    lan: Cluster, kind: str
) -> None:
    emulate = ("emulate", "--listen", "127.0.0.1:0", "--log-level", "error")
    ollama = await OllanaProcess.start(
        *emulate, "--model", MODEL, "--tokens-per-second", "50", home=lan.root / "ollama"
    )
    await lan.stack.enter_async_context(ollama)
    await lan.server("a", ollama.url)
    client = await lan.client()
    await until(lambda: healthy_with_models(client, [lan.device_id("a")]), "a healthy")
    status, _, events = await broken_stream(client_url(client), kind, ollama.kill)
    assert status == 200
    check_one_error_at_the_end(kind, events)


async def test_the_client_stays_usable_after_a_broken_stream(lan: Cluster) -> None:
    client, parts = await two_servers(lan)
    emulator = await lan.emulator(MODEL, tokens_per_second=50)
    slow = await lan.server_process("slow", emulator, "--priority", "9")
    # Its model list too: only among servers known to have the model does priority count.
    slow_id = lan.device_id("slow")
    await until(lambda: healthy_with_models(client, [slow_id]), "slow up, with its models")
    _, _, events = await broken_stream(client_url(client), "ndjson", slow.kill)
    check_one_error_at_the_end("ndjson", events)
    async with RequestLoop(client_url(client), MODEL, workers=2) as loop:
        await loop.more(10)
    assert loop.failures == []
    assert loop.servers_since(0.0) <= {lan.device_id(n)[:12] for n in ("a", "b")}
    del parts


# --- Ollama drops a request without answering ---------------------------------------------------


@contextlib.asynccontextmanager
async def dropping_ollama(*models: str) -> AsyncIterator[str]:
    """An emulator that closes the connection, unanswered, on two generations out of three.

    Two in a row: a pooled connection found closed is retried once on a fresh one to the
    same Ollama, and that one must fail too for the request to go to another server.
    """
    app = create_app(EmulatorConfig(models=models))
    seen = 0

    @web.middleware
    async def drop(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal seen
        if request.path == "/api/generate":
            seen += 1
            if seen % 3 != 1:
                assert request.transport is not None
                request.transport.abort()  # as a crash or a closing keep-alive does
                return web.Response(status=204)
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.append(drop)
    async with serving(app, "127.0.0.1", 0) as port:
        yield f"http://127.0.0.1:{port}"


async def test_a_request_ollama_drops_unanswered_is_answered_by_another_server(
    lan: Cluster,
) -> None:
    async with dropping_ollama(MODEL) as dropping:
        await lan.server("a", dropping, priority=5)  # a is always tried first
        await lan.server("b", await lan.emulator(MODEL))
        client = await lan.client()
        ids = [lan.device_id("a"), lan.device_id("b")]
        await until(lambda: healthy_with_models(client, ids), "both servers healthy")
        answers = [await ask(client_url(client)) for _ in range(6)]
    assert [status for status, _ in answers] == [200] * 6, answers
    assert {label for _, label in answers} == {i[:12] for i in ids}


# --- a server that goes silent (no FIN, no RST) --------------------------------------------------


async def test_a_request_on_a_server_that_goes_silent_is_answered_by_another(
    lan: Cluster,
) -> None:
    # a is preferred, so that the request goes to it once it is stopped.
    client, parts = await two_servers(lan, "--priority", "5")
    a, b = lan.device_id("a"), lan.device_id("b")
    silent = parts["processes"]["a"]
    a_server = client.pool.find(a)
    assert a_server is not None
    silent.proc.send_signal(signal.SIGSTOP)  # its sockets stay open: no FIN, no RST
    try:
        pending = asyncio.create_task(ask(client_url(client)))
        await until(lambda: a_server.inflight == 1, "the request on a")
        await until(lambda: state(client, a) is ServerState.DOWN, "a ejected by its probes")
        status, label = await asyncio.wait_for(pending, HANG_GUARD)
        assert (status, label) == (200, b[:12])
    finally:
        silent.proc.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("kind", sorted(STREAMS))
async def test_a_stream_from_a_server_that_goes_silent_ends_with_one_error_object(
    lan: Cluster, kind: str
) -> None:
    emulator = await lan.emulator(MODEL, tokens_per_second=50)
    server = await lan.server_process("a", emulator)
    client = await lan.client()
    a = lan.device_id("a")
    await until(lambda: healthy_with_models(client, [a]), "a healthy")

    async def go_silent() -> None:
        server.proc.send_signal(signal.SIGSTOP)  # no FIN, no RST: only the probes can tell
        await until(lambda: state(client, a) is ServerState.DOWN, "a ejected by its probes")

    try:
        status, _, events = await broken_stream(client_url(client), kind, go_silent)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert status == 200
    check_one_error_at_the_end(kind, events)


@pytest.mark.parametrize(
    "found",
    [
        "discovered",
        pytest.param(
            "static",
        ),
    ],
)
async def test_a_server_stopping_gracefully_finishes_its_streams(lan: Cluster, found: str) -> None:
    emulator = await lan.emulator(MODEL, tokens_per_second=40)
    server = await lan.server_process("a", emulator, env={"OLLANA_GRACE": "20"})
    static = {"servers": (f"127.0.0.1:{server.port}",), "discovery": False}
    client = await lan.client(**(static if found == "static" else {}))
    a = lan.device_id("a")
    await until(lambda: all(s.state is ServerState.HEALTHY for s in client.pool), "a healthy")
    body = {"model": MODEL, "prompt": "go on", "options": {"num_predict": 60}}
    async with (
        aiohttp.ClientSession() as http,
        http.post(client_url(client) + "/api/generate", json=body) as response,
    ):
        first = await response.content.readline()
        await server.send_signal(signal.SIGTERM)
        # The client learns that the server is going (a goodbye, or probes it refuses)...
        if found == "static":
            await until(lambda: state(client, a) is not ServerState.HEALTHY, "a seen going")
        else:
            await until(lambda: state(client, a) is None, "a removed")
        # ...and the stream it was serving still ends as Ollama ended it (it is not cut
        # when the client's own grace period, 1 s here, is over).
        async with asyncio.timeout(HANG_GUARD):
            rest = await response.read()
    events = read_events(first + rest, response.content_type)
    assert not [e for e in events if "error" in e], events[-2:]
    assert events[-1]["done"] is True
    assert await asyncio.wait_for(server.proc.wait(), DEADLINE) == 0
