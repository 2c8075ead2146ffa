"""Discovery on the LAN: who runs an ollana server, and where (DESIGN §2)."""

from ollana.discovery.protocol import (
    MAX_DATAGRAM,
    Announce,
    DecodeError,
    Goodbye,
    Message,
    Query,
    Role,
    decode,
    encode,
    models_digest,
    new_instance_id,
)
from ollana.discovery.service import DiscoveryService, DiscoveryStats, OnMessage, Targets
from ollana.discovery.targets import TargetSet, interface_broadcasts, parse_target

__all__ = [
    "MAX_DATAGRAM",
    "Announce",
    "DecodeError",
    "DiscoveryService",
    "DiscoveryStats",
    "Goodbye",
    "Message",
    "OnMessage",
    "Query",
    "Role",
    "TargetSet",
    "Targets",
    "decode",
    "encode",
    "interface_broadcasts",
    "models_digest",
    "new_instance_id",
    "parse_target",
]
