"""The allow list and seen devices: formats, prefixes, locking, corruption, watching."""

from __future__ import annotations

import asyncio
import datetime
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from ollana.identity import (
    AllowedDevice,
    AmbiguousDeviceId,
    DeviceIdError,
    DeviceStore,
    StoreError,
    UnknownDeviceId,
    device_id_of,
)
from ollana.identity.certs import create_certificate
from ollana.identity.devicefile import parse_allowed, render_allowed
from tests.support.certs import make_cert

UTC = datetime.UTC


@pytest.fixture
def store(tmp_path: Path) -> DeviceStore:
    return DeviceStore(tmp_path)


def test_empty_home_has_no_devices(store: DeviceStore) -> None:
    assert store.allowed() == {}
    assert store.seen() == {}
    assert store.snapshot().allowed == frozenset()


def test_allow_full_id_before_the_certificate_is_known(store: DeviceStore) -> None:
    device_id, der = make_cert()
    result = store.allow(device_id.upper())
    assert (result.device_id, result.added, result.cert_known) == (device_id, True, False)
    snapshot = store.snapshot()
    assert snapshot.allowed == {device_id}
    assert snapshot.certs == {}
    # Learning the certificate later puts it into the trust store, and grants nothing else.
    store.record_seen(device_id, "192.0.2.7:11435", "client", der)
    assert store.snapshot().certs == {device_id: der}
    assert store.cert_for(device_id) == der


def test_allow_again_is_not_an_error_and_keeps_one_entry(store: DeviceStore) -> None:
    device_id, _ = make_cert()
    store.allow(device_id)
    again = store.allow(device_id)
    assert again.added is False
    assert list(store.allowed()) == [device_id]


def test_allow_by_prefix_of_a_seen_device_copies_its_certificate(store: DeviceStore) -> None:
    device_id, der = make_cert()
    store.record_seen(device_id, "192.0.2.9:11435", "server", der)
    result = store.allow(device_id[:16], name="workstation")
    assert result == type(result)(device_id, added=True, cert_known=True, name="workstation")
    entry = store.allowed()[device_id]
    assert (entry.cert_der, entry.name) == (der, "workstation")
    # The allow list keeps the certificate even if seen.toml goes away.
    store.seen_path.unlink()
    assert store.snapshot().certs == {device_id: der}


def test_prefix_errors(store: DeviceStore) -> None:
    a, b = "abcdef01" * 2 + "1" * 48, "abcdef01" * 2 + "2" * 48
    store.allow(a)
    store.allow(b)
    with pytest.raises(AmbiguousDeviceId):
        store.allow("abcdef01" * 2)
    with pytest.raises(AmbiguousDeviceId):
        store.disable("abcdef01" * 2)
    with pytest.raises(DeviceIdError, match="too short"):
        store.disable("abc")
    with pytest.raises(UnknownDeviceId):
        store.allow("12345678" * 2)
    assert store.disable("abcdef01abcdef012") == b
    assert set(store.allowed()) == {a}


def test_disable_unknown_is_an_error_and_changes_nothing(store: DeviceStore) -> None:
    device_id, _ = make_cert()
    store.allow(device_id)
    before = store.devices_path.read_bytes()
    with pytest.raises(UnknownDeviceId):
        store.disable("f" * 64 if not device_id.startswith("f") else "e" * 64)
    assert store.devices_path.read_bytes() == before


