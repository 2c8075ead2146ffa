"""Discovery targets: broadcast addresses of this host, and configured ones."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys

import pytest

from ollana.config import HostPort
from ollana.discovery import TargetSet, interface_broadcasts, parse_target
from ollana.discovery.targets import broadcast_address, resolve


@pytest.mark.parametrize(
    ("address", "prefix", "expected"),
    [
        ("192.168.1.7", 24, "192.168.1.255"),
        ("10.1.2.3", 8, "10.255.255.255"),
        ("172.16.5.4", 20, "172.16.15.255"),
        ("169.254.3.4", 16, "169.254.255.255"),
        ("192.168.1.1", 30, "192.168.1.3"),
        ("192.168.1.0", 31, None),  # point-to-point: no broadcast (RFC 3021)
        ("192.168.1.1", 32, None),
        ("127.0.0.1", 8, None),
    ],
)
def test_broadcast_address(address: str, prefix: int, expected: str | None) -> None:
    assert broadcast_address(address, prefix) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5", HostPort("10.0.0.5", 11436)),
        ("10.0.0.5:9999", HostPort("10.0.0.5", 9999)),
        ("192.168.1.255", HostPort("192.168.1.255", 11436)),
        ("nas.local", HostPort("nas.local", 11436)),
        ("nas.local:1", HostPort("nas.local", 1)),
    ],
)
def test_parse_target(text: str, expected: HostPort) -> None:
    assert parse_target(text, 11436) == expected


@pytest.mark.parametrize("text", ["10.0.0.5:x", "10.0.0.5:70000", "[::1]:11436", "h:0", ":5"])
def test_parse_target_rejects_with_the_target_named(text: str) -> None:
    with pytest.raises(ValueError, match="discovery target"):
        parse_target(text, 11436)


def test_target_set_order_and_duplicates() -> None:
    configured = TargetSet.from_settings(["10.0.0.5", "255.255.255.255", "h:7"], 11436)
    targets = configured()
    broadcasts = [HostPort(a, 11436) for a in interface_broadcasts()]
    assert targets == (
        *broadcasts,
        HostPort("255.255.255.255", 11436),
        HostPort("10.0.0.5", 11436),
        HostPort("h", 7),
    )


def test_target_set_without_broadcasts() -> None:
    only = TargetSet(5000, (HostPort("127.0.0.1", 5000),), interfaces=False, limited=False)
    assert only() == (HostPort("127.0.0.1", 5000),)
    assert TargetSet(5000, interfaces=False)() == (HostPort("255.255.255.255", 5000),)


def test_target_set_rejects_a_bad_setting() -> None:
    with pytest.raises(ValueError, match="'nope:port'"):
        TargetSet.from_settings(["nope:port"], 11436)


async def test_resolve_names_and_report_failures() -> None:
    found, failed = await resolve(
        [HostPort("127.0.0.1", 1), HostPort("localhost", 2), HostPort("nothing.invalid", 3)]
    )
    assert ("127.0.0.1", 1) in found
    assert ("127.0.0.1", 2) in found  # localhost, IPv4 only
    assert [target for target, _ in failed] == [HostPort("nothing.invalid", 3)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="compares with iproute2")
def test_interface_broadcasts_match_iproute2() -> None:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    links = json.loads(
        subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, check=True).stdout
    )
    expected = set()
    for link in links:
        flags = link.get("flags", [])
        if "UP" not in flags or "BROADCAST" not in flags or "LOOPBACK" in flags:
            continue
        primary = [a for a in link.get("addr_info", []) if a.get("family") == "inet"][:1]
        for addr in primary:
            net = ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}")
            if addr["prefixlen"] < 31:
                expected.add(str(net.network.broadcast_address))
    assert set(interface_broadcasts()) == expected
    for address in interface_broadcasts():
        assert not ipaddress.IPv4Address(address).is_loopback


def test_the_interface_that_reaches_an_address_is_the_one_whose_subnet_holds_it() -> None:
    from ollana.discovery import Interface, interface_for

    lan = Interface("eth0", "10.1.2.3", 24, "10.1.2.255", "aa:bb:cc:dd:ee:01")
    wifi = Interface("wlan0", "192.168.7.9", 16, "192.168.255.255", "")
    known = (lan, wifi)
    assert interface_for("10.1.2.40", known) is lan
    assert interface_for("10.1.2.255", known) is lan  # its broadcast: announces sent there
    assert interface_for("192.168.200.1", known) is wifi
    assert not lan.reaches("10.1.3.1") and not lan.reaches("gpu-box.lan")
