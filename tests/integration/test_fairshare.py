"""A server's fair queue and usage counts, end to end: devices with their own certificates,
a real server, and an emulator that holds each chat until the test lets it go."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ollana.discovery import Announce
from ollana.emulator import EmulatorConfig, create_app, serving
from ollana.identity import load_identity
from ollana.identity.tls import client_context
from ollana.modes import ServerMode
from ollana.usage import USAGE_FILE, UsageTotal, read_usage
from tests.integration.cluster_fixtures import (
    Cluster,
    cluster,
    healthy_with_models,
    read_events,
    until,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HeldOllama:
    """An emulator that notes the order chats reach it and holds them until `gate` is set."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        self.gate = asyncio.Event()
        self.url = ""

    async def start(self, running: Cluster) -> HeldOllama:
        @web.middleware
        async def hold(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.method == "POST" and request.path == "/api/chat":
                body = await request.json()
                self.arrived.append(body["messages"][-1]["content"])
                await self.gate.wait()
            return await handler(request)

        app = create_app(EmulatorConfig(models=("llama3.2",)))
        app.middlewares.append(hold)
        port = await running.stack.enter_async_context(serving(app, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{port}"
        return self


class Device:
    """One paired device talking to the server directly, over TLS with its certificate."""

    def __init__(self, running: Cluster, name: str, server: ServerMode) -> None:
        identity = load_identity(running.homes[name])
        self.device_id = identity.device_id
        self.base = f"https://127.0.0.1:{server.port}"
        self.context = client_context(identity)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes, str]:
        # A session per request: each its own connection, as separate apps would have.
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.base + path, json=body, ssl=self.context) as response,
        ):
            return response.status, await response.read(), response.content_type

    async def chat(self, tag: str) -> tuple[int, bytes, str]:
        body = {"model": "llama3.2", "messages": [{"role": "user", "content": tag}]}
        return await self.post("/api/chat", body)


def usage_of(server: ServerMode, by: str = "device") -> list[UsageTotal]:
    assert server.usage is not None
    server.usage.flush_soon()
    return read_usage(server.settings.home / USAGE_FILE, 0, by)  # type: ignore[arg-type]


async def test_devices_take_turns_a_full_queue_is_503_and_usage_is_counted(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as running:
        running.pair("server", "a", "b")
        ollama = await HeldOllama().start(running)
        server = await running.server("server", ollama.url, ollama_parallel=1, max_queue=4)
        assert server.queue is not None
        a, b = Device(running, "a", server), Device(running, "b", server)

        first = asyncio.create_task(a.chat("a0"))
        await until(lambda: ollama.arrived == ["a0"], "a's first chat to reach Ollama")
        later = [asyncio.create_task(a.chat(tag)) for tag in ("a1", "a2")]
        await until(lambda: server.queue.queued == 2, "a's next two to wait")  # type: ignore[union-attr]
        later.append(asyncio.create_task(b.chat("b0")))
        gone = asyncio.create_task(b.chat("b-gone"))
        await until(lambda: server.queue.queued == 4, "b's two to wait")  # type: ignore[union-attr]
        assert server.queue.snapshot().waiting == {a.device_id: 2, b.device_id: 2}

        # Beyond --max-queue: 503 at once, in Ollama's error shape.
        status, body, _ = await a.chat("a3")
        assert status == 503 and "busy" in json.loads(body)["error"]

        # An app that goes away leaves the queue at once.
        gone.cancel()
        await until(lambda: server.queue.queued == 3, "the cancelled chat to leave")  # type: ignore[union-attr]

        # The queue length travels in announces.
        await until(
            lambda: any(m.queue == 3 for m in running.observer.of(Announce, server.device_id)),
            "an announce carrying the queue length",
        )

        ollama.gate.set()
        answers = await asyncio.gather(first, *later)
        assert [status for status, _, _ in answers] == [200] * 4
        # b's one chat went before a's second, whatever order a queued in.
        assert ollama.arrived == ["a0", "b0", "a1", "a2"]

        generated = {a.device_id: 0, b.device_id: 0}
        prompt = dict(generated)
        for (_, body, ctype), device in zip(answers, (a, a, a, b), strict=True):
            final = read_events(body, ctype)[-1]
            generated[device.device_id] += final["eval_count"]
            prompt[device.device_id] += final["prompt_eval_count"]
        await until(lambda: len(usage_of(server)) == 2, "usage of both devices on disk")
        totals = {t.key: t for t in usage_of(server)}
        assert totals[a.device_id].requests == 3 and totals[b.device_id].requests == 1
        for device in (a, b):
            total = totals[device.device_id]
            assert total.generated_tokens == generated[device.device_id]
            assert total.prompt_tokens == prompt[device.device_id]
            assert total.errors == 0
        assert [(t.key, t.requests) for t in usage_of(server, "model")] == [("llama3.2", 4)]

        text = server.metrics.render().decode()
        short = a.device_id[:8]
        assert re.search(rf'ollana_device_requests_total\{{device="{short}",[^}}]*\}} 3\.0', text)
        assert "ollana_queue_wait_seconds_count 3.0" in text
        counters = server.counters()["queue"]
        assert isinstance(counters, dict)
        assert (counters["waited"], counters["full"], counters["waiting"]) == (3, 1, 0)


async def test_openai_usage_is_counted_streamed_or_not(tmp_path: Path) -> None:
    async with cluster(tmp_path) as running:
        running.pair("server", "a")
        ollama = await running.emulator("llama3.2")
        server = await running.server("server", ollama)
        a = Device(running, "a", server)
        messages = [{"role": "user", "content": "count me"}]
        expected = [0, 0]
        for stream in (False, True):
            body: dict[str, Any] = {"model": "llama3.2", "messages": messages, "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            status, raw, ctype = await a.post("/v1/chat/completions", body)
            assert status == 200
            usage = read_events(raw, ctype)[-1]["usage"] if stream else json.loads(raw)["usage"]
            expected[0] += usage["prompt_tokens"]
            expected[1] += usage["completion_tokens"]
        status, _, _ = await a.post("/api/chat", {"model": "no-such-model", "messages": messages})
        assert status == 404
        await until(lambda: [t.requests for t in usage_of(server)] == [3], "three requests on disk")
        [total] = usage_of(server)
        assert (total.prompt_tokens, total.generated_tokens, total.errors) == (*expected, 1)


async def test_a_client_counts_its_own_usage_per_server(tmp_path: Path) -> None:
    async with cluster(tmp_path) as running, aiohttp.ClientSession() as http:
        running.pair("server", "client")
        ollama = await running.emulator("llama3.2")
        server = await running.server("server", ollama)
        client = await running.client("client")
        await until(
            lambda: healthy_with_models(client, [server.device_id]), "the server in the pool"
        )
        body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"http://127.0.0.1:{client.port}/api/chat", json=body) as response:
            final = read_events(await response.read(), response.content_type)[-1]
        assert client.usage is not None

        def mine() -> list[UsageTotal]:
            assert client.usage is not None
            client.usage.flush_soon()
            return read_usage(client.settings.home / USAGE_FILE, 0, "device")

        [total] = await until(mine, "the client's usage on disk")
        assert total.key == server.device_id and total.requests == 1
        assert total.generated_tokens == final["eval_count"]
