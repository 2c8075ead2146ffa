"""Who a device is to the fair queue and the usage counters: its name and its share.

Both are read from the allow list and the `[devices.<id-or-name>]` rules of the config
the first time this run sees a device, then kept: the hot path reads no file.
"""

from __future__ import annotations

import logging

from ollana.config import DeviceRule
from ollana.identity import DeviceStore, StoreError
from ollana.identity.ids import MIN_PIN_LENGTH, DeviceIdError, parse_device_id, short_device_id
from ollana.proxy.fairqueue import DeviceLimit

__all__ = ["ANONYMOUS", "DeviceBook"]

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"  # a peer without a certificate (open mode)


class DeviceBook:
    """Names and shares of devices, looked up once per device."""

    def __init__(self, store: DeviceStore, rules: tuple[DeviceRule, ...]) -> None:
        self._store = store
        self._rules = rules
        self._known: dict[str, tuple[str, str, DeviceLimit]] = {}

    def describe(self, device_id: str) -> tuple[str, str]:
        """A device's labels: its short ID (or "anonymous") and its name ("" if none)."""
        short, name, _ = self._lookup(device_id)
        return short, name

    def limit_of(self, device_id: str) -> DeviceLimit:
        """A device's share of the queue: from the first rule naming it, else the default."""
        return self._lookup(device_id)[2]

    def _lookup(self, device_id: str) -> tuple[str, str, DeviceLimit]:
        known = self._known.get(device_id)
        if known is not None:
            return known
        name = ""
        if device_id:
            try:
                entry = self._store.allowed().get(device_id)
            except StoreError as exc:
                log.warning("device names unavailable: %s", exc)
                entry = None
            name = (entry.name or "") if entry is not None else ""
        limit = DeviceLimit()
        for rule in self._rules:
            if _names(rule.key, device_id, name):
                limit = DeviceLimit(rule.max_concurrent, rule.weight)
                break
        known = (short_device_id(device_id) or ANONYMOUS, name, limit)
        self._known[device_id] = known
        return known


def _names(key: str, device_id: str, name: str) -> bool:
    """Whether a rule's key names this device: by its name, or 8+ digits of its ID."""
    if name and key.strip().casefold() == name.casefold():
        return True
    if not device_id:
        return key.strip().casefold() == ANONYMOUS
    try:
        # A share selects among known devices (it grants nothing): 8 digits, as a pin.
        return device_id.startswith(parse_device_id(key, min_digits=MIN_PIN_LENGTH))
    except DeviceIdError:
        return False
