"""Many servers, one endpoint: model-aware routing, merged lists, priorities, affinity, pins.

Three emulators with different and shared models, each behind an in-process server that the
in-process client finds by discovery on loopback. `X-Ollana-Server` on each answer says which
server took it; the emulators' own model lists say which servers have which model.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import pytest

from ollana.modes import ClientMode, ServerMode
from ollana.ollama_api import normalize_model
from tests.integration.cluster_fixtures import (
    PIN,
    Cluster,
    Emulator,
    RequestLoop,
    cluster,
    healthy_with_models,
    until,
)

# a and b share llama3.2; every other model is on one server only.
MODELS: Mapping[str, tuple[str, ...]] = {
    "a": ("llama3.2", "qwen2.5:0.5b", "nomic-embed-text"),
    "b": ("llama3.2", "mistral"),
    "c": ("phi3", "all-minilm"),
}
SHARED = "llama3.2:latest"
CHAT_MODELS = ("llama3.2:latest", "qwen2.5:0.5b", "mistral:latest", "phi3:latest")
EMBED_MODELS = ("nomic-embed-text:latest", "all-minilm:latest", "llama3.2:latest")


@dataclass(slots=True)
class Lan:
    """A running cluster of servers and the client in front of them."""

    cluster: Cluster
    emulators: dict[str, Emulator]
    servers: dict[str, ServerMode]
    client: ClientMode

    @property
    def url(self) -> str:
        """Where apps talk to the client."""
        return f"http://127.0.0.1:{self.client.port}"

    def device_id(self, name: str) -> str:
        """A server's device ID."""
        return self.servers[name].device_id

    def who(self, label: str | None) -> str:
        """The name of the server an X-Ollana-Server answer header names."""
        assert label, "the answer does not say which server took it"
        for name, server in self.servers.items():
            if server.device_id.startswith(label.lower()) or label.endswith(f":{server.port}"):
                return name
        raise AssertionError(f"{label!r} is none of the servers")

    def holders(self, model: str) -> set[str]:
        """The servers whose Ollama has this model installed now."""
        wanted = normalize_model(model)
        return {n for n, e in self.emulators.items() if wanted in e.installed}

    async def ready(self) -> None:
        """Wait until the client knows every server as healthy, with its models."""
        ids = [s.device_id for s in self.servers.values()]
        await until(lambda: healthy_with_models(self.client, ids), "every server healthy")


async def start_lan(
    c: Cluster,
    models: Mapping[str, tuple[str, ...]] = MODELS,
    *,
    server_flags: Mapping[str, Mapping[str, object]] | None = None,
    tokens_per_second: float | None = None,
    **client_flags: object,
) -> Lan:
    """Emulators and servers as `models` says, then a client that discovers them."""
    c.pair(*models, "client")
    emulators = {
        name: await c.emulator(*names, tokens_per_second=tokens_per_second)
        for name, names in models.items()
    }
    servers = {
        name: await c.server(name, emulators[name], **(server_flags or {}).get(name, {}))
        for name in models
    }
    client = await c.client(**client_flags)
    return Lan(c, emulators, servers, client)


