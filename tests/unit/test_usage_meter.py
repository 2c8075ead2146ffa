"""The usage meter: counts read from each API's answer, whatever the chunk boundaries."""

from __future__ import annotations

import json
import random

import pytest

from ollana.usage import TAIL_BYTES, Usage, UsageMeter

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
JSON = "application/json; charset=utf-8"


def splits(data: bytes) -> list[list[bytes]]:
    """The same bytes whole, byte by byte, and in random pieces."""
    rng = random.Random(len(data))
    pieces: list[bytes] = []
    at = 0
    while at < len(data):
        step = rng.randint(1, 97)
        pieces.append(data[at : at + step])
        at += step
    return [[data], [data[i : i + 1] for i in range(len(data))], pieces]


def meter(content_type: str, data: bytes) -> Usage:
    results = set()
    for chunks in splits(data):
        m = UsageMeter(content_type)
        for chunk in chunks:
            m.feed(chunk)
        results.add(m.result())
    assert len(results) == 1, "the split changed the result"
    return results.pop()


def line(value: object) -> bytes:
    return json.dumps(value).encode() + b"\n"


def sse(value: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(value).encode() + b"\n\n"


FINAL = {
    "model": "llama3.2",
    "created_at": "2026-01-01T00:00:00Z",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "stop",
    "total_duration": 5_000_000_000,
    "load_duration": 1_000_000,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 2_000_000,
    "eval_count": 298,
    "eval_duration": 4_000_000_000,
}


def test_native_chat_stream_reads_the_final_object() -> None:
    text = 'say "eval_count": 999 and "model":"fake"'
    body = line({"model": "llama3.2", "message": {"content": text}, "done": False}) * 50
    usage = meter(NDJSON, body + line(FINAL))
    assert usage == Usage(
        model="llama3.2",
        prompt_tokens=26,
        generated_tokens=298,
        eval_seconds=4.0,
        total_seconds=5.0,
        reported=True,
    )


def test_native_generate_with_a_context_longer_than_the_tail() -> None:
    final = {"model": "m:7b", "response": "", "done": True, "context": list(range(20_000))}
    final |= {"prompt_eval_count": 7, "eval_count": 3, "eval_duration": 10**9}
    usage = meter(NDJSON, line({"model": "m:7b", "response": "x", "done": False}) + line(final))
    assert len(line(final)) > TAIL_BYTES
    assert (usage.model, usage.prompt_tokens, usage.generated_tokens) == ("m:7b", 7, 3)


def test_native_whole_answer_and_embed() -> None:
    usage = meter(JSON, json.dumps(FINAL).encode())
    assert (usage.prompt_tokens, usage.generated_tokens) == (26, 298)
    embed = {"model": "all-minilm", "embeddings": [[0.1] * 5000], "prompt_eval_count": 9}
    usage = meter(JSON, json.dumps(embed).encode())
    assert (usage.model, usage.prompt_tokens, usage.generated_tokens) == ("all-minilm", 9, 0)
    assert usage.reported and usage.eval_seconds is None


def test_openai_whole_answer() -> None:
    answer = {
        "id": "chatcmpl-1",
        "model": "qwen3",
        "choices": [{"message": {"content": '"prompt_tokens": 5'}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33},
    }
    usage = meter(JSON, json.dumps(answer).encode())
    assert (usage.model, usage.prompt_tokens, usage.generated_tokens) == ("qwen3", 11, 22)


def test_openai_stream_with_include_usage_takes_the_last_usage() -> None:
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    chunk = {"model": "qwen3", "choices": [{"text": "hi"}], "usage": zero}
    final = {"model": "qwen3", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 8}}
    body = sse(chunk) * 40 + sse(final) + b"data: [DONE]\n\n"
    usage = meter(SSE, body)
    assert (usage.model, usage.prompt_tokens, usage.generated_tokens) == ("qwen3", 4, 8)
    assert usage.reported and not usage.error


def test_openai_stream_without_usage_reports_nothing() -> None:
    chunk = {"model": "qwen3", "choices": [{"delta": {"content": "hi"}}]}
    usage = meter(SSE, sse(chunk) * 5 + b"data: [DONE]\n\n")
    assert usage == Usage(model="qwen3")


def test_anthropic_stream_reads_input_from_the_start_and_output_from_the_end() -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "model": "qwen3:8b",
            "usage": {"input_tokens": 31, "output_tokens": 1},
        },
    }
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x" * 200}}
    end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
           "usage": {"output_tokens": 120}}  # fmt: skip
    body = sse(start, "message_start") + sse(delta, "content_block_delta") * 200
    body += sse(end, "message_delta") + sse({"type": "message_stop"}, "message_stop")
    assert len(body) > 2 * TAIL_BYTES
    usage = meter(SSE, body)
    assert (usage.model, usage.prompt_tokens, usage.generated_tokens) == ("qwen3:8b", 31, 120)


def test_responses_stream_reads_response_completed() -> None:
    created = {"type": "response.created", "response": {"model": "gpt-oss", "usage": None}}
    delta = {"type": "response.output_text.delta", "delta": "word "}
    usage_value = {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    done = {"type": "response.completed", "response": {"model": "gpt-oss", "usage": usage_value}}
    body = sse(created, "response.created") + sse(delta, "response.output_text.delta") * 30
    usage = meter(SSE, body + sse(done, "response.completed"))
    assert (usage.model, usage.prompt_tokens, usage.generated_tokens) == ("gpt-oss", 12, 40)


@pytest.mark.parametrize(
    ("content_type", "ending"),
    [
        (NDJSON, line({"error": "model runner stopped"})),
        (SSE, sse({"error": {"message": "upstream failed", "type": "api_error"}})),
        (SSE, sse({"type": "error", "error": {"type": "api_error"}}, "error")),
    ],
)
def test_a_stream_ending_in_an_error_is_an_error(content_type: str, ending: bytes) -> None:
    first = line({"model": "m", "done": False}) if content_type == NDJSON else sse({"model": "m"})
    usage = meter(content_type, first + ending)
    assert usage.error and usage.model == "m" and not usage.reported


def test_nothing_fed_and_garbage() -> None:
    assert UsageMeter(None).result() == Usage()
    usage = meter(NDJSON, b'\x00\xff not json {"model": \n' * 3)
    assert usage == Usage()


def test_a_long_stream_keeps_only_a_bounded_tail() -> None:
    m = UsageMeter(NDJSON)
    for _ in range(100_000):
        m.feed(b'{"model":"m","done":false}\n')
    m.feed(line(FINAL))
    assert sum(map(len, m._tail)) < TAIL_BYTES + 400
    assert m.result().generated_tokens == 298
