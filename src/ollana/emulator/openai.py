"""Ollama's OpenAI-compatible API: chat and text completions, embeddings, models (/v1)."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ollana.emulator import schemas
from ollana.emulator.encoding import body_bytes
from ollana.emulator.generation import LineFormat, Timing, run_stream, run_whole
from ollana.emulator.gojson import DecodeError, GoType, MissingBody, decode, dumps, go_quote
from ollana.emulator.model import Answer, answer, chat_key, count_tokens, embed
from ollana.emulator.names import parse_name
from ollana.emulator.native import embed_inputs, not_found_message, text
from ollana.emulator.responses import JSON, SSE, openai_error, raw
from ollana.emulator.state import EmulatorStats, InstalledModel, ModelStore

__all__ = ["OpenAIApi"]

_IMAGE_PREFIXES = (
    "data:;base64,",
    *(f"data:image/{k};base64," for k in ("jpeg", "jpg", "png", "webp")),
)
_DONE = b"data: [DONE]\n\n"


def _go_type(value: Any) -> str:
    """Go's %T of a decoded JSON value."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"


def _image_ok(part: dict[str, Any]) -> str:
    """The error FromChatRequest gives for an image part, or ""."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        return "invalid message format"
    prefix = next((p for p in _IMAGE_PREFIXES if url.startswith(p)), None)
    if prefix is None:
        return "invalid image input"
    try:
        base64.b64decode(url[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        return "invalid message format"
    return ""


def _messages(raw_messages: list[dict[str, Any]]) -> list[tuple[str, str]] | str:
    """FromChatRequest: (role, text) pairs, or its error message."""
    out: list[tuple[str, str]] = []
    for message in (m or {} for m in raw_messages):
        role, content = text(message, "role"), message.get("content")
        if isinstance(content, str):
            out.append((role, content))
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    return "invalid message format"
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    out.append((role, part["text"]))
                elif part.get("type") == "image_url":
                    if problem := _image_ok(part):
                        return problem
                    out.append((role, ""))
                else:
                    return "invalid message format"
        elif message.get("tool_calls") is not None:
            out.append((role, ""))
        else:
            return f"invalid message content type: {_go_type(content)}"
    return out


def _stop_error(body: dict[str, Any]) -> str:
    stop = body.get("stop")
    if stop is None or isinstance(stop, str | list):
        return ""
    return f"invalid type for 'stop' field: {_go_type(stop)}"


def _usage(result: Answer) -> dict[str, int]:
    prompt, completion = result.prompt_tokens, result.eval_count
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class OpenAIApi:
    """The handlers of the /v1 routes."""

    def __init__(self, store: ModelStore, stats: EmulatorStats, interval: float):
        self.store = store
        self.stats = stats
        self.interval = interval

    async def _decode(self, request: web.Request, schema: GoType) -> dict[str, Any] | web.Response:
        try:
            return decode(await body_bytes(request), schema)
        except MissingBody:
            return openai_error(400, "EOF", from_handler=False)
        except DecodeError as exc:
            return openai_error(400, str(exc), from_handler=False)

    def _model(self, model_text: str, action: str) -> InstalledModel | web.Response:
        """The model a request runs on, or the error Ollama's handler gives."""
        name = parse_name(model_text)
        if name is None:
            if action == "chat":
                return openai_error(400, "model is required")
            return openai_error(404, f"model '{model_text}' not found")
        model = self.store.get(name)
        if model is None:
            return openai_error(404, not_found_message(model_text))
        if action and not model.spec.completion:
            return openai_error(400, f"{go_quote(model_text)} does not support {action}")
        return model

    async def _stream(
        self,
        request: web.Request,
        timing: Timing,
        result: Answer,
        line: LineFormat,
        final: Callable[[], bytes],
    ) -> web.StreamResponse:
        """Send `result` as server-sent events, one per token, then `final()`."""
        return await run_stream(
            request, self.stats, self.interval, timing,
            content_type=SSE, pieces=result.pieces, line=line, final=final,
        )  # fmt: skip

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions."""
        timing = Timing()
        body = await self._decode(request, schemas.OPENAI_CHAT)
        if isinstance(body, web.Response):
            return body
        if not body.get("messages"):
            return openai_error(400, "[] is too short - 'messages'", from_handler=False)
        messages = _messages(body["messages"])
        if isinstance(messages, str):
            return openai_error(400, messages, from_handler=False)
        if problem := _stop_error(body):
            return openai_error(400, problem, from_handler=False)
        model_text = text(body, "model")
        model = self._model(model_text, "chat")
        if isinstance(model, web.Response):
            return model
        self.store.touch(model, None)
        timing.mark_loaded()
        tokens = sum(count_tokens(content) + 4 for _, content in messages) + 1
        result = answer(model.name.key, chat_key(messages), tokens, body.get("max_tokens"))
        ident = f"chatcmpl-{result.seed % 999}".encode()
        model_json = dumps(model_text)

        def chunk(choices: list[Any], usage: dict[str, int] | None = None) -> bytes:
            value: dict[str, Any] = {
                "id": ident.decode(),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model_text,
                "system_fingerprint": "fp_ollama",
                "choices": choices,
            }
            if usage is not None:
                value["usage"] = usage
            return b"data: " + dumps(value) + b"\n\n"

        def final() -> bytes:
            delta = {"role": "assistant", "content": ""}
            out = chunk([{"index": 0, "delta": delta, "finish_reason": result.done_reason}])
            if (body.get("stream_options") or {}).get("include_usage") is True:
                out += chunk([], _usage(result))
            return out + _DONE

        if body.get("stream") is True:
            head = b'data: {"id":"' + ident + b'","object":"chat.completion.chunk","created":'
            middle = (
                b',"model":' + model_json + b',"system_fingerprint":"fp_ollama","choices":'
                b'[{"index":0,"delta":{"role":"assistant","content":"'
            )
            line = LineFormat(head, middle, b'"},"finish_reason":null}]}\n\n', _unix_now)
            return await self._stream(request, timing, result, line, final)
        await run_whole(self.stats, self.interval, result.eval_count, timing)
        message = {"role": "assistant", "content": result.text}
        return _json(
            {
                "id": ident.decode(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_text,
                "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "message": message, "finish_reason": result.done_reason}],
                "usage": _usage(result),
            }
        )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/completions."""
        timing = Timing()
        body = await self._decode(request, schemas.OPENAI_COMPLETION)
        if isinstance(body, web.Response):
            return body
        if problem := _stop_error(body):
            return openai_error(400, problem, from_handler=False)
        model_text, prompt = text(body, "model"), text(body, "prompt")
        model = self._model(model_text, "generate")
        if isinstance(model, web.Response):
            return model
        self.store.touch(model, None)
        timing.mark_loaded()
        if prompt:
            tokens = count_tokens(prompt) + count_tokens(model.spec.system) + 8
            key = "\x00".join((model.spec.system, prompt, text(body, "suffix"), ""))
            result = answer(model.name.key, key, tokens, body.get("max_tokens"))
        else:  # Ollama only loads the model: an empty answer that finished with "load"
            result = Answer((), (), 0, "load", 0)
        ident = f"cmpl-{result.seed % 999}"
        usage = (body.get("stream_options") or {}).get("include_usage") is True

        def chunk(choices: list[Any], usage_value: dict[str, int] | None) -> bytes:
            value: dict[str, Any] = {
                "id": ident,
                "object": "text_completion",
                "created": int(time.time()),
                "choices": choices,
                "model": model_text,
                "system_fingerprint": "fp_ollama",
            }
            if usage_value is not None:
                value["usage"] = usage_value
            return b"data: " + dumps(value) + b"\n\n"

        zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0} if usage else None

        def final() -> bytes:
            done = chunk([{"text": "", "index": 0, "finish_reason": result.done_reason}], zero)
            if usage:
                done += chunk([], _usage(result))
            return done + _DONE

        if body.get("stream") is True:
            tail = b'","index":0,"finish_reason":null}],"model":' + dumps(model_text)
            tail += b',"system_fingerprint":"fp_ollama"'
            tail += (b',"usage":' + dumps(zero) if zero else b"") + b"}\n\n"
            head = b'data: {"id":"' + ident.encode() + b'","object":"text_completion","created":'
            line = LineFormat(head, b',"choices":[{"text":"', tail, _unix_now)
            return await self._stream(request, timing, result, line, final)
        await run_whole(self.stats, self.interval, result.eval_count, timing)
        choice = {"text": result.text, "index": 0, "finish_reason": result.done_reason}
        return _json(
            {
                "id": ident,
                "object": "text_completion",
                "created": int(time.time()),
                "model": model_text,
                "system_fingerprint": "fp_ollama",
                "choices": [choice],
                "usage": _usage(result),
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        """POST /v1/embeddings."""
        body = await self._decode(request, schemas.OPENAI_EMBED)
        if isinstance(body, web.Response):
            return body
        encoding = text(body, "encoding_format")
        if encoding and encoding.casefold() not in ("float", "base64"):
            message = (
                f"Invalid value for 'encoding_format' = {encoding}. "
                "Supported values: ['float', 'base64']."
            )
            return openai_error(400, message, from_handler=False)
        value = body.get("input")
        if value == "":
            value = [""]
        if value is None or value == []:
            return openai_error(400, "invalid input", from_handler=False)
        inputs = embed_inputs(value)
        if inputs is None:
            return openai_error(400, "invalid input type")
        model_text = text(body, "model")
        if not model_text:
            return openai_error(400, "model is required")
        model = self._model(model_text, "")
        if isinstance(model, web.Response):
            return model
        self.store.touch(model, None)
        width, cut = model.spec.embedding_length, body.get("dimensions") or 0
        data = []
        for index, item in enumerate(inputs):
            vector = embed(model.name.key, item, width, cut)
            as_base64 = encoding.casefold() == "base64"
            encoded = dumps(vector.base64()) if as_base64 else vector.json().encode()
            data.append(b'{"object":"embedding","embedding":' + encoded + b',"index":%d}' % index)
        tokens = sum(max(1, count_tokens(t)) for t in inputs)
        usage = dumps({"prompt_tokens": tokens, "total_tokens": tokens})
        payload = b'{"object":"list","data":[' + b",".join(data) + b'],"model":' + dumps(model_text)
        return raw(200, payload + b',"usage":' + usage + b"}\n", JSON)

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models."""
        data = [
            {
                "id": m.name.display,
                "object": "model",
                "created": m.modified_ns // 10**9,
                "owned_by": m.name.namespace,
            }
            for m in self.store.models()
        ]
        # Ollama builds this list from a nil slice: no models gives "data": null.
        return _json({"object": "list", "data": data or None})

    async def model(self, request: web.Request) -> web.Response:
        """GET /v1/models/:model."""
        model_text = request.match_info["model"]
        name = parse_name(model_text)
        if name is None:
            return openai_error(400, "invalid model name")
        model = self.store.get(name)
        if model is None:
            return openai_error(404, f"model '{model_text}' not found")
        owner = name.namespace
        created = model.modified_ns // 10**9
        return _json({"id": model_text, "object": "model", "created": created, "owned_by": owner})


def _json(value: Any) -> web.Response:
    """A /v1 answer: application/json with json.Encoder's trailing newline."""
    return raw(200, dumps(value) + b"\n", JSON)


def _unix_now() -> str:
    """The `created` of an OpenAI chunk: whole seconds since the epoch."""
    return str(int(time.time()))
