"""Today's Ollama API through a client and its servers: Anthropic, Responses, cloud models.

Emulators (some signed out of ollama.com, one rate-limited stand-in) behind in-process
servers that an in-process client discovers on loopback; apps are the real `openai` package
and raw aiohttp. `X-Ollana-Server` on each answer says which server took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import zstandard
from aiohttp import web

from ollana.cluster.rawlist import raw_items
from ollana.emulator import EmulatorConfig
from ollana.modes import ClientMode, ServerMode
from tests.integration.cluster_fixtures import (
    PIN,
    Cluster,
    Emulator,
    cluster,
    healthy_with_models,
    until,
)
from tests.support.waiting import DEADLINE

CLOUD = "gpt-oss:120b-cloud"
CHAT = [{"role": "user", "content": "Why is the sky blue?"}]


@dataclass(slots=True)
class Lan:
    """Servers by name, each in front of its own Ollama, and a client."""

    servers: dict[str, ServerMode]
    client: ClientMode
    ollamas: dict[str, str]

    @property
    def url(self) -> str:
        """Where apps talk to the client."""
        return f"http://127.0.0.1:{self.client.port}"

    def who(self, label: str | None) -> str:
        """The name of the server an X-Ollana-Server header names."""
        assert label, "the answer does not say which server took it"
        for name, server in self.servers.items():
            if server.device_id.startswith(label.lower()) or label.endswith(f":{server.port}"):
                return name
        raise AssertionError(f"{label!r} is none of the servers")

    async def ps(self, name: str) -> set[str]:
        """The models loaded on a server's Ollama, as its /api/ps says."""
        async with aiohttp.ClientSession() as http, http.get(self.ollamas[name] + "/api/ps") as r:
            return {m["name"] for m in (await r.json())["models"] or []}


async def emulator(c: Cluster, config: EmulatorConfig) -> str:
    running = Emulator(config)
    await running.start()
    c.stack.push_async_callback(running.stop)
    return running.url


@contextlib.asynccontextmanager
async def rate_limited(models: tuple[str, ...]) -> AsyncIterator[str]:
    """An Ollama whose cloud account is over its limit: every generation is a 429."""

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/api/version":
            return web.json_response({"version": "0.33.0"})
        if request.path in ("/api/tags", "/api/ps"):
            listed = models if request.path == "/api/tags" else ()
            return web.json_response({"models": [{"name": m, "model": m} for m in listed]})
        await request.read()
        return web.json_response({"error": "you have reached your usage limit"}, status=429)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def start(
    c: Cluster, ollamas: Mapping[str, str], priorities: Mapping[str, int] | None = None
) -> Lan:
    """A server in front of each Ollama, then a client that knows them all with their lists."""
    c.pair(*ollamas, "client")
    servers = {
        name: await c.server(name, url, priority=(priorities or {}).get(name, 0))
        for name, url in ollamas.items()
    }
    client = await c.client()
    ids = [s.device_id for s in servers.values()]
    await until(lambda: healthy_with_models(client, ids), "every server healthy")
    return Lan(servers, client, dict(ollamas))


@pytest.fixture
async def lan_root(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path) as c:
        yield c


async def post(
    url: str, body: Any, headers: Mapping[str, str] | None = None, data: bytes | None = None
) -> tuple[int, str, Any]:
    """POST JSON (or raw bytes); the status, the server that answered and the JSON answer."""
    async with aiohttp.ClientSession() as http:
        payload: Any = {"data": data} if data is not None else {"json": body}
        async with http.post(url, headers=headers, **payload) as r:
            lines = (await r.read()).splitlines()  # an NDJSON stream: its last object
            return r.status, r.headers.get(PIN, ""), json.loads(lines[-1]) if lines else None


# --- cloud models, rate limits ---------------------------------------------------------------


async def test_a_signed_out_server_passes_a_cloud_model_on(lan_root: Cluster) -> None:
    models = ("llama3.2", CLOUD)
    out = await emulator(lan_root, EmulatorConfig(models=models, signed_in=False))
    signed = await emulator(lan_root, EmulatorConfig(models=models))
    # The signed-out one is preferred: the request must still end up where it can run.
    lan = await start(lan_root, {"out": out, "in": signed}, {"out": 9})
    for path, body in [
        ("/api/chat", {"model": CLOUD, "messages": CHAT, "stream": False}),
        ("/v1/messages", {"model": CLOUD, "max_tokens": 9, "messages": CHAT}),
        ("/v1/responses", {"model": CLOUD, "input": "hi"}),
    ]:
        status, server, _ = await post(lan.url + path, body)
        assert (status, lan.who(server)) == (200, "in"), path
    status, server, _ = await post(lan.url + "/api/chat", {"model": "llama3.2", "messages": CHAT})
    assert (status, lan.who(server)) == (200, "out")  # local models stay where they were


