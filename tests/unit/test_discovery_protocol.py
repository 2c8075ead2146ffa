"""The discovery datagram: encode/decode, limits, and hostile input."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ollana.discovery import MAX_DATAGRAM, Announce, DecodeError, Goodbye, Query, decode, encode
from ollana.discovery import models_digest as digest_of
from ollana.discovery.protocol import MAX_CERT_SIZE, MAX_NAME_BYTES, SIGNATURE_SIZE, Message

DEVICE = "0123456789abcdef" * 4


def make_cert(common_name: str, *, extensions: bool = True) -> bytes:
    """A self-signed P-256 certificate like a device's, in DER."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ollana"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
    )
    if extensions:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        public = key.public_key()
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# Realistic certificates, from a bare one to one with a 64-character name and every extension.
CERTS = [
    make_cert("ollana", extensions=False),
    make_cert("ollana-0123456789abcdef"),
    make_cert("a-long-host-name-" + "x" * 47),
]

instances = st.from_regex(r"[0-9A-Za-z_-]{0,32}", fullmatch=True)
devices = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
common: dict[str, Any] = {
    "instance": instances,
    "role": st.sampled_from(["client", "server"]),
    "cert": st.none() | st.sampled_from(CERTS),
    "ollama": st.from_regex(r"[0-9A-Za-z.+_~-]{0,32}", fullmatch=True),
    "models": st.from_regex(r"[0-9a-z]{0,32}", fullmatch=True),
    "priority": st.integers(-(2**31), 2**31 - 1),
    "ts": st.floats(allow_nan=False, allow_infinity=False),
}
messages = st.one_of(
    st.builds(Query, device=st.just("") | devices, port=st.integers(0, 65535), **common),
    st.builds(Announce, device=devices, port=st.integers(1, 65535), **common),
    st.builds(Goodbye, device=devices, port=st.integers(0, 65535), **common),
)


def datagram(type_: int, body: object, version: int = 1) -> bytes:
    return b"LANA" + bytes((version, type_)) + json.dumps(body).encode()


def reason(data: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        decode(data)
    return info.value.reason


# --- properties ---------------------------------------------------------------------------


@given(messages)
def test_every_message_round_trips_and_fits_a_datagram(msg: Message) -> None:
    data = encode(msg)
    assert len(data) <= MAX_DATAGRAM
    assert decode(data) == msg


@given(st.binary(max_size=2 * MAX_DATAGRAM))
def test_any_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError as exc:
        assert exc.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["instance", "device", "role", "port", "cert", "ollama", "models", "priority", "ts", "x"]
)


@settings(max_examples=300)
@given(st.integers(1, 3), st.dictionaries(field_names, json_values | devices | instances))
def test_any_json_object_decodes_or_raises_decode_error(type_: int, body: dict[str, Any]) -> None:
    data = b"LANA\x01" + bytes((type_,)) + json.dumps(body).encode()
    try:
        msg = decode(data)
    except DecodeError as exc:
        assert exc.reason in ("field", "json", "size")  # json: dumps may write NaN
    else:
        assert encode(msg)  # what decodes is valid: it encodes again


def test_the_largest_possible_message_fits() -> None:
    largest = Announce(
        instance="i" * 32, device=DEVICE, port=65535, cert=_der_of_size(MAX_CERT_SIZE),
        ollama="v" * 32, models="m" * 32, priority=-(2**31), ts=-2.2250738585072014e-308,
        name="\u00e9" * (MAX_NAME_BYTES // 2), mac="aa:bb:cc:dd:ee:ff", queue=2**31 - 1,
    )  # fmt: skip
    assert len(encode(largest)) <= MAX_DATAGRAM
    assert decode(encode(largest)) == largest
    signed = encode(largest, lambda _: b"\xff" * SIGNATURE_SIZE)  # as a server sends it
    assert len(signed) <= MAX_DATAGRAM
    assert decode(signed) == largest


def _der_of_size(size: int) -> bytes:
    """A DER SEQUENCE of exactly `size` bytes (two length bytes)."""
    return b"\x30\x82" + (size - 4).to_bytes(2, "big") + b"\x05" * (size - 4)


# --- the format ---------------------------------------------------------------------------


def test_bare_magic_from_ollana_0x_is_a_query() -> None:
    assert decode(b"LANA") == Query()


def test_wire_layout() -> None:
    msg = Announce(instance="abc", device=DEVICE, port=11435, ollama="0.12.3", ts=1.5)
    data = encode(msg)
    assert data[:6] == b"LANA\x01\x02"
    assert json.loads(data[6:]) == {
        "instance": "abc", "device": DEVICE, "role": "server", "port": 11435,
        "ollama": "0.12.3", "ts": 1.5,
    }  # fmt: skip
    assert b" " not in data  # compact JSON
    assert encode(Query(instance="q"))[5] == 1
    assert encode(Goodbye(instance="g", device=DEVICE))[5] == 3


def test_cert_travels_as_base64() -> None:
    msg = Query(instance="q", device=DEVICE, cert=CERTS[1])
    body = json.loads(encode(msg)[6:])
    assert base64.b64decode(body["cert"]) == CERTS[1]


def test_unknown_fields_are_ignored() -> None:
    body = {"instance": "x", "device": DEVICE, "port": 1, "future": {"a": [1, 2]}}
    assert decode(datagram(2, body)) == Announce(instance="x", device=DEVICE, port=1)


def test_whole_number_ts_is_accepted() -> None:
    assert decode(datagram(1, {"ts": 1700000000})).ts == 1700000000.0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "short"),
        (b"LAN", "short"),
        (b"LANA\x01\x01{", "short"),
        (b"LAXA\x01\x01{}", "magic"),
        (b"\x00" * 20, "magic"),
        (b"LANA\x02\x01{}", "version"),
        (b"LANA\x00\x01{}", "version"),
        (b"LANA\x01\x00{}", "type"),
        (b"LANA\x01\x04{}", "type"),
        (b"LANA\x01\x01{" + b"\xff\xfe" + b"}", "json"),
        (b"LANA\x01\x01\xef\xbb\xbf{}", "json"),  # a BOM is not JSON
        (b"LANA\x01\x01[1, 2]", "json"),
        (b'LANA\x01\x01"text"', "json"),
        (b"LANA\x01\x01{} trailing", "json"),
        (b"LANA\x01\x01" + b"[" * 1300, "json"),  # deep nesting: RecursionError inside json
        (b'LANA\x01\x01{"ts": NaN}', "json"),
        (b'LANA\x01\x01{"ts": Infinity}', "json"),
        (b"LANA\x01\x01{}" + b" " * MAX_DATAGRAM, "size"),
    ],
)
def test_malformed_datagrams_are_rejected_with_a_reason(data: bytes, expected: str) -> None:
    assert reason(data) == expected


