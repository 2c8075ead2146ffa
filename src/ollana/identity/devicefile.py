"""The two device files, as text: parsing and writing them is pure (no I/O here).

devices.toml, the allow list, is meant to be read and edited by people::

    [[device]]
    id = "<64 hex digits; grouped or upper case is fine>"
    name = "laptop"                  # optional
    added = 2026-01-02T03:04:05Z     # optional
    cert = '''
    -----BEGIN CERTIFICATE-----
    …
    -----END CERTIFICATE-----
    '''                              # optional until the device has been seen

seen.toml holds devices heard on the network (``[[seen]]`` tables with id, address,
role, last_seen, cert, and optionally name and via: "discovery" or "hello"). It is
written by ollana alone and may be deleted at any time.
Keeping it apart from the allow list means frequent discovery writes never race a
person editing devices.toml.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

from ollana.identity.certs import load_certificate
from ollana.identity.ids import DeviceIdError, device_id_of, normalize_device_id

__all__ = [
    "AllowedDevice",
    "FileFormatError",
    "SeenDevice",
    "cert_der_from",
    "parse_allowed",
    "parse_seen",
    "render_allowed",
    "render_seen",
]

ALLOWED_HEADER = """\
# Devices allowed to talk to this one. Change it with `ollana device allow ID` and
# `ollana device disable ID`, or edit it by hand: one [[device]] table per device;
# only `id` is required. Running ollana processes pick up changes within a second.
"""
SEEN_HEADER = """\
# Devices seen on the network, written by ollana. Nothing here is trusted; it only
# lets `ollana device list` show nearby devices. Safe to delete.
"""
_ALLOWED_KEYS = frozenset({"id", "name", "added", "cert"})
_SEEN_KEYS = frozenset({"id", "address", "role", "last_seen", "cert", "name", "via"})
VIA = frozenset({"discovery", "hello"})
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


class FileFormatError(ValueError):
    """The file's content is not valid; the message says where (line or entry)."""


@dataclass(frozen=True, slots=True)
class AllowedDevice:
    """An entry of the allow list; the certificate may not be known yet."""

    device_id: str
    name: str | None = None
    cert_der: bytes | None = None
    added: datetime.datetime | None = None


@dataclass(frozen=True, slots=True)
class SeenDevice:
    """A device heard on the network (discovery or hello), with the certificate it sent."""

    device_id: str
    address: str
    role: str
    last_seen: datetime.datetime
    cert_der: bytes
    name: str = ""  # what the device calls itself: a label, never an identity
    via: str = "discovery"  # how it was heard: "discovery", or "hello" (unauthenticated)


def cert_der_from(data: bytes) -> bytes:
    """The DER encoding of a PEM or DER certificate; ValueError if it is not one."""
    return load_certificate(data).public_bytes(serialization.Encoding.DER)


def parse_allowed(text: str) -> dict[str, AllowedDevice]:
    """The allow list held by the text of devices.toml."""
    devices: dict[str, AllowedDevice] = {}
    for where, entry in _entries(text, "device", _ALLOWED_KEYS):
        device_id = _device_id(entry, where)
        if device_id in devices:
            raise FileFormatError(f"{where}: device {device_id} is listed twice")
        name = entry.get("name")
        if name is not None and not isinstance(name, str):
            raise FileFormatError(f"{where}: name must be a string")
        added = entry.get("added")
        devices[device_id] = AllowedDevice(
            device_id=device_id,
            name=name or None,
            cert_der=_cert(entry, where, device_id, required=False),
            added=None if added is None else _datetime(added, where, "added"),
        )
    return devices


def parse_seen(text: str) -> dict[str, SeenDevice]:
    """The devices held by the text of seen.toml."""
    devices: dict[str, SeenDevice] = {}
    for where, entry in _entries(text, "seen", _SEEN_KEYS):
        device_id = _device_id(entry, where)
        address, role = entry.get("address", ""), entry.get("role", "")
        name, via = entry.get("name", ""), entry.get("via", "discovery")
        if not all(isinstance(v, str) for v in (address, role, name, via)):
            raise FileFormatError(f"{where}: address, role, name and via must be strings")
        if via not in VIA:
            raise FileFormatError(f"{where}: via must be one of {', '.join(sorted(VIA))}")
        if "last_seen" not in entry:
            raise FileFormatError(f"{where}: last_seen is missing")
        cert = _cert(entry, where, device_id, required=True, thorough=False)
        assert cert is not None
        devices[device_id] = SeenDevice(
            device_id=device_id,
            address=address,
            role=role,
            last_seen=_datetime(entry["last_seen"], where, "last_seen"),
            cert_der=cert,
            name=name,
            via=via,
        )
    return devices


