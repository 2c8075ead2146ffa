"""Which devices are "nearby": heard lately, not allowed, and never this device itself.

seen.toml remembers devices for longer (bounded in count: see store.py) so that a device
heard an hour ago can still be allowed by a prefix of its ID; the nearby view only offers
those heard within NEARBY_MAX_AGE, since a device that stopped says nothing more.
A second process with this device's home (same identity) is heard like any other device:
its ID is this device's own and is never listed, recorded or allowed.
"""

from __future__ import annotations

import datetime
from collections.abc import Container, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Final

from ollana.identity.certs import CERT_FILE
from ollana.identity.devicefile import SeenDevice, cert_der_from
from ollana.identity.ids import device_id_of, format_device_id

__all__ = [
    "NEARBY_MAX_AGE",
    "OwnDeviceId",
    "nearby_devices",
    "own_device_id",
    "pruned_seen",
    "shown_address",
]

# Devices not heard for this long are no longer offered as nearby (announces and queries
# come every few seconds while a process runs).
NEARBY_MAX_AGE: Final = datetime.timedelta(minutes=10)


class OwnDeviceId(ValueError):
    """This device's own ID was given where another device's is needed."""

    def __init__(self, device_id: str) -> None:
        super().__init__(
            f"that is this device's own ID ({format_device_id(device_id)}): a device does not"
            " allow or pair with itself. Two ollana processes with the same data directory"
            " share this ID; give the other one its own (--home DIR or OLLANA_HOME)"
        )
        self.device_id = device_id


def own_device_id(home: Path) -> str | None:
    """The ID of the identity kept in `home`, or None if it has none (nothing is created)."""
    try:
        return device_id_of(cert_der_from((home / CERT_FILE).read_bytes()))
    except (OSError, ValueError):
        return None


def nearby_devices(
    seen: Iterable[SeenDevice],
    allowed: Container[str],
    *,
    own: str | None,
    now: datetime.datetime | None = None,
    max_age: datetime.timedelta = NEARBY_MAX_AGE,
) -> list[SeenDevice]:
    """Devices heard within `max_age` that are neither allowed nor `own`, newest first."""
    since = (now or datetime.datetime.now(datetime.UTC)) - max_age
    devices = [
        replace(d, address=shown_address(d.address))
        for d in seen
        if d.last_seen >= since and d.device_id != own and d.device_id not in allowed
    ]
    return sorted(devices, key=lambda d: d.last_seen, reverse=True)


def pruned_seen(
    seen: Iterable[SeenDevice],
    keep: Container[str],
    max_seen: int,
    max_hello: int,
) -> dict[str, SeenDevice]:
    """What seen.toml keeps: every device in `keep` (allowed), then the newest others of
    each kind (heard over discovery, known from hellos) up to their bound.
    """
    newest = sorted(seen, key=lambda d: d.last_seen, reverse=True)
    kept = [d for d in newest if d.device_id in keep]
    others = [d for d in newest if d.device_id not in keep]
    kept += [d for d in others if d.via != "hello"][:max_seen]
    kept += [d for d in others if d.via == "hello"][:max_hello]
    return {d.device_id: d for d in kept}


def shown_address(address: str) -> str:
    """An address as people read it: a port of 0 (written for clients once) is left out."""
    if address.endswith("]:0"):
        return address[1:-3]
    if address.endswith(":0") and address.count(":") == 1:
        return address[:-2]
    return address
