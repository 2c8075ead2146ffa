"""What a request asks for, and the order servers are tried in."""

from __future__ import annotations

import json

import pytest

from ollana.cluster.models import Route, inspect_request
from ollana.cluster.router import order
from ollana.cluster.server import Server, ServerState
from ollana.config import HostPort
from ollana.ollama_api import normalize_model

CAP = 1024 * 1024


def server(
    name: str,
    *,
    models: tuple[str, ...] = (),
    loaded: tuple[str, ...] = (),
    known: bool = True,
    priority: int = 0,
    inflight: int = 0,
    latency: float | None = 0.001,
    state: ServerState = ServerState.HEALTHY,
) -> Server:
    s = Server(
        HostPort(name, 11435),
        scheme="https",
        device_id=(name.encode().hex() * 64)[:64],
        static=False,
        priority=priority,
    )
    s.models = frozenset(normalize_model(m) for m in models)
    s.loaded = frozenset(normalize_model(m) for m in loaded)
    s.models_known = known
    s.inflight = inflight
    s.latency = latency
    s.state = state
    return s


def names(servers: list[Server]) -> list[str]:
    return [s.address.host for s in servers]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:1b", "llama3.2:1b"),
        ("registry.ollama.ai/library/llama3.2:1b", "llama3.2:1b"),
        ("hf.co/user/repo", "hf.co/user/repo:latest"),
        ("hf.co/user/repo:Q4_K_M", "hf.co/user/repo:Q4_K_M"),
        (" qwen2.5 ", "qwen2.5:latest"),
    ],
)
def test_normalize_model(raw: str, expected: str) -> None:
    assert normalize_model(raw) == expected


@pytest.mark.parametrize(
    ("path", "body", "model"),
    [
        ("/api/chat", {"model": "llama3.2", "messages": []}, "llama3.2:latest"),
        ("/api/generate", {"model": "qwen2.5:0.5b", "prompt": "hi"}, "qwen2.5:0.5b"),
        ("/api/show", {"name": "llama3.2"}, "llama3.2:latest"),
        ("/api/copy", {"source": "a", "destination": "b"}, "a:latest"),
        ("/v1/chat/completions", {"model": "llama3.2", "messages": []}, "llama3.2:latest"),
        ("/api/version", {"model": "llama3.2"}, None),
        ("/api/chat", {"model": 7}, None),
        ("/api/chat", ["model"], None),
    ],
)
def test_inspect_reads_model_only_where_it_is(path: str, body: object, model: str | None) -> None:
    route = inspect_request(path, json.dumps(body).encode(), None, CAP)
    assert route.model == model


def test_inspect_tolerates_bad_bodies() -> None:
    for body in (b"{", b"\xff\xfe", b"[" * 100_000, b""):
        assert inspect_request("/api/chat", body, None, CAP).model is None


def test_inspect_respects_the_cap() -> None:
    body = json.dumps({"model": "llama3.2", "prompt": "x" * 100}).encode()
    assert inspect_request("/api/generate", body, None, 50).model is None


def test_blob_and_create_share_digests() -> None:
    digest = "sha256:" + "ab" * 32
    upload = inspect_request(f"/api/blobs/{digest}", None, None, CAP)
    create = inspect_request(
        "/api/create", json.dumps({"model": "m", "files": {"f.gguf": digest}}).encode(),
        None, CAP,
    )  # fmt: skip
    assert upload.blobs == create.blobs == (digest,)
    assert create.mutating


def test_conversation_key_follows_the_opening() -> None:
    def key(messages: list[dict[str, str]]) -> str | None:
        body = json.dumps({"model": "m", "messages": messages}).encode()
        return inspect_request("/api/chat", body, None, CAP).conversation

    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    later = [*first, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "?"}]
    other = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "bye"}]
    assert key(first) is not None
    assert key(first) == key(later)
    assert key(first) != key(other)


def test_model_tiers_loaded_then_installed_then_unknown_then_rest() -> None:
    servers = [
        server("rest", models=("other",)),
        server("unknown", known=False),
        server("installed", models=("m",)),
        server("loaded", models=("m",), loaded=("m",)),
    ]
    assert names(order(servers, Route("/api/chat", "m:latest"))) == [
        "loaded", "installed", "unknown", "rest",
    ]  # fmt: skip


def test_priority_then_inflight_then_latency_within_a_tier() -> None:
    servers = [
        server("slow", models=("m",), latency=0.5),
        server("busy", models=("m",), inflight=3),
        server("fast", models=("m",), latency=0.001),
        server("preferred", models=("m",), priority=10, inflight=9, latency=0.9),
    ]
    assert names(order(servers, Route("/api/chat", "m:latest"))) == [
        "preferred", "fast", "slow", "busy",
    ]  # fmt: skip


def test_suspect_after_healthy() -> None:
    servers = [server("a", state=ServerState.SUSPECT, latency=0.0), server("b", latency=1.0)]
    assert names(order(servers, Route("/api/tags"))) == ["b", "a"]


def test_sticky_server_leads_its_tier_only() -> None:
    servers = [
        server("loaded", models=("m",), loaded=("m",), latency=0.5),
        server("other-loaded", models=("m",), loaded=("m",), latency=0.1),
        server("installed", models=("m",)),
    ]
    route = Route("/api/chat", "m:latest", conversation="c")
    assert names(order(servers, route, servers[0].key))[0] == "loaded"
    # A sticky server in a worse tier does not jump ahead of one that has the model loaded.
    assert names(order(servers, route, servers[2].key))[0] == "other-loaded"


def test_pin_by_device_prefix_or_host() -> None:
    servers = [server("a"), server("b")]
    assert names(order(servers, Route("/api/tags", pin=servers[1].device_id[:8]))) == ["b"]
    assert names(order(servers, Route("/api/tags", pin="a"))) == ["a"]
    assert names(order(servers, Route("/api/tags", pin="zzz"))) == []


def test_a_server_whose_own_queue_is_long_comes_after_an_idle_one() -> None:
    busy, idle = server("busy", models=("m",)), server("idle", models=("m",), latency=0.01)
    busy.queue = 6  # other devices' requests waiting there, as its announce said
    assert names(order([busy, idle], Route("/api/chat", "m:latest"))) == ["idle", "busy"]
    busy.queue = 0
    assert names(order([busy, idle], Route("/api/chat", "m:latest"))) == ["busy", "idle"]
