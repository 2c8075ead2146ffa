"""The profile of a device certificate as ollana issues it, checked before one is learnt.

A device ID is the SHA-256 of a certificate's DER. Were any bytes accepted as a
certificate, a stranger could grind made-up certificates until an ID starts with the
digits of someone else's; requiring a valid self-signature by a P-256 key over ollana's
exact profile makes each try cost a key pair and a signature, and bounds what can be
learnt to certificates that real devices could have made.
"""

from __future__ import annotations

import hashlib
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID

__all__ = ["MAX_CERT_DER", "check_device_certificate"]

MAX_CERT_DER: Final = 2048
_EXTENSIONS: Final = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    }
)


def check_device_certificate(der: bytes) -> x509.Certificate:
    """The certificate in `der` if it has ollana's profile; ValueError saying why if not.

    Checked: DER that re-encodes to the same bytes, X.509 v3, an EC P-256 key, signed with
    ECDSA-SHA256 by that same key, subject = issuer = O=ollana, CN=ollana-<16 hex digits of
    the SHA-256 of the public key>, basicConstraints CA:false (critical), and no extension
    beyond the ones ollana writes.
    """
    if len(der) > MAX_CERT_DER:
        raise ValueError(f"a device certificate is at most {MAX_CERT_DER} bytes")
    cert = x509.load_der_x509_certificate(der)
    if cert.public_bytes(serialization.Encoding.DER) != der:
        raise ValueError("the certificate is not in canonical DER")
    if cert.version is not x509.Version.v3:
        raise ValueError("not an X.509 v3 certificate")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the key is not EC P-256")
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise ValueError("not signed with ECDSA-SHA256")
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ollana"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, "ollana-" + hashlib.sha256(spki).hexdigest()[:16]
            ),
        ]
    )
    if cert.subject != expected or cert.issuer != expected:
        raise ValueError("the subject or issuer is not an ollana device's")
    _check_extensions(cert)
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError):
        raise ValueError("the self-signature is not valid") from None
    return cert


def _check_extensions(cert: x509.Certificate) -> None:
    seen = [e.oid for e in cert.extensions]
    if len(seen) != len(set(seen)) or not set(seen) <= _EXTENSIONS:
        raise ValueError("the certificate has extensions ollana does not write")
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        raise ValueError("the certificate has no basicConstraints") from None
    if not basic.critical or basic.value.ca:
        raise ValueError("the certificate is a CA or its basicConstraints are not critical")
