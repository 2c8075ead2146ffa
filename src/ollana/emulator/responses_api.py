"""Ollama's OpenAI Responses API (POST /v1/responses) and audio transcriptions."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from aiohttp import web

from ollana.emulator.encoding import body_bytes
from ollana.emulator.generation import Timing, run_stream, run_whole
from ollana.emulator.gojson import dumps
from ollana.emulator.model import Answer, answer, chat_key, count_tokens
from ollana.emulator.names import parse_name
from ollana.emulator.native import not_found_message
from ollana.emulator.responses import JSON, SSE, TEXT, openai_error, raw
from ollana.emulator.state import EmulatorStats, InstalledModel, ModelStore

__all__ = ["ResponsesApi"]


def _go(value: Any) -> Any:
    """A value as Go marshals a map[string]any: keys sorted at every depth, 1.0 as 1."""
    if isinstance(value, dict):
        return {k: _go(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_go(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _number(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 1.0


def _input(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) pairs of a Responses request: instructions, then the input items."""
    out: list[tuple[str, str]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        out.append(("system", body["instructions"]))
    items = body.get("input")
    if isinstance(items, str):
        return [*out, ("user", items)]
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict) or "role" not in item:
            continue
        content = item.get("content")
        if isinstance(content, list):
            parts = (p.get("text") for p in content if isinstance(p, dict))
            content = "".join(p for p in parts if isinstance(p, str))
        out.append((str(item["role"]), content if isinstance(content, str) else ""))
    return out


def _text_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [_part(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": content}  # fmt: skip


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _usage(tokens: int, result: Answer) -> dict[str, Any]:
    return {
        "input_tokens": tokens,
        "output_tokens": result.eval_count,
        "total_tokens": tokens + result.eval_count,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


class ResponsesApi:
    """The handlers of /v1/responses and /v1/audio/transcriptions."""

    def __init__(self, store: ModelStore, stats: EmulatorStats, interval: float):
        self.store = store
        self.stats = stats
        self.interval = interval

    def _model(self, model_text: str) -> InstalledModel | web.Response:
        name = parse_name(model_text) if model_text else None
        if not model_text:
            return openai_error(400, "model is required")
        model = self.store.get(name) if name is not None else None
        if model is None:
            return openai_error(404, not_found_message(model_text))
        self.store.touch(model, None)
        return model

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/responses."""
        timing = Timing()
        try:
            body = json.loads(await body_bytes(request) or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return openai_error(400, "invalid request body", from_handler=False)
        model_text = body["model"] if isinstance(body.get("model"), str) else ""
        model = self._model(model_text)
        if isinstance(model, web.Response):
            return model
        timing.mark_loaded()
        messages = _input(body)
        tokens = sum(count_tokens(content) + 4 for _, content in messages) + 1
        limit = body.get("max_output_tokens")
        result = answer(model.name.key, chat_key(messages), tokens, limit)
        # Ollama does not keep responses: a random ID, previous_response_id never read.
        ident, item = f"resp_{secrets.randbelow(999999)}", f"msg_{secrets.randbelow(999999)}"

        def response(status: str, output: list[Any], usage: Any) -> dict[str, Any]:
            instructions = body.get("instructions") or None
            return {
                "id": ident, "object": "response", "created_at": int(time.time()),
                "completed_at": int(time.time()) if status == "completed" else None,
                "status": status, "incomplete_details": None, "model": model_text,
                "previous_response_id": None, "instructions": instructions, "output": output,
                "error": None, "tools": [], "tool_choice": "auto", "truncation": "disabled",
                "parallel_tool_calls": True, "text": {"format": {"type": "text"}},
                "top_p": _number(body, "top_p"), "presence_penalty": 0, "frequency_penalty": 0,
                "top_logprobs": 0, "temperature": _number(body, "temperature"),
                "reasoning": None, "usage": usage,
                "max_output_tokens": limit if isinstance(limit, int) else None,
                "max_tool_calls": None, "store": False,
                "background": body.get("background") is True, "service_tier": "default",
                "metadata": {}, "safety_identifier": None, "prompt_cache_key": None,
            }  # fmt: skip

        if body.get("stream") is not True:
            await run_whole(self.stats, self.interval, result.eval_count, timing)
            whole = response("completed", [_text_item(item, "completed", result.text)], None)
            whole["usage"] = _usage(tokens, result)
            return raw(200, dumps(_go_floats(whole)) + b"\n", JSON)
        return await self._stream(
            request, timing, result, response=response, item=item, tokens=tokens
        )

    async def _stream(
        self,
        request: web.Request,
        timing: Timing,
        result: Answer,
        *,
        response: Any,
        item: str,
        tokens: int,
    ) -> web.StreamResponse:
        sequence = 0

        def event(kind: str, data: dict[str, Any]) -> bytes:
            nonlocal sequence
            data = {**data, "type": kind, "sequence_number": sequence}
            sequence += 1
            return b"event: " + kind.encode() + b"\ndata: " + dumps(_go(data)) + b"\n\n"

        where = {"item_id": item, "output_index": 0, "content_index": 0}

        def line(piece: str) -> bytes:
            head = b""
            if sequence == 0:  # Ollama's first write opens the response, its item and part
                head = event("response.created", {"response": response("in_progress", [], None)})
                head += event(
                    "response.in_progress", {"response": response("in_progress", [], None)}
                )
                head += event(
                    "response.output_item.added",
                    {"output_index": 0, "item": _text_item(item, "in_progress", None)},
                )
                head += event("response.content_part.added", {**where, "part": _part("")})
            return head + event("response.output_text.delta",
                                {**where, "delta": piece, "logprobs": []})  # fmt: skip

        def final() -> bytes:
            text = result.text
            done = event("response.output_text.done", {**where, "text": text, "logprobs": []})
            done += event("response.content_part.done", {**where, "part": _part(text)})
            finished = _text_item(item, "completed", text)
            done += event("response.output_item.done", {"output_index": 0, "item": finished})
            whole = response("completed", [finished], _usage(tokens, result))
            return done + event("response.completed", {"response": whole})

        return await run_stream(
            request, self.stats, self.interval, timing, content_type=SSE,
            pieces=result.pieces, line=line, final=final,
        )  # fmt: skip

    async def transcribe(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/audio/transcriptions: a multipart form with `model` and `file`."""
        timing = Timing()
        try:
            form = await request.post()
        except ValueError as exc:
            return openai_error(400, f"failed to parse multipart form: {exc}", from_handler=False)
        model_text = form.get("model")
        if not isinstance(model_text, str) or not model_text:
            return openai_error(400, "model is required", from_handler=False)
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            message = "file is required: http: no such file"
            return openai_error(400, message, from_handler=False)
        audio = upload.file.read()
        if not audio:
            return openai_error(400, "audio file is empty", from_handler=False)
        model = self._model(model_text)
        if isinstance(model, web.Response):
            return model
        timing.mark_loaded()
        key = hashlib.sha256(audio).hexdigest()
        result = answer(model.name.key, key, len(audio) // 640 + 1, None)
        await run_whole(self.stats, self.interval, result.eval_count, timing)
        text = result.text.strip()
        if form.get("response_format") == "text":
            return raw(200, text.encode(), TEXT)
        return raw(200, dumps({"text": text}) + b"\n", JSON)


def _go_floats(value: Any) -> Any:
    """A struct's floats as Go writes them (1.0 as 1), its field order kept."""
    if isinstance(value, dict):
        return {k: _go_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_floats(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
