"""Merged model lists: /api/tags, /api/ps and /v1/models as the union over healthy servers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from ollana.cluster.models import Route
from ollana.cluster.pool import Pool
from ollana.cluster.rawlist import raw_items
from ollana.cluster.router import Router
from ollana.cluster.server import Server
from ollana.http import PIN_HEADER, error_response, json_response
from ollana.http.client import FETCH_ERRORS
from ollana.ollama_api import PS_PATH, TAGS_PATH, V1_MODELS_PATH, model_names, normalize_model

__all__ = ["MERGED_LISTS", "Aggregator", "Listed", "listed", "merge"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _List:
    key: str  # the array in the answer
    id_field: str  # what makes two entries the same model
    content_type: str
    skeleton: tuple[tuple[str, str], ...] = ()  # other top-level fields, as Ollama sends them
    end: bytes = b""  # gin's c.JSON ends with none; json.Encoder (the /v1 answers) with "\n"
    null_when_empty: bool = False


MERGED_LISTS: Final[Mapping[str, _List]] = {
    TAGS_PATH: _List("models", "name", "application/json; charset=utf-8"),
    PS_PATH: _List("models", "name", "application/json; charset=utf-8"),
    V1_MODELS_PATH: _List(
        "data", "id", "application/json", (("object", "list"),), end=b"\n", null_when_empty=True
    ),
}


@dataclass(frozen=True, slots=True)
class Listed:
    """One server's list answer: parsed, and each entry's text as the server wrote it."""

    document: Any
    raw: tuple[str, ...]


def listed(kind: _List, body: bytes) -> Listed:
    """A list answer read for merging; raises ValueError for one that is not JSON."""
    text = body.decode()
    document = json.loads(text)
    items = document.get(kind.key) if isinstance(document, dict) else None
    raw = raw_items(text, kind.key) if isinstance(items, list) else None
    return Listed(document, tuple(raw or ()))


def merge(kind: _List, answers: list[Listed | None]) -> bytes:
    """The union of several answers' lists, de-duplicated by model, first answer first.

    Each entry goes out byte for byte as its server wrote it, fields Ollama adds included.
    """
    seen: set[str] = set()
    merged: list[str] = []
    for answer in answers:
        items = (
            answer.document.get(kind.key) if answer and isinstance(answer.document, dict) else None
        )
        if answer is None or not isinstance(items, list) or len(items) != len(answer.raw):
            continue
        for item, raw in zip(items, answer.raw, strict=True):
            ident = item.get(kind.id_field) if isinstance(item, dict) else None
            if not isinstance(ident, str):
                continue
            name = normalize_model(ident)
            if name not in seen:
                seen.add(name)
                merged.append(raw)
    head = "".join(f"{json.dumps(k)}:{json.dumps(v)}," for k, v in kind.skeleton)
    # As Ollama writes a list it built from nothing: null where its Go slice was nil.
    array = "null" if kind.null_when_empty and not merged else f"[{','.join(merged)}]"
    return f'{{{head}"{kind.key}":{array}}}'.encode() + kind.end


class Aggregator:
    """Answers the list endpoints itself, from every healthy server at once."""

    def __init__(self, pool: Pool, router: Router, wait_for_server: float, timeout: float) -> None:
        self._pool = pool
        self._router = router
        self._wait = wait_for_server
        self._timeout = timeout

    def handles(self, request: web.BaseRequest) -> bool:
        """Whether this request is a merged list (a pinned request goes to its server)."""
        return (
            request.path in MERGED_LISTS
            and request.method in ("GET", "HEAD")
            and PIN_HEADER not in request.headers
        )

    async def answer(self, request: web.BaseRequest) -> web.Response:
        """The merged list, in Ollama's schema; an empty one when no server is healthy."""
        kind = MERGED_LISTS[request.path]
        route = Route(request.path)
        deadline = time.monotonic() + self._wait
        servers = self._router.candidates(route)
        while not servers and self._pool.expecting():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await self._pool.wait_changed(remaining):
                break
            servers = self._router.candidates(route)
        if not servers:
            # An empty list would say "no models"; the truth is that no server is reachable.
            why = f"no Ollama server is reachable through ollana: {self._router.why_none()}"
            return error_response(503, why)
        answers = await asyncio.gather(*(self._fetch(kind, s, request.raw_path) for s in servers))
        return json_response(200, merge(kind, answers), kind.content_type)

    async def _fetch(self, kind: _List, server: Server, path_qs: str) -> Listed | None:
        assert server.upstream is not None
        try:
            status, body = await server.upstream.fetch(path_qs, self._timeout)
            if status != 200:
                return None
            answer = listed(kind, body)
        except FETCH_ERRORS as exc:
            log.info("list from %s failed: %r", server.label, exc)
            return None
        names = frozenset(model_names(answer.document))
        if path_qs.startswith(TAGS_PATH):
            self._pool.learned(server, installed=names)
        elif path_qs.startswith(PS_PATH):
            self._pool.learned(server, loaded=names)
        return answer
