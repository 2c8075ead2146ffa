"""Device IDs: grouped display, tolerant parsing, prefixes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollana.identity import (
    AmbiguousDeviceId,
    DeviceIdError,
    UnknownDeviceId,
    device_id_of,
    format_device_id,
    normalize_device_id,
    parse_device_id,
    resolve_device_id,
)

ID_A = "a1" * 32
ID_B = "a1a1a1a1" * 2 + "b2" * 24
ID_C = "c3" * 32

hex_ids = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


def test_device_id_is_sha256_of_der() -> None:
    assert device_id_of(b"der bytes") == hashlib.sha256(b"der bytes").hexdigest()


def test_display_is_eight_groups_of_eight() -> None:
    shown = format_device_id(ID_C)
    assert shown.split("-") == ["c3c3c3c3"] * 8


@given(hex_ids)
def test_grouped_upper_and_plain_forms_parse_to_the_same_id(device_id: str) -> None:
    for typed in (
        device_id,
        device_id.upper(),
        format_device_id(device_id),
        f"  {format_device_id(device_id).upper()}\n",
        ":".join(device_id[i : i + 2] for i in range(0, 64, 2)),
        format_device_id(device_id)[:35] + "\n" + format_device_id(device_id)[36:],
    ):
        assert normalize_device_id(typed) == device_id


@pytest.mark.parametrize(
    ("typed", "complaint"),
    [
        ("", "no device ID"),
        ("abc", "too short"),
        ("a1a1a1a", "too short"),
        ("a1a1a1a1-a1a1a1a", "too short"),  # 15 digits: 64 bits are needed
        ("zz" * 32, "hex digits"),
        ("a" * 65, "65 hex digits"),
    ],
)
def test_bad_ids_are_refused_with_the_reason(typed: str, complaint: str) -> None:
    with pytest.raises(DeviceIdError, match=complaint):
        parse_device_id(typed)


def test_prefix_is_not_a_complete_id() -> None:
    assert parse_device_id("A1A1A1A1-A1A1A1A1") == "a1" * 8
    with pytest.raises(DeviceIdError, match="not a complete device ID"):
        normalize_device_id("a1" * 8)


def test_a_pin_may_be_shorter() -> None:
    assert parse_device_id("A1A1-A1A1", min_digits=8) == "a1a1a1a1"


def test_unique_prefix_resolves() -> None:
    assert resolve_device_id("c3c3c3c3" * 2, [ID_A, ID_B, ID_C]) == ID_C
    assert resolve_device_id("a1a1a1a1-a1a1a1a1-a1", [ID_A, ID_B, ID_C]) == ID_A


def test_ambiguous_prefix_lists_the_candidates() -> None:
    with pytest.raises(AmbiguousDeviceId, match="matches 2 devices") as caught:
        resolve_device_id("a1a1a1a1" * 2, [ID_A, ID_B, ID_C])
    assert set(caught.value.matches) == {ID_A, ID_B}


def test_unknown_prefix_is_an_error() -> None:
    with pytest.raises(UnknownDeviceId, match="no known device"):
        resolve_device_id("deadbeef" * 2, [ID_A])


def test_full_unknown_id_only_when_accepted() -> None:
    with pytest.raises(UnknownDeviceId):
        resolve_device_id(ID_C, [ID_A])
    assert resolve_device_id(ID_C, [ID_A], accept_unknown=True) == ID_C
    # A prefix never stands for a device nobody has seen.
    with pytest.raises(UnknownDeviceId):
        resolve_device_id(ID_C[:20], [ID_A], accept_unknown=True)
