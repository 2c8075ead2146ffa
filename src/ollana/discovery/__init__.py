"""Discovery on the LAN: who runs an ollana server, and where (DESIGN §2)."""

from ollana.discovery.protocol import (
    MAX_DATAGRAM,
    PRIORITY_RANGE,
    Announce,
    DecodeError,
    Goodbye,
    Message,
    Query,
    Role,
    clamp_priority,
    decode,
    encode,
    models_digest,
    new_instance_id,
    safe_version,
)
from ollana.discovery.service import DiscoveryService, DiscoveryStats, OnMessage, Targets
from ollana.discovery.targets import (
    Interface,
    TargetSet,
    interface_broadcasts,
    interface_for,
    interfaces,
    parse_target,
)

__all__ = [
    "MAX_DATAGRAM",
    "PRIORITY_RANGE",
    "Announce",
    "DecodeError",
    "DiscoveryService",
    "DiscoveryStats",
    "Goodbye",
    "Interface",
    "Message",
    "OnMessage",
    "Query",
    "Role",
    "TargetSet",
    "Targets",
    "clamp_priority",
    "decode",
    "encode",
    "interface_broadcasts",
    "interface_for",
    "interfaces",
    "models_digest",
    "new_instance_id",
    "parse_target",
    "safe_version",
]
