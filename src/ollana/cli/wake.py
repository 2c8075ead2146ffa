"""`ollana wake [DEVICE]`: wake a remembered server and wait until it answers discovery."""

from __future__ import annotations

import asyncio
import time

import click

from ollana.cli.options import home_options
from ollana.cli.options import settings as load_settings
from ollana.config import HostPort, Settings, Timings, parse_host_port
from ollana.discovery import Announce, DiscoveryService, Message, TargetSet
from ollana.wake import (
    WAKE_GAP,
    MemoryFileError,
    RememberedServer,
    ServerMemory,
    send_magic_packet,
)

__all__ = ["wake"]

PROGRESS_EVERY = 1.0  # seconds between updates of the progress line
QUERY_INTERVAL = 1.0  # discovery queries while waiting
RESEND_INTERVAL = 15.0  # the wake-up packet again while waiting (one may be lost)


@click.command()
@click.argument("device", required=False)
@click.option("--timeout", metavar="SECONDS", help="How long to wait for it (--wake-timeout, 90).")
@click.option("--no-wait", is_flag=True, help="Send the wake-up packet and return.")
@home_options
def wake(device: str | None, timeout: str | None, no_wait: bool) -> None:
    """Wake a sleeping server (Wake-on-LAN) and wait until it answers.

    DEVICE is a remembered server's name or ID prefix; without it, the only one.
    """
    settings = load_settings({"wake_timeout": timeout})
    memory = ServerMemory.in_home(settings.home)
    try:
        memory.load()
    except MemoryFileError as exc:
        raise click.ClickException(str(exc)) from None
    server = _choose(memory, device)
    if not server.mac:
        raise click.ClickException(
            f"no MAC address is known for {server.label}: it has not announced one; give it "
            f'in config.toml: servers = ["{_last(server) or "HOST:PORT"} mac=aa:bb:cc:dd:ee:ff"]'
        )
    try:
        if no_wait:
            sent = asyncio.run(_send(server, memory))
            click.echo(f"wake-up packet for {server.label} sent to {', '.join(sent) or 'nowhere'}")
            return
        found = asyncio.run(_wake_and_wait(server, memory, settings))
    except OSError as exc:
        raise click.ClickException(f"cannot send: {exc}") from None
    if found is None:
        raise click.ClickException(
            f"{server.label} was woken and did not answer within {settings.wake_timeout:g} s"
        )


def _choose(memory: ServerMemory, device: str | None) -> RememberedServer:
    if device is not None:
        try:
            return memory.find(device)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
    servers = list(memory)
    if len(servers) == 1:
        return servers[0]
    if not servers:
        raise click.ClickException(
            f"no server is remembered in {memory.path.parent}: a client remembers the servers "
            "it has used"
        )
    names = ", ".join(s.label for s in servers)
    raise click.ClickException(f"name one of the remembered servers: {names}")


def _last(server: RememberedServer) -> str | None:
    return server.addresses[0] if server.addresses else None


def _last_host(server: RememberedServer) -> str | None:
    last = _last(server)
    try:
        return parse_host_port(last).host if last else None
    except ValueError:
        return None


async def _send(server: RememberedServer, memory: ServerMemory) -> tuple[str, ...]:
    sent = await asyncio.to_thread(send_magic_packet, server.mac, _last_host(server))
    memory.woken(server.device_id)
    try:
        await asyncio.to_thread(memory.save)
    except MemoryFileError as exc:
        click.echo(f"warning: {exc}", err=True)
    return sent


async def _wake_and_wait(
    server: RememberedServer, memory: ServerMemory, settings: Settings
) -> str | None:
    """Send the packet (again every RESEND_INTERVAL), query until it announces; its address."""
    up: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def heard(message: Message, source: tuple[str, int]) -> None:
        if isinstance(message, Announce) and message.device == server.device_id and not up.done():
            up.set_result(str(HostPort(source[0], message.port)))

    port = settings.discovery_port
    host = _last_host(server)
    configured = settings.discovery_targets + ((f"{host}:{port}",) if host else ())
    try:
        targets = TargetSet.from_settings(configured, port)
    except ValueError:
        targets = TargetSet.from_settings(settings.discovery_targets, port)
    started = time.monotonic()
    deadline = started + settings.wake_timeout
    # No discovery port: answers come back to this process's own port, beside a running
    # ollana that holds 11436.
    async with DiscoveryService(
        role="client", on_message=heard, discovery_port=None, targets=targets,
        timings=Timings(query_interval=QUERY_INTERVAL),
    ):  # fmt: skip
        sent_at = -RESEND_INTERVAL
        while not up.done():
            now = time.monotonic()
            if now >= deadline:
                click.echo("", err=True)
                return None
            if now - sent_at >= max(RESEND_INTERVAL, WAKE_GAP):
                sent = await _send(server, memory)
                sent_at = now
                where = ", ".join(sent) or "nowhere (no route)"
                click.echo(f"wake-up packet for {server.label} ({server.mac}) sent to {where}")
            click.echo(f"\rwaiting for {server.label}: {now - started:.0f} s ", nl=False, err=True)
            await asyncio.wait({up}, timeout=min(PROGRESS_EVERY, deadline - now))
    address = up.result()
    took = time.monotonic() - started
    click.echo("", err=True)
    click.echo(f"{server.label} is up at {address} after {took:.1f} s")
    return address
