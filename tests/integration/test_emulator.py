"""The emulator over real HTTP, driven by the ollama and openai packages and raw aiohttp."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import signal
from collections.abc import AsyncIterator

import aiohttp
import ollama
import openai
import pytest

from ollana.emulator import EmulatorConfig, run_emulator
from tests.integration.emulator_fixtures import (
    RunningEmulator,
    emulator_process,
    running_emulator,
)

CHAT = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with running_emulator() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(emu: RunningEmulator) -> AsyncIterator[ollama.AsyncClient]:
    async with ollama.AsyncClient(host=emu.url) as c:
        yield c


@pytest.fixture
async def oai(emu: RunningEmulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


def _ollama_headers_only(response: aiohttp.ClientResponse) -> None:
    assert "Server" not in response.headers
    assert not [h for h in response.headers if h.lower().startswith("x-ollana")]


# --- plain routes, 404, 405 ---------------------------------------------------------------


async def test_root_and_version_look_like_ollama(emu: RunningEmulator, http: aiohttp.ClientSession):
    async with http.get(emu.url + "/") as r:
        assert (r.status, await r.text()) == (200, "Ollama is running")
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        _ollama_headers_only(r)
    async with http.head(emu.url + "/") as r:
        assert r.status == 200
        assert await r.read() == b""
    for method in ("GET", "HEAD"):
        async with http.request(method, emu.url + "/api/version") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/json; charset=utf-8"
            _ollama_headers_only(r)
            if method == "GET":
                assert await r.read() == b'{"version":"0.5.7"}'


@pytest.mark.parametrize(
    ("method", "path", "status", "body", "allow"),
    [
        ("GET", "/nope", 404, "404 page not found", None),
        ("POST", "/api/version/extra", 404, "404 page not found", None),
        ("POST", "/api/tags", 405, "405 method not allowed", "HEAD, GET"),
        ("GET", "/api/chat", 405, "405 method not allowed", "POST"),
        ("HEAD", "/api/ps", 405, "", "GET"),
        ("GET", "/api/blobs/sha256:00", 405, "405 method not allowed", "POST, HEAD"),
        ("POST", "/v1/models", 405, "405 method not allowed", "GET"),
    ],
)
async def test_unknown_path_and_wrong_method(
    emu: RunningEmulator, http: aiohttp.ClientSession, method, path, status, body, allow
):
    async with http.request(method, emu.url + path) as r:
        assert r.status == status
        assert r.headers["Content-Type"] == "text/plain"
        assert r.headers.get("Allow") == allow
        assert await r.text() == body
        _ollama_headers_only(r)


async def test_trailing_slash_redirects_like_gin(emu: RunningEmulator, http: aiohttp.ClientSession):
    async with http.get(emu.url + "/api/tags/", allow_redirects=False) as r:
        assert (r.status, r.headers["Location"]) == (301, "/api/tags")
    async with http.post(emu.url + "/api/chat/", allow_redirects=False) as r:
        assert (r.status, r.headers["Location"]) == (307, "/api/chat")


async def test_host_and_origin_checks_like_ollama(http: aiohttp.ClientSession):
    async with running_emulator(EmulatorConfig(origins=("https://webui.lan",))) as emu:
        url = emu.url + "/api/version"
        for host, status in [
            ("evil.example.com", 403),
            ("box.local:11434", 200),
            ("10.1.2.3", 200),
        ]:
            async with http.get(url, headers={"Host": host}) as r:
                assert r.status == status
                _ollama_headers_only(r)
        async with http.get(url, headers={"Origin": "https://evil.example.com"}) as r:
            assert (r.status, await r.read()) == (403, b"")
        for origin in ("http://localhost:3000", "https://webui.lan", "vscode-webview://abc"):
            request = {"model": "llama3.2", "prompt": "hi"}
            async with http.post(
                emu.url + "/api/generate", json=request, headers={"Origin": origin}
            ) as r:
                assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == origin
                await r.read()
        preflight = {"Origin": "app://x", "Access-Control-Request-Method": "POST"}
        async with http.options(emu.url + "/api/chat", headers=preflight) as r:
            assert r.status == 204 and "POST" in r.headers["Access-Control-Allow-Methods"]


# --- listing and showing ------------------------------------------------------------------


async def test_list_show_and_ps(emu: RunningEmulator, client: ollama.AsyncClient):
    listed = await client.list()
    names = [m.model for m in listed.models]
    assert names == ["llama3.2:latest", "qwen2.5:0.5b", "nomic-embed-text:latest"]
    llama = listed.models[0]
    assert llama.details is not None
    assert (llama.details.family, llama.details.parameter_size) == ("llama", "3.2B")
    assert llama.digest is not None and len(llama.digest) == 64 and llama.size
    shown = await client.show("llama3.2")
    assert (
        shown.modelfile is not None and "FROM /root/.ollama/models/blobs/sha256-" in shown.modelfile
    )
    assert shown.modelinfo is not None and shown.modelinfo["llama.embedding_length"] == 3072
    assert (await client.ps()).models == []
    await client.generate("qwen2.5:0.5b", "hello")
    loaded = await client.ps()
    assert [m.model for m in loaded.models] == ["qwen2.5:0.5b"]
    await client.generate("qwen2.5:0.5b", "", keep_alive=0)  # unloads it
    assert (await client.ps()).models == []


# --- generation ---------------------------------------------------------------------------


async def test_generate_streams_one_ndjson_line_per_token(
    emu: RunningEmulator, http: aiohttp.ClientSession
):
    request = {"model": "llama3.2", "prompt": "Why is the sky blue?", "options": {"num_predict": 7}}
    async with http.post(emu.url + "/api/generate", json=request) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/x-ndjson"
        _ollama_headers_only(r)
        lines = [json.loads(line) async for line in r.content]
    assert len(lines) == 8
    assert all(not line["done"] for line in lines[:-1])
    assert list(lines[0]) == ["model", "created_at", "response", "done"]
    final = lines[-1]
    assert (final["model"], final["done"], final["done_reason"], final["response"]) == (
        "llama3.2",
        True,
        "length",
        "",
    )
    assert final["eval_count"] == 7 and len(final["context"]) > 7
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0
    streamed = "".join(line["response"] for line in lines)
    async with http.post(emu.url + "/api/generate", json=request | {"stream": False}) as r:
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
        whole = await r.json()
    assert whole["response"] == streamed and whole["done"] is True


async def test_chat_is_deterministic_streamed_or_not(client: ollama.AsyncClient):
    whole = await client.chat("llama3.2", messages=CHAT)
    assert whole.message.role == "assistant" and whole.done_reason == "stop"
    assert whole.eval_count == 16 and whole.message.content.endswith(".")
    parts = [
        part async for part in await client.chat("llama3.2:latest", messages=CHAT, stream=True)
    ]
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].done and parts[-1].done_reason == "stop"
    other = await client.chat("llama3.2", messages=[{"role": "user", "content": "Hello"}])
    assert other.message.content != whole.message.content
    short = await client.chat("llama3.2", messages=CHAT, options={"num_predict": 3})
    assert short.eval_count == 3 and short.done_reason == "length"


async def test_embeddings_are_unit_vectors_of_the_models_width(client: ollama.AsyncClient):
    result = await client.embed("nomic-embed-text", input=["alpha", "beta", "alpha"])
    first, second, third = result.embeddings
    assert len(first) == 768 and first == third and first != second
    assert math.isclose(math.fsum(v * v for v in first), 1.0, rel_tol=1e-6)
    assert len((await client.embed("llama3.2", input="x")).embeddings[0]) == 3072
    legacy = await client.embeddings("nomic-embed-text", prompt="alpha")
    assert list(legacy.embedding) == first


# --- native errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/generate", b"", 400, "missing request body"),
        ("/api/chat", b"  \n", 400, "missing request body"),
        ("/api/generate", b"{oops", 400,
         "invalid character 'o' looking for beginning of object key string"),
        ("/api/generate", b'{"model": "x"', 400, "unexpected EOF"),
        ("/api/generate", b'{"model":"llama3.2","stream":"yes"}', 400,
         "json: cannot unmarshal string into Go struct field GenerateRequest.stream of type bool"),
        ("/api/chat", b'{"model":"llama3.2","messages":[{"content":1}]}', 400,
         "json: cannot unmarshal number into Go struct field "
         "Message.messages.content of type string"),
        ("/api/generate", b'{"model":"nope","prompt":"hi"}', 404,
         'model "nope" not found, try pulling it first'),
        ("/api/chat", b'{"model":"nope:1b","messages":[]}', 404,
         'model "nope:1b" not found, try pulling it first'),
        ("/api/chat", b'{"messages":[]}', 400, "model is required"),
        ("/api/generate", b'{"model":"nomic-embed-text","prompt":"hi"}', 400,
         '"nomic-embed-text" does not support generate'),
        ("/api/generate", b'{"model":"llama3.2","prompt":"hi","options":{"num_predict":"x"}}', 500,
         'option "num_predict" must be of type integer'),
        ("/api/embed", b'{"model":"llama3.2","input":[1]}', 400, "invalid input type"),
        ("/api/show", b'{"model":"nope"}', 404, "model 'nope' not found"),
    ],
)  # fmt: skip
async def test_native_errors(
    emu: RunningEmulator, http: aiohttp.ClientSession, path, body, status, error
):
    async with http.post(emu.url + path, data=body) as r:
        assert r.status == status
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await r.json() == {"error": error}


async def test_client_sees_errors_as_ollama_reports_them(client: ollama.AsyncClient):
    with pytest.raises(ollama.ResponseError) as caught:
        await client.chat("missing-model", messages=CHAT)
    assert caught.value.status_code == 404
    assert caught.value.error == 'model "missing-model" not found, try pulling it first'


# --- OpenAI compatibility ---------------------------------------------------------------


async def test_openai_chat_matches_native_chat(client: ollama.AsyncClient, oai: openai.AsyncOpenAI):
    native = await client.chat("llama3.2", messages=CHAT)
    completion = await oai.chat.completions.create(model="llama3.2", messages=CHAT)
    assert completion.id.startswith("chatcmpl-") and completion.system_fingerprint == "fp_ollama"
    assert completion.choices[0].message.content == native.message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 16
    stream = await oai.chat.completions.create(
        model="llama3.2",
        messages=CHAT,
        stream=True,
        max_tokens=5,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    content = [c for c in chunks if c.choices]
    streamed = "".join(c.choices[0].delta.content or "" for c in content)
    assert streamed and native.message.content.startswith(streamed)  # the first 5 tokens
    assert content[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_openai_sse_framing(emu: RunningEmulator, http: aiohttp.ClientSession):
    request = {"model": "llama3.2", "messages": CHAT, "stream": True, "max_tokens": 2}
    async with http.post(emu.url + "/v1/chat/completions", json=request) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        _ollama_headers_only(r)
        raw = (await r.read()).decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert len(chunks) == 3 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    async with http.post(emu.url + "/v1/chat/completions", json=request | {"stream": False}) as r:
        assert r.headers["Content-Type"] == "application/json"
        assert (await r.read()).endswith(b"}\n")


async def test_openai_completions_embeddings_and_models(
    client: ollama.AsyncClient, oai: openai.AsyncOpenAI
):
    native = await client.generate("llama3.2", "Once upon a time")
    completion = await oai.completions.create(model="llama3.2", prompt="Once upon a time")
    assert completion.choices[0].text == native.response
    vectors = await oai.embeddings.create(model="nomic-embed-text", input=["alpha", "beta"])
    alpha = (await client.embed("nomic-embed-text", input="alpha")).embeddings[0]
    assert len(vectors.data) == 2
    assert vectors.data[0].embedding == pytest.approx(alpha, abs=1e-6)
    ids = [m.id async for m in oai.models.list()]
    assert ids == ["llama3.2:latest", "qwen2.5:0.5b", "nomic-embed-text:latest"]
    model = await oai.models.retrieve("qwen2.5:0.5b")
    assert (model.id, model.owned_by) == ("qwen2.5:0.5b", "library")
    with pytest.raises(openai.NotFoundError) as caught:
        await oai.chat.completions.create(model="nope", messages=CHAT)
    assert caught.value.body == {
        "message": 'model "nope" not found, try pulling it first',
        "type": "not_found_error",
        "param": None,
        "code": None,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "EOF"),
        (b'{"model":"llama3.2","messages":[]}', "[] is too short - 'messages'"),
        (b'{"model":"llama3.2","messages":[{"role":"user","content":7}]}',
         "invalid message content type: float64"),
    ],
)  # fmt: skip
async def test_openai_request_errors(
    emu: RunningEmulator, http: aiohttp.ClientSession, body, message
):
    async with http.post(emu.url + "/v1/chat/completions", data=body) as r:
        assert r.status == 400
        error = (await r.json())["error"]
        assert (error["message"], error["type"]) == (message, "invalid_request_error")


# --- model management -----------------------------------------------------------------


async def test_pull_copy_delete_change_the_model_list(
    emu: RunningEmulator, client: ollama.AsyncClient, http: aiohttp.ClientSession
):
    progress = [p async for p in await client.pull("gemma2:2b", stream=True)]
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert any(p.total and p.completed == p.total for p in progress)
    assert "gemma2:2b" in emu.stats.installed
    await client.copy("gemma2:2b", "mine:v1")
    assert {"gemma2:2b", "mine:v1"} <= {m.model for m in (await client.list()).models}
    assert (await client.delete("gemma2:2b")).status == "success"
    with pytest.raises(ollama.ResponseError) as caught:
        await client.delete("gemma2:2b")
    assert caught.value.status_code == 404
    assert "gemma2:2b" not in emu.stats.installed and "mine:v1" in emu.stats.installed
    async with http.post(emu.url + "/api/pull", json={"model": "phi3", "stream": False}) as r:
        assert r.headers["Content-Type"] == "application/json"
        assert await r.json() == {"status": "success"}
    async with http.post(emu.url + "/api/pull", json={"model": "nonexistent-model"}) as r:
        lines = [json.loads(line) async for line in r.content]
    assert lines == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    pushed = [p.status async for p in await client.push("mine:v1", stream=True)]
    assert pushed[0] == "retrieving manifest" and pushed[-1] == "success"


async def test_blob_upload_and_create(
    emu: RunningEmulator, client: ollama.AsyncClient, http: aiohttp.ClientSession, tmp_path
):
    blob = tmp_path / "model.gguf"
    blob.write_bytes(b"GGUF" + bytes(range(256)) * 8192)  # 2 MiB, uploaded in chunks
    digest = await client.create_blob(blob)
    assert digest == "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    async with http.head(f"{emu.url}/api/blobs/{digest}") as r:
        assert r.status == 200
    async with http.post(f"{emu.url}/api/blobs/{digest}", data=b"ignored") as r:
        assert r.status == 200  # already there
    missing = "sha256:" + "0" * 64
    async with http.head(f"{emu.url}/api/blobs/{missing}") as r:
        assert r.status == 404
    async with http.post(f"{emu.url}/api/blobs/{missing}", data=b"not that") as r:
        assert r.status == 400
        actual = "sha256:" + hashlib.sha256(b"not that").hexdigest()
        assert (await r.json())["error"] == f'digest mismatch, expected "{missing}", got "{actual}"'
    async with http.head(f"{emu.url}/api/blobs/sha256:bad") as r:
        assert r.status == 400
    steps = [
        p.status
        async for p in await client.create("imported", files={"m.gguf": digest}, stream=True)
    ]
    assert steps[0] == "parsing GGUF" and steps[-1] == "success"
    await client.create("pirate", from_="llama3.2", system="Talk like a pirate.")
    shown = await client.show("pirate")
    assert shown.details is not None and shown.details.parent_model == "llama3.2:latest"
    assert {"imported:latest", "pirate:latest"} <= emu.stats.installed
    with pytest.raises(ollama.ResponseError) as caught:
        await client.create("broken")
    assert (caught.value.status_code, caught.value.error) == (
        400,
        "neither 'from' or 'files' was specified",
    )


# --- cancellation, pacing, entry points ------------------------------------------------


async def test_client_leaving_mid_stream_cancels_the_generation(http: aiohttp.ClientSession):
    async with running_emulator(EmulatorConfig(tokens_per_second=200)) as emu:
        request = {"model": "llama3.2", "prompt": "go on", "options": {"num_predict": 100_000}}
        async with http.post(emu.url + "/api/generate", json=request) as r:
            assert json.loads(await r.content.readline())["done"] is False
            r.close()
        async with asyncio.timeout(10):
            await emu.stats.wait_for(lambda s: s.cancelled == 1)
        assert (emu.stats.started, emu.stats.finished) == (1, 0)
        # A whole answer, waited for at the same pace, is cancelled the same way.
        request = {"model": "llama3.2", "messages": CHAT, "stream": False} | {
            "options": {"num_predict": 100_000}
        }

        async def ask() -> None:
            async with http.post(emu.url + "/api/chat", json=request):
                pass

        whole = asyncio.create_task(ask())
        async with asyncio.timeout(10):
            await emu.stats.wait_for(lambda s: s.started == 2)
            whole.cancel()
            await emu.stats.wait_for(lambda s: s.cancelled == 2)
        with pytest.raises(asyncio.CancelledError):
            await whole


async def test_paced_stream_has_the_same_tokens(client: ollama.AsyncClient):
    async with running_emulator(EmulatorConfig(tokens_per_second=500)) as paced:
        async with ollama.AsyncClient(host=paced.url) as slow:
            paced_answer = await slow.generate("llama3.2", "same", options={"num_predict": 10})
        assert (paced.stats.started, paced.stats.finished) == (1, 1)
    fast = await client.generate("llama3.2", "same", options={"num_predict": 10})
    assert paced_answer.response == fast.response


async def test_run_emulator_reports_its_port_and_stops_when_cancelled(http: aiohttp.ClientSession):
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    config = EmulatorConfig(models=("tinyllama",), version="0.3.14")
    task = asyncio.create_task(run_emulator(config, "127.0.0.1", 0, ready=ready.set_result))
    port = await ready
    async with http.get(f"http://127.0.0.1:{port}/api/tags") as r:
        assert [m["name"] for m in (await r.json())["models"]] == ["tinyllama:latest"]
    async with http.get(f"http://127.0.0.1:{port}/api/version") as r:
        assert await r.json() == {"version": "0.3.14"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(f"http://127.0.0.1:{port}/")


def test_command_line_emulator_serves_real_clients_and_stops_on_signals():
    for stop in (signal.SIGTERM, signal.SIGINT):
        with emulator_process("--model", "llama3.2", "--model", "all-minilm") as emu:
            with ollama.Client(host=emu.url) as native:
                models = native.list().models
                answer = native.chat("llama3.2", messages=CHAT)
            assert [m.model for m in models] == ["llama3.2:latest", "all-minilm:latest"]
            with openai.OpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=0) as oai:
                reply = oai.chat.completions.create(model="llama3.2", messages=CHAT)
            assert reply.choices[0].message.content == answer.message.content
            emu.process.send_signal(stop)
            assert emu.process.wait(timeout=10) == 0
