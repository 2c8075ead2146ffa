"""The emulator's Anthropic, Responses, transcription and account endpoints (Ollama 0.33).

Driven by the real `openai` package where it has the call, raw aiohttp otherwise.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from ollana.emulator import EmulatorConfig
from tests.integration.emulator_fixtures import RunningEmulator, running_emulator

CLOUD = "gpt-oss:120b-cloud"
MESSAGE = {
    "model": "llama3.2",
    "max_tokens": 64,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "Why is the sky blue?"}],
}


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with running_emulator(EmulatorConfig(models=("llama3.2", CLOUD))) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sse(body: str) -> list[tuple[str | None, dict[str, object]]]:
    """(event, data) pairs of a server-sent event stream."""
    events = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields.get("event"), json.loads(fields["data"])))
    return events


async def test_anthropic_messages_whole_and_streamed(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(emu.url + "/v1/messages", json=MESSAGE) as r:
        assert r.status == 200 and r.content_type == "application/json"
        whole = await r.json()
    assert list(whole) == ["id", "type", "role", "model", "content", "stop_reason", "usage"]
    assert whole["id"].startswith("msg_") and whole["stop_reason"] == "end_turn"
    text = whole["content"][0]["text"]
    async with http.post(emu.url + "/v1/messages", json={**MESSAGE, "stream": True}) as r:
        assert r.content_type == "text/event-stream"
        events = sse(await r.text())
    names = [e for e, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert all(data["type"] == name for name, data in events)
    deltas = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")  # type: ignore[index]
    assert deltas == text
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn"}


async def test_anthropic_errors_are_anthropic_shaped(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(emu.url + "/v1/messages", json={**MESSAGE, "model": "nope"}) as r:
        assert r.status == 404
        body = await r.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    async with http.post(emu.url + "/v1/messages", json={**MESSAGE, "max_tokens": 0}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_responses_through_the_openai_client(emu: RunningEmulator) -> None:
    async with openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=0) as oai:
        whole = await oai.responses.create(
            model="llama3.2", instructions="Be brief.", input="Why is the sky blue?"
        )
        assert whole.id.startswith("resp_") and whole.status == "completed"
        stream = await oai.responses.create(
            model="llama3.2", instructions="Be brief.", input="Why is the sky blue?", stream=True
        )
        kinds, deltas = [], []
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert "".join(deltas) == whole.output_text
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


async def test_responses_events_are_go_maps(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    request = {"model": "llama3.2", "input": "hi", "stream": True}
    async with http.post(emu.url + "/v1/responses", json=request) as r:
        events = sse(await r.text())
    # Ollama builds each event as a map[string]any: Go writes its keys sorted.
    assert [list(d) for _, d in events] == [sorted(d) for _, d in events]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    created = events[0][1]["response"]
    assert created["top_p"] == 1 and created["status"] == "in_progress"  # type: ignore[index]


async def test_transcription_reads_the_form(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=0) as oai:
        result = await oai.audio.transcriptions.create(
            model="llama3.2", file=("a.wav", b"RIFF" + b"\x00" * 2000)
        )
    assert result.text
    form = aiohttp.FormData()
    form.add_field("model", "llama3.2")
    async with http.post(emu.url + "/v1/audio/transcriptions", data=form) as r:
        assert r.status == 400
        assert "file is required" in (await r.json())["error"]["message"]


async def test_status_and_account_signed_in(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(emu.url + "/api/status") as r:
        assert await r.json() == {"cloud": {"disabled": False, "source": "none"}}
    async with http.post(emu.url + "/api/me") as r:
        assert r.status == 200 and (await r.json())["name"]
    chat = {"model": CLOUD, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    async with http.post(emu.url + "/api/chat", json=chat) as r:
        assert r.status == 200
    async with http.post(emu.url + "/api/signout") as r:
        assert r.status == 200 and await r.read() == b"null"
    async with http.post(emu.url + "/api/signout") as r:
        assert r.status == 401
    async with http.post(emu.url + "/api/chat", json=chat) as r:
        assert r.status == 401
        assert (await r.json())["signin_url"].startswith("https://ollama.com/connect?")


async def test_signed_out_cloud_models_answer_401_with_signin_url(
    http: aiohttp.ClientSession,
) -> None:
    config = EmulatorConfig(models=("llama3.2", CLOUD), signed_in=False)
    async with running_emulator(config) as emu:
        async with http.post(emu.url + "/api/me") as r:
            assert r.status == 401
            body = await r.json()
        assert list(body) == ["error", "signin_url"] and body["error"] == "unauthorized"
        for path in ("/api/chat", "/v1/chat/completions", "/v1/messages", "/v1/responses"):
            request = {**MESSAGE, "model": CLOUD, "input": "hi"}
            async with http.post(emu.url + path, json=request) as r:
                assert r.status == 401, path
                assert "signin_url" in await r.json()
        async with http.post(emu.url + "/v1/messages", json=MESSAGE) as r:
            assert r.status == 200  # a local model does not need the account
