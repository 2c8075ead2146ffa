"""What routing reads from today's request bodies: compressed, multipart, Anthropic, Responses."""

from __future__ import annotations

import gzip
import json
import zlib

import zstandard

from ollana.cluster.encoding import decoded, form_field
from ollana.cluster.models import inspect_request

CAP = 64 * 1024
CHAT = json.dumps({"model": "phi3", "messages": [{"role": "user", "content": "hi"}]}).encode()


def route(path: str, body: bytes, **kw: str):  # type: ignore[no-untyped-def]
    return inspect_request(path, body, None, CAP, **kw)


def test_each_encoding_is_undone_and_the_model_read() -> None:
    encoded = {
        "zstd": zstandard.ZstdCompressor().compress(CHAT),
        "gzip": gzip.compress(CHAT),
        "deflate": zlib.compress(CHAT),
        "identity": CHAT,
    }
    for coding, body in encoded.items():
        assert decoded(body, coding, CAP) == CHAT, coding
        assert route("/v1/chat/completions", body, content_encoding=coding).model == "phi3:latest"
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decoded(raw_deflate.compress(CHAT) + raw_deflate.flush(), "deflate", CAP) == CHAT
    both = zstandard.ZstdCompressor().compress(gzip.compress(CHAT))
    assert decoded(both, "gzip, zstd", CAP) == CHAT


def test_a_body_that_does_not_decode_is_unrouted() -> None:
    for coding, body in [
        ("zstd", b"\x28\xb5\x2f\xfdnot zstd"),
        ("gzip", b"\x1f\x8b garbage"),
        ("gzip", gzip.compress(CHAT)[:-12]),  # cut short
        ("deflate", b"nope"),
        ("br", CHAT),  # not one ollana reads
        ("gzip, gzip, gzip, gzip", CHAT),
    ]:
        assert decoded(body, coding, CAP) is None, coding
        found = route("/api/chat", body, content_encoding=coding)
        assert found.model is None and found.path == "/api/chat"


def test_decompression_bombs_stop_at_the_cap() -> None:
    bomb = b'{"model": "phi3", "pad": "' + b"a" * (64 << 20) + b'"}'
    for coding, body in [
        ("zstd", zstandard.ZstdCompressor(level=19).compress(bomb)),
        ("gzip", gzip.compress(bomb, 9)),
        ("deflate", zlib.compress(bomb, 9)),
    ]:
        assert len(body) < CAP  # a small body on the wire...
        assert decoded(body, coding, CAP) is None  # ...that is not expanded past the cap
        assert route("/api/chat", body, content_encoding=coding).model is None


def test_a_transcription_form_names_its_model() -> None:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + b"RIFF"
        + bytes(CAP * 2)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    kind = f"multipart/form-data; boundary={boundary}"
    found = route("/v1/audio/transcriptions", body, content_type=kind)
    assert found.model == "whisper:latest"
    assert form_field(body, kind, "file") is None  # a file is not a field
    assert form_field(body, "application/json", "model") is None
    assert route("/v1/audio/transcriptions", body, content_type="text/plain").model is None


def test_anthropic_system_and_responses_instructions_key_the_conversation() -> None:
    def key(path: str, doc: dict[str, object]) -> str | None:
        return route(path, json.dumps(doc).encode()).conversation

    first = {"role": "user", "content": "hi"}
    turn1 = {"model": "m", "system": "S", "max_tokens": 9, "messages": [first]}
    turn2 = {**turn1, "messages": [first, {"role": "assistant", "content": "yo"},
                                   {"role": "user", "content": "more"}]}  # fmt: skip
    other = {**turn1, "system": "T"}
    assert key("/v1/messages", turn1) == key("/v1/messages", turn2) is not None
    assert key("/v1/messages", turn1) != key("/v1/messages", other)
    r1 = {"model": "m", "instructions": "I", "input": "hi"}
    r2 = {"model": "m", "instructions": "I", "input": [first, {"role": "user", "content": "x"}]}
    assert key("/v1/responses", r1) is not None
    assert key("/v1/responses", r2) == key(
        "/v1/responses", {"model": "m", "instructions": "I", "input": [first]}
    )
    assert key("/v1/responses", r1) != key("/v1/responses", {**r1, "instructions": "J"})


def test_previous_response_id_and_unloads() -> None:
    chained = {"model": "m", "input": "and?", "previous_response_id": "resp_123"}
    assert route("/v1/responses", json.dumps(chained).encode()).previous_response == "resp_123"
    for keep_alive in (0, 0.0, "0", "0s", "0m"):
        doc = {"model": "m", "keep_alive": keep_alive}
        assert route("/api/generate", json.dumps(doc).encode()).unload, keep_alive
        assert route("/api/chat", json.dumps({**doc, "messages": []}).encode()).unload
    for doc in (
        {"model": "m", "keep_alive": 0, "prompt": "hi"},
        {"model": "m", "keep_alive": "5m"},
        {"model": "m", "keep_alive": False},
        {"model": "m"},
    ):
        assert not route("/api/generate", json.dumps(doc).encode()).unload, doc
    assert not route("/v1/completions", b'{"model": "m", "keep_alive": 0}').unload
