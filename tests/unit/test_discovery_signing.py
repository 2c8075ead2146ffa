"""Signed discovery datagrams: the wire form, the signatures, and what a peer acts on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ollana.discovery import Announce, Goodbye, Query, decode, encode
from ollana.discovery.authority import ENDED_KEPT, RUN_MEMORY, Authority, Runs
from ollana.discovery.protocol import SIGNATURE_SIZE, Signed, split_signature
from ollana.discovery.signing import Signer, Verifier
from ollana.identity import load_identity

DEVICE = "a" * 64


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes, Signer]:
    """A device's ID, certificate and signer, as server mode makes them."""
    identity = load_identity(tmp_path_factory.mktemp("home"))
    return identity.device_id, identity.cert_der, Signer.from_key_file(identity.key_path)


def test_a_signed_datagram_is_the_unsigned_one_plus_a_trailing_field(
    device: tuple[str, bytes, Signer],
) -> None:
    device_id, cert, sign = device
    msg = Announce(instance="run1", device=device_id, port=11435, cert=cert, ts=5.0)
    data = encode(msg, sign)
    signed = split_signature(data)
    assert signed is not None and signed.data == encode(msg)
    assert len(signed.signature) == SIGNATURE_SIZE
    assert "sig" in json.loads(data[6:])  # a field: decoders that do not know it ignore it
    assert decode(data) == msg == decode(signed.data)
    assert Verifier().verify(cert, signed.data, signed.signature)
    assert split_signature(encode(msg)) is None


def test_any_changed_byte_breaks_the_signature(device: tuple[str, bytes, Signer]) -> None:
    device_id, cert, sign = device
    data = encode(Goodbye(instance="run1", device=device_id, ts=7.0), sign)
    verifier = Verifier()
    for at in range(len(data) - 100):
        changed = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
        signed = split_signature(changed)
        assert signed is None or not verifier.verify(cert, signed.data, signed.signature)


def test_another_key_or_a_broken_certificate_does_not_verify(
    device: tuple[str, bytes, Signer],
) -> None:
    device_id, cert, _ = device
    other = Signer(ec.generate_private_key(ec.SECP256R1()))
    signed = split_signature(encode(Goodbye(instance="r", device=device_id), other))
    assert signed is not None
    assert not Verifier().verify(cert, signed.data, signed.signature)
    assert not Verifier().verify(b"\x30\x03\x02\x01\x01", signed.data, signed.signature)


@pytest.mark.parametrize(
    "tail",
    [b',"sig":"AAAA"}', b',"sig":"!!"}', b',"sig":""}', b'"sig":"' + b"A" * 86 + b'"}'],
)
def test_malformed_signatures_are_no_signatures(tail: bytes) -> None:
    data = encode(Goodbye(instance="r", device=DEVICE))[:-1] + tail
    assert split_signature(data) is None


# --- what a peer acts on ----------------------------------------------------------------------


class Peer:
    """An Authority that has paired one device, and the signed datagrams of that device."""

    def __init__(self, device: tuple[str, bytes, Signer], *, knows_cert: bool = True) -> None:
        self.device_id, self.cert, self.sign = device
        certs = {self.device_id: self.cert} if knows_cert else {}
        self.authority = Authority(lambda d: d == self.device_id, certs.get)

    def hear(
        self, msg: Announce | Goodbye, *, sign: Signer | None = None, host: str = "10.0.0.5"
    ) -> str:
        data = encode(msg, sign or self.sign)
        signed = split_signature(data)
        return self.authority.check(decode(data), signed, host, now=0.0)

    def announce(self, instance: str = "run1", ts: float = 100.0) -> Announce:
        return Announce(instance=instance, device=self.device_id, port=11435, ts=ts)

    def goodbye(self, instance: str = "run1", ts: float = 101.0) -> Goodbye:
        return Goodbye(instance=instance, device=self.device_id, ts=ts)


def test_a_paired_device_is_heard_only_signed_by_its_own_key(
    device: tuple[str, bytes, Signer],
) -> None:
    peer = Peer(device)
    rogue = Signer(ec.generate_private_key(ec.SECP256R1()))
    unsigned = peer.authority.check(peer.announce(), None, "10.0.0.66", now=0.0)
    assert unsigned == "unsigned"
    assert peer.hear(peer.announce(), sign=rogue, host="10.0.0.66") == "forged"
    assert peer.hear(peer.goodbye(), sign=rogue, host="10.0.0.66") == "forged"
    assert peer.hear(peer.announce()) == ""
    # The attack: its run's ID, from another address, then a goodbye: nothing moves.
    assert peer.hear(peer.announce(ts=150.0), sign=rogue, host="10.0.0.66") == "forged"
    assert peer.authority.check(peer.goodbye(ts=151.0), None, "10.0.0.66", now=0.0) == "unsigned"
    assert peer.hear(peer.goodbye(ts=200.0)) == ""


