"""Device certificates for tests that need devices other than this one."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ollana.identity import device_id_of
from ollana.identity.certs import create_certificate

__all__ = ["make_cert"]


def make_cert() -> tuple[str, bytes]:
    """A fresh device certificate: (device ID, DER)."""
    cert = create_certificate(ec.generate_private_key(ec.SECP256R1()))
    der = cert.public_bytes(serialization.Encoding.DER)
    return device_id_of(der), der
