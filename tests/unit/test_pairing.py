"""The pairing exchange, pure: right code, wrong code, replay, tampering, attempts."""

from __future__ import annotations

import base64
import json

import pytest

from ollana.identity.pairing import (
    MAX_ATTEMPTS,
    WINDOW_SECONDS,
    Guest,
    PairingError,
    Window,
    new_code,
    normalize_code,
)
from tests.support.certs import make_cert

HOST_ID, HOST_CERT = make_cert()
GUEST_ID, GUEST_CERT = make_cert()


def window(now: float = 0.0) -> Window:
    return Window.open(HOST_CERT, "host-box", now)


def test_the_right_code_pairs_both_sides_with_each_others_certificate() -> None:
    w = window()
    guest = Guest(w.code, GUEST_CERT, "guest-box")
    finish = guest.confirm(w.start(guest.start(), 1.0))
    reply, peer = w.finish(finish, 2.0)
    host = guest.verify(reply)
    assert (peer.device_id, peer.cert_der, peer.name) == (GUEST_ID, GUEST_CERT, "guest-box")
    assert (host.device_id, host.cert_der, host.name) == (HOST_ID, HOST_CERT, "host-box")
    assert w.current(3.0) == "paired"
    # One peer: the window takes no further start.
    with pytest.raises(PairingError) as info:
        w.start(Guest(w.code, GUEST_CERT, "").start(), 3.0)
    assert info.value.status == 404


def test_a_wrong_code_is_refused_and_the_third_closes_the_window() -> None:
    w = window()
    wrong = "000000" if w.code != "000000" else "111111"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        guest = Guest(wrong, GUEST_CERT, "")
        finish = guest.confirm(w.start(guest.start(), 1.0))
        with pytest.raises(PairingError, match="wrong pairing code") as info:
            w.finish(finish, 1.0)
        assert info.value.status == 403
        assert w.current(1.0) == ("open" if attempt < MAX_ATTEMPTS else "closed")
    # Closed for the right code too.
    with pytest.raises(PairingError):
        w.start(Guest(w.code, GUEST_CERT, "").start(), 1.0)
    assert w.peer is None


def test_starts_without_finish_spend_attempts() -> None:
    w = window()
    for _ in range(MAX_ATTEMPTS):
        w.start(Guest(w.code, GUEST_CERT, "").start(), 1.0)
    with pytest.raises(PairingError, match="too many attempts"):
        w.start(Guest(w.code, GUEST_CERT, "").start(), 1.0)
    assert w.current(1.0) == "closed"


def test_a_guest_with_a_wrong_code_learns_nothing_it_can_check() -> None:
    # The host's start reply holds no MAC: a guest cannot test a guess offline.
    w = window()
    reply = json.loads(w.start(Guest("123456", GUEST_CERT, "").start(), 1.0))
    assert set(reply) == {"session", "pake", "cert", "name"}


def test_a_replayed_finish_is_refused() -> None:
    w = window()
    guest = Guest(w.code, GUEST_CERT, "")
    finish = guest.confirm(w.start(guest.start(), 1.0))
    w.finish(finish, 1.0)
    with pytest.raises(PairingError):
        w.finish(finish, 1.0)


def test_a_replayed_start_gets_a_key_its_sender_cannot_use() -> None:
    # An eavesdropper replays a recorded start: the host answers with a fresh SPAKE2
    # message, and without the code the replayer cannot make the finish.
    w = window()
    guest = Guest(w.code, GUEST_CERT, "")
    start = guest.start()
    w.start(start, 1.0)
    replay = json.loads(w.start(start, 1.0))
    forged = json.dumps(
        {"session": replay["session"], "confirm": base64.b64encode(b"x" * 32).decode()}
    )
    with pytest.raises(PairingError, match="wrong pairing code"):
        w.finish(forged.encode(), 1.0)


def test_a_certificate_swapped_on_the_way_fails_both_macs() -> None:
    _, other = make_cert()
    w = window()
    guest = Guest(w.code, GUEST_CERT, "")
    start = json.loads(guest.start())
    start["cert"] = base64.b64encode(other).decode()  # a machine in the middle
    reply = w.start(json.dumps(start).encode(), 1.0)
    with pytest.raises(PairingError, match="wrong pairing code"):
        w.finish(guest.confirm(reply), 1.0)
    # And the other way: the host's certificate replaced in its reply.
    w = window()
    guest = Guest(w.code, GUEST_CERT, "")
    reply = json.loads(w.start(guest.start(), 1.0))
    reply["cert"] = base64.b64encode(other).decode()
    with pytest.raises(PairingError, match="wrong pairing code"):
        w.finish(guest.confirm(json.dumps(reply).encode()), 1.0)


def test_a_host_that_does_not_know_the_code_is_found_out_by_the_guest() -> None:
    impostor = Window.open(HOST_CERT, "", 0.0, used=[])
    guest = Guest(new_code([impostor.code]), GUEST_CERT, "")
    guest.confirm(impostor.start(guest.start(), 1.0))
    fake = json.dumps({"confirm": base64.b64encode(b"\0" * 32).decode()}).encode()
    with pytest.raises(PairingError, match="does not know the code"):
        guest.verify(fake)


def test_a_certificate_without_a_valid_self_signature_is_refused() -> None:
    bad = bytearray(GUEST_CERT)
    bad[-3] ^= 1
    w = window()
    guest = Guest(w.code, bytes(bad), "")
    with pytest.raises(PairingError, match="not an ollana device"):
        w.start(guest.start(), 1.0)
    assert w.attempts == 0


def test_the_window_expires() -> None:
    w = window(now=10.0)
    assert w.current(10.0 + WINDOW_SECONDS - 1) == "open"
    with pytest.raises(PairingError):
        w.start(Guest(w.code, GUEST_CERT, "").start(), 10.0 + WINDOW_SECONDS)
    assert w.current(10.0 + WINDOW_SECONDS) == "expired"


def test_names_from_the_network_are_checked() -> None:
    w = window()
    guest = Guest(w.code, GUEST_CERT, "bad\x1b[2Jname")
    with pytest.raises(PairingError, match="name"):
        w.start(guest.start(), 1.0)


def test_codes() -> None:
    used = {f"{n:06d}" for n in range(999_990)}
    assert new_code(used) not in used
    assert normalize_code(" 123 456 ") == "123456"
    assert normalize_code("123-456") == "123456"
    for bad in ("12345", "1234567", "12345a", "١٢٣٤٥٦"):
        with pytest.raises(PairingError):
            normalize_code(bad)
