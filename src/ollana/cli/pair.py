"""`ollana pair`: open a pairing window on this server, or pair with one by its code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
import click

from ollana.admin.api import TOKEN_HEADER, page_token
from ollana.cli import options
from ollana.cli.options import home_options
from ollana.config import HostPort, Settings, parse_host_port
from ollana.discovery import Announce, DiscoveryService, Message, TargetSet
from ollana.identity import (
    DeviceStore,
    IdentityError,
    StoreError,
    TLSManager,
    format_device_id,
    load_identity,
)
from ollana.identity.pairhttp import pair_with
from ollana.identity.pairing import CODE_DIGITS, PairedPeer, PairingError, normalize_code

__all__ = ["pair"]

POLL = 0.5  # how often `ollana pair` asks its server whether the window was used
FIND_TIMEOUT = 10.0  # how long `ollana pair CODE` looks for the device offering a window
QUERY_GAP = 0.5
OTHERS_WAIT = 0.25  # after the first offer: time for any other window's answer to arrive


@click.command()
@click.argument("code", required=False)
@click.option("--server", "server", metavar="HOST:PORT",
              help="With CODE: the server offering the window (no discovery needed).")  # fmt: skip
@click.option("--admin", "admin", metavar="HOST:PORT",
              help="Without CODE: the running server's admin API (admin_listen).")  # fmt: skip
@home_options
@click.option("--name", help="This device's name for people (default: the name setting).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=FIND_TIMEOUT,
              show_default=True, help="With CODE: seconds to look for the server.")  # fmt: skip
def pair(
    code: str | None, server: str | None, admin: str | None, name: str | None, timeout: float
) -> None:
    """Pair two devices with a short code, no IDs typed.

    On a machine running `ollana serve` as a server, `ollana pair` opens a pairing window
    (2 minutes, one device) and shows a code; on the other machine, `ollana pair CODE`
    finds that server on the LAN (or at --server) and both allow each other.
    """
    chosen = options.settings({"name": name})
    if code is None:
        asyncio.run(_host(chosen, admin))
    else:
        try:
            typed = normalize_code(code)
        except PairingError as exc:
            raise click.ClickException(str(exc)) from None
        _guest(chosen, typed, server, timeout)


# --- the host: the running server opens the window -------------------------------------


async def _host(settings: Settings, admin: str | None) -> None:
    address = _admin_address(settings, admin)
    root = f"http://{HostPort(address.connect_host, address.port)}"
    base = f"{root}/pairing"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        token = await _token(session, root, address)
        opened = await _call(session, "POST", base, address, token)
        code = str(opened["code"])
        shown = f"{code[: CODE_DIGITS // 2]} {code[CODE_DIGITS // 2 :]}"
        click.echo(f"Pairing code: {shown}  (valid for {opened['expires_in']:.0f} s, one device)")
        click.echo("On the other machine, run:")
        click.echo(f"  ollana pair {code}")
        port = opened["port"]
        click.echo(f"(across routed networks: ollana pair {code} --server THIS-HOST:{port})")
        while True:
            await asyncio.sleep(POLL)
            state = await _call(session, "GET", base, address)
            if state.get("code") != code:
                raise click.ClickException("another pairing window was opened meanwhile")
            if state["state"] == "paired":
                peer = state["peer"]
                _paired(peer.get("name") or "", str(peer["device_id"]))
                return
            if state["state"] != "open":
                why = "too many wrong attempts" if state["state"] == "closed" else "time is up"
                raise click.ClickException(f"the pairing window closed ({why}); nobody paired")


def _admin_address(settings: Settings, given: str | None) -> HostPort:
    if given:
        try:
            return parse_host_port(given)
        except ValueError as exc:
            raise click.ClickException(f"--admin: {exc}") from None
    if settings.admin_listen is None:
        raise click.ClickException(
            "the admin API is off in the settings (admin_listen = off); pass --admin HOST:PORT"
        )
    return settings.admin_listen


async def _token(session: aiohttp.ClientSession, root: str, address: HostPort) -> str:
    """The running process's token for state-changing calls, from its dashboard page."""
    try:
        async with session.get(root + "/") as response:
            page = (await response.content.read(1 << 20)).decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise click.ClickException(
            f"no running ollana answers at {address} ({exc or type(exc).__name__}):"
            " start `ollana serve` on this machine first"
        ) from None
    token = page_token(page)
    if token is None:
        raise click.ClickException(f"what answers at {address} is not an ollana admin API")
    return token


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, address: HostPort, token: str = ""
) -> dict[str, Any]:
    headers = {TOKEN_HEADER: token} if token else {}
    payload: dict[str, object] | None = {} if method == "POST" else None
    try:
        async with session.request(method, url, json=payload, headers=headers) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise click.ClickException(
            f"no running ollana answers at {address} ({exc or type(exc).__name__}):"
            " start `ollana serve` on this machine first"
        ) from None
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise click.ClickException(f"what answers at {address} is not an ollana admin API")
    if status != 200:
        raise click.ClickException(str(document.get("error") or f"HTTP {status}"))
    return document


