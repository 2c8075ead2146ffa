"""Ollama's HTTP API as ollana needs to know it: one table of endpoints, and pure lookups.

Routing (which requests name a model, which change what a server holds, which belong to a
conversation), the read-only allow list, metrics' route labels, the framing of a mid-stream
error and the emulator all read this one table, so that a new Ollama endpoint is added in one
place. It follows the route table of Ollama 0.33 (server/routes.go `GenerateRoutes`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ANTHROPIC_MESSAGES_PATH",
    "BLOBS_PATH",
    "ENDPOINTS",
    "EXPERIMENTAL_PATH",
    "HELLO_PATH",
    "INFERENCE_PATHS",
    "MODELS_PATH",
    "OTHER_ROUTE",
    "PS_PATH",
    "RESPONSES_PATH",
    "ROOT_ANSWER",
    "ROOT_CONTENT_TYPE",
    "SIGNIN_URL",
    "TAGS_PATH",
    "TRANSCRIPTIONS_PATH",
    "USER_KEYS_PATH",
    "V1_MODELS_PATH",
    "VERSION_PATH",
    "Endpoint",
    "ModelAt",
    "StreamFormat",
    "allowed_read_only",
    "changes_models",
    "endpoint",
    "is_cloud_model",
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
USER_KEYS_PATH: Final = "/api/user/keys/"  # DELETE /api/user/keys/{encodedKey}
EXPERIMENTAL_PATH: Final = "/api/experimental/"
ANTHROPIC_MESSAGES_PATH: Final = "/v1/messages"
RESPONSES_PATH: Final = "/v1/responses"
TRANSCRIPTIONS_PATH: Final = "/v1/audio/transcriptions"
HELLO_PATH: Final = "/ollana/v1/hello"  # ollana's own, on the server port
OTHER_ROUTE: Final = "other"
# Where an Ollama that is not signed in sends its user (name and key follow).
SIGNIN_URL: Final = "https://ollama.com/connect?name={name}&key={key}"
# What Ollama answers at GET / (gin's c.String: text/plain; charset=utf-8, no newline).
ROOT_ANSWER: Final = b"Ollama is running"
ROOT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"

# Where an endpoint's request names its model: a JSON body's `model` (or `name`, in older
# calls), a copy's `source`, the rest of the path, or a multipart form's `model` field.
ModelAt = Literal["body", "source", "path", "form", None]
# How an endpoint's streamed answer is framed, and so how a mid-stream error is written.
StreamFormat = Literal["ndjson", "openai", "anthropic", "responses"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of Ollama's API (or a family of paths under a prefix ending in "/")."""

    path: str
    methods: frozenset[str]
    model: ModelAt = None
    mutating: bool = False  # changes the models a server holds (its lists are fetched again)
    conversation: bool = False  # turns of one conversation go to one server (prompt cache)
    read_only: bool = False  # what apps need to use models: allowed by --read-only and --open
    inference: bool = False  # runs a model: queued fairly by a server, its usage metered
    label: str = ""  # the metrics route label; the path itself when empty
    stream: StreamFormat = "ndjson"

    @property
    def route(self) -> str:
        """The route label metrics use for it."""
        return self.label or self.path


def _e(path: str, *methods: str, **kwargs: object) -> Endpoint:
    return Endpoint(path, frozenset(methods), **kwargs)  # type: ignore[arg-type]


# One entry per (path, methods) whose rules differ: a blob's HEAD is read-only, its POST not.
ENDPOINTS: Final = (
    _e("/", "GET", "HEAD", read_only=True),
    _e(VERSION_PATH, "GET", "HEAD", read_only=True),
    _e("/api/status", "GET", read_only=True),  # whether cloud models are disabled
    _e(TAGS_PATH, "GET", "HEAD", read_only=True),
    _e(PS_PATH, "GET", read_only=True),
    _e("/api/show", "POST", model="body", read_only=True),
    _e("/api/generate", "POST", inference=True, model="body", conversation=True, read_only=True),
    _e("/api/chat", "POST", inference=True, model="body", conversation=True, read_only=True),
    _e("/api/embed", "POST", inference=True, model="body", read_only=True),
    _e("/api/embeddings", "POST", inference=True, model="body", read_only=True),
    _e("/api/pull", "POST", model="body", mutating=True),
    _e("/api/push", "POST", model="body", mutating=True),
    _e("/api/create", "POST", model="body", mutating=True),
    _e("/api/copy", "POST", model="source", mutating=True),
    _e("/api/delete", "DELETE", model="body", mutating=True),
    _e(BLOBS_PATH, "HEAD", read_only=True, label=BLOBS_PATH + ":digest"),
    _e(BLOBS_PATH, "POST", label=BLOBS_PATH + ":digest"),
    # The host's ollama.com account: who it is, and signing it out.
    _e("/api/me", "POST"),
    _e("/api/signout", "POST"),
    _e(USER_KEYS_PATH, "DELETE", label=USER_KEYS_PATH + ":key"),
    # web_search and web_fetch spend the host's account; model-recommendations does not, but
    # new experiments are refused until someone decides otherwise.
    _e(EXPERIMENTAL_PATH, "GET", "POST", label=EXPERIMENTAL_PATH + ":name"),
    _e("/v1/chat/completions", "POST", model="body", conversation=True, read_only=True,
       inference=True, stream="openai"),
    _e("/v1/completions", "POST", model="body", conversation=True, read_only=True,
       inference=True, stream="openai"),
    _e("/v1/embeddings", "POST", inference=True, model="body", read_only=True),
    _e(V1_MODELS_PATH, "GET", read_only=True),
    _e(MODELS_PATH, "GET", model="path", read_only=True, label=MODELS_PATH + ":model"),
    _e(RESPONSES_PATH, "POST", inference=True, model="body", conversation=True, read_only=True,
       stream="responses"),
    _e(TRANSCRIPTIONS_PATH, "POST", model="form", read_only=True),
    _e(ANTHROPIC_MESSAGES_PATH, "POST", model="body", conversation=True, read_only=True,
       inference=True, stream="anthropic"),
    _e(HELLO_PATH, "POST"),
)  # fmt: skip


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


