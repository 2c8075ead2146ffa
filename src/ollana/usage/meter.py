"""A usage meter: what Ollama reports about one answer, read off its bytes as they pass.

Ollama writes its counts at the end of an answer (the final NDJSON object of /api/chat
and /api/generate, the OpenAI ``usage`` object, the Responses ``response.completed``
event, the Anthropic ``message_delta`` event) and the model near its start. So the meter
keeps references to the first few and the last few chunks only, never copies or holds back
the stream, and reads them once, when the answer has ended.

Keys are matched as JSON keys (``"eval_count":``): text a model writes is a JSON string,
whose quotes are escaped, so it cannot pass for a key. Where a key occurs more than once
(the zero usage of every streamed /v1/completions chunk, say), the last one wins.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass
from typing import Final

from ollana.ollama_api import INFERENCE_PATHS

__all__ = ["HEAD_BYTES", "METERED_PATHS", "NO_USAGE", "TAIL_BYTES", "Usage", "UsageMeter"]

# Enough for the first event of any answer (model, Anthropic input_tokens)...
HEAD_BYTES: Final = 4 * 1024
# ... and for the last object or event (a generate answer's context array precedes its counts).
TAIL_BYTES: Final = 16 * 1024

# The paths whose answers carry usage: inference, native and compatible.
METERED_PATHS: Final = INFERENCE_PATHS  # what runs a model is what reports usage


def _key(*names: str) -> re.Pattern[bytes]:
    alternatives = "|".join(re.escape(n) for n in names)
    return re.compile(rb'"(?:' + alternatives.encode() + rb')"\s*:\s*(\d{1,19})')


_PROMPT: Final = _key("prompt_eval_count", "prompt_tokens", "input_tokens")
_GENERATED: Final = _key("eval_count", "completion_tokens", "output_tokens")
_EVAL_NS: Final = _key("eval_duration")
_TOTAL_NS: Final = _key("total_duration")
_MODEL: Final = re.compile(rb'"model"\s*:\s*"((?:[^"\\\x00-\x1f]|\\.){1,256})"')
_ERROR_START: Final = re.compile(rb'^(?:data:\s*)?\{\s*"error"\s*:')
_ERROR_TYPE: Final = re.compile(rb'"type"\s*:\s*"error"')


@dataclass(frozen=True, slots=True)
class Usage:
    """What one answer reported: counts are 0 and durations None where it said nothing."""

    model: str = ""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    eval_seconds: float | None = None  # Ollama's eval_duration: generating, not prefill
    total_seconds: float | None = None  # Ollama's total_duration: load, prefill and generation
    reported: bool = False  # whether any count was found
    error: bool = False  # whether the answer ended with an error object or event


# What a request without a meter reports: shared, since a Usage never changes.
NO_USAGE: Final = Usage()


class UsageMeter:
    """Fed the chunks of one answer as they pass (`feed`), then read once (`result`)."""

    __slots__ = ("_head", "_head_size", "_kind", "_size", "_tail")

    def __init__(self, content_type: str | None) -> None:
        ctype = (content_type or "").partition(";")[0].strip().lower()
        self._kind = (
            "sse" if ctype == "text/event-stream" else "ndjson" if "ndjson" in ctype else ""
        )
        self._head: list[bytes] = []
        self._head_size = 0
        self._tail: deque[bytes] = deque()
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        """One chunk of the answer, in order; any split. Keeps references, copies nothing."""
        if not chunk:
            return
        if self._head_size < HEAD_BYTES:
            self._head.append(chunk)
            self._head_size += len(chunk)
        tail = self._tail
        tail.append(chunk)
        self._size += len(chunk)
        while self._size - len(tail[0]) >= TAIL_BYTES:
            self._size -= len(tail.popleft())

    def result(self) -> Usage:
        """What the answer reported, read from its first and last bytes."""
        tail = b"".join(self._tail)
        head = b"".join(self._head)[:HEAD_BYTES]
        record = tail if not self._kind else _last_record(tail)
        prompt = _last(_PROMPT, tail)
        if prompt is None and self._kind == "sse":
            prompt = _last(_PROMPT, head)  # Anthropic: input_tokens only in message_start
        generated = _last(_GENERATED, tail)
        eval_ns = _last(_EVAL_NS, tail)
        total_ns = _last(_TOTAL_NS, tail)
        model = _MODEL.search(head) or _MODEL.search(tail)
        error = bool(self._kind) and bool(_ERROR_START.search(record) or _ERROR_TYPE.search(record))
        return Usage(
            model=_model_name(model.group(1)) if model else "",
            prompt_tokens=prompt or 0,
            generated_tokens=generated or 0,
            eval_seconds=eval_ns / 1e9 if eval_ns is not None else None,
            total_seconds=total_ns / 1e9 if total_ns is not None else None,
            reported=prompt is not None or generated is not None,
            error=error,
        )


def _last(pattern: re.Pattern[bytes], data: bytes) -> int | None:
    found = None
    for found in pattern.finditer(data):  # noqa: B007 (the last one is wanted)
        pass
    return int(found.group(1)) if found is not None else None


def _last_record(tail: bytes) -> bytes:
    """The last non-empty line of a stream, skipping the SSE end marker and event names."""
    for raw in reversed(tail.rstrip().splitlines()[-4:]):
        line = raw.strip()
        if line and line != b"data: [DONE]" and not line.startswith(b"event:"):
            return line
    return b""


def _model_name(raw: bytes) -> str:
    try:
        name = json.loads(b'"' + raw + b'"')
    except ValueError:
        return ""
    return name if isinstance(name, str) else ""
