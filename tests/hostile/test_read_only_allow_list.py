"""`--open` and `--read-only` servers forward only what apps need to use models.

A real `ollana serve --mode server` process sits in front of a recording stand-in for Ollama;
a peer without a certificate (allowed in by `--open`) and a paired device (on `--read-only`)
send every kind of request. What is not on the allow list is refused with ollana's own 403 in
Ollama's error shape and never reaches Ollama.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from ollana.demo import pair
from ollana.identity import load_identity
from ollana.identity.tls import client_context
from ollana.ollama_api import allowed_read_only
from tests.hostile.support import QUIET, exchange
from tests.support import OllanaProcess
from tests.support.waiting import until

CHAT = b'{"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}'

# (method, path, body): refused today by nothing, forwarded to Ollama.
REFUSED = [
    ("POST", "/api/signout", b""),
    ("DELETE", "/api/user/keys/c3NoLWVkMjU1MTk", b""),
    ("POST", "/api/me", b""),
    ("POST", "/api/experimental/web_search", b'{"query": "x"}'),
    ("POST", "/api/experimental/web_fetch", b'{"url": "http://x"}'),
    ("GET", "/api/experimental/model-recommendations", b""),
    ("GET", "/debug/pprof/", b""),
    ("GET", "/debug/pprof/goroutine?debug=2", b""),
    ("POST", "/api/pull", b'{"model": "llama3.2"}'),
    ("POST", "/api/create", b'{"model": "x", "from": "llama3.2"}'),
    ("POST", "/api/copy", b'{"source": "llama3.2", "destination": "y"}'),
    ("DELETE", "/api/delete", b'{"model": "llama3.2"}'),
    ("POST", "/api/blobs/sha256:" + "0" * 64, b"x"),
    ("GET", "/api/some-future-endpoint", b""),
    ("GET", "/api/show", b""),  # a known path with a method it does not take
]
ALLOWED = [
    ("GET", "/", b""),
    ("GET", "/api/version", b""),
    ("GET", "/api/status", b""),
    ("GET", "/api/tags", b""),
    ("GET", "/api/ps", b""),
    ("POST", "/api/chat", CHAT),
    ("POST", "/v1/messages", CHAT),
    ("POST", "/v1/responses", b'{"model": "llama3.2", "input": "hi"}'),
    ("HEAD", "/api/blobs/sha256:" + "0" * 64, b""),
]


class Recorder:
    """A stand-in for Ollama that answers everything with 200 and remembers what came."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if request.path != "/api/version":  # the server's own health probe
            self.seen.append((request.method, request.path_qs))
        if request.path == "/api/tags":
            return web.json_response({"models": [{"name": "llama3.2:latest"}]})
        return web.json_response({"version": "0.33.0"})


@contextlib.asynccontextmanager
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield rec, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def raw(method: str, target: str, body: bytes) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: ollana\r\nConnection: close\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def test_the_allow_list_is_the_table() -> None:
    for method, target, _ in REFUSED:
        assert not allowed_read_only(method, target.partition("?")[0]), target
    for method, target, _ in ALLOWED:
        assert allowed_read_only(method, target), target


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--open", "--read-only"])
async def test_only_model_use_reaches_ollama(tmp_path: Path, flag: str) -> None:
    server_home, client_home = tmp_path / "server-home", tmp_path / "client-home"
    pair(server_home, client_home)
    # --open: a peer without any certificate; --read-only: the paired device itself.
    tls: ssl.SSLContext = client_context(None if flag == "--open" else load_identity(client_home))
    async with contextlib.AsyncExitStack() as stack:
        rec, url = await stack.enter_async_context(recorder())
        server = await stack.enter_async_context(
            await OllanaProcess.start(
                "serve", "--mode", "server", "--listen", "127.0.0.1:0", "--no-discovery",
                "--ollama", url, flag, *QUIET, home=server_home, log=tmp_path / "server.log",
            )
        )  # fmt: skip
        for method, target, body in REFUSED:
            got = await exchange(server.port, raw(method, target, body), tls=tls)
            assert got.status == 403, (method, target, str(got))
            assert got.headers["content-type"].startswith("application/json")
            assert "read-only" in str(json.loads(got.body)["error"])
        for method, target, body in ALLOWED:
            got = await exchange(server.port, raw(method, target, body), tls=tls)
            assert got.status == 200, (method, target, str(got))
        # (Its health probes also GET /api/version: that one is not recorded.)
        allowed = {(m, t) for m, t, _ in ALLOWED if t != "/api/version"}
        await until(lambda: allowed <= set(rec.seen), "the allowed requests reached Ollama")
        assert set(rec.seen) <= allowed | {("GET", "/api/tags"), ("GET", "/api/ps")}
