"""Device names: labels for people, never identities; validated wherever they arrive."""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["MAX_NAME_BYTES", "clean_name", "display_name"]

MAX_NAME_BYTES: Final = 64  # as in discovery announces


def clean_name(name: str) -> str | None:
    """A name from the network as kept (surrounding space removed), or None if invalid.

    Valid: at most 64 bytes of UTF-8 with no control, format or unassigned characters.
    """
    name = name.strip()
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return None
    if any(unicodedata.category(c)[0] == "C" for c in name):
        return None
    return name


def display_name(name: str | None, device_id: str) -> str:
    """How a device is shown in one line: its name beside its short ID (IDs tell names apart)."""
    short = device_id[:8]
    return f"{name} ({short})" if name else short