async def test_when_no_server_is_signed_in_the_app_gets_the_signin_url(lan_root: Cluster) -> None:
    config = EmulatorConfig(models=(CLOUD,), signed_in=False)
    ollamas = {"a": await emulator(lan_root, config), "b": await emulator(lan_root, config)}
    lan = await start(lan_root, ollamas)
    status, _, body = await post(lan.url + "/api/chat", {"model": CLOUD, "messages": CHAT})
    assert status == 401
    assert body["error"] == "unauthorized" and body["signin_url"].startswith("https://ollama.com/")


async def test_a_rate_limited_server_passes_the_request_on(lan_root: Cluster) -> None:
    async with rate_limited((CLOUD,)) as limited:
        signed = await emulator(lan_root, EmulatorConfig(models=(CLOUD,)))
        lan = await start(lan_root, {"limited": limited, "ok": signed}, {"limited": 9})
        body = {"model": CLOUD, "messages": CHAT, "stream": False}
        status, server, _ = await post(lan.url + "/api/chat", body)
        assert (status, lan.who(server)) == (200, "ok")
        # Alone with the model (pinned), its 429 goes back to the app as Ollama wrote it.
        pin = {PIN: lan.servers["limited"].device_id[:12]}
        status, server, answer = await post(lan.url + "/api/chat", body, pin)
        assert (status, lan.who(server)) == (429, "limited")
        assert answer == {"error": "you have reached your usage limit"}


# --- Responses: previous_response_id -----------------------------------------------------------


async def test_previous_response_id_goes_to_the_server_that_made_it(lan_root: Cluster) -> None:
    config = EmulatorConfig(models=("llama3.2",))
    ollamas = {"a": await emulator(lan_root, config), "b": await emulator(lan_root, config)}
    lan = await start(lan_root, ollamas, {"a": 9})  # a is preferred for everything
    b_pin = {PIN: lan.servers["b"].device_id[:12]}
    async with openai.AsyncOpenAI(base_url=lan.url + "/v1", api_key="x", max_retries=0) as oai:
        # Loaded on both: a leads by priority alone.
        a_pin = {PIN: lan.servers["a"].device_id[:12]}
        await oai.responses.create(model="llama3.2", input="warm up", extra_headers=a_pin)
        for stream in (False, True):
            first = await oai.responses.with_raw_response.create(
                model="llama3.2", input="Why is the sky blue?", stream=stream, extra_headers=b_pin
            )
            assert lan.who(first.headers[PIN]) == "b"
            parsed = first.parse()
            if stream:
                ident = ""
                async for event in parsed:  # type: ignore[union-attr]
                    if event.type == "response.created":
                        ident = event.response.id
            else:
                ident = parsed.id  # type: ignore[union-attr]
            assert ident.startswith("resp_")
            for _ in range(3):
                turn = await oai.responses.with_raw_response.create(
                    model="llama3.2", input="And at night?", previous_response_id=ident
                )
                assert lan.who(turn.headers[PIN]) == "b", "a chained turn left its server"
            fresh = await oai.responses.with_raw_response.create(model="llama3.2", input="x")
            assert lan.who(fresh.headers[PIN]) == "a"


# --- keep_alive 0 -----------------------------------------------------------------------------


async def test_an_unload_reaches_every_server_that_has_the_model_loaded(lan_root: Cluster) -> None:
    config = EmulatorConfig(models=("llama3.2", "phi3"))
    names = ("a", "b", "c")
    lan = await start(lan_root, {n: await emulator(lan_root, config) for n in names})
    for name in names:
        pin = {PIN: lan.servers[name].device_id[:12]}
        body = {"model": "llama3.2", "prompt": "hi", "stream": False}
        assert (await post(lan.url + "/api/generate", body, pin))[0] == 200
        assert "llama3.2:latest" in await lan.ps(name)
    await post(lan.url + "/api/generate", {"model": "phi3", "prompt": "hi", "stream": False})
    status, _, body = await post(lan.url + "/api/generate", {"model": "llama3.2", "keep_alive": 0})
    assert status == 200 and body["done_reason"] == "unload"
    for name in names:
        assert "llama3.2:latest" not in await lan.ps(name), name
    loaded = [await lan.ps(n) for n in names]
    assert any("phi3:latest" in models for models in loaded)  # only the model named


# --- compressed bodies ------------------------------------------------------------------------