@pytest.mark.parametrize(
    ("type_", "body"),
    [
        (2, {"instance": "x", "port": 1}),  # an announce needs a device
        (3, {"instance": "x"}),  # so does a goodbye
        (2, {"device": DEVICE}),  # an announce needs a port
        (2, {"device": DEVICE, "port": 0}),
        (2, {"device": DEVICE, "port": 65536}),
        (2, {"device": DEVICE, "port": -1}),
        (2, {"device": DEVICE, "port": "11435"}),
        (2, {"device": DEVICE, "port": True}),
        (2, {"device": DEVICE, "port": 11435.0}),
        (1, {"device": DEVICE.upper()}),
        (1, {"device": DEVICE[:-1]}),
        (1, {"device": DEVICE + "0"}),
        (1, {"device": 7}),
        (1, {"instance": "x" * 33}),
        (1, {"instance": "has space"}),
        (1, {"instance": None}),
        (1, {"role": "admin"}),
        (1, {"role": ["client"]}),
        (1, {"cert": "not base64!"}),
        (1, {"cert": "MII="}),  # base64, but not a DER SEQUENCE of that length
        (1, {"cert": base64.b64encode(CERTS[0][:-1]).decode()}),  # truncated
        (1, {"cert": base64.b64encode(_der_of_size(MAX_CERT_SIZE + 4)).decode()}),
        (1, {"cert": 12}),
        (1, {"cert": "é"}),
        (1, {"ollama": "0.1 beta"}),
        (1, {"ollama": "v" * 33}),
        (1, {"ollama": 1}),
        (1, {"models": "ABC"}),
        (1, {"priority": 2**31}),
        (1, {"priority": 1.5}),
        (1, {"priority": False}),
        (1, {"ts": "now"}),
        (1, {"ts": True}),
        (1, {"ts": 10**400}),  # a whole number too big for a float
    ],
)
def test_fields_are_validated_strictly(type_: int, body: dict[str, Any]) -> None:
    assert reason(datagram(type_, body)) == "field"


def test_json_that_parses_as_infinity_is_rejected() -> None:
    assert reason(b'LANA\x01\x01{"ts":1e400}') == "field"


def test_nesting_as_deep_as_a_datagram_allows_is_ignored_as_an_unknown_field() -> None:
    deepest = b'{"a":' * 230 + b"1" + b"}" * 230
    assert decode(b"LANA\x01\x01" + deepest) == Query()


def test_der_length_must_use_the_shortest_form() -> None:
    long_form_for_short = b"\x30\x81\x03abc"
    assert reason(datagram(1, {"cert": base64.b64encode(long_form_for_short).decode()})) == "field"
    short = b"\x30\x03abc"
    assert decode(datagram(1, {"cert": base64.b64encode(short).decode()})).cert == short


def test_invalid_messages_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="port"):
        Announce(instance="x", device=DEVICE)
    with pytest.raises(ValueError, match="device"):
        Goodbye(instance="x")
    with pytest.raises(ValueError, match="cert"):
        Query(cert=b"\x30\x00" + b"x")


def test_models_digest_ignores_order_and_duplicates() -> None:
    a = digest_of(["llama3:8b", "qwen2:7b"])
    assert a == digest_of(["qwen2:7b", "llama3:8b", "qwen2:7b"])
    assert a != digest_of(["llama3:8b"])
    assert len(a) == 16
    Announce(device=DEVICE, port=1, models=a)  # a valid field value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "a\nfake log line"),
        ("name", "x" * 65),
        ("name", "\u202eevil"),
        ("mac", "AA:BB:CC:DD:EE:FF"),
        ("mac", "aa:bb:cc:dd:ee"),
        ("queue", -1),
        ("queue", True),
    ],
)
def test_new_fields_are_checked(field: str, value: object) -> None:
    body = {"device": DEVICE, "port": 11435, field: value}
    with pytest.raises(DecodeError):
        decode(b"LANA\x01\x02" + json.dumps(body).encode())


def test_a_name_travels_as_utf8() -> None:
    message = Announce(device=DEVICE, port=11435, name="Küche-GPU")
    data = encode(message)
    assert "Küche".encode() in data
    assert decode(data) == message