def test_concurrent_allows_all_land(store: DeviceStore) -> None:
    ids = [f"{i:08x}" + "a" * 56 for i in range(16)]
    barrier = threading.Barrier(len(ids))

    def allow(device_id: str) -> None:
        barrier.wait()
        DeviceStore(store.home).allow(device_id)

    threads = [threading.Thread(target=allow, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(store.allowed()) == set(ids)


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("[[device]]\nid = \n", "line 2"),
        ('[[device]]\nid = "xyz"\n', "[[device]] #1"),
        ('[[device]]\nid = "' + "a" * 64 + '"\nnmae = "x"\n', "unknown key 'nmae'"),
        ('[[device]]\nid = "' + "a" * 64 + '"\n[[device]]\nid = "' + "A" * 64 + '"\n', "twice"),
        ('[[device]]\nid = "' + "a" * 64 + '"\ncert = "junk"\n', "not a valid certificate"),
        ('devices = ["x"]\n', "unknown key 'devices'"),
    ],
)
def test_corrupt_allow_list_is_reported_with_path_and_never_rewritten(
    store: DeviceStore, content: str, where: str
) -> None:
    store.devices_path.write_text(content)
    for action in (store.allowed, lambda: store.allow("b" * 64), lambda: store.disable("a" * 8)):
        with pytest.raises(StoreError) as caught:
            action()
        assert str(store.devices_path) in str(caught.value)
        assert where in str(caught.value)
    assert store.devices_path.read_text() == content


def test_certificate_of_another_device_is_refused(store: DeviceStore) -> None:
    device_id, _ = make_cert()
    store.allow(device_id)
    other = create_certificate(ec.generate_private_key(ec.SECP256R1()))
    pem = other.public_bytes(serialization.Encoding.PEM).decode()
    store.devices_path.write_text(store.devices_path.read_text() + f'cert = """\n{pem}"""\n')
    with pytest.raises(StoreError, match="belongs to device"):
        store.allowed()


def test_unreadable_bytes_are_reported(store: DeviceStore) -> None:
    store.devices_path.write_bytes(b"\xff\xfe[[device]]")
    with pytest.raises(StoreError, match="not UTF-8"):
        store.allowed()


def test_corrupt_seen_file_says_it_can_be_deleted(store: DeviceStore) -> None:
    store.seen_path.write_text("[[seen]\n")
    with pytest.raises(StoreError, match="safe to delete"):
        store.seen()


@settings(max_examples=60)
@given(st.text(min_size=1, max_size=50))
def test_any_name_survives_a_write_and_a_read(name: str) -> None:
    device_id = "ab" * 32
    added = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    text = render_allowed([AllowedDevice(device_id, name=name, added=added)])
    assert parse_allowed(text)[device_id] == AllowedDevice(device_id, name=name, added=added)


