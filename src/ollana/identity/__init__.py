"""Device identity, the allow list, and mutual TLS between devices.

- certs: this device's key and self-signed certificate (load_identity)
- ids: device IDs (SHA-256 of the certificate DER), shown grouped, typed as prefixes
- store: allowed devices (devices.toml) and devices seen nearby (seen.toml)
- tls / trust: SSL contexts, the device pin checked after each handshake, TLSManager (hot reload,
  per-request peer checks, revocation)
- hello: POST /ollana/v1/hello, for peers that discovery does not introduce
"""

from __future__ import annotations

from ollana.identity.certs import Identity, IdentityError, load_identity
from ollana.identity.devicefile import AllowedDevice, SeenDevice
from ollana.identity.hello import (
    HELLO_PATH,
    MAX_HELLO_BODY,
    HelloError,
    HelloReply,
    handle_hello,
    introduce,
)
from ollana.identity.ids import (
    AmbiguousDeviceId,
    DeviceIdError,
    UnknownDeviceId,
    device_id_of,
    format_device_id,
    normalize_device_id,
    parse_device_id,
    resolve_device_id,
    short_device_id,
)
from ollana.identity.store import AllowResult, DeviceStore, StoreError, TrustSnapshot
from ollana.identity.tls import DevicePin, PeerNotAllowed, peer_device_id
from ollana.identity.trust import Peer, PeerRejected, TLSManager

__all__ = [
    "HELLO_PATH",
    "MAX_HELLO_BODY",
    "AllowResult",
    "AllowedDevice",
    "AmbiguousDeviceId",
    "DeviceIdError",
    "DevicePin",
    "DeviceStore",
    "HelloError",
    "HelloReply",
    "Identity",
    "IdentityError",
    "Peer",
    "PeerNotAllowed",
    "PeerRejected",
    "SeenDevice",
    "StoreError",
    "TLSManager",
    "TrustSnapshot",
    "UnknownDeviceId",
    "device_id_of",
    "format_device_id",
    "handle_hello",
    "introduce",
    "load_identity",
    "normalize_device_id",
    "parse_device_id",
    "peer_device_id",
    "resolve_device_id",
    "short_device_id",
]
