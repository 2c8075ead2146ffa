"""Responses as Ollama's gin server writes them: exact content types, bodies and error shapes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ollana.emulator.gojson import dumps

__all__ = [
    "JSON",
    "JSON_UTF8",
    "NDJSON",
    "SSE",
    "TEXT",
    "TEXT_UTF8",
    "empty",
    "json_body",
    "native_error",
    "openai_error",
    "openai_error_body",
    "raw",
]

JSON_UTF8 = "application/json; charset=utf-8"  # gin's c.JSON
JSON = "application/json"  # the /v1 writers, and progress answers with "stream": false
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
TEXT_UTF8 = "text/plain; charset=utf-8"  # gin's c.String
TEXT = "text/plain"  # gin's own 404 and 405 bodies


def raw(status: int, body: bytes, content_type: str) -> web.Response:
    """A response with exactly this body and content type."""
    return web.Response(status=status, body=body, headers={"Content-Type": content_type})


def json_body(value: Any, status: int = 200, content_type: str = JSON_UTF8) -> web.Response:
    """gin's c.JSON: compact, no trailing newline."""
    return raw(status, dumps(value), content_type)


def empty(status: int = 200) -> web.Response:
    """A handler that wrote nothing: no content type, no body."""
    return web.Response(status=status)


def native_error(status: int, message: str, content_type: str = JSON_UTF8) -> web.Response:
    """Ollama's {"error": "…"}."""
    return raw(status, dumps({"error": message}), content_type)


_OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def openai_error_body(status: int, message: str) -> dict[str, Any]:
    """openai.NewError: the error type follows the status."""
    kind = _OPENAI_TYPES.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def openai_error(status: int, message: str, *, from_handler: bool = True) -> web.Response:
    """An OpenAI-style error.

    Errors that Ollama's handlers raise pass through its /v1 response writer, which sends
    application/json and a trailing newline (json.Encoder); errors its /v1 middleware
    raises before the handler runs are plain c.JSON (charset, no newline).
    """
    body = dumps(openai_error_body(status, message))
    if from_handler:
        return raw(status, body + b"\n", JSON)
    return raw(status, body, JSON_UTF8)