async def test_a_zstd_body_is_routed_by_its_model_and_forwarded_unchanged(
    lan_root: Cluster,
) -> None:
    ollamas = {
        "a": await emulator(lan_root, EmulatorConfig(models=("llama3.2",))),
        "b": await emulator(lan_root, EmulatorConfig(models=("phi3",))),
    }
    lan = await start(lan_root, ollamas, {"a": 9})
    body = json.dumps({"model": "phi3", "messages": CHAT}).encode()
    zstd = {"Content-Encoding": "zstd", "Content-Type": "application/json"}
    squeezed = zstandard.ZstdCompressor().compress(body)
    status, server, answer = await post(lan.url + "/v1/chat/completions", None, zstd, squeezed)
    assert (status, lan.who(server)) == (200, "b")
    assert answer["choices"][0]["message"]["content"]
    # Not zstd after all: forwarded unrouted, and Ollama (not ollana) says what is wrong.
    status, server, answer = await post(lan.url + "/v1/chat/completions", None, zstd, body)
    assert status == 400 and server
    assert answer == {"error": "failed to decompress request body"}


@contextlib.asynccontextmanager
async def recording(models: tuple[str, ...]) -> AsyncIterator[tuple[str, list[tuple[str, bytes]]]]:
    """An Ollama that answers every generation with {} and keeps its encoding and body."""
    seen: list[tuple[str, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        if request.path in ("/api/tags", "/api/ps"):
            listed = models if request.path == "/api/tags" else ()
            return web.json_response({"models": [{"name": m, "model": m} for m in listed]})
        if request.path != "/api/version":
            seen.append((request.headers.get("Content-Encoding", ""), await request.read()))
        return web.json_response({"version": "0.33.0"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def test_a_gzip_body_reaches_ollama_as_it_was_sent(lan_root: Cluster) -> None:
    async with recording(("phi3:latest",)) as (url, seen):
        other = await emulator(lan_root, EmulatorConfig(models=("llama3.2",)))
        lan = await start(lan_root, {"rec": url, "other": other}, {"other": 9})
        body = gzip.compress(json.dumps({"model": "phi3", "messages": CHAT}).encode())
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        status, server, _ = await post(lan.url + "/api/chat", None, headers, body)
        assert (status, lan.who(server)) == (200, "rec")  # routed by the model inside
        assert seen == [("gzip", body)]


# --- a stream that breaks mid-way, in each API's own framing ----------------------------------

STREAMS = {
    "anthropic": ("/v1/messages", {"model": "llama3.2", "max_tokens": 9, "stream": True}),
    "responses": ("/v1/responses", {"model": "llama3.2", "input": "go on", "stream": True}),
}


@pytest.mark.parametrize("kind", sorted(STREAMS))
async def test_a_broken_stream_ends_with_its_own_error_event(lan_root: Cluster, kind: str) -> None:
    ollama = await emulator(lan_root, EmulatorConfig(models=("llama3.2",), tokens_per_second=20))
    lan_root.pair("a", "client")
    server = await lan_root.server_process("a", ollama)
    client = await lan_root.client()
    await until(lambda: healthy_with_models(client, [lan_root.device_id("a")]), "a healthy")
    path, body = STREAMS[kind]
    body = {**body, "messages": CHAT}
    url = f"http://127.0.0.1:{client.port}{path}"
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as response:
        first = await response.content.readline()
        assert first.startswith(b"event: ")
        await server.kill()
        async with asyncio.timeout(DEADLINE):
            rest = await response.read()
    blocks = [b for b in (first + rest).decode().split("\n\n") if b.strip()]
    last = dict(line.split(": ", 1) for line in blocks[-1].split("\n"))
    assert last["event"] == "error"
    error = json.loads(last["data"])
    assert error["type"] == "error"
    if kind == "anthropic":
        assert error["error"]["type"] == "api_error" and error["error"]["message"]
        assert not any("message_stop" in b for b in blocks)
    else:
        assert error["message"] and error["code"]
        assert not any("response.completed" in b for b in blocks)
    assert sum("event: error" in b for b in blocks) == 1


# --- merged lists -------------------------------------------------------------------------------


async def test_the_merged_tags_keep_each_servers_entries_byte_for_byte(lan_root: Cluster) -> None:
    ollamas = {
        "a": await emulator(lan_root, EmulatorConfig(models=("llama3.2", CLOUD))),
        "b": await emulator(lan_root, EmulatorConfig(models=("nomic-embed-text",))),
    }
    lan = await start(lan_root, ollamas)
    async with aiohttp.ClientSession() as http:
        async with http.get(lan.url + "/api/tags") as r:
            merged = await r.read()
        for url in ollamas.values():
            async with http.get(url + "/api/tags") as r:
                own = raw_items((await r.read()).decode(), "models")
            assert own, url
            for entry in own:
                assert entry.encode() in merged, entry
    names = {m["name"]: m for m in json.loads(merged)["models"]}
    assert names[CLOUD]["remote_host"] == "https://ollama.com:443"
    assert names["nomic-embed-text:latest"]["capabilities"] == ["embedding"]
