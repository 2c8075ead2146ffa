"""Parsers fed anything: each answers with its result or its own error type, nothing else.

- the router's look into request bodies (`inspect_request`): any bytes give a Route;
- the allow list and the seen-devices file (`parse_allowed`, `parse_seen`): any text gives
  devices or a FileFormatError that says where.
"""

from __future__ import annotations

import base64
import datetime
import json
import string
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ollana.cluster.models import Route, inspect_request
from ollana.identity.certs import create_certificate
from ollana.identity.devicefile import (
    AllowedDevice,
    FileFormatError,
    SeenDevice,
    parse_allowed,
    parse_seen,
    render_allowed,
    render_seen,
)
from ollana.identity.ids import device_id_of
from ollana.ollama_api import ENDPOINTS

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the router's body parsing ------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Bodies shaped like the API's, with every field free to hold the wrong type.
api_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values, "name": json_values, "source": json_values,
        "messages": json_values, "prompt": json_values, "files": json_values,
        "stream": json_values,
    },
).map(lambda d: json.dumps(d).encode())  # fmt: skip
bodies = st.one_of(
    st.none(),
    st.binary(max_size=300),
    api_bodies,
    json_values.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
paths = st.one_of(
    st.sampled_from(sorted(e.path for e in ENDPOINTS if e.model == "body")),
    st.text(max_size=30).map(lambda t: "/api/blobs/" + t),
    st.text(max_size=30),
)


@FUZZ
@given(
    paths,
    bodies,
    st.none() | st.text(max_size=20),
    st.sampled_from([0, 1, 64, 1 << 20]),
)
@example("/api/chat", b'{"model": "\\ud800"}', None, 1 << 20)
@example("/api/chat", b'{"model": "m", "messages": NaN}', None, 1 << 20)
@example("/api/create", b'{"model": "m", "files": {"a": 1, "b": "sha256:x"}}', None, 99)
@example("/api/copy", b'{"source": ["x"]}', None, 99)
@example("/api/chat", b"\xff\xfe\x00", "pin", 99)
def test_any_request_gives_a_route(
    path: str, body: bytes | None, pin: str | None, cap: int
) -> None:
    route = inspect_request(path, body, pin, cap)
    assert isinstance(route, Route)
    assert route.path == path and route.pin == pin
    assert route.model is None or isinstance(route.model, str)
    assert route.conversation is None or isinstance(route.conversation, str)
    assert all(isinstance(b, str) for b in route.blobs)


def test_a_body_past_the_cap_is_not_read() -> None:
    body = json.dumps({"model": "llama3.2", "prompt": "x" * 100}).encode()
    assert inspect_request("/api/generate", body, None, len(body)).model == "llama3.2:latest"
    assert inspect_request("/api/generate", body, None, len(body) - 1).model is None


def test_messages_nested_to_any_depth_give_a_route() -> None:
    # The depth at which json.loads still succeeds but json.dumps, a few frames deeper, no
    # longer does depends on the stack depth of the caller: try every depth up to the limit.
    # Too deep to read at all is routed without a model; it never raises.
    models = set()
    for depth in range(800, 1200):
        body = b'{"model":"m","messages":[' + b"[" * depth + b"]" * depth + b"]}"
        route = inspect_request("/api/chat", body, None, 1 << 20)
        models.add(route.model)
    assert models <= {"m:latest", None}
    assert "m:latest" in models


# --- the device files ---------------------------------------------------------------------


def _certificate() -> tuple[str, str]:
    """A real certificate (PEM) and its device ID."""
    cert = create_certificate(ec.generate_private_key(ec.SECP256R1()))
    der = cert.public_bytes(serialization.Encoding.DER)
    return cert.public_bytes(serialization.Encoding.PEM).decode(), device_id_of(der)


CERTS = [_certificate() for _ in range(3)]
HEX = "0123456789abcdef"
device_ids = st.one_of(
    st.sampled_from([device for _, device in CERTS]),
    st.text(HEX, min_size=64, max_size=64),
    st.text(HEX + "ABCDEF :-", max_size=80),
    st.text(max_size=10),
)
pems = st.one_of(
    st.sampled_from([pem for pem, _ in CERTS]),
    st.sampled_from([pem for pem, _ in CERTS]).map(lambda p: p.replace("A", "B", 1)),
    st.binary(max_size=60).map(
        lambda b: (
            "-----BEGIN CERTIFICATE-----\n"
            + base64.b64encode(b).decode()
            + "\n-----END CERTIFICATE-----"
        )
    ),
    st.text(max_size=40),
)
# From year 1000: earlier years are rendered without their leading zero (a known gap, below).
EARLIEST = datetime.datetime(1000, 1, 1)
moments = st.one_of(
    st.datetimes(min_value=EARLIEST, timezones=st.none() | st.just(datetime.UTC)),
    st.dates(min_value=EARLIEST.date()),
    st.text(string.digits + "-:TZ+", max_size=25),
)


def toml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str) and value.startswith("-----BEGIN") and "'''" not in value:
        return "'''\n" + value + "\n'''"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