def render_allowed(devices: Iterable[AllowedDevice]) -> str:
    """The text of devices.toml for these devices, oldest first."""
    blocks = [ALLOWED_HEADER]
    for d in sorted(devices, key=_added_key):
        lines = ["[[device]]", f"id = {_string(d.device_id)}"]
        if d.name:
            lines.append(f"name = {_string(d.name)}")
        if d.added is not None:
            lines.append(f"added = {_render_datetime(d.added)}")
        if d.cert_der is not None:
            lines.append(f"cert = {_pem_block(d.cert_der)}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def render_seen(devices: Iterable[SeenDevice]) -> str:
    """The text of seen.toml for these devices, most recently seen first."""
    blocks = [SEEN_HEADER]
    for d in sorted(devices, key=lambda d: d.last_seen, reverse=True):
        lines = [
            "[[seen]]",
            f"id = {_string(d.device_id)}",
            f"address = {_string(d.address)}",
            f"role = {_string(d.role)}",
            f"last_seen = {_render_datetime(d.last_seen)}",
        ]
        if d.name:
            lines.append(f"name = {_string(d.name)}")
        if d.via != "discovery":
            lines.append(f"via = {_string(d.via)}")
        lines.append(f"cert = {_pem_block(d.cert_der)}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _entries(
    text: str, table: str, keys: frozenset[str]
) -> Iterable[tuple[str, Mapping[str, Any]]]:
    try:
        data = tomllib.loads(text)
    except RecursionError:  # tomllib recurses once per level of nesting
        raise FileFormatError("invalid TOML: nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        raise FileFormatError(f"invalid TOML: {exc}") from None
    unknown = sorted(set(data) - {table})
    if unknown:
        raise FileFormatError(f"unknown key {unknown[0]!r} (expected [[{table}]] tables)")
    entries = data.get(table, [])
    if not isinstance(entries, list):
        raise FileFormatError(f"{table!r} must be a list of [[{table}]] tables")
    for number, entry in enumerate(entries, 1):
        where = f"[[{table}]] #{number}"
        if not isinstance(entry, dict):
            raise FileFormatError(f"{where}: expected a table, got {type(entry).__name__}")
        extra = sorted(set(entry) - keys)
        if extra:
            raise FileFormatError(
                f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(keys))})"
            )
        yield where, entry


def _device_id(entry: Mapping[str, Any], where: str) -> str:
    raw = entry.get("id")
    if not isinstance(raw, str):
        raise FileFormatError(f"{where}: id is missing or not a string")
    try:
        return normalize_device_id(raw)
    except DeviceIdError as exc:
        raise FileFormatError(f"{where}: {exc}") from None


def _cert(
    entry: Mapping[str, Any], where: str, device_id: str, *, required: bool, thorough: bool = True
) -> bytes | None:
    raw = entry.get("cert")
    if raw is None:
        if required:
            raise FileFormatError(f"{where}: cert is missing")
        return None
    if not isinstance(raw, str):
        raise FileFormatError(f"{where}: cert must be a PEM string")
    try:
        # Seen devices were checked when recorded; the hash check below still catches any
        # edit, and skipping the X.509 parse keeps a full seen.toml quick to read.
        der = cert_der_from(raw.strip().encode("ascii")) if thorough else _pem_to_der(raw)
    except (ValueError, UnicodeEncodeError, binascii.Error) as exc:
        raise FileFormatError(f"{where}: cert is not a valid certificate: {exc}") from None
    actual = device_id_of(der)
    if actual != device_id:
        raise FileFormatError(
            f"{where}: the certificate belongs to device {actual}, not to {device_id}"
        )
    return der


def _datetime(raw: object, where: str, key: str) -> datetime.datetime:
    value = raw
    if isinstance(raw, str):
        try:
            value = datetime.datetime.fromisoformat(raw)
        except ValueError:
            value = None
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        value = datetime.datetime.combine(value, datetime.time())
    if not isinstance(value, datetime.datetime):
        raise FileFormatError(f"{where}: {key} must be a date and time like 2026-01-02T03:04:05Z")
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value


def _render_datetime(value: datetime.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    # isoformat pads the year to four digits, as TOML requires; strftime("%Y") does not.
    return value.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _added_key(device: AllowedDevice) -> tuple[datetime.datetime, str]:
    floor = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return (device.added or floor, device.device_id)


def _string(value: str) -> str:
    """A TOML basic string."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _pem_block(der: bytes) -> str:
    # A literal string: PEM (base64 and dashes) needs no escaping, and tomllib reads
    # literal strings far faster than basic ones, which matters for a full seen.toml.
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "'''\n" + "\n".join([_PEM_BEGIN, *lines, _PEM_END]) + "\n'''"


def _pem_to_der(text: str) -> bytes:
    """The DER bytes inside one PEM certificate block (not parsed as X.509)."""
    body = text.strip()
    if not (body.startswith(_PEM_BEGIN) and body.endswith(_PEM_END)):
        raise ValueError("not a PEM certificate")
    return base64.b64decode("".join(body[len(_PEM_BEGIN) : -len(_PEM_END)].split()), validate=True)
