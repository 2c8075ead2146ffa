"""Pairing with a short code: the exchange itself, pure (messages, states, MACs; no I/O).

The device that opens a window (the *host*, a running server) shows a 6-digit code; the
device that types it (the *guest*) runs SPAKE2 with the host, keyed by the code, over
the host's server port. Two round trips::

    guest -> host  start   {pake: SPAKE2 A message, cert: guest DER, name}
    host -> guest          {session, pake: SPAKE2 B message, cert: host DER, name}
    guest -> host  finish  {session, confirm: MAC(K, "guest", transcript)}
    host -> guest          {confirm: MAC(K, "host", transcript)}

The transcript binds both SPAKE2 messages, both certificates and both names, so a
certificate swapped on the way fails the MACs. The guest confirms first: a guest who does
not know the code learns nothing from the host but "no". Every start spends one of the
window's MAX_ATTEMPTS; the window closes at the first success (one peer), after
MAX_ATTEMPTS starts, or at its deadline. A code is never offered twice by one desk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from spake2 import SPAKE2_A, SPAKE2_B
from spake2.spake2 import SPAKEError

from ollana.identity.ids import device_id_of
from ollana.identity.names import clean_name
from ollana.identity.profile import check_device_certificate

__all__ = [
    "CODE_DIGITS",
    "MAX_ATTEMPTS",
    "MAX_PAIR_BODY",
    "WINDOW_SECONDS",
    "Guest",
    "PairedPeer",
    "PairingError",
    "Window",
    "new_code",
    "normalize_code",
]

CODE_DIGITS: Final = 6
WINDOW_SECONDS: Final = 120.0
MAX_ATTEMPTS: Final = 3
MAX_PAIR_BODY: Final = 8 * 1024
_LABEL: Final = b"ollana-pair-v1"
_ID_GUEST: Final = b"ollana-pair-guest"
_ID_HOST: Final = b"ollana-pair-host"

State = Literal["open", "paired", "closed", "expired"]


class PairingError(Exception):
    """The exchange failed; `status` is the HTTP status a host answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class PairedPeer:
    """The device at the other end of a successful exchange."""

    device_id: str
    cert_der: bytes
    name: str


def new_code(used: Iterable[str] = ()) -> str:
    """A fresh random code of CODE_DIGITS digits, none of `used`."""
    taken = set(used)
    while True:
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        if code not in taken:
            return code


def normalize_code(text: str) -> str:
    """A typed code without spaces or dashes; PairingError unless it is CODE_DIGITS digits."""
    code = "".join(text.split()).replace("-", "")
    if len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
        raise PairingError(f"a pairing code is {CODE_DIGITS} digits, got {text.strip()!r}")
    return code


# --- the host -------------------------------------------------------------------------


@dataclass(slots=True)
class _Session:
    key: bytes
    transcript: bytes
    guest: PairedPeer


@dataclass(slots=True)
class Window:
    """One pairing window of the host: a code, a deadline, attempts, at most one peer."""

    code: str
    cert_der: bytes
    name: str
    deadline: float
    attempts: int = 0
    state: State = "open"
    peer: PairedPeer | None = None
    _sessions: dict[str, _Session] = field(default_factory=dict)

    @classmethod
    def open(cls, cert_der: bytes, name: str, now: float, *, used: Iterable[str] = ()) -> Window:
        """A new window with a fresh code, open for WINDOW_SECONDS from `now`."""
        return cls(new_code(used), cert_der, name, now + WINDOW_SECONDS)

    def current(self, now: float) -> State:
        """The window's state at `now` (an open window past its deadline has expired)."""
        if self.state == "open" and now >= self.deadline:
            self.state = "expired"
            self._sessions.clear()
        return self.state

    def start(self, body: bytes, now: float) -> bytes:
        """Answer a guest's start message; every start spends an attempt."""
        if self.current(now) != "open":
            raise PairingError("no pairing window is open on this device", 404)
        message = _load(body)
        pake, guest = _bytes(message, "pake"), _peer(message)
        if self.attempts >= MAX_ATTEMPTS:
            self.close()
            raise PairingError("too many attempts: the pairing window is closed", 403)
        self.attempts += 1
        side = SPAKE2_B(self.code.encode(), idA=_ID_GUEST, idB=_ID_HOST)
        reply_pake = side.start()
        try:
            key = side.finish(pake)
        except (SPAKEError, ValueError, TypeError):
            self._failed()
            raise PairingError("the pairing message is malformed") from None
        transcript = _transcript(pake, reply_pake, guest, self.cert_der, self.name)
        session = secrets.token_hex(16)
        self._sessions[session] = _Session(key, transcript, guest)
        return _dump(
            session=session, pake=_b64(reply_pake), cert=_b64(self.cert_der), name=self.name
        )

    def finish(self, body: bytes, now: float) -> tuple[bytes, PairedPeer]:
        """Check a guest's confirmation: the reply and the peer, or PairingError."""
        if self.current(now) != "open":
            raise PairingError("no pairing window is open on this device", 404)
        message = _load(body)
        session = self._sessions.pop(_text(message, "session"), None)
        if session is None:
            raise PairingError("unknown pairing session", 404)
        confirm = _bytes(message, "confirm")
        if not hmac.compare_digest(confirm, _mac(session.key, b"guest", session.transcript)):
            self._failed()
            raise PairingError("wrong pairing code", 403)
        self.state, self.peer = "paired", session.guest
        self._sessions.clear()
        return _dump(confirm=_b64(_mac(session.key, b"host", session.transcript))), session.guest

    def close(self) -> None:
        """Close the window (no further start or finish is taken)."""
        if self.state == "open":
            self.state = "closed"
        self._sessions.clear()

    def _failed(self) -> None:
        if self.attempts >= MAX_ATTEMPTS:
            self.close()


