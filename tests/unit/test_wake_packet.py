"""The Wake-on-LAN magic packet and MAC addresses as typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollana.config import ConfigError, load_settings
from ollana.wake import mac_of_packet, magic_packet, parse_mac
from ollana.wake.packet import MAGIC_PACKET_SIZE


def test_a_magic_packet_is_six_ff_then_the_mac_sixteen_times() -> None:
    packet = magic_packet("AA:bb:0C:dd:ee:01")
    assert len(packet) == MAGIC_PACKET_SIZE == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes.fromhex("aabb0cddee01") * 16
    assert mac_of_packet(packet) == "aa:bb:0c:dd:ee:01"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff" * 6 + bytes.fromhex("aabb0cddee01") * 15 + bytes.fromhex("aabb0cddee02"),
        b"\xfe" + b"\xff" * 5 + bytes.fromhex("aabb0cddee01") * 16,
        b"\xff" * 6 + bytes.fromhex("aabb0cddee01") * 16 + b"x",
    ],
)
def test_anything_else_is_not_a_magic_packet(data: bytes) -> None:
    assert mac_of_packet(data) is None


def test_a_secureon_password_after_the_packet_is_ignored() -> None:
    assert mac_of_packet(magic_packet("02:00:00:00:00:01") + b"pass") == "02:00:00:00:00:01"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff"),
        (" AA-BB-CC-DD-EE-0F ", "aa:bb:cc:dd:ee:0f"),
        ("aabbccddee0f", "aa:bb:cc:dd:ee:0f"),
    ],
)
def test_mac_addresses_are_read_in_the_usual_forms(text: str, expected: str) -> None:
    assert parse_mac(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "aa:bb:cc:dd:ee", "aa:bb-cc:dd:ee:ff", "gg:bb:cc:dd:ee:ff", "00:00:00:00:00:00",
     "ff:ff:ff:ff:ff:ff", "aa:bb:cc:dd:ee:ff:00"],
)  # fmt: skip
def test_what_is_not_a_mac_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a MAC address"):
        parse_mac(text)


def test_a_static_server_may_carry_its_mac_in_config(tmp_path: Path) -> None:
    settings = load_settings(
        {"servers": ["gpu-box.lan:11435@10 mac=AA-BB-CC-DD-EE-0F", "other.lan"]},
        env={},
        config_file=tmp_path / "none.toml",
    )
    first, second = settings.servers
    assert (str(first.address), first.priority, first.mac) == (
        "gpu-box.lan:11435", 10, "aa:bb:cc:dd:ee:0f",
    )  # fmt: skip
    assert str(first) == "gpu-box.lan:11435@10 mac=aa:bb:cc:dd:ee:0f"
    assert second.mac == ""
    table = load_settings(
        {"servers": [{"address": "gpu-box.lan", "priority": 3, "mac": "aabbccddee0f"}]},
        env={},
        config_file=tmp_path / "none.toml",
    )
    assert table.servers[0].mac == "aa:bb:cc:dd:ee:0f"
    assert table.servers[0].priority == 3


@pytest.mark.parametrize(
    "server", ["gpu-box.lan mac=nope", "gpu-box.lan color=red", "gpu-box.lan mac"]
)
def test_a_bad_server_option_names_the_setting(server: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="setting 'servers'"):
        load_settings({"servers": [server]}, env={}, config_file=tmp_path / "none.toml")


def test_wake_settings_have_defaults_and_flags(tmp_path: Path) -> None:
    none = tmp_path / "none.toml"
    default = load_settings({}, env={}, config_file=none)
    assert (default.wake, default.wake_timeout) == (True, 90.0)
    env = {"OLLANA_WAKE": "off", "OLLANA_WAKE_TIMEOUT": "30"}
    given = load_settings({}, env=env, config_file=none)
    assert (given.wake, given.wake_timeout) == (False, 30.0)
