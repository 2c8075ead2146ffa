"""This device's identity: an EC P-256 key and a self-signed certificate, made on first use.

Files in the home directory:
  device.key  the private key, PKCS#8 PEM, mode 0600 (refused if others can read it)
  device.crt  the certificate, PEM

The certificate is a leaf, not a CA (basicConstraints CA:false, critical), usable for TLS
server and client auth, with subject and authority key identifiers so that strict X.509
verification (Python 3.13's default VERIFY_X509_STRICT) accepts it. Its DNS name is
"ollana-" plus the first 16 hex digits of the SHA-256 of the public key (the device ID
itself cannot appear in the certificate it is the hash of).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ollana.filemodes import unsafe_file
from ollana.identity.files import LOCK_FILE, atomic_write, exclusive_lock, write_new_secret
from ollana.identity.ids import device_id_of

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "Identity",
    "IdentityError",
    "create_certificate",
    "load_certificate",
    "load_identity",
]

KEY_FILE = "device.key"
CERT_FILE = "device.crt"
CERT_VALIDITY = datetime.timedelta(days=36525)
# Tolerates peers whose clocks run a little behind ours.
CLOCK_SKEW = datetime.timedelta(days=1)


class IdentityError(Exception):
    """The identity files cannot be used; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class Identity:
    """This device: its ID, its certificate, and where the key and certificate live."""

    device_id: str
    cert_der: bytes
    cert_pem: bytes
    key_path: Path
    cert_path: Path


def load_identity(home: Path) -> Identity:
    """This device's identity from `home`, created there on first use."""
    key_path, cert_path = home / KEY_FILE, home / CERT_FILE
    if not (key_path.exists() and cert_path.exists()):
        # The lock also makes us wait for a process that is creating the pair right now.
        try:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            with exclusive_lock(home / LOCK_FILE):
                if not key_path.exists() and not cert_path.exists():
                    _create(key_path, cert_path)
        except OSError as exc:
            if not key_path.exists() and not cert_path.exists():
                raise IdentityError(f"cannot create the device identity in {home}: {exc}") from None
    return _load(key_path, cert_path)


def create_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A self-signed leaf certificate for `key` with the extensions described above."""
    public = key.public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dns_name = "ollana-" + hashlib.sha256(spki).hexdigest()[:16]
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ollana"),
            x509.NameAttribute(NameOID.COMMON_NAME, dns_name),
        ]
    )
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    key_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes; ValueError if it is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _create(key_path: Path, cert_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert = create_certificate(key)
    write_new_secret(key_path, key_pem)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _load(key_path: Path, cert_path: Path) -> Identity:
    for path, other in ((key_path, cert_path), (cert_path, key_path)):
        if not path.exists():
            raise IdentityError(
                f"{path} is missing but {other} exists; restore {path.name} from a backup,"
                f" or delete {other} to make a new identity (this device's ID will change"
                " and peers must allow it again)"
            )
    _check_key_permissions(key_path)
    try:
        key_pem, cert_pem = key_path.read_bytes(), cert_path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read {exc.filename}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{key_path} is not a usable private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise IdentityError(f"{key_path} is not an EC P-256 private key")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise IdentityError(f"{cert_path} is not a PEM certificate: {exc}") from None
    if cert.public_key() != key.public_key():
        raise IdentityError(f"{cert_path} does not belong to the key in {key_path}")
    der = cert.public_bytes(serialization.Encoding.DER)
    return Identity(
        device_id=device_id_of(der),
        cert_der=der,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_path=key_path,
        cert_path=cert_path,
    )


def _check_key_permissions(key_path: Path) -> None:
    why = unsafe_file(key_path, private=True)
    if why is not None:
        raise IdentityError(why)
