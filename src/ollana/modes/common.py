"""What both modes set up the same way: identity and trust, discovery targets."""

from __future__ import annotations

import logging

from ollana.config import Settings
from ollana.discovery import Message, TargetSet
from ollana.identity import DeviceStore, SeenDevice, StoreError, TLSManager, load_identity
from ollana.identity.recorder import SeenRecorder

__all__ = [
    "discovery_targets",
    "nearby",
    "record_seen",
    "trust",
]

log = logging.getLogger(__name__)


def trust(settings: Settings) -> TLSManager:
    """This device's identity and allow list, as the TLS layer uses them."""
    identity = load_identity(settings.home)
    return TLSManager(identity, DeviceStore(settings.home), open_mode=settings.open)


def discovery_targets(settings: Settings) -> TargetSet:
    """Where discovery datagrams go: interface broadcasts, 255.255.255.255, configured ones."""
    return TargetSet.from_settings(settings.discovery_targets, settings.discovery_port)


def record_seen(recorder: SeenRecorder, message: Message, address: str) -> None:
    """Remember a device heard on the LAN, so `ollana device list` can offer it for pairing.

    Checked here (a new certificate's signature costs about 0.1 ms); written in batches.
    """
    if not message.cert or not message.device:
        return
    try:
        record = recorder.store.seen_record(
            message.device, address, message.role, message.cert, name=message.name
        )
    except ValueError as exc:
        log.debug("not recording device %s: %s", message.device[:12], exc)
        return
    if record is not None:
        recorder.add(record)


def nearby(tls: TLSManager) -> list[SeenDevice]:
    """Devices heard on the LAN that are not allowed (yet), newest first."""
    try:
        seen = tls.store.seen()
    except StoreError as exc:
        log.warning("cannot read the devices seen nearby: %s", exc)
        return []
    devices = [d for d in seen.values() if not tls.is_allowed(d.device_id)]
    return sorted(devices, key=lambda d: d.last_seen, reverse=True)