def _first_by_path() -> dict[str, Endpoint]:
    found: dict[str, Endpoint] = {}
    for e in ENDPOINTS:
        found.setdefault(e.path, e)
    return found


_BY_PATH: Final = _first_by_path()
_PREFIXES: Final = tuple(p for p in _BY_PATH if p.endswith("/") and p != "/")


def endpoint(path: str, method: str | None = None) -> Endpoint | None:
    """The endpoint a (decoded) request path belongs to, or None for one ollana does not know.

    With a method, the entry of that path that lists it (blobs: HEAD and POST differ), or the
    path's first entry when none does.
    """
    family = path if path in _BY_PATH and (path == "/" or not path.endswith("/")) else None
    if family is None:
        for prefix in _PREFIXES:
            rest = path[len(prefix) :]
            # Model names may hold slashes (hf.co/user/model); digests and keys do not.
            if (
                path.startswith(prefix)
                and rest
                and (_BY_PATH[prefix].model == "path" or "/" not in rest)
            ):
                family = prefix
                break
    if family is None:
        return None
    if method is not None:
        for e in ENDPOINTS:
            if e.path == family and method in e.methods:
                return e
    return _BY_PATH[family]


def route_label(path: str) -> str:
    """The metrics route label of a request path: a known route, or "other" (bounded)."""
    found = endpoint(path)
    return found.route if found is not None else OTHER_ROUTE


def changes_models(method: str, path: str) -> bool:
    """Whether a request changes the models a server holds (management, blob uploads)."""
    found = endpoint(path, method)
    if found is None:
        return False
    return found.mutating or (found.path == BLOBS_PATH and method == "POST")


def allowed_read_only(method: str, path: str) -> bool:
    """Whether a read-only (or open) server forwards a request: an allow list.

    Only what apps need to use models passes; management, the host's account, experiments,
    Ollama's debug handlers and any path this table does not know are refused.
    """
    found = endpoint(path, method)
    return found is not None and found.read_only and method in found.methods


def is_cloud_model(model: str) -> bool:
    """Whether a model runs on ollama.com (`name:cloud`, `name:tag-cloud`)."""
    tag = model.rsplit("/", 1)[-1].partition(":")[2]
    return tag == "cloud" or tag.endswith("-cloud")


def _sse(event: str | None, payload: object) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload).encode() + b"\n\n"


def stream_error_chunk(content_type: str | None, message: str, path: str = "") -> bytes:
    """One error in a stream's own framing, for a stream of `path` broken mid-way.

    An NDJSON stream gets an `{"error": …}` line; an SSE stream the error event of its API:
    Anthropic's `event: error`, the Responses API's `error` event, OpenAI chat's data event.
    """
    if not (content_type and content_type.startswith("text/event-stream")):
        return json.dumps({"error": message}).encode() + b"\n"
    found = endpoint(path)
    form = found.stream if found is not None else "openai"
    if form == "anthropic":
        return _sse("error", {"type": "error", "error": {"type": "api_error", "message": message}})
    if form == "responses":
        payload = {"type": "error", "code": "server_error", "message": message, "param": None}
        return _sse("error", payload)
    error = {"message": message, "type": "api_error", "param": None, "code": None}
    return _sse(None, {"error": error})


# The endpoints that run a model (POST): what a server queues per device and meters.
INFERENCE_PATHS: Final = frozenset(e.path for e in ENDPOINTS if e.inference)
