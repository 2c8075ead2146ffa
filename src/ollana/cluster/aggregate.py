"""Merged model lists: /api/tags, /api/ps and /v1/models as the union over healthy servers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from ollana.cluster.models import Route
from ollana.cluster.pool import Pool, Server
from ollana.cluster.router import Router
from ollana.http import PIN_HEADER, json_response
from ollana.http.client import FETCH_ERRORS
from ollana.ollama_api import PS_PATH, TAGS_PATH, V1_MODELS_PATH, model_names, normalize_model

__all__ = ["MERGED_LISTS", "Aggregator", "merge"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _List:
    key: str  # the array in the answer
    id_field: str  # what makes two entries the same model
    content_type: str
    skeleton: tuple[tuple[str, str], ...] = ()  # other top-level fields, as Ollama sends them


MERGED_LISTS: Final[Mapping[str, _List]] = {
    TAGS_PATH: _List("models", "name", "application/json; charset=utf-8"),
    PS_PATH: _List("models", "name", "application/json; charset=utf-8"),
    V1_MODELS_PATH: _List("data", "id", "application/json", (("object", "list"),)),
}


def merge(kind: _List, answers: list[Any]) -> dict[str, Any]:
    """The union of several answers' lists, de-duplicated by model, first answer first."""
    seen: set[str] = set()
    merged: list[Any] = []
    for answer in answers:
        items = answer.get(kind.key) if isinstance(answer, dict) else None
        for item in items if isinstance(items, list) else ():
            ident = item.get(kind.id_field) if isinstance(item, dict) else None
            if not isinstance(ident, str):
                continue
            name = normalize_model(ident)
            if name not in seen:
                seen.add(name)
                merged.append(item)
    return {**dict(kind.skeleton), kind.key: merged}


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
        servers = self._router.candidates(Route(request.path))
        if not servers and await self._pool.wait_changed(self._wait):
            servers = self._router.candidates(Route(request.path))
        answers = await asyncio.gather(*(self._fetch(s, request.raw_path) for s in servers))
        body = json.dumps(merge(kind, answers), separators=(",", ":")).encode()
        return json_response(200, body, kind.content_type)

    async def _fetch(self, server: Server, path_qs: str) -> Any:
        assert server.upstream is not None
        try:
            status, answer = await server.upstream.fetch_json(path_qs, self._timeout)
            if status != 200:
                return None
        except FETCH_ERRORS as exc:
            log.info("list from %s failed: %r", server.label, exc)
            return None
        names = frozenset(model_names(answer))
        if path_qs.startswith(TAGS_PATH):
            self._pool.learned(server, installed=names)
        elif path_qs.startswith(PS_PATH):
            self._pool.learned(server, loaded=names)
        return answer
