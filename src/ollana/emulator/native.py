"""Ollama's own API: /, /api/version, /api/tags, /api/ps, /api/show and the inference calls."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ollana.emulator import schemas
from ollana.emulator.generation import LineFormat, Timing, keep_alive_of, run_stream, run_whole
from ollana.emulator.gojson import DecodeError, GoType, MissingBody, decode, dumps, go_quote
from ollana.emulator.gojson import go_time_now as now
from ollana.emulator.model import answer, chat_key, count_tokens, embed
from ollana.emulator.names import ModelName, parse_name
from ollana.emulator.responses import JSON_UTF8, NDJSON, TEXT_UTF8, json_body, native_error, raw
from ollana.emulator.showinfo import option_error, show_response
from ollana.emulator.state import EmulatorStats, InstalledModel, ModelStore

__all__ = ["NativeApi", "decode_native", "not_found_message"]

_TEMPLATE_TOKENS = 8  # what a chat template adds around a prompt


async def decode_native(request: web.Request, schema: GoType) -> dict[str, Any] | web.Response:
    """The request's JSON body, or the 400 answer Ollama gives for it."""
    try:
        return decode(await request.read(), schema)
    except MissingBody:
        return native_error(400, "missing request body")
    except DecodeError as exc:
        return native_error(400, str(exc))


def not_found_message(model: str) -> str:
    """What the scheduler says of a model that is not installed."""
    return f"model {go_quote(model)} not found, try pulling it first"


def text(body: dict[str, Any], key: str) -> str:
    """A string field; null and absent are both empty, as in a Go struct."""
    value = body.get(key)
    return value if isinstance(value, str) else ""


def required_name(body: dict[str, Any]) -> ModelName | web.Response:
    """The model a body names (`model`, else `name`), or Ollama's 400 for none or a bad one."""
    model_text = text(body, "model") or text(body, "name")
    if not model_text:
        return native_error(400, "model is required")
    name = parse_name(model_text)
    if name is None:
        return native_error(400, "invalid model name")
    return name


def num_predict(body: dict[str, Any]) -> int | None:
    """options.num_predict, if the request set one."""
    options = body.get("options") or {}
    value = options.get("num_predict")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


