"""POST /ollana/v1/hello, the server's side: validate, remember as seen, grant nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ollana.identity import DeviceStore, Identity, handle_hello, load_identity
from ollana.identity.hello import HelloQuota, hello_body, parse_hello


@pytest.fixture
def server(tmp_path: Path) -> Identity:
    return load_identity(tmp_path / "server")


@pytest.fixture
def client(tmp_path: Path) -> Identity:
    return load_identity(tmp_path / "client")


def test_hello_records_the_sender_and_introduces_the_server(
    server: Identity, client: Identity
) -> None:
    store = DeviceStore(server.cert_path.parent)
    reply = handle_hello(
        hello_body(client), identity=server, store=store, address="192.0.2.5:40000"
    )
    assert reply.status == 200
    answer = json.loads(reply.body)
    assert answer["device"] == server.device_id
    assert base64.b64decode(answer["cert"]) == server.cert_der
    seen = store.seen()[client.device_id]
    assert (seen.address, seen.role, seen.cert_der) == (
        "192.0.2.5:40000",
        "client",
        client.cert_der,
    )
    # Learning a certificate grants nothing.
    assert store.allowed() == {}
    assert store.snapshot().allowed == frozenset()


def test_pem_certificates_are_accepted(server: Identity, client: Identity) -> None:
    body = json.dumps({"cert": client.cert_pem.decode()}).encode()
    assert parse_hello(body)[:2] == (client.device_id, client.cert_der)


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"not json", "not JSON"),
        (b"[]", '"cert"'),
        (b'{"cert": 5}', '"cert"'),
        (b'{"cert": "!!!"}', "not a base64 DER or PEM"),
        (json.dumps({"cert": base64.b64encode(b"junk").decode()}).encode(), "not a base64"),
        (b"x" * 20000, "larger than"),
    ],
)
def test_bad_hellos_are_refused_with_400(
    server: Identity, tmp_path: Path, body: bytes, complaint: str
) -> None:
    store = DeviceStore(tmp_path / "server")
    reply = handle_hello(body, identity=server, store=store, address="192.0.2.5:1")
    assert reply.status == 400
    assert complaint in json.loads(reply.body)["error"]
    assert store.seen() == {}


def test_a_claimed_id_must_match_the_certificate(server: Identity, client: Identity) -> None:
    message = json.loads(hello_body(client))
    message["device"] = server.device_id
    store = DeviceStore(server.cert_path.parent)
    reply = handle_hello(
        json.dumps(message).encode(), identity=server, store=store, address="192.0.2.5:1"
    )
    assert reply.status == 400
    assert "not the ID" in json.loads(reply.body)["error"]


def test_a_broken_seen_file_is_a_server_error_and_stays(server: Identity, client: Identity) -> None:
    store = DeviceStore(server.cert_path.parent)
    store.seen_path.write_text("[[seen]\n")
    reply = handle_hello(hello_body(client), identity=server, store=store, address="192.0.2.5:1")
    assert reply.status == 500
    assert store.seen_path.read_text() == "[[seen]\n"


def test_the_hello_quota_is_per_source_address() -> None:
    quota = HelloQuota(burst=3, every=10)
    assert [quota.allow("192.0.2.1", now=0) for _ in range(4)] == [True, True, True, False]
    assert quota.allow("192.0.2.2", now=0)  # another address has its own
    assert not quota.allow("192.0.2.1", now=9)
    assert quota.allow("192.0.2.1", now=10.5)  # one more every 10 s


def test_a_hello_name_is_kept_and_checked(server: Identity, client: Identity) -> None:
    store = DeviceStore(server.cert_path.parent)
    body = hello_body(client, name="laptop")
    reply = handle_hello(body, identity=server, store=store, address="192.0.2.5:1", name="srv")
    assert json.loads(reply.body)["name"] == "srv"
    assert (store.seen()[client.device_id].name, store.seen()[client.device_id].via) == (
        "laptop",
        "hello",
    )
    message = json.loads(hello_body(client))
    message["name"] = "evil\x1b]0;title\x07"
    bad = json.dumps(message).encode()
    reply = handle_hello(bad, identity=server, store=store, address="192.0.2.5:1")
    assert reply.status == 400
    assert "name" in json.loads(reply.body)["error"]