def test_the_certificate_it_sends_authenticates_it_when_the_allow_list_lacks_one(
    device: tuple[str, bytes, Signer],
) -> None:
    peer = Peer(device, knows_cert=False)
    assert peer.hear(peer.goodbye()) == "forged"  # nothing to verify it with yet
    first = Announce(instance="run1", device=peer.device_id, port=1, cert=peer.cert, ts=100.0)
    assert peer.hear(first) == ""
    assert peer.hear(peer.goodbye()) == ""  # the certificate learnt from the announce


def test_the_copies_of_one_goodbye_are_duplicates_not_forgeries(
    device: tuple[str, bytes, Signer],
) -> None:
    peer = Peer(device)
    assert peer.hear(peer.announce()) == ""
    assert peer.hear(peer.goodbye()) == ""
    assert peer.hear(peer.goodbye()) == "duplicate"  # the limited broadcast's copy


def test_replays_do_not_end_or_bring_back_the_current_run(
    device: tuple[str, bytes, Signer],
) -> None:
    peer = Peer(device)
    assert peer.hear(peer.announce("run1", 100.0)) == ""
    old_goodbye = peer.goodbye("run1", 101.0)
    assert peer.hear(old_goodbye) == ""
    assert peer.hear(peer.announce("run2", 200.0)) == ""  # restarted
    assert peer.hear(old_goodbye) == "replay"  # an earlier run's goodbye
    assert peer.hear(peer.announce("run1", 100.0)) == "replay"  # an earlier run's announce
    assert peer.hear(peer.announce("run2", 150.0)) == "replay"  # older than the last
    assert peer.hear(peer.goodbye("run2", 150.0)) == "replay"
    assert peer.hear(peer.goodbye("run2", 250.0)) == ""


def test_a_run_whose_ollama_came_back_is_heard_again(device: tuple[str, bytes, Signer]) -> None:
    peer = Peer(device)
    assert peer.hear(peer.announce("run1", 100.0)) == ""
    assert peer.hear(peer.goodbye("run1", 110.0)) == ""  # its Ollama went down
    assert peer.hear(peer.announce("run1", 120.0)) == ""  # and came back


def test_runs_forget_so_that_a_clock_set_back_is_heard_after_a_while() -> None:
    runs = Runs()
    assert runs.accept(Announce(instance="a", device=DEVICE, port=1, ts=1000.0), now=0.0) == ""
    late = Announce(instance="b", device=DEVICE, port=1, ts=10.0)
    assert runs.accept(late, now=1.0) == "replay"
    assert runs.accept(late, now=RUN_MEMORY + 1.0) == ""
    for n in range(ENDED_KEPT + 2):  # ended runs are remembered in bounded number
        runs.accept(Announce(instance=f"r{n}", device=DEVICE, port=1, ts=20.0 + n), now=100.0)
    assert runs.accept(Announce(instance="b", device=DEVICE, port=1, ts=99.0), now=200.0) == ""


def test_unpaired_devices_are_as_before(device: tuple[str, bytes, Signer]) -> None:
    authority = Authority(lambda _: False, lambda _: None)
    old = decode(encode(Announce(instance="x", device=DEVICE, port=1, ts=1.0)))
    assert authority.check(old, None, "10.0.0.5", now=0.0) == ""
    assert authority.check(Query(), None, "10.0.0.5", now=0.0) == ""
    bye = Goodbye(instance="x", device=DEVICE, ts=2.0)
    assert authority.check(bye, None, "10.0.0.66", now=0.0) == "forged"  # not where it was
    assert authority.check(bye, None, "10.0.0.5", now=0.0) == ""
    assert authority.check(bye, None, "10.0.0.5", now=0.0) == "duplicate"


def test_a_signer_needs_a_p256_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="P-256"):
        Signer(ec.generate_private_key(ec.SECP384R1()))
    assert Signed(b"x", b"y").data == b"x"
