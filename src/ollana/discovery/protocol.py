"""The discovery datagram (DESIGN §2): pure encode/decode, no I/O.

A datagram is ``b"LANA"``, a version byte, a type byte, then a compact UTF-8 JSON object.
A bare 4-byte ``b"LANA"`` (what ollana 0.x sends) is a query. Decoding input from the
network raises nothing but :class:`DecodeError`.

A signed datagram is the unsigned one with ``,"sig":"<base64>"`` put before its closing
brace: the signature covers the unsigned datagram's exact bytes, which `split_signature`
gives back, and decoders that do not know the field ignore it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

__all__ = [
    "MAGIC",
    "MAX_CERT_SIZE",
    "MAX_DATAGRAM",
    "MAX_NAME_BYTES",
    "PRIORITY_RANGE",
    "SIGNATURE_SIZE",
    "VERSION",
    "Announce",
    "DecodeError",
    "Goodbye",
    "Message",
    "Query",
    "Role",
    "Sign",
    "Signed",
    "clamp_priority",
    "decode",
    "encode",
    "models_digest",
    "new_instance_id",
    "safe_version",
    "split_signature",
    "valid_name",
]

MAGIC = b"LANA"
VERSION = 1
MAX_DATAGRAM = 1400
# The field limits below keep the worst-case JSON without the certificate at about 420
# bytes (name, MAC and queue included), which leaves about 970 base64 characters for it;
# ollana's P-256 self-signed certificates are 500-560 bytes of DER. The margin is for a
# signature (about 95 bytes: a raw P-256 signature in base64 and its key) and a
# forward-compatible field.
MAX_CERT_SIZE = 640
MAX_NAME_BYTES = 64
_HEADER = 6
SIGNATURE_SIZE = 64  # a P-256 ECDSA signature as r || s, 32 bytes each
_SIG_KEY = b',"sig":"'
_SIG_END = b'"}'

Role = Literal["client", "server"]
_ROLES = ("client", "server")
_INSTANCE = re.compile(r"[0-9A-Za-z_-]{0,32}")
_DEVICE = re.compile(r"[0-9a-f]{64}")
_VERSION_TEXT = re.compile(r"[0-9A-Za-z.+_~-]{0,32}")
_DIGEST = re.compile(r"[0-9a-z]{0,32}")
_MAC = re.compile(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}")
QUEUE_MAX = 2**31 - 1
PRIORITY_RANGE = range(-(2**31), 2**31)  # priorities travel as 32-bit signed integers


class DecodeError(ValueError):
    """A datagram that is not a valid discovery message; ``reason`` names why, for counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class _Message:
    instance: str = ""
    device: str = ""
    role: Role = "client"
    port: int = 0
    cert: bytes | None = None
    ollama: str = ""
    models: str = ""
    priority: int = 0
    ts: float = 0.0
    name: str = ""  # a label for people (the hostname by default), never an identity
    mac: str = ""  # the announcing interface's MAC address, for Wake-on-LAN
    queue: int = 0  # requests waiting in the server's queue
    pairing: bool = False  # the server has a pairing window open (`ollana pair`)

    TYPE: ClassVar[int] = 0

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(f"{type(self).__name__}: {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Query(_Message):
    """Who is there? Sent by clients; answered by servers with a unicast announce."""

    TYPE: ClassVar[int] = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Announce(_Message):
    """A server is up: reach it at the datagram's source address and ``port``."""

    role: Role = "server"
    TYPE: ClassVar[int] = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Goodbye(_Message):
    """A server is going away (stopping, or its Ollama went down)."""

    role: Role = "server"
    TYPE: ClassVar[int] = 3


Message = Query | Announce | Goodbye
Sign = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Signed:
    """The part of a datagram a signature covers (an unsigned datagram), and the signature."""

    data: bytes
    signature: bytes


_TYPES: dict[int, type[Query] | type[Announce] | type[Goodbye]] = {
    cls.TYPE: cls for cls in (Query, Announce, Goodbye)
}
_FIELDS = tuple(f.name for f in dataclasses.fields(_Message))
# Omitted from the JSON when they hold their default, to keep queries small.
_OPTIONAL = frozenset(
    {"port", "cert", "ollama", "models", "priority", "name", "mac", "queue", "pairing"}
)


def _problem(msg: _Message) -> str:
    """What is wrong with a message's fields, or "" (types are checked: input is untrusted)."""
    if type(msg.instance) is not str or not _INSTANCE.fullmatch(msg.instance):
        return "instance must be up to 32 letters, digits, '_' or '-'"
    if type(msg.device) is not str or not (_DEVICE.fullmatch(msg.device) or msg.device == ""):
        return "device must be 64 lowercase hex digits"
    if msg.device == "" and not isinstance(msg, Query):
        return "device is required"
    if msg.role not in _ROLES:
        return "role must be 'client' or 'server'"
    if type(msg.port) is not int or not 0 <= msg.port <= 65535:
        return "port must be 0-65535"
    if isinstance(msg, Announce) and msg.port == 0:
        return "an announce needs a port"
    if msg.cert is not None and (type(msg.cert) is not bytes or not _plausible_der(msg.cert)):
        return f"cert must be DER bytes of at most {MAX_CERT_SIZE} bytes"
    if type(msg.ollama) is not str or not _VERSION_TEXT.fullmatch(msg.ollama):
        return "ollama must be a version string of up to 32 characters"
    if type(msg.models) is not str or not _DIGEST.fullmatch(msg.models):
        return "models must be up to 32 lowercase letters or digits"
    if type(msg.priority) is not int or msg.priority not in PRIORITY_RANGE:
        return "priority must be a 32-bit whole number"
    if type(msg.ts) is not float or not math.isfinite(msg.ts):
        return "ts must be a finite number"
    if type(msg.name) is not str or not valid_name(msg.name):
        return f"name must be up to {MAX_NAME_BYTES} bytes of printable text"
    if type(msg.mac) is not str or not (msg.mac == "" or _MAC.fullmatch(msg.mac)):
        return "mac must be six lowercase hex pairs separated by ':'"
    if type(msg.queue) is not int or not 0 <= msg.queue <= QUEUE_MAX:
        return "queue must be a whole number from 0"
    pairing: object = msg.pairing
    if type(pairing) is not bool:
        return "pairing must be true or false"
    return ""


def valid_name(name: str) -> bool:
    """A device name: printable text (no control or format characters), at most 64 bytes."""
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return False
    return all(unicodedata.category(c)[0] != "C" for c in name)


def _plausible_der(data: bytes) -> bool:
    """An outer DER SEQUENCE whose length header matches the data exactly."""
    if not 2 <= len(data) <= MAX_CERT_SIZE or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        return 2 + first == len(data)
    count = first & 0x7F
    if not 1 <= count <= 2 or len(data) < 2 + count:
        return False
    length = int.from_bytes(data[2 : 2 + count], "big")
    # DER uses the shortest length form: a long form must be needed.
    return length >= 0x80 and 2 + count + length == len(data) and data[2] != 0


def encode(msg: Message, sign: Sign | None = None) -> bytes:
    """The datagram for a message (at most MAX_DATAGRAM bytes), signed when `sign` is given.

    `sign(data)` returns SIGNATURE_SIZE bytes over the unsigned datagram `data`.
    """
    fields: dict[str, Any] = {}
    for name, value in asdict(msg).items():
        if name in _OPTIONAL and not value:
            continue
        fields[name] = base64.b64encode(value).decode("ascii") if name == "cert" else value
    # Names travel as UTF-8, not \u escapes: six bytes a character would not fit.
    body = json.dumps(fields, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
    data = MAGIC + bytes((VERSION, msg.TYPE)) + body
    if sign is not None:
        if body == b"{}":
            raise ValueError("an empty message cannot be signed")
        signature = sign(data)
        if len(signature) != SIGNATURE_SIZE:
            raise ValueError(f"a signature has {SIGNATURE_SIZE} bytes, not {len(signature)}")
        data = data[:-1] + _SIG_KEY + base64.b64encode(signature) + _SIG_END
    if len(data) > MAX_DATAGRAM:  # the field limits make this unreachable
        raise ValueError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data


def decode(data: bytes) -> Message:
    """The message in a datagram; raises DecodeError (only) for anything else."""
    if len(data) > MAX_DATAGRAM:
        raise DecodeError("size", f"{len(data)} bytes")
    if data == MAGIC:
        return Query()
    if data[:4] != MAGIC[: len(data)]:
        raise DecodeError("magic")
    if len(data) < _HEADER + 2:  # the header plus the shortest object, "{}"
        raise DecodeError("short", f"{len(data)} bytes")
    if data[4] != VERSION:
        raise DecodeError("version", str(data[4]))
    cls = _TYPES.get(data[5])
    if cls is None:
        raise DecodeError("type", str(data[5]))
    try:
        obj = json.loads(data[_HEADER:].decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DecodeError("json", type(exc).__name__) from None
    if not isinstance(obj, dict):
        raise DecodeError("json", "not an object")
    fields = {name: obj[name] for name in _FIELDS if name in obj}
    try:
        _convert(fields)
        return cls(**fields)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DecodeError("field", str(exc)) from None


def split_signature(data: bytes) -> Signed | None:
    """The unsigned datagram and the signature of a signed one; None when it carries none.

    Only the form `encode` writes is recognised: the signature last, before the final brace.
    Whatever else the datagram holds, the signature covers exactly the unsigned bytes, so a
    caller that verifies it should decode `Signed.data`, not the datagram.
    """
    if len(data) > MAX_DATAGRAM or not data.endswith(_SIG_END):
        return None
    at = data.rfind(_SIG_KEY, _HEADER)
    if at < 0:
        return None
    text = data[at + len(_SIG_KEY) : -len(_SIG_END)]
    try:
        signature = base64.b64decode(text, validate=True)
    except binascii.Error:
        return None
    if len(signature) != SIGNATURE_SIZE:
        return None
    return Signed(data[:at] + b"}", signature)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _convert(fields: dict[str, Any]) -> None:
    """Wire forms to field types: base64 to bytes, a whole-number ts to float."""
    cert = fields.get("cert")
    if cert is not None:
        if not isinstance(cert, str):
            raise ValueError("cert must be a base64 string")
        try:
            fields["cert"] = base64.b64decode(cert.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError("cert is not valid base64") from None
    ts = fields.get("ts")
    if type(ts) is int:
        fields["ts"] = float(ts)


def models_digest(names: Iterable[str]) -> str:
    """A short digest of a model list (order and duplicates do not matter)."""
    joined = "\n".join(sorted(set(names)))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


def clamp_priority(priority: int) -> int:
    """The nearest priority an announce may carry (a 32-bit signed integer)."""
    return max(PRIORITY_RANGE.start, min(PRIORITY_RANGE.stop - 1, priority))


def safe_version(version: str | None) -> str:
    """What an announce may carry of a version string (32 of [0-9A-Za-z.+_~-]), else ""."""
    text = (version or "")[:32]
    return text if _VERSION_TEXT.fullmatch(text) else ""


def new_instance_id() -> str:
    """A random id for one run of a process, so that it can recognise its own datagrams."""
    return secrets.token_hex(8)