# --- the guest: find the window and pair ----------------------------------------------


def _guest(settings: Settings, code: str, server: str | None, timeout: float) -> None:
    try:
        identity = load_identity(settings.home)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from None
    store = DeviceStore(settings.home)
    tls = TLSManager(identity, store)
    started = time.monotonic()
    try:
        host = asyncio.run(_find_and_pair(settings, tls, code, server, timeout))
    except PairingError as exc:
        raise click.ClickException(f"pairing failed: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot look for the server: {exc}") from None
    try:
        store.allow(host.device_id, name=host.name or None, cert_der=host.cert_der)
    except (StoreError, ValueError) as exc:
        raise click.ClickException(f"paired, but cannot write the allow list: {exc}") from None
    _paired(host.name, host.device_id, seconds=time.monotonic() - started)


async def _find_and_pair(
    settings: Settings, tls: TLSManager, code: str, server: str | None, timeout: float
) -> PairedPeer:
    if server is not None:
        try:
            address = parse_host_port(server, 11435)
        except ValueError as exc:
            raise PairingError(f"--server: {exc}") from None
    else:
        address = await _find(settings, tls, timeout)
    url = f"https://{HostPort(address.connect_host, address.port)}"
    return await pair_with(tls, url, code, settings.name)


async def _find(settings: Settings, tls: TLSManager, timeout: float) -> HostPort:
    """The one server on the LAN that announces an open pairing window."""
    offers: dict[str, tuple[HostPort, Announce]] = {}
    found = asyncio.Event()

    def heard(message: Message, source: tuple[str, int]) -> None:
        if isinstance(message, Announce) and message.pairing:
            offers.setdefault(message.device, (HostPort(source[0], message.port), message))
            found.set()

    targets = TargetSet.from_settings(settings.discovery_targets, settings.discovery_port)
    service = DiscoveryService(
        role="client", on_message=heard, device_id=tls.identity.device_id,
        cert_der=tls.identity.cert_der, name=settings.name, discovery_port=None,
        targets=targets, timings=settings.timings, limits=settings.limits,
        needs_servers=lambda: False,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    async with service:
        while time.monotonic() < deadline and not found.is_set():
            service.query()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(found.wait(), QUERY_GAP)
        if found.is_set():
            await asyncio.sleep(OTHERS_WAIT)
    if not offers:
        raise PairingError(
            f"no server on the LAN offers a pairing window (looked for {timeout:g} s):"
            " run `ollana pair` on it first, or give --server HOST:PORT"
        )
    if len(offers) > 1:
        listed = ", ".join(f"{a.name or '?'} at {addr}" for addr, a in offers.values())
        raise PairingError(f"several servers offer a pairing window ({listed}): use --server")
    return next(iter(offers.values()))[0]


def _paired(name: str, device_id: str, seconds: float | None = None) -> None:
    label = f"{name} " if name else ""
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    click.echo(f"Paired{took} with {label}— Device ID {format_device_id(device_id)}")
    click.echo("Both devices now allow each other.")
