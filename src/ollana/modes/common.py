"""What both modes set up the same way: identity and trust, discovery targets."""

from __future__ import annotations

import asyncio
import logging

from ollana.config import Settings
from ollana.discovery import TargetSet
from ollana.identity import DeviceStore, SeenDevice, StoreError, TLSManager, load_identity

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


def record_seen(tls: TLSManager, device: str, address: str, role: str, cert: bytes | None) -> None:
    """Remember a device heard on the LAN, so `ollana device list` can offer it for pairing.

    The store writes a file (rarely: unchanged devices at most once a minute), so off the loop.
    """
    if not cert or not device:
        return

    def record() -> None:
        try:
            tls.store.record_seen(device, address, role, cert)
        except (ValueError, StoreError) as exc:
            log.debug("not recording device %s: %s", device[:12], exc)

    asyncio.get_running_loop().run_in_executor(None, record)


def nearby(tls: TLSManager) -> list[SeenDevice]:
    """Devices heard on the LAN that are not allowed (yet), newest first."""
    try:
        seen = tls.store.seen()
    except StoreError as exc:
        log.warning("cannot read the devices seen nearby: %s", exc)
        return []
    devices = [d for d in seen.values() if not tls.is_allowed(d.device_id)]
    return sorted(devices, key=lambda d: d.last_seen, reverse=True)