def test_hand_edited_file_is_accepted(store: DeviceStore) -> None:
    device_id, _ = make_cert()
    cert = create_certificate(ec.generate_private_key(ec.SECP256R1()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    other_id = device_id_of(cert.public_bytes(serialization.Encoding.DER))
    grouped = "-".join(other_id[i : i + 8] for i in range(0, 64, 8)).upper()
    store.devices_path.write_text(
        f'[[device]]\nid = "{device_id}"\nadded = 2025-06-01\n\n'
        f"[[device]]\n# a comment\nid = '{grouped}'\nname = 'nas'\n"
        f'added = "2025-07-01T10:00:00+02:00"\ncert = """\n{pem}"""\n'
    )
    allowed = store.allowed()
    assert set(allowed) == {device_id, other_id}
    assert allowed[other_id].name == "nas"
    assert allowed[other_id].added == datetime.datetime(2025, 7, 1, 8, tzinfo=UTC)
    assert allowed[device_id].added == datetime.datetime(2025, 6, 1, tzinfo=UTC)


def test_record_seen_validates_what_the_network_sent(store: DeviceStore) -> None:
    device_id, der = make_cert()
    other, _ = make_cert()
    with pytest.raises(ValueError, match="does not belong"):
        store.record_seen(other, "192.0.2.1:1", "server", der)
    with pytest.raises(ValueError):
        store.record_seen(device_id, "192.0.2.1:1", "server", b"junk")
    with pytest.raises(ValueError, match="control"):
        store.record_seen(device_id, "192.0.2.1\x1b[2J", "server", der)
    with pytest.raises(ValueError, match="control"):
        store.record_seen(device_id, "192.0.2.1", "server\x9b", der)
    assert not store.seen_path.exists()


def test_record_seen_skips_rewrites_of_unchanged_devices(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path, seen_refresh=60)
    device_id, der = make_cert()
    t0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    assert store.record_seen(device_id, "192.0.2.1:11435", "server", der, now=t0)
    later = t0 + datetime.timedelta(seconds=10)
    assert not store.record_seen(device_id, "192.0.2.1:11435", "server", der, now=later)
    moved = t0 + datetime.timedelta(seconds=11)
    assert store.record_seen(device_id, "192.0.2.2:11435", "server", der, now=moved)
    assert store.seen()[device_id].address == "192.0.2.2:11435"
    much_later = moved + datetime.timedelta(seconds=61)
    assert store.record_seen(device_id, "192.0.2.2:11435", "server", der, now=much_later)
    assert store.seen()[device_id].last_seen == much_later


def test_seen_file_is_bounded_but_never_drops_allowed_devices(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path, max_seen=3)
    t0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    devices = [make_cert() for _ in range(6)]
    oldest_id, _ = devices[0]
    store.allow(oldest_id)
    for i, (device_id, der) in enumerate(devices):
        store.record_seen(device_id, f"192.0.2.{i}:1", "client", der, now=t0.replace(minute=i))
    kept = set(store.seen())
    # Allowed devices are kept beside the newest max_seen others.
    assert kept == {oldest_id, devices[3][0], devices[4][0], devices[5][0]}


def test_a_flood_of_hellos_never_evicts_a_discovered_or_allowed_device(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path, max_seen=2, max_hello_seen=3)
    t0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    allowed_id, allowed_der = make_cert()
    heard_id, heard_der = make_cert()
    store.record_seen(allowed_id, "192.0.2.1:1", "client", allowed_der, now=t0)
    store.allow(allowed_id)
    store.record_seen(heard_id, "192.0.2.2:11435", "server", heard_der, name="gpu", now=t0)
    flood = [make_cert() for _ in range(10)]
    for i, (device_id, der) in enumerate(flood):
        later = t0.replace(minute=i + 1)
        store.record_seen(device_id, "192.0.2.66:0", "client", der, via="hello", now=later)
    # A hello for a discovered device's (public) certificate does not overwrite its record.
    store.record_seen(heard_id, "192.0.2.66:0", "client", heard_der, name="evil", via="hello")
    seen = store.seen()
    assert {allowed_id, heard_id} <= set(seen)
    assert (seen[heard_id].address, seen[heard_id].name) == ("192.0.2.2:11435", "gpu")
    assert {d for d, s in seen.items() if s.via == "hello"} == {d for d, _ in flood[-3:]}


def test_a_forged_certificate_is_never_learnt(store: DeviceStore) -> None:
    _, der = make_cert()
    # Same profile, but signed by a key that is not the certificate's: bytes anyone can
    # grind (the ID is a hash over them) without a valid self-signature.
    cert = x509.load_der_x509_certificate(der)
    other = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    forged = builder.sign(other, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(ValueError, match="self-signature"):
        store.record_seen(device_id_of(forged), "192.0.2.1:1", "server", forged)
    assert store.seen() == {}


async def test_watch_reports_each_change(store: DeviceStore) -> None:
    changes: asyncio.Queue[None] = asyncio.Queue()
    watcher = asyncio.create_task(
        store.watch(lambda: changes.put_nowait(None), interval=0.01, since=store.signature())
    )
    try:
        store.allow("1" * 64)
        await asyncio.wait_for(changes.get(), 5)
        device_id, der = make_cert()
        store.record_seen(device_id, "192.0.2.1:1", "client", der)
        await asyncio.wait_for(changes.get(), 5)
        store.disable("1" * 16)
        await asyncio.wait_for(changes.get(), 5)
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


def test_forget_seen_drops_one_device(store: DeviceStore) -> None:
    kept, dropped = make_cert(), make_cert()
    for device_id, der in (kept, dropped):
        store.record_seen(device_id, "192.0.2.1:1", "client", der)
    assert store.forget_seen(dropped[0])
    assert not store.forget_seen(dropped[0])
    assert set(store.seen()) == {kept[0]}
