"""The entries of a JSON list answer as the server wrote them, to merge them byte for byte.

Ollama adds fields to its model lists (`capabilities`, `remote_host`, …); a merged list that
re-encodes them would reorder, re-escape or drop what it does not know. These are the spans.
"""

from __future__ import annotations

import json
from typing import Final

__all__ = ["raw_items"]

_DECODER: Final = json.JSONDecoder()
_SPACE: Final = " \t\n\r"


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at


def raw_items(text: str, key: str) -> list[str] | None:
    """The raw text of each element of the top-level `key` array; None if there is none.

    Raises ValueError for text that is not a JSON object.
    """
    at = _skip(text, 0)
    if not text.startswith("{", at):
        raise ValueError("not a JSON object")
    at = _skip(text, at + 1)
    found: list[str] | None = None
    while not text.startswith("}", at):
        name, at = _DECODER.raw_decode(text, at)
        at = _skip(text, at)
        if not text.startswith(":", at):
            raise ValueError("expected ':'")
        at = _skip(text, at + 1)
        if name == key and text.startswith("[", at):
            found, at = _elements(text, at)
        else:
            _, at = _DECODER.raw_decode(text, at)
        at = _skip(text, at)
        if text.startswith(",", at):
            at = _skip(text, at + 1)
        elif not text.startswith("}", at):
            raise ValueError("expected ',' or '}'")
    return found


def _elements(text: str, at: int) -> tuple[list[str], int]:
    """The raw elements of the array that starts at `at`, and where it ends."""
    items: list[str] = []
    at = _skip(text, at + 1)
    while not text.startswith("]", at):
        _, end = _DECODER.raw_decode(text, at)
        items.append(text[at:end])
        at = _skip(text, end)
        if text.startswith(",", at):
            at = _skip(text, at + 1)
        elif not text.startswith("]", at):
            raise ValueError("expected ',' or ']'")
    return items, at + 1
