"""POST /ollana/v1/hello: how a static peer and a server learn each other's certificate.

A client that knows a server only by address (``--server HOST:PORT``) and is not heard
by discovery connects over TLS without a client certificate and posts its own::

    request  {"device": "<its ID>", "cert": "<base64 DER>", "role": "client", "name": "…"}
    reply    {"device": "<server ID>", "cert": "<base64 DER>", "name": "…"}

Each side records the other as seen, so `ollana device list` shows it and `ollana device
allow` can take a prefix. Learning a certificate grants nothing: only `allow` does.
Nothing in a hello is authenticated: a certificate is learnt only with ollana's profile
and a valid self-signature, names are checked like announced ones, each source address
has a small quota (HelloQuota), and what hellos teach has its own share of seen.toml.
The server side is a pure function the server proxy mounts; the client side is
`introduce`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from multidict import CIMultiDict
from yarl import URL

from ollana.config import HostPort
from ollana.http import FETCH_ERRORS, describe
from ollana.identity.certs import Identity
from ollana.identity.devicefile import SeenDevice, cert_der_from
from ollana.identity.ids import DeviceIdError, device_id_of, normalize_device_id
from ollana.identity.names import clean_name
from ollana.identity.store import DeviceStore, StoreError
from ollana.identity.trust import TLSManager
from ollana.ollama_api import HELLO_PATH

__all__ = [
    "HELLO_PATH",
    "HELLO_TIMEOUT",
    "MAX_HELLO_BODY",
    "HelloError",
    "HelloQuota",
    "HelloReply",
    "handle_hello",
    "hello_body",
    "introduce",
    "parse_hello",
]

log = logging.getLogger(__name__)

MAX_HELLO_BODY: Final = 16 * 1024
HELLO_TIMEOUT: Final = 10.0
ROLES: Final = frozenset({"client", "server"})
# Per source address: a burst of HELLO_BURST, then one hello every HELLO_EVERY seconds.
HELLO_BURST: Final = 5.0
HELLO_EVERY: Final = 6.0
MAX_HELLO_SOURCES: Final = 1024


class HelloError(Exception):
    """A hello could not be made or understood; the message says why.

    `answered` says whether the peer answered at all (a refusal, a reply that does not add
    up) rather than being unreachable.
    """

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


@dataclass(frozen=True, slots=True)
class HelloReply:
    """The HTTP answer to a hello: status and a JSON body (Ollama-style error on failure)."""

    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"


class HelloQuota:
    """Token buckets per source address, forgetting the least recently heard ones."""

    def __init__(self, burst: float = HELLO_BURST, every: float = HELLO_EVERY) -> None:
        self._burst, self._every = burst, every
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, address: str, now: float | None = None) -> bool:
        """Take a hello from `address` if its quota has one left."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(address, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) / self._every)
        allowed = tokens >= 1.0
        self._buckets[address] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > MAX_HELLO_SOURCES:
            self._buckets.popitem(last=False)
        return allowed


def hello_body(identity: Identity, role: str = "client", name: str = "") -> bytes:
    """The JSON a device sends (or answers) to introduce itself."""
    message = {"device": identity.device_id, "cert": base64.b64encode(identity.cert_der).decode()}
    if role:
        message["role"] = role
    if name:
        message["name"] = name
    return json.dumps(message, ensure_ascii=False).encode()