# --- the guest ------------------------------------------------------------------------


class Guest:
    """The guest's side of one exchange: start(), then confirm(reply), then verify(reply)."""

    def __init__(self, code: str, cert_der: bytes, name: str) -> None:
        self._side = SPAKE2_A(normalize_code(code).encode(), idA=_ID_GUEST, idB=_ID_HOST)
        self._cert, self._name = cert_der, name
        self._pake = b""
        self._key = b""
        self._transcript = b""
        self.host: PairedPeer | None = None

    def start(self) -> bytes:
        """The start message."""
        self._pake = self._side.start()
        return _dump(pake=_b64(self._pake), cert=_b64(self._cert), name=self._name)

    def confirm(self, reply: bytes) -> bytes:
        """The finish message for the host's start reply (its certificate is checked)."""
        message = _load(reply)
        host = _peer(message)
        host_pake = _bytes(message, "pake")
        try:
            self._key = self._side.finish(host_pake)
        except (SPAKEError, ValueError, TypeError):
            raise PairingError("the host's pairing message is malformed") from None
        self._transcript = _transcript(self._pake, host_pake, self._peer_self(), host.cert_der,
                                       host.name)  # fmt: skip
        self.host = host
        return _dump(
            session=_text(message, "session"),
            confirm=_b64(_mac(self._key, b"guest", self._transcript)),
        )

    def verify(self, reply: bytes) -> PairedPeer:
        """The host, once its confirmation proves it knew the code; PairingError if not."""
        confirm = _bytes(_load(reply), "confirm")
        if self.host is None or not hmac.compare_digest(
            confirm, _mac(self._key, b"host", self._transcript)
        ):
            raise PairingError("the host's confirmation is wrong: it does not know the code")
        return self.host

    def _peer_self(self) -> PairedPeer:
        return PairedPeer(device_id_of(self._cert), self._cert, self._name)


# --- messages -------------------------------------------------------------------------


def _transcript(
    guest_pake: bytes, host_pake: bytes, guest: PairedPeer, host_cert: bytes, host_name: str
) -> bytes:
    parts = (_LABEL, guest_pake, host_pake, guest.cert_der, host_cert,
             guest.name.encode(), host_name.encode())  # fmt: skip
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(4, "big") + part)
    return digest.digest()


def _mac(key: bytes, role: bytes, transcript: bytes) -> bytes:
    return hmac.new(key, _LABEL + b"/" + role + b"/" + transcript, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _dump(**fields: str) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def _load(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_PAIR_BODY:
        raise PairingError(f"pairing message is larger than {MAX_PAIR_BODY} bytes", 413)
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise PairingError("pairing message is not JSON") from None
    if not isinstance(message, dict):
        raise PairingError("pairing message must be a JSON object")
    return message


def _text(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or len(value) > 200:
        raise PairingError(f'pairing message needs a "{key}" string')
    return value


def _bytes(message: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_text(message, key).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise PairingError(f'"{key}" is not base64') from None


def _peer(message: dict[str, Any]) -> PairedPeer:
    cert = message.get("cert")
    if not isinstance(cert, str) or len(cert) > 4096:
        raise PairingError('pairing message needs a "cert" string')
    try:
        der = base64.b64decode(cert.encode("ascii"), validate=True)
        check_device_certificate(der)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise PairingError(f"the certificate sent is not an ollana device's: {exc}") from None
    name = message.get("name", "")
    cleaned = clean_name(name) if isinstance(name, str) else None
    if cleaned is None:
        raise PairingError('"name" must be up to 64 bytes of printable text')
    return PairedPeer(device_id_of(der), der, cleaned)