@pytest.fixture
async def lan(tmp_path: Path) -> AsyncIterator[Lan]:
    async with cluster(tmp_path) as c:
        running = await start_lan(c)
        await running.ready()
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: status, the server that took it, the body."""

    status: int
    server: str | None
    body: Any
    content_type: str


async def call(
    http: aiohttp.ClientSession,
    lan: Lan,
    method: str,
    path: str,
    body: object = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """One request through the client, read whole."""
    async with http.request(method, lan.url + path, json=body, headers=headers) as response:
        raw = await response.read()
        label = response.headers.get(PIN)
        kind = response.content_type
        decoded: Any = raw
        if kind.startswith("application/json") and raw:
            decoded = await response.json()
        return Answer(response.status, lan.who(label) if label else None, decoded, kind)


def chat(model: str, text: str = "why is the sky blue?") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": False,
        "options": {"num_predict": 4},
    }


# Each routed endpoint that runs a model, with a body naming `model`.
RUNS: Mapping[str, Any] = {
    "/api/generate": lambda m: {
        "model": m,
        "prompt": "hi",
        "stream": False,
        "options": {"num_predict": 4},
    },
    "/api/chat": chat,
    "/v1/chat/completions": lambda m: {
        "model": m,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
    },
    "/v1/completions": lambda m: {"model": m, "prompt": "hi", "max_tokens": 4},
}
EMBEDS: Mapping[str, Any] = {
    "/api/embed": lambda m: {"model": m, "input": ["one", "two"]},
    "/api/embeddings": lambda m: {"model": m, "prompt": "one"},
    "/v1/embeddings": lambda m: {"model": m, "input": "one"},
}


# --- model-aware routing ------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(RUNS))
async def test_every_model_runs_on_a_server_that_has_it(
    lan: Lan, http: aiohttp.ClientSession, path: str
) -> None:
    for model in CHAT_MODELS:
        for _ in range(3):
            answer = await call(http, lan, "POST", path, RUNS[path](model))
            assert answer.status == 200, (model, answer)
            assert answer.server in lan.holders(model), (model, answer.server)


@pytest.mark.parametrize("path", sorted(EMBEDS))
async def test_every_embedding_runs_on_a_server_that_has_its_model(
    lan: Lan, http: aiohttp.ClientSession, path: str
) -> None:
    for model in EMBED_MODELS:
        answer = await call(http, lan, "POST", path, EMBEDS[path](model))
        assert answer.status == 200, (model, answer)
        assert answer.server in lan.holders(model), (model, answer.server)


@pytest.mark.parametrize("field", ["model", "name"])
async def test_show_goes_where_the_model_is_by_either_field(
    lan: Lan, http: aiohttp.ClientSession, field: str
) -> None:
    for model in ("qwen2.5:0.5b", "mistral", "phi3", "all-minilm"):
        answer = await call(http, lan, "POST", "/api/show", {field: model})
        assert answer.status == 200, (model, answer)
        assert answer.server in lan.holders(model)
        assert "capabilities" in answer.body


async def test_the_ollama_client_sees_one_ollama_with_every_model(lan: Lan) -> None:
    async with ollama.AsyncClient(host=lan.url) as client:
        listed = {m.model for m in (await client.list()).models}
        assert listed == set().union(*(e.installed for e in lan.emulators.values()))
        for model in CHAT_MODELS:
            reply = await client.chat(
                model=model,
                messages=[{"role": "user", "content": "hi"}],
                options={"num_predict": 3},
            )
            assert reply.done
        for model in ("nomic-embed-text", "all-minilm"):
            assert len((await client.embed(model=model, input="x")).embeddings) == 1


async def test_management_requests_go_where_the_model_is(
    lan: Lan, http: aiohttp.ClientSession
) -> None:
    pushed = await call(http, lan, "POST", "/api/push", {"model": "mistral", "stream": False})
    assert (pushed.status, pushed.server) == (200, "b"), pushed
    copied = await call(
        http, lan, "POST", "/api/copy", {"source": "phi3", "destination": "phi3-copy"}
    )
    assert (copied.status, copied.server) == (200, "c")
    assert lan.holders("phi3-copy") == {"c"}
    deleted = await call(http, lan, "DELETE", "/api/delete", {"model": "qwen2.5:0.5b"})
    assert (deleted.status, deleted.server) == (200, "a")
    assert lan.holders("qwen2.5:0.5b") == set()
    tags = await call(http, lan, "GET", "/api/tags")
    names = {m["name"] for m in tags.body["models"]}
    assert "phi3-copy:latest" in names and "qwen2.5:0.5b" not in names


async def test_the_model_lists_follow_changes_made_through_the_client(
    lan: Lan, http: aiohttp.ClientSession
) -> None:
    """After a copy the pool learns the new model, and routes to where it is."""
    copied = await call(
        http, lan, "POST", "/api/copy", {"source": "phi3", "destination": "phi3-copy"}
    )
    assert copied.status == 200
    server = lan.client.pool.find(lan.device_id("c"))
    assert server is not None
    await until(lambda: "phi3-copy:latest" in server.models, "the copy in c's model list")
    for path in RUNS:
        answer = await call(http, lan, "POST", path, RUNS[path]("phi3-copy"))
        assert (answer.status, answer.server) == (200, "c"), path


async def test_a_model_copied_through_the_client_can_be_used_at_once(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        # a outranks c, so a request for a model nobody is known to have goes to a.
        lan = await start_lan(
            c, {"a": ("llama3.2",), "c": ("phi3",)}, server_flags={"a": {"priority": 5}}
        )
        await lan.ready()
        async with aiohttp.ClientSession() as http:
            copied = await call(
                http, lan, "POST", "/api/copy", {"source": "phi3", "destination": "mine"}
            )
            assert (copied.status, copied.server) == (200, "c")
            # Known by the time the answer is read, not after a refresh that may come later.
            server = lan.client.pool.find(lan.device_id("c"))
            assert server is not None and "mine:latest" in server.models
            answer = await call(http, lan, "POST", "/api/chat", chat("mine"))
            assert (answer.status, answer.server) == (200, "c"), answer


async def test_a_pull_of_a_model_nobody_has_goes_to_the_best_server(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        lan = await start_lan(
            c, {"a": ("llama3.2",), "b": ("llama3.2",)}, server_flags={"b": {"priority": 3}}
        )
        await lan.ready()
        async with aiohttp.ClientSession() as http:
            pulled = await call(
                http, lan, "POST", "/api/pull", {"model": "gemma2:2b", "stream": False}
            )
            assert (pulled.status, pulled.server) == (200, "b"), pulled
            assert lan.holders("gemma2:2b") == {"b"}
            server = lan.client.pool.find(lan.device_id("b"))
            assert server is not None
            await until(lambda: "gemma2:2b" in server.models, "the pulled model in b's list")
            answer = await call(
                http, lan, "POST", "/api/generate", RUNS["/api/generate"]("gemma2:2b")
            )
            assert (answer.status, answer.server) == (200, "b")


async def test_v1_model_by_name_goes_where_the_model_is(
    lan: Lan, http: aiohttp.ClientSession
) -> None:
    for model in ("qwen2.5:0.5b", "mistral", "phi3", "all-minilm"):
        answer = await call(http, lan, "GET", f"/v1/models/{model}")
        assert answer.status == 200, (model, answer)
        assert answer.body["id"].startswith(model)


async def test_a_request_sent_as_the_client_starts_goes_where_its_model_is(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        c.pair("a", "b", "client")
        emulators = {"a": await c.emulator("llama3.2"), "b": await c.emulator("mistral")}
        servers = {n: await c.server(n, e, discovery=False) for n, e in emulators.items()}
        static = tuple(f"127.0.0.1:{servers[n].port}" for n in ("a", "b"))
        client = await c.client(discovery=False, servers=static)
        lan = Lan(c, emulators, servers, client)
        async with aiohttp.ClientSession() as http:
            answer = await call(http, lan, "POST", "/api/chat", chat("mistral"))
        assert (answer.status, answer.server) == (200, "b"), answer


# --- a model that nobody has ------------------------------------------------------------------


async def test_a_model_nobody_has_is_ollamas_own_404(lan: Lan, http: aiohttp.ClientSession) -> None:
    for path, body in [
        ("/api/generate", RUNS["/api/generate"]("nobody-has-this")),
        ("/api/chat", chat("nobody-has-this")),
        ("/api/show", {"model": "nobody-has-this"}),
        ("/api/embed", EMBEDS["/api/embed"]("nobody-has-this")),
        ("/v1/chat/completions", RUNS["/v1/chat/completions"]("nobody-has-this")),
    ]:
        answer = await call(http, lan, "POST", path, body)
        async with http.post(lan.emulators["a"].url + path, json=body) as direct:
            expected = (direct.status, await direct.json(), direct.content_type)
        assert (answer.status, answer.body, answer.content_type) == expected, path
        assert answer.status == 404
    async with ollama.AsyncClient(host=lan.url) as client:
        with pytest.raises(ollama.ResponseError) as raised:
            await client.chat(model="nobody-has-this", messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 404
    assert "not found" in raised.value.error


# --- merged lists ------------------------------------------------------------------------------


async def test_merged_lists_are_exactly_the_union(lan: Lan, http: aiohttp.ClientSession) -> None:
    direct: dict[str, dict[str, Any]] = {}
    for name, emulator in lan.emulators.items():
        async with http.get(emulator.url + "/api/tags") as response:
            direct[name] = await response.json()
    tags = await call(http, lan, "GET", "/api/tags")
    assert tags.status == 200 and tags.content_type == "application/json"
    assert set(tags.body) == {"models"}
    names = [m["name"] for m in tags.body["models"]]
    assert len(names) == len(set(names)), "a model listed twice"
    union = {m["name"]: m for d in direct.values() for m in d["models"]}
    assert set(names) == set(union)
    for entry in tags.body["models"]:
        assert entry == union[entry["name"]]  # each entry as its Ollama lists it

    # Load one model on every server, the shared one on both of its servers.
    for name, model in (("a", SHARED), ("b", SHARED), ("b", "mistral"), ("c", "phi3")):
        pinned = {PIN: lan.device_id(name)[:12]}
        answer = await call(
            http, lan, "POST", "/api/generate", RUNS["/api/generate"](model), headers=pinned
        )
        assert (answer.status, answer.server) == (200, name)
    ps = await call(http, lan, "GET", "/api/ps")
    assert set(ps.body) == {"models"}
    loaded = [m["name"] for m in ps.body["models"]]
    assert sorted(loaded) == sorted({SHARED, "mistral:latest", "phi3:latest"})
    assert {"name", "model", "size", "digest", "details", "expires_at", "size_vram"} <= set(
        ps.body["models"][0]
    )

    models = await call(http, lan, "GET", "/v1/models")
    assert models.body["object"] == "list"
    ids = [m["id"] for m in models.body["data"]]
    assert len(ids) == len(set(ids)) and set(ids) == set(union)
    assert all(set(m) == {"id", "object", "created", "owned_by"} for m in models.body["data"])

    async with http.head(lan.url + "/api/tags") as head:
        assert head.status == 200
    async with ollama.AsyncClient(host=lan.url) as client:
        assert {m.model for m in (await client.ps()).models} == set(loaded)


async def test_a_pinned_list_is_that_servers_own(lan: Lan, http: aiohttp.ClientSession) -> None:
    pinned = await call(http, lan, "GET", "/api/tags", headers={PIN: lan.device_id("c")[:8]})
    assert pinned.server == "c"
    assert {m["name"] for m in pinned.body["models"]} == lan.emulators["c"].installed


# --- priorities --------------------------------------------------------------------------------


async def test_an_announced_priority_wins_among_servers_with_the_model(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        lan = await start_lan(
            c,
            {"a": ("llama3.2", "qwen2.5:0.5b"), "b": ("llama3.2",), "c": ("llama3.2",)},
            server_flags={"b": {"priority": 10}, "c": {"priority": -5}},
            tokens_per_second=200,
        )
        await lan.ready()
        async with aiohttp.ClientSession() as http:
            took = [
                (await call(http, lan, "POST", "/api/chat", chat(SHARED, str(i)))).server
                for i in range(10)
            ]
            assert took == ["b"] * 10
            # Having the model comes before priority.
            only_a = await call(http, lan, "POST", "/api/chat", chat("qwen2.5:0.5b"))
            assert only_a.server == "a"
            # With the model loaded everywhere, priority still comes before the number of
            # requests in flight.
            for name in ("a", "c"):
                warm = await call(
                    http, lan, "POST", "/api/chat", chat(SHARED), headers={PIN: name_pin(lan, name)}
                )
                assert warm.server == name
            held = await hold_stream(http, lan, "b", SHARED)
            try:
                answer = await call(http, lan, "POST", "/api/chat", chat(SHARED, "busy"))
                assert answer.server == "b"
            finally:
                held.close()
            # Without b, a (priority 0) comes before c (priority -5).
            await lan.servers["b"].close()
            await until(lambda: lan.client.pool.find(lan.device_id("b")) is None, "b removed")
            took = [
                (await call(http, lan, "POST", "/api/chat", chat(SHARED, str(i)))).server
                for i in range(5)
            ]
            assert took == ["a"] * 5


async def test_a_static_servers_priority_is_honoured(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        c.pair("a", "b", "client")
        emulators = {n: await c.emulator("llama3.2") for n in ("a", "b")}
        servers = {n: await c.server(n, e, discovery=False) for n, e in emulators.items()}
        static = (f"127.0.0.1:{servers['a'].port}", f"127.0.0.1:{servers['b'].port}@7")
        client = await c.client(discovery=False, servers=static)
        lan = Lan(c, emulators, servers, client)
        await until(lambda: all(s.models_known for s in client.pool), "model lists known")
        assert {s.priority for s in client.pool} == {0, 7}
        async with aiohttp.ClientSession() as http:
            took = [
                (await call(http, lan, "POST", "/api/chat", chat(SHARED, str(i)))).server
                for i in range(8)
            ]
        assert took == ["b"] * 8


# --- affinity and pins -------------------------------------------------------------------------


def name_pin(lan: Lan, name: str) -> str:
    """An X-Ollana-Server value that pins a request to this server."""
    return lan.device_id(name)[:12]


async def hold_stream(
    http: aiohttp.ClientSession, lan: Lan, name: str, model: str
) -> aiohttp.ClientResponse:
    """Start a long answer pinned to one server and keep it open (it counts as in flight)."""
    body = {"model": model, "prompt": "long", "options": {"num_predict": 100_000}}
    response = await http.post(
        lan.url + "/api/generate", json=body, headers={PIN: name_pin(lan, name)}
    )
    assert response.status == 200 and lan.who(response.headers[PIN]) == name
    await response.content.readline()
    return response


@pytest.mark.parametrize(
    "system",
    [
        pytest.param(True, id="with-system-prompt"),
        pytest.param(
            False,
            id="first-turn-to-second",
        ),
    ],
)
async def test_a_conversation_stays_on_its_server(tmp_path: Path, system: bool) -> None:
    async with cluster(tmp_path) as c:
        c.pair("a", "b", "client")
        emulators = {n: await c.emulator("llama3.2", tokens_per_second=200) for n in ("a", "b")}
        servers = {n: await c.server(n, e) for n, e in emulators.items()}
        lan = Lan(c, emulators, servers, await c.client())
        await lan.ready()
        async with aiohttp.ClientSession() as http:
            # Both servers have the model loaded, so only load and affinity tell them apart.
            for name in ("a", "b"):
                warm = await call(
                    http,
                    lan,
                    "POST",
                    "/api/chat",
                    chat(SHARED),
                    headers={PIN: name_pin(lan, name)},
                )
                assert warm.server == name
            prompt = [{"role": "system", "content": "be brief"}] if system else []
            turns = [[*prompt, {"role": "user", "content": "tell me about owls"}]]
            for question in ("and their eyes?", "and their feathers?", "thanks"):
                turns.append(
                    [
                        *turns[-1],
                        {"role": "assistant", "content": "owls hoot"},
                        {"role": "user", "content": question},
                    ]
                )

            async def say(messages: list[dict[str, str]]) -> Answer:
                return await call(
                    http, lan, "POST", "/api/chat", {**chat(SHARED), "messages": messages}
                )

            home = (await say(turns[0])).server
            assert home is not None
            other = "b" if home == "a" else "a"
            # Load says `other` from now on; the conversation stays on `home` all the same.
            held = await hold_stream(http, lan, home, SHARED)
            try:
                assert [(await say(t)).server for t in turns[1:]] == [home] * 3
                # A new conversation goes by load: to the server with nothing in flight.
                fresh = await call(http, lan, "POST", "/api/chat", chat(SHARED, "about cats"))
                assert fresh.server == other
                # Once the conversation's server is gone, the conversation moves on.
                await lan.servers[home].close()
            finally:
                held.close()
            await until(lambda: lan.client.pool.find(lan.device_id(home)) is None, "removed")
            moved = await say(turns[-1])
            assert (moved.status, moved.server) == (200, other)


async def test_a_pin_sends_the_request_to_that_server_only(
    lan: Lan, http: aiohttp.ClientSession
) -> None:
    c_id = lan.device_id("c")
    for pin in (c_id[:8], c_id[:12].upper(), "-".join(c_id[i : i + 8] for i in range(0, 64, 8))):
        answer = await call(http, lan, "POST", "/api/show", {"model": "phi3"}, headers={PIN: pin})
        assert (answer.status, answer.server) == (200, "c"), pin
    # Pinned to a server without the model: that server's own answer, no rerouting.
    missing = await call(http, lan, "POST", "/api/chat", chat("mistral"), headers={PIN: c_id[:8]})
    assert (missing.status, missing.server) == (404, "c")
    assert "not found" in missing.body["error"]
    # Pinned to a server's address.
    by_address = f"127.0.0.1:{lan.servers['b'].port}"
    answer = await call(http, lan, "POST", "/api/chat", chat(SHARED), headers={PIN: by_address})
    assert (answer.status, answer.server) == (200, "b")
    # Pinned to nobody: an Ollama-style error naming the pin.
    nobody = await call(http, lan, "POST", "/api/chat", chat(SHARED), headers={PIN: "0" * 12})
    assert nobody.status == 503 and "000000000000" in nobody.body["error"]


# --- blobs and create ----------------------------------------------------------------------------


async def test_blob_upload_and_create_land_on_one_server(
    lan: Lan, http: aiohttp.ClientSession
) -> None:
    data = b"GGUF" + bytes(range(256)) * 64
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with http.head(lan.url + f"/api/blobs/{digest}") as head:
        assert head.status == 404
        first = lan.who(head.headers[PIN])
    async with http.post(lan.url + f"/api/blobs/{digest}", data=data) as upload:
        assert upload.status == 201
        assert lan.who(upload.headers[PIN]) == first
    async with http.head(lan.url + f"/api/blobs/{digest}") as head:
        assert head.status == 200 and lan.who(head.headers[PIN]) == first
    body = {"model": "mine", "files": {"mine.gguf": digest}, "stream": False}
    created = await call(http, lan, "POST", "/api/create", body)
    assert (created.status, created.server) == (200, first), created
    assert lan.holders("mine") == {first}
    tags = await call(http, lan, "GET", "/api/tags")
    assert "mine:latest" in {m["name"] for m in tags.body["models"]}
    server = lan.client.pool.find(lan.device_id(first))
    assert server is not None
    await until(lambda: "mine:latest" in server.models, "the created model in the pool")
    answer = await call(http, lan, "POST", "/api/chat", chat("mine"))
    assert (answer.status, answer.server) == (200, first)


async def test_the_blobs_of_one_create_all_land_on_its_server(
    lan: Lan, http: aiohttp.ClientSession
) -> None:
    blobs = [bytes([i]) * (512 << 10) for i in range(3)]
    digests = ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]

    async def upload(digest: str, data: bytes) -> str:
        async with http.post(lan.url + f"/api/blobs/{digest}", data=data) as response:
            assert response.status == 201
            return lan.who(response.headers[PIN])

    # Uploaded side by side, as a model's files are.
    landed = await asyncio.gather(*map(upload, digests, blobs))
    files = {f"model-{i:05}-of-00003.gguf": d for i, d in enumerate(digests, 1)}
    created = await call(
        http, lan, "POST", "/api/create", {"model": "many", "files": files, "stream": False}
    )
    assert set(landed) == {created.server}, landed
    assert created.status == 200, created


async def test_a_blob_over_a_mebibyte_goes_through(lan: Lan, http: aiohttp.ClientSession) -> None:
    data = bytes(range(256)) * (8 << 10)  # 2 MiB: kept whole for a retry
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with http.post(lan.url + f"/api/blobs/{digest}", data=io.BytesIO(data)) as upload:
        assert upload.status == 201
        holder = lan.who(upload.headers[PIN])
    assert lan.emulators[holder].store.has_blob(digest)
    async with http.head(lan.url + f"/api/blobs/{digest}") as head:
        assert (head.status, lan.who(head.headers[PIN])) == (200, holder)


# --- a server dies --------------------------------------------------------------------------------


async def test_a_dead_servers_models_leave_and_shared_ones_keep_working(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        c.pair("a", "b", "client")
        emulators = {n: await c.emulator(*MODELS[n]) for n in ("a", "b")}
        processes = {n: await c.server_process(n, e) for n, e in emulators.items()}
        client = await c.client()
        ids = {n: c.device_id(n) for n in processes}
        await until(lambda: healthy_with_models(client, ids.values()), "both servers healthy")
        url = f"http://127.0.0.1:{client.port}"
        async with aiohttp.ClientSession() as http:

            async def listed() -> set[str]:
                async with http.get(url + "/api/tags") as response:
                    return {m["name"] for m in (await response.json())["models"]}

            assert await listed() == emulators["a"].installed | emulators["b"].installed
            async with RequestLoop(url, SHARED, workers=3) as loop:
                await until(lambda: len(loop.servers_since(0.0)) == 2, "both servers used")
                await processes["a"].kill()

                async def a_gone() -> bool:
                    return await listed() == emulators["b"].installed

                await until(a_gone, "a's models to leave the list")
                await loop.more(20)
            assert loop.failures == [], loop.failures
            only_a = chat("qwen2.5:0.5b")
            async with http.post(url + "/api/chat", json=only_a) as response:
                # Only a, unreachable now, has it: said so, not Ollama's 404 "try pulling it"
                # from a server that does not have it (a user would download it again).
                assert response.status == 503
                error = (await response.json())["error"]
                assert "qwen2.5:0.5b" in error and "unreachable" in error, error
                assert PIN not in response.headers
