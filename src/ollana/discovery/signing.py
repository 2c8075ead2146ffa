"""Signatures of discovery datagrams, with the device's own P-256 key (DESIGN §2, §3).

A server signs its announces and goodbyes; a peer that allowed it holds its certificate
(the device ID is the SHA-256 of it), so it can tell the device's own datagrams from ones
another host sent in its name. Signatures travel as r || s (64 bytes), not DER, to fit the
datagram budget.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ollana.discovery.protocol import SIGNATURE_SIZE

__all__ = ["MAX_KEYS", "Signer", "Verifier", "cert_belongs_to"]

MAX_KEYS: Final = 1024  # public keys kept parsed, least recently used forgotten first
_HALF = SIGNATURE_SIZE // 2
_ALGORITHM = ec.ECDSA(hashes.SHA256())


def cert_belongs_to(cert_der: bytes, device_id: str) -> bool:
    """Whether a certificate is the one a device ID names (its SHA-256)."""
    return hashlib.sha256(cert_der).hexdigest() == device_id


class Signer:
    """Signs with one P-256 private key; call it with the bytes to sign."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("discovery signatures need a P-256 key")
        self._key = key

    @classmethod
    def from_key_file(cls, path: Path) -> Signer:
        """A signer with the PEM private key in path (the device key; already checked)."""
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} is not an EC private key")
        return cls(key)

    def __call__(self, data: bytes) -> bytes:
        """The signature of data, r || s."""
        r, s = decode_dss_signature(self._key.sign(data, _ALGORITHM))
        return r.to_bytes(_HALF, "big") + s.to_bytes(_HALF, "big")


class Verifier:
    """Checks signatures against certificates, keeping their public keys parsed (bounded)."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._max = max_keys
        self._keys: OrderedDict[bytes, ec.EllipticCurvePublicKey | None] = OrderedDict()

    def verify(self, cert_der: bytes, data: bytes, signature: bytes) -> bool:
        """Whether signature (r || s) over data was made with the certificate's key."""
        key = self._key(cert_der)
        if key is None or len(signature) != SIGNATURE_SIZE:
            return False
        r = int.from_bytes(signature[:_HALF], "big")
        s = int.from_bytes(signature[_HALF:], "big")
        try:
            key.verify(encode_dss_signature(r, s), data, _ALGORITHM)
        except InvalidSignature:
            return False
        return True

    def _key(self, cert_der: bytes) -> ec.EllipticCurvePublicKey | None:
        if cert_der in self._keys:
            self._keys.move_to_end(cert_der)
            return self._keys[cert_der]
        try:
            public = x509.load_der_x509_certificate(cert_der).public_key()
        except ValueError:
            public = None
        key = public if isinstance(public, ec.EllipticCurvePublicKey) else None
        if key is not None and not isinstance(key.curve, ec.SECP256R1):
            key = None
        self._keys[cert_der] = key
        if len(self._keys) > self._max:
            self._keys.popitem(last=False)
        return key
