"""This device's key and certificate: made once, 0600, never silently replaced."""

from __future__ import annotations

import os
import re
import ssl
import stat
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ollana.identity import IdentityError, device_id_of, load_identity

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def test_identity_is_made_on_first_use_and_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = load_identity(home)
    again = load_identity(home)
    assert first == again
    assert len(first.device_id) == 64
    assert first.device_id == device_id_of(first.cert_der)
    assert (home / "device.key").exists()
    assert (home / "device.crt").read_bytes() == first.cert_pem


@posix_only
def test_key_file_is_created_0600(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        identity = load_identity(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_readable_by_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    identity = load_identity(tmp_path)
    identity.key_path.chmod(mode)
    with pytest.raises(IdentityError) as caught:
        load_identity(tmp_path)
    message = str(caught.value)
    assert str(identity.key_path) in message
    assert f"chmod 600 {identity.key_path}" in message


def test_certificate_is_a_p256_leaf_for_server_and_client_auth(tmp_path: Path) -> None:
    identity = load_identity(tmp_path)
    cert = x509.load_der_x509_certificate(identity.cert_der)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.startswith("ollana-") for n in names.get_values_for_type(x509.DNSName)] == [True]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days > 99 * 365


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    """A complete TLS handshake in memory."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for name, end in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not complete")


def test_certificate_passes_strict_verification(tmp_path: Path) -> None:
    identity = load_identity(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(identity.cert_path, identity.key_path)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    client.load_verify_locations(cadata=identity.cert_der)
    _handshake(server, client)  # raises SSLCertVerificationError if strict checks fail

    stranger = load_identity(tmp_path / "stranger")
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    other.check_hostname = False
    other.load_verify_locations(cadata=stranger.cert_der)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, other)


def test_corrupt_key_is_named_and_left_alone(tmp_path: Path) -> None:
    identity = load_identity(tmp_path)
    identity.key_path.write_bytes(b"not a key")
    with pytest.raises(IdentityError, match=re.escape(str(identity.key_path))):
        load_identity(tmp_path)
    assert identity.key_path.read_bytes() == b"not a key"


def test_corrupt_certificate_is_named_and_left_alone(tmp_path: Path) -> None:
    identity = load_identity(tmp_path)
    identity.cert_path.write_bytes(b"-----BEGIN CERTIFICATE-----\nxx\n")
    with pytest.raises(IdentityError, match=re.escape(str(identity.cert_path))):
        load_identity(tmp_path)
    assert identity.cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----\nxx")


def test_missing_certificate_is_not_regenerated(tmp_path: Path) -> None:
    identity = load_identity(tmp_path)
    key = identity.key_path.read_bytes()
    identity.cert_path.unlink()
    with pytest.raises(IdentityError, match=r"device\.crt is missing"):
        load_identity(tmp_path)
    assert not identity.cert_path.exists()
    assert identity.key_path.read_bytes() == key


def test_certificate_of_another_key_is_refused(tmp_path: Path) -> None:
    mine = load_identity(tmp_path / "a")
    other = load_identity(tmp_path / "b")
    mine.cert_path.write_bytes(other.cert_pem)
    with pytest.raises(IdentityError, match="does not belong to the key"):
        load_identity(tmp_path / "a")
