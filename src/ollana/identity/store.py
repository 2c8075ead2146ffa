"""The allow list (home/devices.toml) and the devices seen nearby (home/seen.toml).

Every change is read-modify-write under one exclusive lock (home/.lock) and lands with
an atomic replace, so concurrent `ollana device allow` commands and a running server all
keep each other's changes, and a reader never sees half a file. A file that cannot be
read or parsed is reported with its path and is never rewritten. See devicefile.py for
the file formats.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from ollana.filemodes import unsafe_file
from ollana.identity.devicefile import (
    AllowedDevice,
    FileFormatError,
    SeenDevice,
    parse_allowed,
    parse_seen,
    render_allowed,
    render_seen,
)
from ollana.identity.files import LOCK_FILE, atomic_write, exclusive_lock
from ollana.identity.ids import device_id_of, normalize_device_id, resolve_device_id
from ollana.identity.names import clean_name
from ollana.identity.profile import check_device_certificate

__all__ = [
    "DEVICES_FILE",
    "MAX_HELLO_SEEN",
    "MAX_SEEN",
    "SEEN_FILE",
    "SEEN_REFRESH",
    "WATCH_INTERVAL",
    "AllowResult",
    "DeviceStore",
    "StoreError",
    "TrustSnapshot",
]

log = logging.getLogger(__name__)

DEVICES_FILE = "devices.toml"
SEEN_FILE = "seen.toml"
# Bounds seen.toml against a flood of made-up devices; allowed devices are never dropped.
MAX_SEEN = 256
# Devices known only from unauthenticated hellos have a share of their own, so that a
# flood of hellos never pushes out a device heard over discovery (nor an allowed one).
MAX_HELLO_SEEN = 32
# Remembered to skip rewrites and repeated certificate checks; bounded against floods.
MAX_RECENT = 1024
# A device heard again at the same address within this many seconds is not rewritten.
SEEN_REFRESH = 60.0
WATCH_INTERVAL = 0.5
MAX_NAME_LENGTH = 100
MAX_FIELD_LENGTH = 200

_Signature = tuple[int, int, int] | None
_T = TypeVar("_T")


class StoreError(Exception):
    """A device file cannot be read, parsed or written; the message names the path."""


@dataclass(frozen=True, slots=True)
class AllowResult:
    """What `allow` did: `added` is False when the device was already allowed."""

    device_id: str
    added: bool
    cert_known: bool
    name: str | None = None


@dataclass(frozen=True, slots=True)
class TrustSnapshot:
    """The allowed device IDs and the certificates known for them."""

    allowed: frozenset[str]
    certs: Mapping[str, bytes]


class DeviceStore:
    """Allowed and seen devices of one home directory."""

    def __init__(
        self,
        home: Path,
        *,
        max_seen: int = MAX_SEEN,
        max_hello_seen: int = MAX_HELLO_SEEN,
        seen_refresh: float = SEEN_REFRESH,
    ) -> None:
        self.home = home
        self.devices_path = home / DEVICES_FILE
        self.seen_path = home / SEEN_FILE
        self._lock_path = home / LOCK_FILE
        self._max_seen = max_seen
        self._max_hello = max_hello_seen
        self._seen_refresh = seen_refresh
        self._recent: OrderedDict[str, SeenDevice] = OrderedDict()

    # --- reading ------------------------------------------------------------------------

    def allowed(self) -> dict[str, AllowedDevice]:
        """The allow list, keyed by device ID."""
        return _read(self.devices_path, parse_allowed, guarded=True)

    def seen(self) -> dict[str, SeenDevice]:
        """Devices heard on the network, keyed by device ID."""
        return _read(self.seen_path, parse_seen)

    def cert_for(self, device_id: str) -> bytes | None:
        """The DER certificate of a device, from the allow list or else from seen devices."""
        entry = self.allowed().get(device_id)
        if entry is not None and entry.cert_der is not None:
            return entry.cert_der
        seen = self.seen().get(device_id)
        return seen.cert_der if seen is not None else None

    def snapshot(self) -> TrustSnapshot:
        """Allowed IDs and their certificates (allowing precedes knowing the certificate)."""
        allowed = self.allowed()
        # seen.toml changes often and can be large: read it only when it can help.
        seen = self.seen() if any(e.cert_der is None for e in allowed.values()) else {}
        certs: dict[str, bytes] = {}
        for device_id, entry in allowed.items():
            cert = entry.cert_der or (seen[device_id].cert_der if device_id in seen else None)
            if cert is not None:
                certs[device_id] = cert
        return TrustSnapshot(frozenset(allowed), certs)

    # --- changing -----------------------------------------------------------------------

    def allow(
        self, id_or_prefix: str, *, name: str | None = None, cert_der: bytes | None = None
    ) -> AllowResult:
        """Allow a device by full ID or by a prefix unique among known devices.

        `cert_der` is the device's certificate when the caller has it (pairing); without
        a `name`, the one the device announced (if seen) is kept.
        """
        if name is not None:
            name = _check_text(name.strip(), "name", MAX_NAME_LENGTH) or None
        with self._locked():
            allowed, seen = self.allowed(), self.seen()
            device_id = resolve_device_id(
                id_or_prefix, set(allowed) | set(seen), accept_unknown=True
            )
            if cert_der is not None and device_id_of(cert_der) != device_id:
                raise ValueError(f"the certificate given is not device {device_id}'s")
            known = allowed.get(device_id)
            learned = cert_der or (seen[device_id].cert_der if device_id in seen else None)
            name = name or (seen[device_id].name if device_id in seen else None) or None
            if known is not None:
                updated = replace(
                    known, cert_der=known.cert_der or learned, name=name or known.name
                )
                if updated != known:
                    allowed[device_id] = updated
                    self._write(self.devices_path, render_allowed(allowed.values()))
                return AllowResult(
                    device_id,
                    added=False,
                    cert_known=updated.cert_der is not None,
                    name=updated.name,
                )
            allowed[device_id] = AllowedDevice(
                device_id=device_id, name=name, cert_der=learned, added=_now()
            )
            self._write(self.devices_path, render_allowed(allowed.values()))
            return AllowResult(device_id, added=True, cert_known=learned is not None, name=name)

    def disable(self, id_or_prefix: str) -> str:
        """Remove a device from the allow list; UnknownDeviceId if it is not in it."""
        with self._locked():
            allowed = self.allowed()
            device_id = resolve_device_id(id_or_prefix, allowed)
            del allowed[device_id]
            self._write(self.devices_path, render_allowed(allowed.values()))
            return device_id

    def record_seen(
        self,
        device_id: str,
        address: str,
        role: str,
        cert_der: bytes,
        *,
        name: str = "",
        via: str = "discovery",
        now: datetime.datetime | None = None,
    ) -> bool:
        """Remember a device heard on the network now; False when nothing needed writing.

        ValueError if the certificate is not an ollana device's or not the device's;
        learning a certificate grants nothing. Blocking file I/O: a running process
        batches records with SeenRecorder instead.
        """
        record = self.seen_record(device_id, address, role, cert_der, name=name, via=via, now=now)
        return record is not None and self.record_many([record]) > 0

    def seen_record(
        self,
        device_id: str,
        address: str,
        role: str,
        cert_der: bytes,
        *,
        name: str = "",
        via: str = "discovery",
        now: datetime.datetime | None = None,
    ) -> SeenDevice | None:
        """A checked record of a device heard, or None if it was recorded just so recently.

        ValueError if anything the network sent is not acceptable. No file I/O.
        """
        device_id = normalize_device_id(device_id)
        last = self._recent.get(device_id)
        if last is None or last.cert_der != cert_der:
            check_device_certificate(cert_der)  # a valid self-signature: ids are not ground
        if device_id_of(cert_der) != device_id:
            raise ValueError(f"the certificate sent does not belong to device {device_id}")
        cleaned = clean_name(name)
        if cleaned is None:
            raise ValueError("name must be up to 64 bytes of printable text")
        record = SeenDevice(
            device_id=device_id,
            address=_check_text(address, "address", MAX_FIELD_LENGTH),
            role=_check_text(role, "role", MAX_FIELD_LENGTH),
            last_seen=now or _now(),
            cert_der=cert_der,
            name=cleaned,
            via=via,
        )
        if last is not None and _same_place(last, record):
            age = (record.last_seen - last.last_seen).total_seconds()
            if 0 <= age < self._seen_refresh:
                return None
        return record

    def record_many(self, records: Iterable[SeenDevice]) -> int:
        """Write checked records (from seen_record) in one change; how many were taken."""
        batch = list(records)
        if not batch:
            return 0
        taken = 0
        with self._locked():
            seen = self.seen()
            for record in batch:
                earlier = seen.get(record.device_id)
                # A hello proves nothing: it never replaces what discovery told us.
                if earlier is not None and earlier.via == "discovery" and record.via == "hello":
                    continue
                seen[record.device_id] = record
                taken += 1
            if taken:
                seen = self._pruned(seen)
                self._write(self.seen_path, render_seen(seen.values()))
        for record in batch:
            self._recent[record.device_id] = record
            self._recent.move_to_end(record.device_id)
        while len(self._recent) > MAX_RECENT:
            self._recent.popitem(last=False)
        return taken

    def forget_seen(self, device_id: str) -> bool:
        """Drop a device from the devices seen nearby; False if it was not there."""
        device_id = normalize_device_id(device_id)
        with self._locked():
            seen = self.seen()
            if seen.pop(device_id, None) is None:
                return False
            self._write(self.seen_path, render_seen(seen.values()))
        self._recent.pop(device_id, None)
        return True

    # --- watching -----------------------------------------------------------------------

    def signature(self) -> tuple[_Signature, _Signature]:
        """What changes whenever either file is replaced or edited (for polling)."""
        return _stat(self.devices_path), _stat(self.seen_path)

    async def watch(
        self,
        on_change: Callable[[], None],
        interval: float = WATCH_INTERVAL,
        *,
        since: tuple[_Signature, _Signature] | None = None,
    ) -> None:
        """Call `on_change` after every change to either file, polling every `interval`.

        Changes are counted from `since` (a signature() taken before the caller last read
        the files), else from now. Polling stat() works the same on every OS and file
        system; runs until cancelled. Exceptions from `on_change` are logged.
        """
        last = self.signature() if since is None else since
        while True:
            await asyncio.sleep(interval)
            current = self.signature()
            if current == last:
                continue
            last = current
            try:
                on_change()
            except Exception:
                log.exception("reloading the device files failed")

    # --- internals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(exclusive_lock(self._lock_path))
            except OSError as exc:
                raise StoreError(f"{self._lock_path}: cannot lock: {exc.strerror or exc}") from None
            yield

    def _write(self, path: Path, text: str) -> None:
        try:
            atomic_write(path, text.encode("utf-8"))
        except OSError as exc:
            raise StoreError(f"{path}: cannot write: {exc.strerror or exc}") from None

    def _pruned(self, seen: dict[str, SeenDevice]) -> dict[str, SeenDevice]:
        try:
            keep = set(self.allowed())
        except StoreError:
            # Without the allow list we cannot tell what must stay: prune nothing now.
            return seen
        newest = sorted(seen.values(), key=lambda d: d.last_seen, reverse=True)
        kept = [d for d in newest if d.device_id in keep]
        others = [d for d in newest if d.device_id not in keep]
        kept += [d for d in others if d.via != "hello"][: self._max_seen]
        kept += [d for d in others if d.via == "hello"][: self._max_hello]
        return {d.device_id: d for d in kept}


def _read(
    path: Path, parse: Callable[[str], dict[str, _T]], *, guarded: bool = False
) -> dict[str, _T]:
    # The allow list grants access: one that others can change is refused, not read.
    why = unsafe_file(path) if guarded else None
    if why is not None:
        raise StoreError(why)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        raise StoreError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return parse(text)
    except FileFormatError as exc:
        hint = " (this file only lists devices seen nearby; it is safe to delete)"
        raise StoreError(f"{path}: {exc}{hint if path.name == SEEN_FILE else ''}") from None


def _stat(path: Path) -> _Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _same_place(a: SeenDevice, b: SeenDevice) -> bool:
    return replace(a, last_seen=b.last_seen) == b


def _check_text(value: str, what: str, limit: int) -> str:
    if len(value) > limit:
        raise ValueError(f"{what} is too long ({len(value)} characters, at most {limit})")
    # Control characters (C0, DEL, C1) could drive a terminal that lists devices.
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise ValueError(f"{what} holds control or invalid characters")
    return value


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)
