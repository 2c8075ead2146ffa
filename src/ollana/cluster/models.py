"""What a request asks for: the model it names, read only from the bodies that carry one."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from ollana.cluster.encoding import decoded, form_field
from ollana.ollama_api import BLOBS_PATH, endpoint, normalize_model

_AFFINITY_PROMPT_CHARS: Final = 512
_UNLOADS_AT: Final = frozenset({"/api/generate", "/api/chat"})
_ZERO: Final = re.compile(r"0+(\.0*)?(ns|us|µs|ms|s|m|h)?")  # a Go duration of zero
_RESPONSE_ID_MAX: Final = 128

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
    unload: bool = False  # keep_alive 0 and nothing to answer: unload the model everywhere
    previous_response: str | None = None  # a Responses turn chained to an earlier answer

    @property
    def mutating(self) -> bool:
        """Whether the request changes the models a server holds."""
        found = endpoint(self.path)
        return found is not None and found.mutating


def inspect_request(
    path: str,
    body: bytes | None,
    pin: str | None,
    cap: int,
    *,
    content_type: str | None = None,
    content_encoding: str | None = None,
) -> Route:
    """Read what routing needs from a request; the body is parsed once, and only where useful.

    A compressed body is read decoded (at most `cap` bytes of it); one that cannot be decoded,
    or parsed, gives a Route without a model: the request is forwarded unrouted.
    """
    found = endpoint(path)
    if found is not None and found.path == BLOBS_PATH:
        return Route(path, pin=pin, blobs=(path[len(BLOBS_PATH) :],))
    if found is None or found.model is None:
        return Route(path, pin=pin)
    if found.model == "path":
        # GET /v1/models/{model}: the model is the rest of the (already decoded) path.
        return Route(path, normalize_model(path[len(found.path) :]), pin)
    if body is None:
        return Route(path, pin=pin)
    if found.model == "form":
        # A form's fields come before its file, as clients send them: the start is enough.
        head = decoded(body, content_encoding, cap) if content_encoding else body[:cap]
        value = form_field(head, content_type, "model") if head is not None else None
        return Route(path, normalize_model(value) if value and value.strip() else None, pin)
    plain = decoded(body, content_encoding, cap) if content_encoding else body
    if plain is None or len(plain) > cap:
        return Route(path, pin=pin)
    try:
        data = json.loads(plain)
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
    previous = data.get("previous_response_id")
    if not isinstance(previous, str) or not 0 < len(previous) <= _RESPONSE_ID_MAX:
        previous = None
    unload = path in _UNLOADS_AT and _unloads(data)
    return Route(path, model, pin, conversation, blobs, target, unload, previous)


def _unloads(data: dict[str, Any]) -> bool:
    """A generate or chat that only sets keep_alive to zero: Ollama unloads the model."""
    keep_alive = data.get("keep_alive")
    zero = (
        keep_alive == 0
        if isinstance(keep_alive, int | float) and not isinstance(keep_alive, bool)
        else isinstance(keep_alive, str) and _ZERO.fullmatch(keep_alive.strip()) is not None
    )
    return zero and not data.get("prompt") and not data.get("messages")


def _conversation(model: str, data: dict[str, Any]) -> str | None:
    """A key shared by the requests of one conversation: model plus its opening.

    The opening holds the system prompt wherever the API puts it: in the messages, in
    Anthropic's top-level `system`, in the Responses API's `instructions`.
    """
    messages = data.get("messages")
    if messages is None:
        messages = data.get("input")  # the Responses API: a string, or a list of items
    opening: object
    if isinstance(messages, list) and messages:
        opening = _opening(messages)
    elif isinstance(messages, str) and messages:
        opening = messages[:_AFFINITY_PROMPT_CHARS]
    else:
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return None
        opening = prompt[:_AFFINITY_PROMPT_CHARS]
    system = data.get("system", data.get("instructions"))
    if system is not None:
        opening = [system, opening]
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
        if not (isinstance(message, dict) and message.get("role") in ("system", "developer")):
            return messages[: index + 1]
    return messages
