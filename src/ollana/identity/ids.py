"""Device IDs: the SHA-256 of a device certificate's DER, as users see and type them.

An ID is 64 lowercase hex digits. People see it in 8 groups of 8 joined by '-'
(``1a2b3c4d-…``); wherever they type one, groups, separators (``-``, ``:``, white
space, line breaks) and case do not matter, and a unique prefix of at least 16 digits
(64 bits) is enough: far too many for anyone to grind a certificate whose ID starts with
someone else's digits. A request pin (X-Ollana-Server) needs 8: it only picks among
servers already allowed.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterable

__all__ = [
    "DEVICE_ID_LENGTH",
    "MIN_PIN_LENGTH",
    "MIN_PREFIX_LENGTH",
    "AmbiguousDeviceId",
    "DeviceIdError",
    "UnknownDeviceId",
    "device_id_of",
    "format_device_id",
    "normalize_device_id",
    "parse_device_id",
    "resolve_device_id",
    "short_device_id",
]

DEVICE_ID_LENGTH = 64
MIN_PREFIX_LENGTH = 16
MIN_PIN_LENGTH = 8
GROUP_SIZE = 8
_SEPARATORS = str.maketrans("", "", "-: \t\r\n")
_HEX = frozenset(string.hexdigits.lower())


class DeviceIdError(ValueError):
    """What a user typed is not a usable device ID; the message says why."""


class UnknownDeviceId(DeviceIdError):
    """A prefix that matches no known device."""


class AmbiguousDeviceId(DeviceIdError):
    """A prefix that matches several known devices."""

    def __init__(self, message: str, matches: tuple[str, ...]) -> None:
        super().__init__(message)
        self.matches = matches


def device_id_of(cert_der: bytes) -> str:
    """The device ID of a certificate: SHA-256 of its DER encoding, lowercase hex."""
    return hashlib.sha256(cert_der).hexdigest()


def format_device_id(device_id: str) -> str:
    """An ID as shown to people: 8 groups of 8 hex digits joined by '-'."""
    return "-".join(device_id[i : i + GROUP_SIZE] for i in range(0, len(device_id), GROUP_SIZE))


def short_device_id(device_id: str) -> str:
    """The first group of an ID, for log lines and tables where space is short."""
    return device_id[:GROUP_SIZE]


def parse_device_id(text: str, *, min_digits: int = MIN_PREFIX_LENGTH) -> str:
    """Turn typed text into a lowercase hex ID or prefix (`min_digits` to 64 digits)."""
    cleaned = text.strip().translate(_SEPARATORS).lower()
    if not cleaned:
        raise DeviceIdError("no device ID given")
    bad = sorted({c for c in cleaned if c not in _HEX})
    if bad:
        raise DeviceIdError(
            f"{text.strip()!r} is not a device ID: it may only hold hex digits 0-9 and a-f"
            f" (found {''.join(bad)!r})"
        )
    if len(cleaned) > DEVICE_ID_LENGTH:
        raise DeviceIdError(
            f"{text.strip()!r} is not a device ID: it has {len(cleaned)} hex digits,"
            f" a device ID has {DEVICE_ID_LENGTH}"
        )
    if len(cleaned) < min_digits:
        raise DeviceIdError(
            f"{text.strip()!r} is too short: type at least {min_digits} hex digits of the device ID"
        )
    return cleaned


def normalize_device_id(text: str) -> str:
    """A complete ID (all 64 digits) in canonical form; prefixes are refused."""
    cleaned = parse_device_id(text)
    if len(cleaned) != DEVICE_ID_LENGTH:
        raise DeviceIdError(
            f"{text.strip()!r} is not a complete device ID ({len(cleaned)} of"
            f" {DEVICE_ID_LENGTH} hex digits)"
        )
    return cleaned


def resolve_device_id(text: str, known: Iterable[str], *, accept_unknown: bool = False) -> str:
    """The one known ID that `text` (a full ID or a unique prefix) designates.

    With `accept_unknown`, a complete ID is returned even when it is not among `known`
    (allowing a device before it was ever seen); a prefix must always match exactly one.
    """
    prefix = parse_device_id(text)
    candidates = sorted({k for k in known if k.startswith(prefix)})
    if len(prefix) == DEVICE_ID_LENGTH and (candidates or accept_unknown):
        return prefix
    if len(candidates) == 1:
        return candidates[0]
    shown = format_device_id(prefix)
    if not candidates:
        raise UnknownDeviceId(f"no known device has an ID starting with {shown}")
    listed = ", ".join(format_device_id(c) for c in candidates)
    raise AmbiguousDeviceId(
        f"{shown} matches {len(candidates)} devices ({listed}); type more digits",
        tuple(candidates),
    )
