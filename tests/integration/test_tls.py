"""Mutual TLS between devices over real sockets: the handshake matrix, revocation, hello.

The server is a small aiohttp app using identity as the server proxy does: the manager's
server_context() on the listener, admit() per request, hello only without a certificate.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict

from ollana.http import ConnectFailed, ConnectionClosed, ConnectionPool, Response
from ollana.identity import (
    HELLO_PATH,
    DeviceStore,
    HelloError,
    Identity,
    PeerNotAllowed,
    PeerRejected,
    TLSManager,
    device_id_of,
    handle_hello,
    introduce,
    load_identity,
)
from ollana.identity.tls import DevicePin, client_context
from tests.support.waiting import until

WATCH = 0.02  # seconds between polls of the device files in these tests
WAIT = 10.0  # upper bound for events that should come at once


@dataclass
class Device:
    """One ollana device: identity, store, TLS manager, and (when serving) its server."""

    identity: Identity
    store: DeviceStore
    tls: TLSManager
    reached: list[str | None] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def id(self) -> str:
        return self.identity.device_id

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def learn(self, other: Device) -> None:
        self.store.record_seen(other.id, "127.0.0.1:1", "client", other.identity.cert_der)

    def allow(self, other: Device) -> None:
        self.learn(other)
        self.store.allow(other.id)
        self.tls.reload()

    async def serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.tls.server_context())
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            peer = self.tls.admit(request.transport)
        except PeerRejected as exc:
            response = web.json_response({"error": str(exc)}, status=403)
            response.force_close()
            return response
        if not peer.trusted:
            if request.method == "POST" and request.path == HELLO_PATH:
                reply = handle_hello(
                    await request.read(),
                    identity=self.identity,
                    store=self.store,
                    address=f"{request.remote}:0",
                )
                return web.Response(
                    status=reply.status, body=reply.body, content_type="application/json"
                )
            return web.json_response({"error": "this device is not allowed"}, status=403)
        self.reached.append(peer.device_id)
        if request.path == "/stream":
            response = web.StreamResponse()
            await response.prepare(request)
            while True:
                await response.write(b"tick\n")
                await asyncio.sleep(0.01)
        return web.json_response({"peer": peer.device_id})


@pytest.fixture
async def make_device(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Device]]]:
    made: list[Device] = []

    async def make(name: str, *, open_mode: bool = False, serve: bool = True) -> Device:
        home = tmp_path / name
        identity = load_identity(home)
        store = DeviceStore(home)
        tls = TLSManager(identity, store, open_mode=open_mode, watch_interval=WATCH)
        await tls.start()
        device = Device(identity, store, tls)
        made.append(device)
        if serve:
            await device.serve()
        return device

    yield make
    for device in made:
        if device.runner is not None:
            await device.runner.cleanup()
        await device.tls.close()


@asynccontextmanager
async def pinned(
    client: Device, server: Device, *, expect: str | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[ConnectionPool]:
    """Connections from `client` to `server` as client mode makes them: pinned, mutual TLS."""
    pin = client.tls.device_pin(expect)
    pool = ConnectionPool(
        host, server.port, ssl_context=client.tls.client_context(), check=pin.check
    )
    async with pool:
        yield pool


async def get(pool: ConnectionPool, path: str) -> Response:
    """GET `path`; a refused pin raises its PeerNotAllowed."""
    try:
        return await pool.request("GET", path, CIMultiDict(), None)
    except ConnectFailed as exc:
        if isinstance(exc.__cause__, PeerNotAllowed):
            raise exc.__cause__ from None
        raise


async def fetch(
    client: Device, server: Device, *, expect: str | None = None, host: str = "127.0.0.1"
) -> tuple[int, dict[str, object]]:
    async with (
        pinned(client, server, expect=expect, host=host) as pool,
        await get(pool, "/api/version") as response,
    ):
        return response.status, json.loads(await response.content.read())


# A handshake refused by either side, or a connection ended by the refusal.
REFUSED = (ConnectFailed, ConnectionClosed, PeerNotAllowed, aiohttp.ClientError)


async def test_paired_devices_talk_both_ways(make_device: Callable[..., Awaitable[Device]]) -> None:
    a, b = await make_device("a"), await make_device("b")
    a.allow(b)
    b.allow(a)
    # By IP (no SNI sent) and by name (SNI sent): the context swap works for both.
    assert await fetch(b, a, expect=a.id) == (200, {"peer": b.id})
    assert await fetch(b, a, host="localhost") == (200, {"peer": b.id})
    assert await fetch(a, b, expect=b.id) == (200, {"peer": a.id})
    assert a.reached == [b.id, b.id] and b.reached == [a.id]


async def test_allowed_on_the_server_only(make_device: Callable[..., Awaitable[Device]]) -> None:
    server, client = await make_device("server"), await make_device("client", serve=False)
    server.allow(client)
    with pytest.raises(PeerNotAllowed, match="does not allow") as caught:
        await fetch(client, server)
    assert caught.value.device_id == server.id
    assert server.reached == []


async def test_allowed_on_the_client_only(make_device: Callable[..., Awaitable[Device]]) -> None:
    server, client = await make_device("server"), await make_device("client", serve=False)
    client.allow(server)
    server.learn(client)  # known, but not allowed: knowing grants nothing
    with pytest.raises(REFUSED):
        await fetch(client, server, expect=server.id)
    assert server.reached == []


async def test_neither_side_allows(make_device: Callable[..., Awaitable[Device]]) -> None:
    server, client = await make_device("server"), await make_device("client", serve=False)
    with pytest.raises(REFUSED):
        await fetch(client, server)
    assert server.reached == []


async def test_allow_takes_effect_without_restart(
    make_device: Callable[..., Awaitable[Device]],
) -> None:
    server, client = await make_device("server"), await make_device("client", serve=False)
    client.allow(server)
    with pytest.raises(REFUSED):
        await fetch(client, server)
    server.allow(client)
    assert await fetch(client, server) == (200, {"peer": client.id})


def _issue(
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    *,
    ca: bool = False,
) -> x509.Certificate:
    """A certificate for `key`, signed by `signer` (self-signed when they are the same)."""
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(True, False, False, False, False, ca, False, False, False)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
        .sign(signer, hashes.SHA256())
    )


def _forge(signer: ec.EllipticCurvePrivateKey, issuer: x509.Name, where: Path) -> tuple[Path, Path]:
    """Files of a leaf certificate for a new key, signed by `signer` (not self-signed)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")])
    cert = _issue(key, name, signer, issuer)
    where.mkdir(parents=True, exist_ok=True)
    (where / "forged.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (where / "forged.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return where / "forged.crt", where / "forged.key"


def _load_key(identity: Identity) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(identity.key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


async def _fetch_with_cert(server: Device, cert: Path, key: Path) -> int:
    ctx = client_context(None)
    ctx.load_cert_chain(cert, key)
    pool = ConnectionPool("127.0.0.1", server.port, ssl_context=ctx, check=_anyone)
    async with pool, await get(pool, "/api/version") as response:
        await response.content.read()
        return response.status


_anyone = DevicePin(lambda _: True, None).check


async def test_certificate_signed_by_an_allowed_device_is_rejected(
    make_device: Callable[..., Awaitable[Device]], tmp_path: Path
) -> None:
    server, allowed = await make_device("server"), await make_device("allowed", serve=False)
    server.allow(allowed)
    issuer = x509.load_der_x509_certificate(allowed.identity.cert_der).subject
    cert, key = _forge(_load_key(allowed.identity), issuer, tmp_path / "forged")
    # Our certificates are not CAs, so the handshake itself refuses the forged one.
    with pytest.raises(REFUSED):
        await _fetch_with_cert(server, cert, key)
    assert server.reached == []


async def test_fingerprint_check_stops_what_a_ca_in_the_allow_list_signed(
    make_device: Callable[..., Awaitable[Device]], tmp_path: Path
) -> None:
    # Someone allowed a certificate that is a CA (not one ollana makes): the trust store
    # accepts anything it signed, the per-request fingerprint check does not.
    server = await make_device("server")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a ca")])
    ca = _issue(ca_key, ca_name, ca_key, ca_name, ca=True)
    ca_der = ca.public_bytes(serialization.Encoding.DER)
    # (Hand-written into the allow list: such a certificate is never learnt from the network.)
    server.store.allow(device_id_of(ca_der), cert_der=ca_der)
    server.tls.reload()
    cert, key = _forge(ca_key, ca_name, tmp_path / "child")
    assert await _fetch_with_cert(server, cert, key) == 403
    assert server.reached == []


async def test_revoked_while_streaming(make_device: Callable[..., Awaitable[Device]]) -> None:
    server, client = await make_device("server"), await make_device("client", serve=False)
    server.allow(client)
    client.allow(server)
    revoked: asyncio.Queue[frozenset[str]] = asyncio.Queue()
    server.tls.on_revoked(revoked.put_nowait)
    async with pinned(client, server, expect=server.id) as pool:
        async with await get(pool, "/stream") as response:
            assert await response.content.readline() == b"tick\n"
            # Disabled by the command line, seen by the running server's watcher.
            server.store.disable(client.id[:16])
            assert await asyncio.wait_for(revoked.get(), WAIT) == frozenset({client.id})

            async def drain() -> None:
                while await response.content.readline():
                    pass

            with pytest.raises(aiohttp.ClientError):
                await asyncio.wait_for(drain(), WAIT)
        with pytest.raises(REFUSED):
            async with await get(pool, "/api/version") as again:
                await again.content.read()
    assert server.reached == [client.id]


async def test_client_drops_pooled_connections_of_a_disabled_server(
    make_device: Callable[..., Awaitable[Device]],
) -> None:
    server, client = await make_device("server"), await make_device("client", serve=False)
    server.allow(client)
    client.allow(server)
    revoked: asyncio.Queue[frozenset[str]] = asyncio.Queue()
    client.tls.on_revoked(revoked.put_nowait)
    async with pinned(client, server) as pool:
        async with await get(pool, "/api/version") as response:
            assert response.status == 200
            await response.content.read()
        assert pool.idle == 1
        client.store.disable(server.id)
        assert await asyncio.wait_for(revoked.get(), WAIT) == frozenset({server.id})
        with pytest.raises(PeerNotAllowed):
            await get(pool, "/api/version")
    assert server.reached == [client.id]


async def test_client_drops_every_connection_of_a_disabled_server_after_a_burst(
    make_device: Callable[..., Awaitable[Device]],
) -> None:
    server, client = await make_device("server"), await make_device("client", serve=False)
    server.allow(client)
    client.allow(server)
    revoked: asyncio.Queue[frozenset[str]] = asyncio.Queue()
    client.tls.on_revoked(revoked.put_nowait)
    count = 150  # past the size at which closed connections are swept from the table
    async with pinned(client, server) as pool:
        # Each answer held unread: each request on a connection of its own.
        responses = await asyncio.gather(*(get(pool, "/api/version") for _ in range(count)))
        for response in responses:
            await response.content.read()
            response.release()
        assert pool.idle == count
        client.store.disable(server.id)
        assert await asyncio.wait_for(revoked.get(), WAIT) == frozenset({server.id})
        await until(lambda: pool.opened == 0, "every connection to the disabled server closed")


async def test_rogue_server_never_gets_a_request(
    make_device: Callable[..., Awaitable[Device]],
) -> None:
    server, client = await make_device("server"), await make_device("client", serve=False)
    rogue = await make_device("rogue")
    server.allow(client)
    client.allow(server)
    rogue.allow(client)  # it would gladly take the client's requests
    # The rogue announced the real server's ID with its own key and certificate.
    with pytest.raises(PeerNotAllowed, match="not the expected") as caught:
        await fetch(client, rogue, expect=server.id)
    assert caught.value.device_id == rogue.id
    # Known only by address (a static peer), it is still not an allowed device.
    with pytest.raises(PeerNotAllowed):
        await fetch(client, rogue)
    assert rogue.reached == []
    assert await fetch(client, server, expect=server.id) == (200, {"peer": client.id})


async def test_open_server_accepts_any_device_over_tls(
    make_device: Callable[..., Awaitable[Device]],
) -> None:
    server = await make_device("server", open_mode=True)
    client = await make_device("client", serve=False)
    client.allow(server)
    assert await fetch(client, server) == (200, {"peer": None})
    stranger = await make_device("stranger", open_mode=True, serve=False)
    assert await fetch(stranger, server) == (200, {"peer": None})
    # Open mode on a client still holds a server to the ID it announced.
    with pytest.raises(PeerNotAllowed):
        await fetch(stranger, server, expect=client.id)
    assert server.reached == [None, None]


async def test_hello_introduces_a_static_peer_and_grants_nothing(
    make_device: Callable[..., Awaitable[Device]],
) -> None:
    server, client = await make_device("server"), await make_device("client", serve=False)
    assert await introduce(client.tls, server.url) == server.id
    assert client.store.seen()[server.id].role == "server"
    assert server.store.seen()[client.id].role == "client"
    with pytest.raises(REFUSED):
        await fetch(client, server)
    # Without a certificate, anything but hello is refused.
    anonymous = client.tls.hello_pool("127.0.0.1", server.port, WAIT, lambda *_: None)
    async with anonymous, await get(anonymous, "/api/tags") as response:
        assert response.status == 403
    # Both sides allow by prefix, as a user would after reading `ollana device list`.
    server.store.allow(client.id[:16])
    client.store.allow(server.id[:16])
    server.tls.reload()
    client.tls.reload()
    assert await fetch(client, server) == (200, {"peer": client.id})
    assert server.reached == [client.id]


async def test_hello_is_over_https_only(make_device: Callable[..., Awaitable[Device]]) -> None:
    client = await make_device("client", serve=False)
    with pytest.raises(HelloError, match="https only"):
        await introduce(client.tls, "http://127.0.0.1:9")


async def test_tls_below_1_3_is_refused(make_device: Callable[..., Awaitable[Device]]) -> None:
    server = await make_device("server")
    ctx = client_context(None)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    pool = ConnectionPool("127.0.0.1", server.port, ssl_context=ctx, check=_anyone)
    async with pool:
        with pytest.raises(ConnectFailed):  # the server ends the handshake: nothing is sent
            await get(pool, "/api/version")


async def test_a_certificate_heard_for_an_allowed_id_is_trusted_at_once(
    make_device: Callable[..., Awaitable[Device]],
) -> None:
    server, client = await make_device("server"), await make_device("client", serve=False)
    client.allow(server)
    server.store.allow(client.id)  # by ID only: its certificate is not known yet
    server.tls.reload()
    with pytest.raises(REFUSED):
        await fetch(client, server)
    stranger = await make_device("stranger", serve=False)
    assert not server.tls.learn(stranger.id, stranger.identity.cert_der)  # not allowed
    # Heard over discovery (checked there): trusted now, before any file has it.
    assert server.tls.learn(client.id, client.identity.cert_der)
    assert await fetch(client, server) == (200, {"peer": client.id})
    server.tls.reload()  # the files do not have it yet: it is kept
    assert await fetch(client, server) == (200, {"peer": client.id})
    assert not server.tls.learn(client.id, client.identity.cert_der)  # known already
