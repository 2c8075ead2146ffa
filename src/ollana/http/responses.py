"""Answers of ollana's own, headed as Ollama heads its answers."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import hdrs, web

from ollana.http._aiohttp import BareResponse

__all__ = ["bare_response", "error_response", "json_response"]


def json_response(
    status: int,
    body: bytes,
    content_type: str = "application/json; charset=utf-8",
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A JSON answer of our own, headed as Ollama heads its answers (no Server header)."""
    return bare_response(status, body, content_type, headers)


def bare_response(
    status: int,
    body: bytes = b"",
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An answer of our own with exactly these bytes and no Server header, as Ollama's."""
    response = BareResponse(status=status, body=body, headers=headers)
    if content_type is not None:
        response.headers[hdrs.CONTENT_TYPE] = content_type
    elif not body:
        response.headers.popall(hdrs.CONTENT_TYPE, None)
    return response


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An Ollama-style error: `{"error": "…"}` as application/json; charset=utf-8."""
    return json_response(status, json.dumps({"error": message}).encode(), headers=headers)
