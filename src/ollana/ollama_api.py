"""Ollama's HTTP API as ollana needs to know it: one table of endpoints, and pure lookups.

Routing (which requests name a model, which change what a server holds, which belong to a
conversation), the read-only rules, metrics' route labels, the framing of a mid-stream error
and the emulator all read this one table, so that a new Ollama endpoint is added in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "BLOBS_PATH",
    "ENDPOINTS",
    "HELLO_PATH",
    "MODELS_PATH",
    "OTHER_ROUTE",
    "PS_PATH",
    "ROOT_ANSWER",
    "ROOT_CONTENT_TYPE",
    "TAGS_PATH",
    "V1_MODELS_PATH",
    "VERSION_PATH",
    "Endpoint",
    "ModelAt",
    "changes_models",
    "endpoint",
    "model_names",
    "normalize_model",
    "route_label",
    "stream_error_chunk",
]

VERSION_PATH: Final = "/api/version"
TAGS_PATH: Final = "/api/tags"
PS_PATH: Final = "/api/ps"
V1_MODELS_PATH: Final = "/v1/models"
BLOBS_PATH: Final = "/api/blobs/"
MODELS_PATH: Final = "/v1/models/"  # GET /v1/models/{model}
HELLO_PATH: Final = "/ollana/v1/hello"  # ollana's own, on the server port
OTHER_ROUTE: Final = "other"
# What Ollama answers at GET / (gin's c.String: text/plain; charset=utf-8, no newline).
ROOT_ANSWER: Final = b"Ollama is running"
ROOT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"

# Where an endpoint's request names its model: a JSON body's `model` (or `name`, in older
# calls), a copy's `source`, or the rest of the path.
ModelAt = Literal["body", "source", "path", None]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of Ollama's API (or a family of paths under a prefix ending in "/")."""

    path: str
    methods: frozenset[str]
    model: ModelAt = None
    mutating: bool = False  # changes the models a server holds (its lists are fetched again)
    conversation: bool = False  # turns of one conversation go to one server (prompt cache)
    label: str = ""  # the metrics route label; the path itself when empty

    @property
    def route(self) -> str:
        """The route label metrics use for it."""
        return self.label or self.path


def _e(path: str, *methods: str, **kwargs: object) -> Endpoint:
    return Endpoint(path, frozenset(methods), **kwargs)  # type: ignore[arg-type]


ENDPOINTS: Final = (
    _e("/", "GET", "HEAD"),
    _e(VERSION_PATH, "GET", "HEAD"),
    _e(TAGS_PATH, "GET", "HEAD"),
    _e(PS_PATH, "GET"),
    _e("/api/show", "POST", model="body"),
    _e("/api/generate", "POST", model="body", conversation=True),
    _e("/api/chat", "POST", model="body", conversation=True),
    _e("/api/embed", "POST", model="body"),
    _e("/api/embeddings", "POST", model="body"),
    _e("/api/pull", "POST", model="body", mutating=True),
    _e("/api/push", "POST", model="body", mutating=True),
    _e("/api/create", "POST", model="body", mutating=True),
    _e("/api/copy", "POST", model="source", mutating=True),
    _e("/api/delete", "DELETE", model="body", mutating=True),
    _e(BLOBS_PATH, "HEAD", "POST", label=BLOBS_PATH + ":digest"),
    _e("/v1/chat/completions", "POST", model="body", conversation=True),
    _e("/v1/completions", "POST", model="body", conversation=True),
    _e("/v1/embeddings", "POST", model="body"),
    _e("/v1/messages", "POST", model="body", conversation=True),
    _e("/v1/responses", "POST"),
    _e(V1_MODELS_PATH, "GET"),
    _e(MODELS_PATH, "GET", model="path", label=MODELS_PATH + ":model"),
    _e(HELLO_PATH, "POST"),
)

_EXACT: Final = {e.path: e for e in ENDPOINTS if not e.path.endswith("/") or e.path == "/"}
_PREFIXES: Final = tuple(e for e in ENDPOINTS if e.path.endswith("/") and e.path != "/")


_REGISTRY_PREFIXES: Final = ("registry.ollama.ai/library/", "registry.ollama.ai/")


def normalize_model(name: str) -> str:
    """The name Ollama stores a model under: default registry stripped, ':latest' implied."""
    name = name.strip()
    lowered = name.lower()
    for prefix in _REGISTRY_PREFIXES:
        if lowered.startswith(prefix):
            name = name[len(prefix) :]
            break
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name


def model_names(body: object) -> list[str]:
    """Normalized model names from an /api/tags or /api/ps answer; [] for anything else."""
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        return []
    names = (m.get("name") or m.get("model") for m in models if isinstance(m, dict))
    return [normalize_model(n) for n in names if isinstance(n, str)]


def endpoint(path: str) -> Endpoint | None:
    """The endpoint a (decoded) request path belongs to, or None for one ollana does not know."""
    found = _EXACT.get(path)
    if found is not None:
        return found
    for family in _PREFIXES:
        rest = path[len(family.path) :]
        # Model names may hold slashes (hf.co/user/model); digests do not.
        if path.startswith(family.path) and rest and (family.model == "path" or "/" not in rest):
            return family
    return None


def route_label(path: str) -> str:
    """The metrics route label of a request path: a known route, or "other" (bounded)."""
    found = endpoint(path)
    return found.route if found is not None else OTHER_ROUTE


def changes_models(method: str, path: str) -> bool:
    """Whether a request changes the models a server holds (management, blob uploads)."""
    found = endpoint(path)
    if found is None:
        return False
    return found.mutating or (found.path == BLOBS_PATH and method == "POST")


def stream_error_chunk(content_type: str | None, message: str) -> bytes:
    """One error in a stream's own framing: an SSE data event, or an NDJSON line."""
    if content_type and content_type.startswith("text/event-stream"):
        payload = {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
        return b"data: " + json.dumps(payload).encode() + b"\n\n"
    return json.dumps({"error": message}).encode() + b"\n"
