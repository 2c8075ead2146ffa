"""The whole chain on loopback — emulator → server (mutual TLS) → client — driven by the
real `ollama` and `openai` packages and by raw HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import ollama
import openai
import pytest

from ollana.demo import Chain, running_chain
from ollana.emulator import STATS_KEY, EmulatorConfig
from tests.support.ports import refused_address

MODEL = "llama3.2"


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    async with running_chain(tmp_path) as running:
        yield running


@pytest.fixture
async def client(chain: Chain) -> AsyncIterator[ollama.AsyncClient]:
    async with ollama.AsyncClient(host=chain.url) as client:
        yield client


@pytest.fixture
async def paced_chain(tmp_path: Path) -> AsyncIterator[Chain]:
    async with running_chain(tmp_path, emulator=EmulatorConfig(tokens_per_second=50)) as running:
        yield running


def messages(text: str = "why is the sky blue?") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_chat_streamed_and_not(chain: Chain, client: ollama.AsyncClient) -> None:
    whole = await client.chat(model=MODEL, messages=messages())
    parts = [
        part async for part in await client.chat(model=MODEL, messages=messages(), stream=True)
    ]
    assert len(parts) > 2
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert whole.eval_count == parts[-1].eval_count


async def test_generate_streamed_and_not(chain: Chain, client: ollama.AsyncClient) -> None:
    whole = await client.generate(model=MODEL, prompt="hello", options={"num_predict": 7})
    parts = [p async for p in await client.generate(model=MODEL, prompt="hello", stream=True,
                                                    options={"num_predict": 7})]  # fmt: skip
    assert whole.done_reason == "length"
    assert whole.eval_count == 7
    assert "".join(p.response for p in parts) == whole.response
    assert whole.context


async def test_embed_list_show_ps(chain: Chain, client: ollama.AsyncClient) -> None:
    embedded = await client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(embedded.embeddings) == 2
    assert embedded.embeddings[0] != embedded.embeddings[1]
    listed = await client.list()
    names = {m.model for m in listed.models}
    assert f"{MODEL}:latest" in names
    shown = await client.show(MODEL)
    assert shown.details is not None
    await client.generate(model=MODEL, prompt="load it")
    running = await client.ps()
    assert f"{MODEL}:latest" in {m.model for m in running.models}


async def test_pull_progress_copy_delete(chain: Chain, client: ollama.AsyncClient) -> None:
    statuses = [p.status async for p in await client.pull("tinyllama", stream=True)]
    assert statuses[0] == "pulling manifest"
    assert statuses[-1] == "success"
    await client.copy("tinyllama", "tiny-copy")
    assert "tiny-copy:latest" in chain.ollama_app[STATS_KEY].installed
    await client.delete("tiny-copy")
    assert "tiny-copy:latest" not in chain.ollama_app[STATS_KEY].installed
    with pytest.raises(ollama.ResponseError) as info:
        await client.delete("tiny-copy")
    assert info.value.status_code == 404


async def test_missing_model_is_ollama_404(chain: Chain, client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model="no-such-model", messages=messages())
    assert info.value.status_code == 404
    assert 'model "no-such-model" not found, try pulling it first' in info.value.error


async def test_openai_chat_completions_and_models(chain: Chain) -> None:
    client = openai.AsyncOpenAI(base_url=f"{chain.url}/v1", api_key="ollama", max_retries=0)
    try:
        whole = await client.chat.completions.create(model=MODEL, messages=messages())  # type: ignore[arg-type]
        stream = await client.chat.completions.create(
            model=MODEL, messages=messages(), stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        assert chunks[-1].usage is not None
        assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
        models = await client.models.list()
        assert f"{MODEL}:latest" in {m.id for m in models.data}
        embedded = await client.embeddings.create(model="nomic-embed-text", input="hi")
        assert len(embedded.data[0].embedding) > 0
        completion = await client.completions.create(model=MODEL, prompt="once upon")
        assert completion.choices[0].text
    finally:
        await client.close()


async def test_headers_are_ollamas_plus_ours(chain: Chain) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(chain.url + "/") as response:
            assert response.status == 200
            assert await response.text() == "Ollama is running"
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert "Server" not in response.headers
            assert response.headers["X-Ollana-Version"]
        async with session.post(chain.url + "/api/chat", data=b"{") as response:
            assert response.status == 400
            assert response.headers["Content-Type"] == "application/json; charset=utf-8"
            assert "error" in await response.json()
        async with session.get(chain.url + "/api/nope?x=%2F") as response:
            assert response.status == 404
            assert await response.text() == "404 page not found"


async def test_client_leaving_mid_stream_cancels_generation(paced_chain: Chain) -> None:
    stats = paced_chain.ollama_app[STATS_KEY]
    body = {"model": MODEL, "prompt": "long", "options": {"num_predict": 10_000}}
    async with aiohttp.ClientSession() as session:
        response = await session.post(paced_chain.url + "/api/generate", json=body)
        first = await response.content.readline()
        assert json.loads(first)["done"] is False
        response.close()  # the app goes away mid-stream
    await asyncio.wait_for(stats.wait_for(lambda s: s.cancelled == 1), 10)
    assert stats.finished == 0


async def test_server_gone_is_an_ollama_style_503(tmp_path: Path) -> None:
    async with running_chain(tmp_path, client={"wait_for_server": 0.0}) as chain:
        await chain.server.close()
        async with (
            aiohttp.ClientSession() as session,
            session.post(chain.url + "/api/chat", json={"model": MODEL}) as response,
        ):
            assert response.status == 503
            assert response.headers["Content-Type"] == "application/json; charset=utf-8"
            error = (await response.json())["error"]
            assert "could take the request" in error


async def test_ollama_gone_is_an_ollama_style_error_from_the_server(tmp_path: Path) -> None:
    dead = f"http://{refused_address()}"
    async with (
        running_chain(tmp_path, server={"ollama": dead}, client={"wait_for_server": 0.0}) as chain,
        aiohttp.ClientSession() as session,
        session.get(chain.url + "/api/version") as response,
    ):
        assert response.status == 503
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert "cannot connect" in (await response.json())["error"]


async def test_guard_refuses_foreign_host_and_origin(chain: Chain) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(chain.url + "/api/tags", headers={"Host": "evil.example"}) as r:
            assert r.status == 403
            assert "error" in await r.json()
        headers = {"Origin": "https://evil.example"}
        async with session.get(chain.url + "/api/tags", headers=headers) as r:
            assert r.status == 403
        headers = {"Origin": "http://localhost:3000"}
        async with session.get(chain.url + "/api/tags", headers=headers) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        preflight = {
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
        }
        async with session.options(chain.url + "/api/chat", headers=preflight) as r:
            assert r.status == 204
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
