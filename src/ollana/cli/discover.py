"""`ollana discover`: the servers that answer on the LAN now."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import click

from ollana.cli.options import home_options
from ollana.cli.options import settings as load_settings
from ollana.config import Timings
from ollana.discovery import Announce, DiscoveryService, Goodbye, Message, TargetSet
from ollana.discovery.targets import resolve
from ollana.identity import DeviceStore, StoreError, format_device_id

__all__ = ["discover"]

QUERIES_PER_TIMEOUT = 3  # queries repeated within --timeout, for datagrams lost on the way


@dataclass(frozen=True, slots=True)
class Found:
    """One server that answered, reached at the answer's source address."""

    address: str
    announce: Announce
    paired: bool | None

    def as_json(self) -> dict[str, object]:
        """The server as a JSON object."""
        a = self.announce
        return {
            "address": self.address, "port": a.port, "device": a.device, "role": a.role,
            "ollama": a.ollama, "models_digest": a.models, "priority": a.priority,
            "instance": a.instance, "paired": self.paired,
        }  # fmt: skip


@click.command()
@click.option("--timeout", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              metavar="SECONDS", help="How long to listen for answers.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the servers as JSON.")
@click.option("--port", type=click.IntRange(1, 65535), metavar="PORT",
              help="The UDP discovery port to query (11436).")  # fmt: skip
@click.option("--target", "targets", multiple=True, metavar="ADDR[:PORT]",
              help="Also query this address (unicast or broadcast); repeatable.")  # fmt: skip
@home_options
def discover(timeout: float, as_json: bool, port: int | None, targets: tuple[str, ...]) -> None:
    """List the ollana servers that answer on the LAN now."""
    settings = load_settings({"discovery_port": port})
    try:
        target_set = TargetSet.from_settings(
            settings.discovery_targets + targets, settings.discovery_port
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _check_resolves(target_set)
    try:
        answers, sent = asyncio.run(_collect(target_set, timeout))
    except OSError as exc:
        raise click.ClickException(f"cannot open a UDP socket: {exc}") from None
    asked = ", ".join(str(t) for t in target_set())
    if not sent:
        raise click.ClickException(f"could not send a query to any of {asked}")
    paired = _paired_ids(settings.home)
    found = [
        Found(address, msg, None if paired is None else msg.device in paired)
        for address, msg in answers
    ]
    if as_json:
        click.echo(json.dumps([f.as_json() for f in found], indent=2))
    elif found:
        _print_table(found)
    else:
        click.echo(f"No ollana server answered within {timeout:g} s (asked {asked}).", err=True)


async def _collect(targets: TargetSet, timeout: float) -> tuple[list[tuple[str, Announce]], int]:
    """(source address, announce) of each server heard; and how many queries went out."""
    # A server is heard once per address it can be reached at (a loopback target, a
    # broadcast on each interface): one row per server process, at its first address.
    answers: dict[str, tuple[str, Announce]] = {}

    def on_message(msg: Message, source: tuple[str, int]) -> None:
        key = msg.instance or msg.device
        if isinstance(msg, Announce):
            address = answers[key][0] if key in answers else source[0]
            answers[key] = (address, msg)
        elif isinstance(msg, Goodbye):
            answers.pop(key, None)

    # No discovery port: answers come back to this process's own ephemeral port, so this
    # works beside a running ollana that holds 11436.
    async with DiscoveryService(
        role="client", on_message=on_message, discovery_port=None, targets=targets,
        timings=Timings(query_interval=timeout / QUERIES_PER_TIMEOUT),
    ) as service:  # fmt: skip
        await asyncio.sleep(timeout)
        return sorted(answers.values(), key=lambda found: found[0]), service.stats().sent


def _check_resolves(targets: TargetSet) -> None:
    """A target that names no address is a usage error, not a query sent nowhere."""
    _, failed = asyncio.run(resolve(targets.configured))
    if failed:
        target, exc = failed[0]
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise click.ClickException(f"discovery target {target.host} does not resolve: {reason}")


def _paired_ids(home: Path) -> frozenset[str] | None:
    """The allowed device IDs of this device's home, or None where they cannot be read."""
    try:
        return frozenset(DeviceStore(home).allowed())
    except StoreError as exc:
        click.echo(f"warning: paired status unknown: {exc}", err=True)
        return None


def _print_table(found: list[Found]) -> None:
    paired = {True: "yes", False: "no", None: "?"}
    rows = [("ADDRESS", "PORT", "ROLE", "OLLAMA", "PAIRED", "DEVICE")]
    rows += [
        (f.address, str(f.announce.port), f.announce.role, f.announce.ollama or "-",
         paired[f.paired], format_device_id(f.announce.device))
        for f in found
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        click.echo("  ".join([*cells, row[-1]]))
