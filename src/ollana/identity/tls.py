"""TLS 1.3 contexts for both hops between devices, and the client's device pin.

Server side: our certificate; the client's certificate is requested (CERT_OPTIONAL) and
verified against a trust store made of the allowed devices' self-signed certificates,
each its own trust anchor. A client with no certificate gets through the handshake (it
may then only say hello); one with a certificate outside the store fails the handshake.
In open mode no client certificate is requested at all (CERT_NONE): Python's ssl module
cannot request a certificate and accept any, so open-mode clients are anonymous.

Client side: our certificate for client auth, no chain or hostname checks; instead the
server certificate's SHA-256 (its device ID) is checked after every handshake (DevicePin,
run by the upstream connection pool).

Session tickets are off: a resumed session skips certificate verification, and every
new connection must prove itself against the current allow list.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable

from ollana.identity.certs import Identity
from ollana.identity.ids import device_id_of, format_device_id, short_device_id

__all__ = [
    "TLS_MINIMUM",
    "ConnectedFn",
    "DevicePin",
    "PeerNotAllowed",
    "client_context",
    "peer_device_id",
    "server_context",
]

TLS_MINIMUM = ssl.TLSVersion.TLSv1_3

AcceptFn = Callable[[str], bool]
ConnectedFn = Callable[[str, asyncio.Transport], None]


def server_context(
    identity: Identity, trusted: Iterable[bytes] = (), *, open_mode: bool = False
) -> ssl.SSLContext:
    """A server context with our certificate, trusting the given DER certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_MINIMUM
    ctx.load_cert_chain(identity.cert_path, identity.key_path)
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_TICKET
    if open_mode:
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.verify_mode = ssl.CERT_OPTIONAL
    # Our certificates satisfy strict checks (Python 3.13 turns them on by default).
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    store = b"".join(trusted)
    if store:
        ctx.load_verify_locations(cadata=store)
    return ctx


def client_context(identity: Identity | None) -> ssl.SSLContext:
    """A client context presenting our certificate (none for hello), pinning instead of PKI."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = TLS_MINIMUM
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if identity is not None:
        ctx.load_cert_chain(identity.cert_path, identity.key_path)
    return ctx


def peer_device_id(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The device ID of the certificate the peer presented, or None if it presented none."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return device_id_of(der) if der else None


class PeerNotAllowed(Exception):
    """The server's certificate is not the expected device, or not an allowed one."""

    def __init__(self, device_id: str, expected: str | None, host: str, port: int) -> None:
        super().__init__(device_id, expected, host, port)
        self.host = host
        self.port = port
        self.device_id = device_id
        self.expected_device_id = expected

    def __str__(self) -> str:
        where = f"{self.host}:{self.port}"
        if self.expected_device_id and self.expected_device_id != self.device_id:
            return (
                f"{where} presented device {format_device_id(self.device_id)},"
                f" not the expected {format_device_id(self.expected_device_id)}"
            )
        return (
            f"{where} is device {format_device_id(self.device_id)}, which this device does"
            f" not allow (ollana device allow {short_device_id(self.device_id)})"
        )


class DevicePin:
    """The check after each TLS handshake to a server: is it the device we mean to reach?

    Its device ID must equal `expect` (when known: servers found by discovery announce
    it) and be accepted by `accepts` (the allow list, or anything in open mode); else
    check() raises PeerNotAllowed, and the connection must be dropped.
    """

    __slots__ = ("_accepts", "_expect", "_on_connected")

    def __init__(
        self, accepts: AcceptFn, expect: str | None, on_connected: ConnectedFn | None = None
    ) -> None:
        self._accepts = accepts
        self._expect = expect
        self._on_connected = on_connected

    def check(self, transport: asyncio.Transport) -> None:
        """Raise PeerNotAllowed unless the peer is the expected, allowed device."""
        host, port, *_ = transport.get_extra_info("peername") or ("?", 0)
        device_id = peer_device_id(transport.get_extra_info("ssl_object")) or "00" * 32
        if (self._expect is not None and device_id != self._expect) or not self._accepts(device_id):
            raise PeerNotAllowed(device_id, self._expect, str(host), int(port))
        if self._on_connected is not None:
            self._on_connected(device_id, transport)
