"""POST /ollana/v1/hello: how a static peer and a server learn each other's certificate.

A client that knows a server only by address (``--server HOST:PORT``) and is not heard
by discovery connects over TLS without a client certificate and posts its own::

    request  {"device": "<its ID>", "cert": "<base64 DER>", "role": "client"}
    reply    {"device": "<server ID>", "cert": "<base64 DER>"}

Each side records the other as seen, so `ollana device list` shows it and `ollana device
allow` can take a prefix. Learning a certificate grants nothing: only `allow` does.
The server side is a pure function the server proxy mounts; the client side is
`introduce`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Final

from multidict import CIMultiDict
from yarl import URL

from ollana.config import HostPort
from ollana.http import FETCH_ERRORS, describe
from ollana.identity.certs import Identity
from ollana.identity.devicefile import cert_der_from
from ollana.identity.ids import DeviceIdError, device_id_of, normalize_device_id
from ollana.identity.store import DeviceStore, StoreError
from ollana.identity.trust import TLSManager
from ollana.ollama_api import HELLO_PATH

__all__ = [
    "HELLO_PATH",
    "HELLO_TIMEOUT",
    "MAX_HELLO_BODY",
    "HelloError",
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


class HelloError(Exception):
    """A hello could not be made or understood; the message says why."""


@dataclass(frozen=True, slots=True)
class HelloReply:
    """The HTTP answer to a hello: status and a JSON body (Ollama-style error on failure)."""

    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"


def hello_body(identity: Identity, role: str = "client") -> bytes:
    """The JSON a device sends (or answers) to introduce itself."""
    message = {"device": identity.device_id, "cert": base64.b64encode(identity.cert_der).decode()}
    if role:
        message["role"] = role
    return json.dumps(message).encode()


def parse_hello(body: bytes) -> tuple[str, bytes, str]:
    """(device ID, DER certificate, role) from a hello message; HelloError if invalid."""
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
    return device_id, der, role


def handle_hello(
    body: bytes, *, identity: Identity, store: DeviceStore, address: str
) -> HelloReply:
    """Answer a hello from `address`: remember the sender as seen and introduce ourselves.

    Does blocking file I/O (the seen-devices file); run it in a thread if that matters.
    """
    try:
        device_id, der, role = parse_hello(body)
        store.record_seen(device_id, address, role, der)
    except HelloError as exc:
        return _error(400, str(exc))
    except ValueError as exc:
        return _error(400, f"hello refused: {exc}")
    except StoreError as exc:
        log.error("cannot record a hello from %s: %s", address, exc)
        return _error(500, "this device cannot record devices it meets right now")
    return HelloReply(200, hello_body(identity, role=""))


async def introduce(tls: TLSManager, url: str, *, timeout: float = HELLO_TIMEOUT) -> str:
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
            response = await pool.request("POST", HELLO_PATH, headers, hello_body(tls.identity))
            async with response:
                body = await response.content.read(MAX_HELLO_BODY + 1)
            status = response.status
    except FETCH_ERRORS as exc:
        raise HelloError(f"{url}: hello failed: {describe(exc)}") from None
    if status != 200:
        raise HelloError(f"{url}: hello refused ({status}): {_error_text(body)}")
    device_id, der, _ = parse_hello(body)
    if not presented or presented[-1] != device_id:
        raise HelloError(f"{url}: the reply names another certificate than the TLS handshake")
    address = str(HostPort(target.host or "", target.port or 0))
    try:
        tls.store.record_seen(device_id, address, "server", der)
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
