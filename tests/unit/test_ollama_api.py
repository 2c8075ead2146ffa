"""The table of Ollama's API: lookups, the read-only allow list, stream error framing."""

from __future__ import annotations

import json

import pytest

from ollana.ollama_api import (
    BLOBS_PATH,
    ENDPOINTS,
    allowed_read_only,
    changes_models,
    endpoint,
    is_cloud_model,
    route_label,
    stream_error_chunk,
)

DIGEST = "sha256:" + "a" * 64

# Ollama 0.33's route table (server/routes.go GenerateRoutes), method by method.
OLLAMA_ROUTES = [
    ("HEAD", "/"), ("GET", "/"), ("HEAD", "/api/version"), ("GET", "/api/version"),
    ("GET", "/api/status"), ("POST", "/api/pull"), ("POST", "/api/push"),
    ("HEAD", "/api/tags"), ("GET", "/api/tags"), ("POST", "/api/show"),
    ("DELETE", "/api/delete"), ("POST", "/api/me"), ("POST", "/api/signout"),
    ("DELETE", "/api/user/keys/abc"), ("POST", "/api/create"), ("POST", "/api/blobs/" + DIGEST),
    ("HEAD", "/api/blobs/" + DIGEST), ("POST", "/api/copy"),
    ("POST", "/api/experimental/web_search"), ("POST", "/api/experimental/web_fetch"),
    ("GET", "/api/experimental/model-recommendations"), ("GET", "/api/ps"),
    ("POST", "/api/generate"), ("POST", "/api/chat"), ("POST", "/api/embed"),
    ("POST", "/api/embeddings"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"), ("GET", "/v1/models"), ("GET", "/v1/models/hf.co/a/b:q4"),
    ("POST", "/v1/responses"), ("POST", "/v1/audio/transcriptions"), ("POST", "/v1/messages"),
]  # fmt: skip
READ_ONLY = {
    "/", "/api/version", "/api/status", "/api/tags", "/api/show", "/api/ps", "/api/generate",
    "/api/chat", "/api/embed", "/api/embeddings", "/v1/chat/completions", "/v1/completions",
    "/v1/embeddings", "/v1/models", "/v1/models/", "/v1/responses", "/v1/audio/transcriptions",
    "/v1/messages",
}  # fmt: skip


@pytest.mark.parametrize(("method", "path"), OLLAMA_ROUTES)
def test_every_route_of_ollama_is_in_the_table(method: str, path: str) -> None:
    found = endpoint(path, method)
    assert found is not None and method in found.methods, (method, path)
    read_only = found.path in READ_ONLY or (found.path == BLOBS_PATH and method == "HEAD")
    assert allowed_read_only(method, path) is read_only


def test_unknown_paths_and_methods_are_refused_on_a_read_only_server() -> None:
    for method, path in [
        ("GET", "/debug/pprof/"), ("GET", "/debug/pprof/heap"), ("GET", "/api/show"),
        ("POST", "/api/tags"), ("GET", "/api/new-thing"), ("OPTIONS", "/api/chat"),
        ("GET", "/api/blobs/a/b"), ("POST", "/ollana/v1/hello"),
    ]:  # fmt: skip
        assert not allowed_read_only(method, path), (method, path)


def test_blob_methods_differ() -> None:
    assert changes_models("POST", "/api/blobs/" + DIGEST)
    assert not changes_models("HEAD", "/api/blobs/" + DIGEST)
    assert route_label("/api/blobs/" + DIGEST) == "/api/blobs/:digest"
    assert route_label("/api/user/keys/xyz") == "/api/user/keys/:key"
    assert route_label("/debug/pprof/") == "other"


def test_route_labels_are_bounded() -> None:
    labels = {e.route for e in ENDPOINTS}
    assert len(labels) == len({(e.path) for e in ENDPOINTS})
    assert all(":" not in label or label.endswith((":digest", ":model", ":key", ":name"))
               for label in labels)  # fmt: skip


@pytest.mark.parametrize(
    ("model", "cloud"),
    [("gpt-oss:120b-cloud", True), ("qwen3-coder:480b-cloud", True), ("kimi-k2:cloud", True),
     ("llama3.2:latest", False), ("hf.co/x/cloud:latest", False), ("cloud:latest", False)],
)  # fmt: skip
def test_cloud_models(model: str, cloud: bool) -> None:
    assert is_cloud_model(model) is cloud


def _sse(chunk: bytes) -> tuple[str | None, dict[str, object]]:
    text = chunk.decode()
    assert text.endswith("\n\n") and text.count("\n\n") == 1
    fields = dict(line.split(": ", 1) for line in text.strip().split("\n"))
    return fields.get("event"), json.loads(fields["data"])


def test_stream_errors_in_each_format() -> None:
    ndjson = stream_error_chunk("application/x-ndjson", "boom", "/api/chat")
    assert ndjson == b'{"error": "boom"}\n'
    event, data = _sse(stream_error_chunk("text/event-stream", "boom", "/v1/chat/completions"))
    assert event is None
    assert data == {"error": {"message": "boom", "type": "api_error", "param": None, "code": None}}
    event, data = _sse(stream_error_chunk("text/event-stream", "boom", "/v1/messages"))
    assert event == "error"
    assert data == {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    event, data = _sse(stream_error_chunk("text/event-stream", "boom", "/v1/responses"))
    assert event == "error"
    assert data["type"] == "error" and data["message"] == "boom" and data["code"]
