"""The deterministic model: the same request always gives the same tokens and embeddings."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_NUM_PREDICT",
    "MAX_TOKENS",
    "Answer",
    "Embedding",
    "answer",
    "chat_key",
    "count_tokens",
    "embed",
]

DEFAULT_NUM_PREDICT = 16  # tokens of an answer when the request sets no num_predict
MAX_TOKENS = 131_072  # a context window: no answer is longer, whatever num_predict says

_WORDS = (  # noqa: SIM905 (a paragraph reads better than a list of 140 strings)
    "the of and to in is that it for as with was on be by this are from at or an which have "
    "not but can its light sky blue sun air water model answer question time first way one "
    "more when some other into also only new these two may any could each how most after "
    "over such then them than well because through many where long short between small large "
    "local network server client request response stream token word line simple clear "
    "scattering wavelength shorter longer molecules atmosphere red green color colour eye "
    "sees see reason result example case part number point place world system data value "
    "every often usually always never quite rather very much really still just even"
).split()
_COMMA, _PERIOD = len(_WORDS), len(_WORDS) + 1
_IDS = range(len(_WORDS) + 2)
_WEIGHTS = [1.0] * len(_WORDS) + [len(_WORDS) * 0.06, len(_WORDS) * 0.07]
_CONTEXT_BASE = 1000  # token ids of the vocabulary in `context`, clear of special tokens

# Token texts, with and without a capital, pre-encoded: none needs JSON escaping.
_PLAIN = (*(f" {w}" for w in _WORDS), ",", ".")
_CAPITAL = (*(f" {w.capitalize()}" for w in _WORDS), ",", ".")
_FIRST = (*(w.capitalize() for w in _WORDS), ",", ".")
assert all(t.isascii() and t.isprintable() and not set(t) & set('"\\<>&') for t in _PLAIN)


@dataclass(frozen=True, slots=True)
class Answer:
    """A generated answer: its tokens (as text) and the counts Ollama reports."""

    pieces: tuple[str, ...]
    token_ids: tuple[int, ...]
    prompt_tokens: int
    done_reason: str  # "stop" or "length"
    seed: int

    @property
    def text(self) -> str:
        """The whole answer."""
        return "".join(self.pieces)

    @property
    def eval_count(self) -> int:
        """Tokens generated."""
        return len(self.pieces)

    def context(self) -> list[int]:
        """Token ids of prompt and answer, as /api/generate returns them for the next call."""
        rng = random.Random(self.seed ^ 0x5DEECE66D)
        prompt = [rng.randrange(100, 32000) for _ in range(self.prompt_tokens)]
        return prompt + [_CONTEXT_BASE + t for t in self.token_ids]


def count_tokens(text: str) -> int:
    """A tokenizer's count, roughly: one token per four bytes of text."""
    return (len(text.encode("utf-8", "replace")) + 3) // 4


def chat_key(messages: Iterable[tuple[str, str]]) -> str:
    """The part of a chat that decides its answer: roles and contents, in order."""
    return "\x1e".join(f"{role}\x1f{content}" for role, content in messages)


def _seed(*parts: str) -> int:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big")


def answer(model: str, prompt: str, prompt_tokens: int, num_predict: int | None) -> Answer:
    """The answer of `model` to `prompt`: num_predict tokens, else a natural-length answer.

    A positive num_predict yields exactly that many tokens, up to MAX_TOKENS (done_reason
    "length"): the emulated model never reaches its end-of-sequence first, so benchmarks get
    the length they ask for. Zero, negative or no num_predict yields the natural answer.
    """
    if num_predict is not None and num_predict > 0:
        count, reason = min(num_predict, MAX_TOKENS), "length"
    else:
        count, reason = DEFAULT_NUM_PREDICT, "stop"
    seed = _seed(model, prompt)
    rng = random.Random(seed)
    ids = rng.choices(_IDS, _WEIGHTS, k=count)
    pieces: list[str] = []
    previous = _PERIOD
    for i, drawn in enumerate(ids):
        token = drawn
        if token >= _COMMA and (i == 0 or previous >= _COMMA):
            token %= len(_WORDS)  # no punctuation first or twice in a row
        if i == 0:
            pieces.append(_FIRST[token])
        elif previous == _PERIOD:
            pieces.append(_CAPITAL[token])
        else:
            pieces.append(_PLAIN[token])
        previous = token
        ids[i] = token
    if reason == "stop" and count > 1 and ids[-2] < _COMMA:
        ids[-1], pieces[-1] = _PERIOD, "."  # a natural answer ends its sentence
    return Answer(tuple(pieces), tuple(ids), prompt_tokens, reason, seed)


@dataclass(frozen=True, slots=True)
class Embedding:
    """A unit vector derived from a text, and ways to write it as Ollama does."""

    values: tuple[float, ...]

    def json(self) -> str:
        """A JSON array of the components, in fixed notation like Go's float32 output."""
        return "[" + ",".join(_fixed(v) for v in self.values) + "]"

    def base64(self) -> str:
        """Little-endian float32 components in base64 (OpenAI's encoding_format=base64)."""
        return base64.b64encode(struct.pack(f"<{len(self.values)}f", *self.values)).decode()


def _fixed(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _normalized(raw: Sequence[int]) -> tuple[float, ...]:
    norm = math.sqrt(math.fsum(v * v for v in raw)) or 1.0
    return tuple(v / norm for v in raw)


def embed(model: str, text: str, dimensions: int, truncate_to: int = 0) -> Embedding:
    """The embedding of `text` by `model`: `dimensions` long (or cut to `truncate_to`), norm 1."""
    data = hashlib.shake_256(f"{model}\x00{text}".encode("utf-8", "replace")).digest(2 * dimensions)
    raw = struct.unpack(f"<{dimensions}h", data)
    if 0 < truncate_to < dimensions:
        raw = raw[:truncate_to]
    return Embedding(_normalized(raw))
