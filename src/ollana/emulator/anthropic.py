"""Ollama's Anthropic-compatible API: POST /v1/messages, whole or as Anthropic SSE events."""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from ollana.emulator.encoding import body_bytes
from ollana.emulator.generation import Timing, run_stream, run_whole
from ollana.emulator.gojson import dumps, go_quote
from ollana.emulator.model import answer, chat_key, count_tokens
from ollana.emulator.names import parse_name
from ollana.emulator.native import not_found_message
from ollana.emulator.responses import JSON, JSON_UTF8, SSE, raw
from ollana.emulator.state import EmulatorStats, ModelStore

__all__ = ["AnthropicApi", "anthropic_error"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def anthropic_error(status: int, message: str, *, from_handler: bool = True) -> web.Response:
    """anthropic.NewError: type "error", the error's type from the status, a request ID.

    The middleware's own refusals are gin's c.JSON; a handler's error passes the Anthropic
    writer, which uses json.Encoder (a trailing newline) and plain application/json.
    """
    error = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}
    body = dumps({"type": "error", "error": error, "request_id": _ident("req")})
    if from_handler:
        return raw(status, body + b"\n", JSON)
    return raw(status, body, JSON_UTF8)


def _ident(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _texts(content: Any) -> str | None:
    """A string, or the text of a list of content blocks; None when it is neither."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = [b.get("text") for b in content if isinstance(b, dict)]
    return "".join(p for p in parts if isinstance(p, str))


def _messages(body: dict[str, Any]) -> list[tuple[str, str]] | str:
    """(role, text) pairs, the top-level system first; or the 400's message."""
    out: list[tuple[str, str]] = []
    if body.get("system") is not None:
        system = _texts(body["system"])
        if system is None:
            return "invalid system prompt"
        out.append(("system", system))
    for message in body["messages"]:
        if not isinstance(message, dict):
            return "invalid message"
        content = _texts(message.get("content"))
        if content is None:
            return "invalid message content"
        out.append((str(message.get("role") or ""), content))
    return out


def _event(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


class AnthropicApi:
    """The handler of /v1/messages."""

    def __init__(self, store: ModelStore, stats: EmulatorStats, interval: float):
        self.store = store
        self.stats = stats
        self.interval = interval

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/messages."""
        timing = Timing()
        try:
            body = json.loads(await body_bytes(request) or b'"EOF"')
        except ValueError:
            return anthropic_error(400, "invalid character in request body", from_handler=False)
        if not isinstance(body, dict):
            message = "EOF" if body == "EOF" else "invalid request body"
            return anthropic_error(400, message, from_handler=False)
        model_text = body.get("model")
        if not isinstance(model_text, str) or not model_text:
            return anthropic_error(400, "model is required", from_handler=False)
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens <= 0:
            message = "max_tokens is required and must be positive"
            return anthropic_error(400, message, from_handler=False)
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return anthropic_error(400, "messages is required", from_handler=False)
        messages = _messages(body)
        if isinstance(messages, str):
            return anthropic_error(400, messages, from_handler=False)
        name = parse_name(model_text)
        model = self.store.get(name) if name is not None else None
        if model is None:
            return anthropic_error(404, not_found_message(model_text))
        if not model.spec.completion:
            return anthropic_error(400, f"{go_quote(model_text)} does not support chat")
        self.store.touch(model, None)
        timing.mark_loaded()
        tokens = sum(count_tokens(content) + 4 for _, content in messages) + 1
        # Anthropic's max_tokens bounds the answer; the emulated model stops on its own first.
        result = answer(model.name.key, chat_key(messages), tokens, None)
        reason = _STOP_REASONS.get(result.done_reason, "stop_sequence")
        ident = _ident("msg")
        usage = {"input_tokens": tokens, "output_tokens": result.eval_count}
        if body.get("stream") is True:
            start = {
                "type": "message_start",
                "message": {
                    "id": ident, "type": "message", "role": "assistant", "model": model_text,
                    "content": [], "usage": {"input_tokens": tokens, "output_tokens": 0},
                },
            }  # fmt: skip
            block = {"type": "content_block_start", "index": 0}
            block["content_block"] = {"type": "text", "text": ""}
            opening = _event("message_start", dumps(start))
            opening += _event("content_block_start", dumps(block))
            opened = False

            def line(piece: str) -> bytes:
                # message_start goes out with the first token, as Ollama's first write.
                nonlocal opened
                head, opened = (b"" if opened else opening), True
                delta = {"type": "content_block_delta", "index": 0}
                delta["delta"] = {"type": "text_delta", "text": piece}
                return head + _event("content_block_delta", dumps(delta))

            def final() -> bytes:
                stop = {"type": "content_block_stop", "index": 0}
                done = (b"" if opened else opening) + _event("content_block_stop", dumps(stop))
                delta = {"type": "message_delta", "delta": {"stop_reason": reason}, "usage": usage}
                done += _event("message_delta", dumps(delta))
                return done + _event("message_stop", dumps({"type": "message_stop"}))

            return await run_stream(
                request, self.stats, self.interval, timing, content_type=SSE,
                pieces=result.pieces, line=line, final=final,
            )  # fmt: skip
        await run_whole(self.stats, self.interval, result.eval_count, timing)
        whole = {
            "id": ident, "type": "message", "role": "assistant", "model": model_text,
            "content": [{"type": "text", "text": result.text}],
            "stop_reason": reason, "usage": usage,
        }  # fmt: skip
        return raw(200, dumps(whole) + b"\n", JSON)
