"""The emulator's application: its routes, gin's 404/405/redirect answers, and running it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from ollana.emulator.account import Account
from ollana.emulator.anthropic import AnthropicApi
from ollana.emulator.catalogue import DEFAULT_MODELS
from ollana.emulator.encoding import zstd_bodies
from ollana.emulator.guard import Guard
from ollana.emulator.manage import ManageApi
from ollana.emulator.native import NativeApi
from ollana.emulator.openai import OpenAIApi
from ollana.emulator.responses import TEXT, empty, raw
from ollana.emulator.responses_api import ResponsesApi
from ollana.emulator.state import EmulatorStats, ModelStore
from ollana.ollama_api import (
    ANTHROPIC_MESSAGES_PATH,
    BLOBS_PATH,
    EXPERIMENTAL_PATH,
    MODELS_PATH,
    PS_PATH,
    RESPONSES_PATH,
    TAGS_PATH,
    TRANSCRIPTIONS_PATH,
    USER_KEYS_PATH,
    V1_MODELS_PATH,
    VERSION_PATH,
)

__all__ = ["STATS_KEY", "STORE_KEY", "EmulatorConfig", "create_app", "run_emulator", "serving"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATS_KEY = web.AppKey("ollana.emulator.stats", EmulatorStats)
STORE_KEY = web.AppKey("ollana.emulator.store", ModelStore)

MAX_BODY = 256 * 1024 * 1024  # request bodies read whole (JSON); blob uploads stream instead
SHUTDOWN_GRACE = 1.0  # seconds in-flight streams get when the emulator stops
# Ollama registers POST routes first, then DELETE, then HEAD, then GET: gin lists the
# methods of a 405's Allow header in that order.
_METHOD_ORDER = ("POST", "DELETE", "HEAD", "GET")
_FAMILIES = (BLOBS_PATH, MODELS_PATH, USER_KEYS_PATH)  # a path parameter after the prefix


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """How an emulator behaves."""

    models: tuple[str, ...] = DEFAULT_MODELS
    tokens_per_second: float | None = None  # None: tokens go out as fast as they can
    version: str = "0.5.7"
    origins: tuple[str, ...] = ()  # allowed beside Ollama's defaults, as OLLAMA_ORIGINS adds
    signed_in: bool = True  # to ollama.com: signed out, cloud models and /api/me answer 401
    parallel: int = 0  # like OLLAMA_NUM_PARALLEL: generations at once, the rest wait in turn


@dataclass(frozen=True, slots=True)
class _Apis:
    native: NativeApi
    manage: ManageApi
    v1: OpenAIApi
    anthropic: AnthropicApi
    responses: ResponsesApi
    account: Account


def _routes(api: _Apis) -> dict[str, dict[str, Handler]]:
    native, manage, v1, account = api.native, api.manage, api.v1, api.account
    return {
        "/": {"GET": native.root, "HEAD": native.root},
        VERSION_PATH: {"GET": native.version, "HEAD": native.version},
        "/api/status": {"GET": account.status},
        TAGS_PATH: {"GET": native.tags, "HEAD": native.tags},
        PS_PATH: {"GET": native.ps},
        "/api/show": {"POST": native.show},
        "/api/generate": {"POST": native.generate},
        "/api/chat": {"POST": native.chat},
        "/api/embed": {"POST": native.embed},
        "/api/embeddings": {"POST": native.embeddings},
        "/api/pull": {"POST": manage.pull},
        "/api/push": {"POST": manage.push},
        "/api/create": {"POST": manage.create},
        "/api/copy": {"POST": manage.copy},
        "/api/delete": {"DELETE": manage.delete},
        BLOBS_PATH + "{digest}": {"POST": manage.create_blob, "HEAD": manage.head_blob},
        "/api/me": {"POST": account.me},
        "/api/signout": {"POST": account.signout},
        USER_KEYS_PATH + "{key}": {"DELETE": account.signout},
        EXPERIMENTAL_PATH + "web_search": {"POST": account.web_search},
        EXPERIMENTAL_PATH + "web_fetch": {"POST": account.web_search},
        EXPERIMENTAL_PATH + "model-recommendations": {"GET": account.recommendations},
        "/v1/chat/completions": {"POST": v1.chat},
        "/v1/completions": {"POST": v1.completions},
        "/v1/embeddings": {"POST": v1.embeddings},
        V1_MODELS_PATH: {"GET": v1.models},
        MODELS_PATH + "{model}": {"GET": v1.model},
        RESPONSES_PATH: {"POST": api.responses.create},
        TRANSCRIPTIONS_PATH: {"POST": api.responses.transcribe},
        ANTHROPIC_MESSAGES_PATH: {"POST": api.anthropic.messages},
    }


def _allow(methods: dict[str, Handler]) -> str:
    return ", ".join(m for m in _METHOD_ORDER if m in methods)


def _not_allowed(allow: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        response = raw(405, b"405 method not allowed", TEXT)
        response.headers["Allow"] = allow
        return response

    return handler


def _methods_at(routes: dict[str, dict[str, Handler]], path: str) -> dict[str, Handler]:
    """The methods routed at a concrete path (for gin's trailing-slash redirect)."""
    if path in routes:
        return routes[path]
    for prefix in _FAMILIES:
        rest = path.removeprefix(prefix)
        if rest != path and rest and "/" not in rest:
            return next(m for p, m in routes.items() if p.startswith(prefix))
    return {}


def _fallback(routes: dict[str, dict[str, Handler]]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        path = request.path
        # gin redirects /api/tags/ to /api/tags when that route has the method.
        if (
            len(path) > 1
            and path.endswith("/")
            and request.method in _methods_at(routes, path[:-1])
        ):
            location = path[:-1] + (f"?{request.query_string}" if request.query_string else "")
            if request.method != "GET":
                response = empty(307)
            else:
                body = f'<a href="{location}">Moved Permanently</a>.\n\n'.encode()
                response = raw(301, body, "text/html; charset=utf-8")
            response.headers["Location"] = location
            return response
        return raw(404, b"404 page not found", TEXT)

    return handler


async def _no_server_header(request: web.Request, response: web.StreamResponse) -> None:
    # Ollama's Go server sends no Server header; aiohttp would announce itself.
    response.headers.popall("Server", None)


_GENERATIONS = frozenset({
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/v1/chat/completions",
    "/v1/completions", "/v1/embeddings",
})  # fmt: skip


def _one_queue(parallel: int) -> Middleware:
    """Ollama's scheduling: `parallel` generations at once, the rest first come, first served."""
    slots = asyncio.Semaphore(parallel)  # asyncio wakes its waiters in order

    @web.middleware
    async def queue(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path not in _GENERATIONS:
            return await handler(request)
        async with slots:
            return await handler(request)

    return queue


def create_app(config: EmulatorConfig) -> web.Application:
    """An aiohttp application that answers as Ollama does."""
    store = ModelStore(config.models)
    stats = EmulatorStats(store)
    store.on_change = stats.notify
    tps = config.tokens_per_second
    interval = 1.0 / tps if tps and tps > 0 else 0.0
    guard = Guard(config.origins)
    account = Account(config.signed_in)
    middlewares: list[Middleware] = [guard.middleware, zstd_bodies, account.cloud_guard]
    if config.parallel > 0:
        middlewares.append(_one_queue(config.parallel))
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[STATS_KEY] = stats
    app[STORE_KEY] = store
    app.on_response_prepare.append(_no_server_header)
    app.on_response_prepare.append(guard.on_response_prepare)
    routes = _routes(
        _Apis(
            NativeApi(store, stats, config.version, interval),
            ManageApi(store),
            OpenAIApi(store, stats, interval),
            AnthropicApi(store, stats, interval),
            ResponsesApi(store, stats, interval),
            account,
        )
    )
    for path, methods in routes.items():
        for method, handler in methods.items():
            app.router.add_route(method, path, handler)
        app.router.add_route("*", path, _not_allowed(_allow(methods)))
    app.router.add_route("*", "/{tail:.*}", _fallback(routes))
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve `app` on host:port while the block runs; yields the port it listens on."""
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that leaves cancels its generation at once
        auto_decompress=False,  # Ollama undoes zstd itself, on some routes only
        access_log=None,
        shutdown_timeout=SHUTDOWN_GRACE,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def run_emulator(
    config: EmulatorConfig,
    host: str,
    port: int,
    *,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve an emulator on host:port until cancelled; `ready(port)` once it listens."""
    async with serving(create_app(config), host, port) as bound:
        if ready is not None:
            ready(bound)
        await asyncio.Event().wait()