def parse_hello(body: bytes) -> tuple[str, bytes, str, str]:
    """(device ID, DER certificate, role, name) from a hello message; HelloError if invalid."""
    if len(body) > MAX_HELLO_BODY:
        raise HelloError(f"hello body is larger than {MAX_HELLO_BODY} bytes")
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HelloError("hello body is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("cert"), str):
        raise HelloError('hello body must be a JSON object with a "cert" string')
    text: str = message["cert"]
    try:
        raw = (
            text.encode("ascii")
            if text.lstrip().startswith("-----BEGIN")
            else base64.b64decode(text, validate=True)
        )
        der = cert_der_from(raw)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise HelloError('"cert" is not a base64 DER or PEM certificate') from None
    device_id = device_id_of(der)
    claimed = message.get("device")
    if claimed is not None:
        try:
            matches = isinstance(claimed, str) and normalize_device_id(claimed) == device_id
        except DeviceIdError:
            matches = False
        if not matches:
            raise HelloError('"device" is not the ID of the certificate sent')
    role = message.get("role", "client")
    if role not in ROLES:
        raise HelloError(f'"role" must be one of {", ".join(sorted(ROLES))}')
    raw_name = message.get("name", "")
    name = clean_name(raw_name) if isinstance(raw_name, str) else None
    if name is None:
        raise HelloError('"name" must be up to 64 bytes of printable text')
    return device_id, der, role, name


def handle_hello(
    body: bytes,
    *,
    identity: Identity,
    store: DeviceStore,
    address: str,
    name: str = "",
    record: Callable[[SeenDevice], object] | None = None,
) -> HelloReply:
    """Answer a hello from `address`: remember the sender as seen and introduce ourselves.

    The record goes to `record` (a SeenRecorder's add) if given, else straight to the
    store, which is blocking file I/O. The certificate check costs about 0.1 ms.
    """
    try:
        device_id, der, role, peer_name = parse_hello(body)
        seen = store.seen_record(device_id, address, role, der, name=peer_name, via="hello")
        if seen is not None:
            if record is not None:
                record(seen)
            else:
                store.record_many([seen])
    except HelloError as exc:
        return _error(400, str(exc))
    except ValueError as exc:
        return _error(400, f"hello refused: {exc}")
    except StoreError as exc:
        log.error("cannot record a hello from %s: %s", address, exc)
        return _error(500, "this device cannot record devices it meets right now")
    return HelloReply(200, hello_body(identity, role="", name=name))


async def introduce(
    tls: TLSManager, url: str, *, name: str = "", timeout: float = HELLO_TIMEOUT
) -> str:
    """Say hello to the server at `url` (https://HOST:PORT) and remember it as seen.

    Returns the server's device ID. The reply must come from the certificate that the
    TLS handshake presented, or HelloError is raised.
    """
    presented: list[str] = []
    target = URL(url)
    if target.scheme != "https" or not target.host:
        raise HelloError(f"{url}: ollana peers are reached over https only")
    pool = tls.hello_pool(
        target.host, target.port or 443, timeout, lambda device_id, _: presented.append(device_id)
    )
    headers = CIMultiDict({"Content-Type": "application/json"})
    try:
        async with asyncio.timeout(timeout), pool:
            body_out = hello_body(tls.identity, name=name)
            response = await pool.request("POST", HELLO_PATH, headers, body_out)
            async with response:
                body = await response.content.read(MAX_HELLO_BODY + 1)
            status = response.status
    except FETCH_ERRORS as exc:
        raise HelloError(f"{url}: hello failed: {describe(exc)}") from None
    if status != 200:
        raise HelloError(f"{url}: hello refused ({status}): {_error_text(body)}", answered=True)
    try:
        device_id, der, _, peer_name = parse_hello(body)
    except HelloError as exc:
        raise HelloError(f"{url}: {exc}", answered=True) from None
    if not presented or presented[-1] != device_id:
        raise HelloError(
            f"{url}: the reply names another certificate than the TLS handshake", answered=True
        )
    address = str(HostPort(target.host or "", target.port or 0))
    try:
        # The server's certificate was presented in the handshake it signed: discovery's rank.
        tls.store.record_seen(device_id, address, "server", der, name=peer_name)
    except (ValueError, StoreError) as exc:
        raise HelloError(f"cannot record {url}: {exc}") from None
    return device_id


def _error(status: int, message: str) -> HelloReply:
    return HelloReply(status, json.dumps({"error": message}).encode())


def _error_text(body: bytes) -> str:
    try:
        message = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    error = message.get("error") if isinstance(message, dict) else None
    if isinstance(error, str):
        return error
    return body[:200].decode("utf-8", "replace")