class NativeApi:
    """The handlers of Ollama's native routes, sharing the emulator's state."""

    def __init__(self, store: ModelStore, stats: EmulatorStats, version: str, interval: float):
        self.store = store
        self.stats = stats
        self.interval = interval
        self._version = dumps({"version": version})

    async def root(self, request: web.Request) -> web.Response:
        """GET|HEAD /."""
        return raw(200, b"Ollama is running", TEXT_UTF8)

    async def version(self, request: web.Request) -> web.Response:
        """GET|HEAD /api/version."""
        return raw(200, self._version, JSON_UTF8)

    async def tags(self, request: web.Request) -> web.Response:
        """GET|HEAD /api/tags."""
        return json_body({"models": [m.tags_entry() for m in self.store.models()]})

    async def ps(self, request: web.Request) -> web.Response:
        """GET /api/ps."""
        return json_body({"models": self.store.loaded()})

    async def show(self, request: web.Request) -> web.Response:
        """POST /api/show."""
        body = await decode_native(request, schemas.SHOW)
        if isinstance(body, web.Response):
            return body
        name = required_name(body)
        if isinstance(name, web.Response):
            return name
        model = self.store.get(name)
        if model is None:
            shown = text(body, "model") or text(body, "name")
            return native_error(404, f"model '{shown}' not found")
        return json_body(show_response(model, text(body, "system")))

    def _schedule(
        self, body: dict[str, Any], model_text: str, action: str
    ) -> InstalledModel | web.Response:
        """Find the model a request runs on, with the scheduler's errors when it cannot run."""
        name = parse_name(model_text)
        model = self.store.get(name) if name else None
        if model is None:
            return native_error(404, not_found_message(model_text))
        if action and not model.spec.completion:
            return native_error(400, f"{go_quote(model_text)} does not support {action}")
        problem = option_error(body.get("options"))
        if problem:
            return native_error(500, problem)
        return model

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """POST /api/generate."""
        timing = Timing()
        body = await decode_native(request, schemas.GENERATE)
        if isinstance(body, web.Response):
            return body
        model_text, prompt = text(body, "model"), text(body, "prompt")
        if parse_name(model_text) is None:
            return native_error(404, f"model '{model_text}' not found")
        is_raw = body.get("raw") is True
        context = body.get("context") or []
        if is_raw and (text(body, "template") or text(body, "system") or context):
            return native_error(400, "raw mode does not support template, system, or context")
        model = self._schedule(body, model_text, "generate")
        if isinstance(model, web.Response):
            return model
        keep_alive = keep_alive_of(body)
        self.store.touch(model, keep_alive)
        if not prompt:
            reason = "unload" if keep_alive == 0 else "load"
            done = {"model": model_text, "created_at": now(), "response": "", "done": True}
            return json_body({**done, "done_reason": reason})
        timing.mark_loaded()
        system = "" if is_raw else text(body, "system") or model.spec.system
        suffix = text(body, "suffix")
        tokens = count_tokens(prompt) + count_tokens(system) + len(context)
        tokens += 1 if is_raw else _TEMPLATE_TOKENS
        key = "\x00".join((system, prompt, suffix, ",".join(map(str, context))))
        result = answer(model.name.key, key, tokens, num_predict(body))

        def final(response: str) -> dict[str, Any]:
            return {
                "model": model_text,
                "created_at": now(),
                "response": response,
                "done": True,
                "done_reason": result.done_reason,
                "context": result.context(),
                **timing.metrics(result.prompt_tokens, result.eval_count),
            }

        if body.get("stream") is False:
            await run_whole(self.stats, self.interval, result.eval_count, timing)
            return json_body(final(result.text))
        head = b'{"model":' + dumps(model_text) + b',"created_at":"'
        line = LineFormat(head, b'","response":"', b'","done":false}\n', now)
        return await run_stream(
            request, self.stats, self.interval, timing, content_type=NDJSON,
            pieces=result.pieces, line=line, final=lambda: dumps(final("")) + b"\n",
        )  # fmt: skip

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """POST /api/chat."""
        timing = Timing()
        body = await decode_native(request, schemas.CHAT)
        if isinstance(body, web.Response):
            return body
        model_text = text(body, "model")
        if parse_name(model_text) is None:
            return native_error(400, "model is required")
        model = self._schedule(body, model_text, "chat")
        if isinstance(model, web.Response):
            return model
        messages = [
            (text(m or {}, "role"), text(m or {}, "content")) for m in body.get("messages") or []
        ]
        keep_alive = keep_alive_of(body)
        self.store.touch(model, keep_alive)
        if not messages:
            reason = "unload" if keep_alive == 0 else "load"
            return json_body(_chat_done(model_text, "", reason, {}))
        timing.mark_loaded()
        tokens = sum(count_tokens(content) + 4 for _, content in messages) + 1
        if model.spec.system and all(role != "system" for role, _ in messages):
            tokens += count_tokens(model.spec.system) + 4
        result = answer(model.name.key, chat_key(messages), tokens, num_predict(body))

        def final(content: str) -> dict[str, Any]:
            metrics = timing.metrics(result.prompt_tokens, result.eval_count)
            return _chat_done(model_text, content, result.done_reason, metrics)

        if body.get("stream") is False:
            await run_whole(self.stats, self.interval, result.eval_count, timing)
            return json_body(final(result.text))
        head = b'{"model":' + dumps(model_text) + b',"created_at":"'
        middle = b'","message":{"role":"assistant","content":"'
        line = LineFormat(head, middle, b'"},"done":false}\n', now)
        return await run_stream(
            request, self.stats, self.interval, timing, content_type=NDJSON,
            pieces=result.pieces, line=line, final=lambda: dumps(final("")) + b"\n",
        )  # fmt: skip

    async def embed(self, request: web.Request) -> web.Response:
        """POST /api/embed."""
        timing = Timing()
        body = await decode_native(request, schemas.EMBED)
        if isinstance(body, web.Response):
            return body
        inputs = embed_inputs(body.get("input"))
        if inputs is None:
            return native_error(400, "invalid input type")
        model_text = text(body, "model")
        if not model_text:
            return native_error(400, "model is required")
        model = self._schedule(body, model_text, "")
        if isinstance(model, web.Response):
            return model
        self.store.touch(model, keep_alive_of(body))
        timing.mark_loaded()
        if not inputs:
            return json_body({"model": model_text, "embeddings": []})
        dimensions = body.get("dimensions") or 0
        width = model.spec.embedding_length
        vectors = ",".join(embed(model.name.key, t, width, dimensions).json() for t in inputs)
        tail = {
            "total_duration": max(1, time.perf_counter_ns() - timing.start),
            "load_duration": max(1, timing.loaded - timing.start),
            "prompt_eval_count": sum(max(1, count_tokens(t)) for t in inputs),
        }
        payload = b'{"model":' + dumps(model_text) + b',"embeddings":[' + vectors.encode()
        return raw(200, payload + b"]," + dumps(tail)[1:], JSON_UTF8)

    async def embeddings(self, request: web.Request) -> web.Response:
        """POST /api/embeddings, the older single-prompt call."""
        body = await decode_native(request, schemas.EMBEDDINGS)
        if isinstance(body, web.Response):
            return body
        model_text = text(body, "model")
        if parse_name(model_text) is None:
            return native_error(400, "model is required")
        model = self._schedule(body, model_text, "")
        if isinstance(model, web.Response):
            return model
        self.store.touch(model, keep_alive_of(body))
        prompt = text(body, "prompt")
        if not prompt:
            return json_body({"embedding": []})
        vector = embed(model.name.key, prompt, model.spec.embedding_length).json()
        return raw(200, b'{"embedding":' + vector.encode() + b"}", JSON_UTF8)


def embed_inputs(value: Any) -> list[str] | None:
    """The texts of /api/embed's input (a string or a list of strings); None if neither."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _chat_done(model: str, content: str, reason: str, metrics: dict[str, int]) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": now(),
        "message": {"role": "assistant", "content": content},
        "done_reason": reason,
        "done": True,
        **metrics,
    }