field_values = st.one_of(
    device_ids, pems, moments, st.integers(), st.booleans(), st.text(max_size=20)
)


def grouped(device_id: str) -> str:
    """A device ID as people copy it: groups of eight digits."""
    return "-".join(device_id[i : i + 8] for i in range(0, 64, 8))


def tables(name: str, keys: list[str]) -> st.SearchStrategy[str]:
    entry = st.fixed_dictionaries(
        {},
        optional={
            **dict.fromkeys(keys, field_values),
            "id": device_ids, "cert": pems, "added": moments, "last_seen": moments,
        },
    )  # fmt: skip

    # Mostly right: a known device, in any spelling of its ID, with or without its cert.
    plausible = st.builds(
        lambda i, spell, cert, extra: {
            "id": spell(CERTS[i][1]), **({"cert": CERTS[i][0]} if cert else {}), **extra
        },
        st.integers(0, len(CERTS) - 1),
        st.sampled_from([str, str.upper, grouped, lambda d: grouped(d).replace("-", " ")]),
        st.booleans(),
        st.fixed_dictionaries(
            {}, optional={"name": st.text(max_size=20), "added": moments, "last_seen": moments,
                          "address": st.text(max_size=20), "role": st.text(max_size=8)},
        ),
    )  # fmt: skip
    entry = st.one_of(plausible, entry)

    def render(entries: list[dict[str, object]]) -> str:
        out = []
        for entry_ in entries:
            out.append(f"[[{name}]]")
            out += [f"{k} = {toml_scalar(v)}" for k, v in entry_.items()]
        return "\n".join(out) + "\n"

    return st.lists(entry, max_size=3).map(render)


allowed_texts = st.one_of(tables("device", ["name", "extra"]), st.text(max_size=200))
seen_texts = st.one_of(tables("seen", ["address", "role"]), st.text(max_size=200))


@FUZZ
@given(allowed_texts)
@example("device = 3\n")
@example("[[device]]\nid = 5\n")
@example("device = [1, 2]\n")
def test_any_allow_list_gives_devices_or_a_file_format_error(text: str) -> None:
    try:
        devices = parse_allowed(text)
    except FileFormatError as exc:
        assert str(exc)
        return
    for device_id, entry in devices.items():
        assert isinstance(entry, AllowedDevice) and entry.device_id == device_id
        assert len(device_id) == 64 and set(device_id) <= set(HEX)
        assert entry.cert_der is None or device_id_of(entry.cert_der) == device_id
    assert summary(parse_allowed(render_allowed(devices.values()))) == summary(devices)


def summary(devices: dict[str, AllowedDevice]) -> set[tuple[str, str | None, bytes | None]]:
    """What a rewrite of the allow list keeps exactly (times are kept to the second)."""
    return {(d.device_id, d.name, d.cert_der) for d in devices.values()}


def test_an_allow_list_with_an_early_date_can_be_rewritten() -> None:
    device = CERTS[0][1]
    devices = parse_allowed(f'[[device]]\nid = "{device}"\nadded = 0999-01-01\n')
    assert set(parse_allowed(render_allowed(devices.values()))) == {device}


@FUZZ
@given(seen_texts)
@example("[[seen]]\nid = 'x'\n")
def test_any_seen_file_gives_devices_or_a_file_format_error(text: str) -> None:
    try:
        devices = parse_seen(text)
    except FileFormatError as exc:
        assert str(exc)
        return
    for device_id, entry in devices.items():
        assert isinstance(entry, SeenDevice) and device_id_of(entry.cert_der) == device_id
    again = parse_seen(render_seen(devices.values()))
    assert {(d.device_id, d.cert_der) for d in again.values()} == {
        (d.device_id, d.cert_der) for d in devices.values()
    }


@pytest.mark.parametrize("parse", [parse_allowed, parse_seen], ids=["allowed", "seen"])
@pytest.mark.parametrize(
    "text",
    ["a = " + "[" * 2000 + "]" * 2000 + "\n", "a = " + "{b = " * 2000 + "1" + "}" * 2000 + "\n"],
    ids=["arrays", "tables"],
)
def test_a_device_file_nested_too_deeply_is_a_file_format_error(
    parse: Callable[[str], object], text: str
) -> None:
    with pytest.raises(FileFormatError):
        parse(text)
