"""Goodbyes in another device's name: only the device's own run, from where it announced.

First the rule for unpaired devices (`Origins`, pure), then a running client's
DiscoveryService with real UDP sockets on loopback, fed by hand-made datagrams from several
127.0.0.x addresses; last, a paired server, whose datagrams count only when it signed them.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ollana.config import Timings
from ollana.discovery import Announce, DiscoveryService, Goodbye, Message, encode
from ollana.discovery.origins import MAX_ADDRESSES, Origins
from ollana.discovery.signing import Signer
from ollana.identity import load_identity
from tests.support.discovery import Inbox
from tests.support.waiting import until

DEVICE, OTHER = "a" * 64, "b" * 64
QUIET = Timings(announce_interval=3600.0, query_interval=3600.0)


def announce(instance: str = "run1", ts: float = 100.0, device: str = DEVICE) -> Announce:
    return Announce(instance=instance, device=device, port=11435, ts=ts)


def goodbye(instance: str = "run1", ts: float = 101.0, device: str = DEVICE) -> Goodbye:
    return Goodbye(instance=instance, device=device, ts=ts)


# --- the rule ---------------------------------------------------------------------------------


def test_the_goodbye_of_the_run_that_announced_from_that_address_counts_once() -> None:
    origins = Origins()
    origins.announced(announce(), "10.0.0.5")
    assert origins.genuine(goodbye(), "10.0.0.5")
    assert not origins.genuine(goodbye(), "10.0.0.5")  # the same again: a replay


@pytest.mark.parametrize(
    ("message", "host"),
    [
        (goodbye(), "10.0.0.66"),  # another address
        (goodbye(instance="run2"), "10.0.0.5"),  # another run
        (goodbye(ts=99.0), "10.0.0.5"),  # older than the last announce: replayed
        (goodbye(device=OTHER), "10.0.0.5"),  # a device never heard announcing
    ],
    ids=["address", "instance", "replay", "unknown"],
)
def test_other_goodbyes_are_forged(message: Goodbye, host: str) -> None:
    origins = Origins()
    origins.announced(announce(), "10.0.0.5")
    assert not origins.genuine(message, host)
    assert origins.genuine(goodbye(), "10.0.0.5")  # the real one still counts after them


def test_a_new_run_replaces_the_old_and_every_announcing_address_counts() -> None:
    origins = Origins()
    origins.announced(announce("run1"), "10.0.0.5")
    origins.announced(announce("run2", ts=200.0), "10.0.0.5")
    origins.announced(announce("run2", ts=201.0), "192.168.1.5")  # a second network
    assert not origins.genuine(goodbye("run1", ts=300.0), "10.0.0.5")
    assert origins.genuine(goodbye("run2", ts=300.0), "192.168.1.5")


def test_memory_is_bounded_in_devices_and_addresses() -> None:
    origins = Origins(max_devices=10)
    for n in range(100):
        origins.announced(announce(device=f"{n:064x}"), "10.0.0.1")
    assert len(origins) == 10
    for n in range(50):
        origins.announced(announce(), f"10.0.1.{n}")
    assert not origins.genuine(goodbye(), f"10.0.1.{49 - MAX_ADDRESSES}")  # let go
    assert origins.genuine(goodbye(), f"10.0.1.{50 - MAX_ADDRESSES}")  # the oldest one kept


# --- a running service ------------------------------------------------------------------------

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="sends from 127.0.0.x (Linux loopback)"
)


@pytest.fixture
async def client() -> AsyncIterator[tuple[DiscoveryService, Inbox]]:
    inbox = Inbox()
    async with DiscoveryService(
        role="client", on_message=inbox, discovery_port=0, timings=QUIET, bind_host="127.0.0.1"
    ) as service:
        yield service, inbox


def send(msg: Message, port: int | None, host: str) -> None:
    assert port is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.sendto(encode(msg), ("127.0.0.1", port))


@linux_only
async def test_a_client_passes_on_only_the_servers_own_goodbye(
    client: tuple[DiscoveryService, Inbox],
) -> None:
    service, inbox = client
    port = service.listen_port
    send(announce(), port, "127.0.0.5")
    assert (await inbox.next())[0] == announce()
    send(goodbye(), port, "127.0.0.6")  # another address
    send(goodbye(instance="run9"), port, "127.0.0.5")  # another run
    send(goodbye(ts=1.0), port, "127.0.0.5")  # a replay
    send(goodbye(), port, "127.0.0.5")  # its own
    msg, (host, _) = await inbox.next()
    assert (msg, host) == (goodbye(), "127.0.0.5")
    assert service.stats().dropped["forged"] == 3
    assert [m for m, _ in inbox.seen] == [announce(), goodbye()]  # nothing else passed on


# --- a paired server: only what it signed counts ----------------------------------------------


@pytest.fixture(scope="module")
def paired_device(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes, Signer]:
    identity = load_identity(tmp_path_factory.mktemp("server-home"))
    return identity.device_id, identity.cert_der, Signer.from_key_file(identity.key_path)


@pytest.fixture
async def paired_client(
    paired_device: tuple[str, bytes, Signer],
) -> AsyncIterator[tuple[DiscoveryService, Inbox]]:
    device_id, cert, _ = paired_device
    inbox = Inbox()
    async with DiscoveryService(
        role="client", on_message=inbox, discovery_port=0, timings=QUIET, bind_host="127.0.0.1",
        paired=lambda d: d == device_id, cert_of={device_id: cert}.get,
    ) as service:  # fmt: skip
        yield service, inbox


def send_raw(data: bytes, port: int | None, host: str) -> None:
    assert port is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.sendto(data, ("127.0.0.1", port))


@linux_only
async def test_announces_and_goodbyes_in_a_paired_servers_name_change_nothing(
    paired_client: tuple[DiscoveryService, Inbox], paired_device: tuple[str, bytes, Signer]
) -> None:
    service, inbox = paired_client
    device_id, _, sign = paired_device
    port = service.listen_port
    real = Announce(instance="run1", device=device_id, port=11435, ts=100.0)
    send_raw(encode(real, sign), port, "127.0.0.5")
    assert (await inbox.next())[0] == real
    # The rogue knows the run (it is broadcast): it announces it from its own address,
    # unsigned and signed with its own key, then says goodbye in its name.
    rogue = Signer(ec.generate_private_key(ec.SECP256R1()))
    fake = Announce(instance="run1", device=device_id, port=11435, ts=150.0)
    bye = Goodbye(instance="run1", device=device_id, ts=151.0)
    for data in (encode(fake), encode(fake, rogue), encode(bye), encode(bye, rogue)):
        send_raw(data, port, "127.0.0.6")
    # A goodbye the server really said, of an earlier run, replayed.
    send_raw(encode(Goodbye(instance="run0", device=device_id, ts=90.0), sign), port, "127.0.0.6")
    # The server's own goodbye goes to two broadcast addresses: it arrives twice.
    own = Goodbye(instance="run1", device=device_id, ts=200.0)
    send_raw(encode(own, sign), port, "127.0.0.5")
    send_raw(encode(own, sign), port, "127.0.0.5")
    msg, (host, _) = await inbox.next(Goodbye)
    assert (msg, host) == (own, "127.0.0.5")
    await until(lambda: service.stats().dropped.get("duplicate"), "the copy counted")
    dropped = dict(service.stats().dropped)
    assert dropped == {"unsigned": 2, "forged": 2, "replay": 1, "duplicate": 1}
    assert [m for m, _ in inbox.seen] == [real, own]  # nothing else was acted on
