"""What a request asks for: the model it names, read only from the bodies that carry one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "AFFINITY_PATHS",
    "BLOBS_PATH",
    "MODEL_PATHS",
    "MUTATING_PATHS",
    "Route",
    "inspect_request",
    "model_names",
    "normalize_model",
]

# Endpoints whose JSON body names a model (`model`, or `name` in older calls).
MODEL_PATHS: Final = frozenset(
    {
        "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show",
        "/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete",
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages",
    }
)  # fmt: skip

# Endpoints that change what a server holds: its model list is refreshed after them.
MUTATING_PATHS: Final = frozenset(
    {"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete"}
)

# Conversations: the same model and opening go to the same server, to reuse its prompt cache.
AFFINITY_PATHS: Final = frozenset(
    {"/api/chat", "/api/generate", "/v1/chat/completions", "/v1/completions", "/v1/messages"}
)

BLOBS_PATH: Final = "/api/blobs/"
_MODEL_IN_PATH: Final = "/v1/models/"
_REGISTRY_PREFIXES: Final = ("registry.ollama.ai/library/", "registry.ollama.ai/")
_AFFINITY_PROMPT_CHARS: Final = 512


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


@dataclass(frozen=True, slots=True)
class Route:
    """What routing knows of a request."""

    path: str = ""
    model: str | None = None
    pin: str | None = None
    conversation: str | None = None
    blobs: tuple[str, ...] = ()
    target: str | None = None  # the model a pull, create or copy makes

    @property
    def mutating(self) -> bool:
        """Whether the request changes the models a server holds."""
        return self.path in MUTATING_PATHS


def inspect_request(path: str, body: bytes | None, pin: str | None, cap: int) -> Route:
    """Read what routing needs from a request; the body is parsed once, and only where useful."""
    if path.startswith(BLOBS_PATH):
        return Route(path, pin=pin, blobs=(path[len(BLOBS_PATH) :],))
    if path.startswith(_MODEL_IN_PATH) and len(path) > len(_MODEL_IN_PATH):
        # GET /v1/models/{model}: the model is the rest of the (already decoded) path.
        return Route(path, normalize_model(path[len(_MODEL_IN_PATH) :]), pin)
    if body is None or path not in MODEL_PATHS or len(body) > cap:
        return Route(path, pin=pin)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return Route(path, pin=pin)
    if not isinstance(data, dict):
        return Route(path, pin=pin)
    value = data.get("source") if path == "/api/copy" else data.get("model") or data.get("name")
    if not isinstance(value, str) or not value.strip():
        return Route(path, pin=pin)
    model = normalize_model(value)
    blobs: tuple[str, ...] = ()
    files = data.get("files")
    if path == "/api/create" and isinstance(files, dict):
        blobs = tuple(str(v) for v in files.values() if isinstance(v, str))
    target: str | None = model if path in ("/api/pull", "/api/create") else None
    destination = data.get("destination")
    if path == "/api/copy" and isinstance(destination, str) and destination.strip():
        target = normalize_model(destination)
    return Route(path, model, pin, _conversation(path, model, data), blobs, target)


def _conversation(path: str, model: str, data: dict[str, Any]) -> str | None:
    """A key shared by the requests of one conversation: model plus its opening."""
    if path not in AFFINITY_PATHS:
        return None
    messages = data.get("messages")
    opening: object
    if isinstance(messages, list) and messages:
        opening = _opening(messages)
    else:
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return None
        opening = prompt[:_AFFINITY_PROMPT_CHARS]
    try:
        text = json.dumps([model, opening], sort_keys=True, separators=(",", ":"), default=str)
    except (RecursionError, ValueError):
        return None
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _opening(messages: list[Any]) -> list[Any]:
    """What every turn of a conversation starts with: its system messages and first question.

    Later turns resend the history and add to it, so anything past the first non-system
    message differs between turn one and turn two.
    """
    for index, message in enumerate(messages):
        if not (isinstance(message, dict) and message.get("role") == "system"):
            return messages[: index + 1]
    return messages
