"""`ollana device`: show this device's ID; list, allow and disable peers."""

from __future__ import annotations

import datetime
import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from ollana.cli.options import chosen_home, home_options
from ollana.identity import (
    AllowedDevice,
    DeviceIdError,
    DeviceStore,
    IdentityError,
    SeenDevice,
    StoreError,
    UnknownDeviceId,
    format_device_id,
    load_identity,
    parse_device_id,
)

__all__ = ["device"]

# Tables with full device IDs need this many columns; narrower terminals get plain lines.
TABLE_WIDTH = 132


@click.group()
@home_options
def device() -> None:
    """Show this device's ID; list, allow and disable peers."""


@device.command()
@home_options
def show() -> None:
    """Print this device's ID (made on first use)."""
    with _errors():
        identity = load_identity(chosen_home())
    click.echo(f"Device ID: {format_device_id(identity.device_id)}")


@device.command("list", short_help="List allowed devices and devices seen nearby.")
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
@home_options
def list_(as_json: bool) -> None:
    """List allowed devices, then devices seen nearby that are not allowed."""
    home = chosen_home()
    store = DeviceStore(home)
    with _errors():
        identity = load_identity(home)
        allowed = store.allowed()
        seen = store.seen()
    nearby = sorted(
        (s for s in seen.values() if s.device_id not in allowed),
        key=lambda s: s.last_seen,
        reverse=True,
    )
    rows = sorted(allowed.values(), key=lambda a: (a.added is None, a.added, a.device_id))
    if as_json:
        document = {
            "device": identity.device_id,
            "allowed": [_allowed_json(a, seen) for a in rows],
            "nearby": [_seen_json(s) for s in nearby],
        }
        click.echo(json.dumps(document, indent=2))
    elif sys.stdout.isatty() and shutil.get_terminal_size().columns >= TABLE_WIDTH:
        _print_rich(identity.device_id, rows, seen, nearby)
    else:
        _print_plain(identity.device_id, rows, seen, nearby)


@device.command(short_help="Allow a device (full ID, or a prefix of one seen).")
@click.argument("device_id", metavar="ID")
@click.option("--name", help="A name to remember the device by.")
@home_options
def allow(device_id: str, name: str | None) -> None:
    """Allow a device (its full ID, or a unique prefix of 16+ digits of a device seen).

    `ollana pair` does the same with a short code, on both devices at once.
    """
    with _errors():
        result = DeviceStore(chosen_home()).allow(device_id, name=name)
    shown = format_device_id(result.device_id) + (f" ({result.name})" if result.name else "")
    if not result.added:
        click.echo(f"Device ID {shown} is already allowed")
        return
    click.echo(f"Added Device ID: {shown}")
    if not result.cert_known:
        click.echo(
            "Its certificate is not known yet: it is trusted once it is seen on the network"
            " or says hello.",
            err=True,
        )


@device.command(short_help="Disable a device: remove it from the allow list.")
@click.argument("device_id", metavar="ID")
@home_options
def disable(device_id: str) -> None:
    """Disable a device: it leaves the allow list and its connections close at once.

    There is no disabled state kept: `ollana device allow ID` lets it in again.
    """
    with _errors():
        try:
            removed = DeviceStore(chosen_home()).disable(device_id)
        except UnknownDeviceId:
            click.echo(f"Device ID {format_device_id(parse_device_id(device_id))} is not allowed")
            sys.exit(1)
    click.echo(
        f"Disabled Device ID {format_device_id(removed)}: removed from the allow list"
        " (`ollana device allow` adds it back)"
    )


# What it does, by another name.
device.add_command(
    click.Command(
        "remove",
        params=disable.params,
        callback=disable.callback,
        help="The same as `disable`: remove a device from the allow list.",
        hidden=True,
    )
)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the errors a user can fix into one clear line and exit code 1."""
    try:
        yield
    except UnknownDeviceId as exc:
        raise click.ClickException(
            f"{exc}; give all 64 digits to allow a device that was not seen yet"
        ) from None
    except (IdentityError, StoreError, DeviceIdError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _when(value: datetime.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _allowed_json(entry: AllowedDevice, seen: dict[str, SeenDevice]) -> dict[str, object]:
    return {
        "id": entry.device_id,
        "name": entry.name,
        "added": entry.added.isoformat() if entry.added else None,
        "cert_known": entry.cert_der is not None or entry.device_id in seen,
    }


def _seen_json(entry: SeenDevice) -> dict[str, object]:
    return {
        "id": entry.device_id,
        "name": entry.name,
        "address": entry.address,
        "role": entry.role,
        "last_seen": entry.last_seen.isoformat(),
    }


def _print_plain(
    own: str, rows: list[AllowedDevice], seen: dict[str, SeenDevice], nearby: list[SeenDevice]
) -> None:
    click.echo(f"Device ID: {format_device_id(own)}")
    click.echo("")
    click.echo("Allowed devices:")
    if not rows:
        click.echo("  (none)")
    for a in rows:
        note = "" if a.cert_der is not None or a.device_id in seen else "  (not seen yet)"
        name = f"  {a.name}" if a.name else ""
        click.echo(f"  {format_device_id(a.device_id)}{name}  added {_when(a.added)}{note}")
    click.echo("")
    click.echo("Nearby devices (not allowed):")
    if not nearby:
        click.echo("  (none)")
    for s in nearby:
        name = f"  {s.name}" if s.name else ""
        click.echo(
            f"  {format_device_id(s.device_id)}  {s.address}  {s.role}"
            f"  last seen {_when(s.last_seen)}{name}"
        )


def _print_rich(
    own: str, rows: list[AllowedDevice], seen: dict[str, SeenDevice], nearby: list[SeenDevice]
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    console.print(f"Device ID: [bold]{format_device_id(own)}[/bold]")
    allowed = Table(title="Allowed devices", title_justify="left")
    allowed.add_column("Device ID", no_wrap=True)
    for column in ("Name", "Added", "Certificate"):
        allowed.add_column(column, no_wrap=column != "Name")
    for a in rows:
        known = a.cert_der is not None or a.device_id in seen
        allowed.add_row(
            format_device_id(a.device_id),
            Text(a.name or ""),
            _when(a.added),
            "known" if known else "not seen yet",
        )
    console.print(allowed if rows else "Allowed devices: (none)")
    near = Table(title="Nearby devices (not allowed)", title_justify="left")
    near.add_column("Device ID", no_wrap=True)
    for column in ("Name", "Address", "Role", "Last seen"):
        near.add_column(column, no_wrap=column != "Name")
    for s in nearby:
        near.add_row(
            format_device_id(s.device_id),
            Text(s.name),
            Text(s.address),
            Text(s.role),
            _when(s.last_seen),
        )
    console.print(near if nearby else "Nearby devices (not allowed): (none)")
    if nearby:
        console.print("Pair with one: ollana pair (on the server), or ollana device allow ID")
