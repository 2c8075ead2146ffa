"""What a request asks for: the model it names, read only from the bodies that carry one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from ollana.ollama_api import BLOBS_PATH, endpoint, normalize_model

_AFFINITY_PROMPT_CHARS: Final = 512

__all__ = [
    "Route",
    "inspect_request",
]


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
        found = endpoint(self.path)
        return found is not None and found.mutating


def inspect_request(path: str, body: bytes | None, pin: str | None, cap: int) -> Route:
    """Read what routing needs from a request; the body is parsed once, and only where useful."""
    found = endpoint(path)
    if found is not None and found.path == BLOBS_PATH:
        return Route(path, pin=pin, blobs=(path[len(BLOBS_PATH) :],))
    if found is None or found.model is None:
        return Route(path, pin=pin)
    if found.model == "path":
        # GET /v1/models/{model}: the model is the rest of the (already decoded) path.
        return Route(path, normalize_model(path[len(found.path) :]), pin)
    if body is None or len(body) > cap:
        return Route(path, pin=pin)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return Route(path, pin=pin)
    if not isinstance(data, dict):
        return Route(path, pin=pin)
    value = data.get("source") if found.model == "source" else data.get("model") or data.get("name")
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
    conversation = _conversation(model, data) if found.conversation else None
    return Route(path, model, pin, conversation, blobs, target)


def _conversation(model: str, data: dict[str, Any]) -> str | None:
    """A key shared by the requests of one conversation: model plus its opening."""
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
