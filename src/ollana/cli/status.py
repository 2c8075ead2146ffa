"""`ollana status`: the running ollana's state, from its admin API."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import aiohttp
import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ollana.cli.options import home_options, settings
from ollana.config import DEFAULT_ADMIN_PORT, ConfigError, HostPort, parse_host_port
from ollana.identity import format_device_id, short_device_id

__all__ = ["status"]

FETCH_TIMEOUT: Final = 3.0
STATE_STYLES: Final = {"healthy": "green", "suspect": "yellow", "down": "red"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--admin", "admin", metavar="HOST:PORT",
              help="The admin API to ask  [default: the admin_listen setting]")  # fmt: skip
@home_options
def status(as_json: bool, admin: str | None) -> None:
    """Show the running ollana: mode, servers, models, counters."""
    address = _admin_address(admin)
    document = asyncio.run(_fetch(address))
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        _print(document, Console(highlight=False, soft_wrap=False))


def _admin_address(given: str | None) -> HostPort:
    try:
        if given is not None:
            address = parse_host_port(given, DEFAULT_ADMIN_PORT)
        else:
            found = settings({}).admin_listen
            if found is None:
                raise click.ClickException(
                    "the admin API is off in the settings (admin_listen = off);"
                    " pass --admin HOST:PORT to ask one elsewhere"
                )
            address = found
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    return HostPort(address.connect_host, address.port)


async def _fetch(address: HostPort) -> dict[str, Any]:
    url = f"http://{address}/status"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT)) as session,
            session.get(url, headers={"Accept": "application/json"}) as response,
        ):
            code = response.status
            raw = await response.read()
    except aiohttp.ClientConnectorError:
        raise click.ClickException(
            f"no ollana is running at {address} (start one with `ollana serve`)"
        ) from None
    except TimeoutError:
        raise click.ClickException(
            f"the ollana at {address} did not answer within {FETCH_TIMEOUT:g} s"
        ) from None
    except aiohttp.ClientError as exc:
        raise click.ClickException(f"cannot read the status from {address}: {exc}") from None
    try:
        document = json.loads(raw) if code == 200 else None
    except ValueError:
        document = None
    if not isinstance(document, dict) or "schema" not in document:
        raise click.ClickException(
            f"what answers at {address} is not an ollana admin API (HTTP {code})"
        )
    return document


# --- tables -------------------------------------------------------------------------------


def _print(doc: Mapping[str, Any], console: Console) -> None:
    device = doc.get("device_id")
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    header.add_row("ollana", _text(f"{doc.get('version', '?')} · {doc.get('mode', '?')} mode"))
    header.add_row("device", _text(format_device_id(device) if device else "-"))
    if doc.get("name"):
        header.add_row("name", _text(doc.get("name")))
    header.add_row("uptime", _text(_duration(doc.get("uptime_seconds"))))
    flags = [name for name in ("open", "read_only") if doc.get(name)]
    if not doc.get("discovery", True):
        flags.append("no discovery")
    listen = str(doc.get("listen", "?")) + (f"  ({', '.join(flags)})" if flags else "")
    header.add_row("listen", _text(listen))
    ollama = doc.get("ollama")
    if isinstance(ollama, Mapping):
        up = bool(ollama.get("up"))
        line = Text(*(("up", "green") if up else ("down", "red")))
        line.append(f" · {ollama.get('version') or '?'} · {ollama.get('url', '?')}")
        header.add_row("ollama", _clean_text(line))
    console.print(header)
    servers = [s for s in doc.get("servers") or () if isinstance(s, Mapping)]
    if doc.get("mode") == "client" or servers:
        console.print()
        console.print(_servers_table(servers) if servers else Text("No server is known yet."))
        for s in servers:
            if s.get("problem"):
                console.print(_text(f"{s.get('address', '?')}: {s['problem']}"), style="yellow")
        if any(s.get("models") for s in servers):
            console.print()
            console.print(_models_table(servers))
    nearby = [d for d in doc.get("nearby") or () if isinstance(d, Mapping)]
    if nearby:
        console.print()
        console.print(_nearby_table(nearby))
    sleeping = [d for d in doc.get("sleeping") or () if isinstance(d, Mapping)]
    if sleeping:
        console.print()
        console.print(_sleeping_table(sleeping))
    counters = doc.get("counters")
    if isinstance(counters, Mapping):
        console.print()
        console.print(Text("Counters", style="bold"))
        console.print(_counters_table(counters))


def _servers_table(servers: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Servers")
    for name in ("server", "device", "name", "state", "latency", "in flight", "models", "seen"):
        numeric = name in ("latency", "in flight", "models", "seen")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for s in servers:
        state = str(s.get("state", "?"))
        device = s.get("device_id")
        latency = s.get("latency_ms")
        seen = s.get("last_seen_seconds_ago")
        table.add_row(
            _text(s.get("address", "?")),
            _text(short_device_id(device) if device else "-"),
            _text(s.get("name") or ""),
            Text(state, style=STATE_STYLES.get(state, "")),
            _text("-" if not isinstance(latency, int | float) else f"{latency:.1f} ms"),
            _text(s.get("inflight", 0)),
            _text(len(s.get("models") or ())),
            _text("-" if seen is None else f"{_duration(seen)} ago"),
        )
    return table


def _models_table(servers: Sequence[Mapping[str, Any]]) -> Table:
    where: dict[str, list[Text]] = {}
    for s in servers:
        loaded = set(s.get("loaded") or ())
        for model in sorted(set(s.get("models") or ()) | loaded):
            mark = _text(s.get("address", "?"))
            if model in loaded:
                mark.stylize("bold")
                mark.append(" (loaded)")
            where.setdefault(str(model), []).append(mark)
    table = _table("Models")
    table.add_column("model")
    table.add_column("servers")
    for model in sorted(where):
        table.add_row(_text(model), Text(", ").join(where[model]))
    return table


def _nearby_table(nearby: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Nearby devices, not allowed")
    table.caption = "pair one with: ollana pair (on a server), then ollana pair CODE"
    table.caption_justify = "left"
    for name in ("ID", "name", "address", "role", "seen"):
        table.add_column(name, justify="right" if name == "seen" else "left", no_wrap=True)
    now = datetime.datetime.now(datetime.UTC)
    for d in nearby:
        device = str(d.get("device_id", ""))
        table.add_row(
            _text(short_device_id(device)),
            _text(d.get("name") or ""),
            _text(d.get("address", "?")),
            _text(d.get("role", "?")),
            _text(_ago(d.get("last_seen"), now)),
        )
    return table


def _sleeping_table(sleeping: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Sleeping servers, remembered")
    table.caption = "wake one with: ollana wake NAME-OR-ID"
    table.caption_justify = "left"
    for name in ("name", "ID", "address", "MAC", "models", "seen", "woken"):
        numeric = name in ("models", "seen", "woken")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    now = datetime.datetime.now(datetime.UTC)
    for d in sleeping:
        woken = d.get("last_woken")
        table.add_row(
            _text(d.get("name") or "-"),
            _text(short_device_id(str(d.get("device_id", "")))),
            _text(d.get("address") or "-"),
            _text(d.get("mac") or "unknown"),
            _text(len(d.get("models") or ())),
            _text(_ago(d.get("last_seen"), now)),
            _text("never" if woken is None else _ago(woken, now)),
        )
    return table


def _counters_table(counters: Mapping[str, Any]) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    rest = dict(counters)
    by_status = rest.pop("requests_by_status", None)
    split = _pairs(by_status, skip_zero=True)
    table.add_row(
        "requests", _text(f"{rest.pop('requests', 0)}" + (f" ({split})" if split else ""))
    )
    table.add_row("in flight", _text(rest.pop("inflight", 0)))
    table.add_row(
        "retries", _text(f"{rest.pop('retries', 0)}, failovers {rest.pop('failovers', 0)}")
    )
    for key, label in (("refusals", "refused"), ("tls_refused", "TLS refused")):
        value = rest.pop(key, None)
        if value:
            table.add_row(label, _text(_pairs(value)))
    discovery = rest.pop("discovery", None)
    if isinstance(discovery, Mapping):
        line = f"sent {discovery.get('sent', 0)}, received {discovery.get('received', 0)}"
        dropped = _pairs(discovery.get("dropped"))
        table.add_row("discovery", _text(line + (f", dropped {dropped}" if dropped else "")))
    held = rest.pop("connections_by_device", None)
    if isinstance(held, Mapping) and held:
        # Device IDs as their first 12 digits, as everywhere else in ollana's output.
        line = ", ".join(
            f"{_short(str(who))} {n.get('open', 0)} ({n.get('idle', 0)} idle)"
            for who, n in held.items()
            if isinstance(n, Mapping)
        )
        table.add_row("connections by device", _text(line))
    for key, value in rest.items():
        shown = _pairs(value) if isinstance(value, Mapping) else value
        table.add_row(_text(str(key).replace("_", " ")), _text(shown))
    return table


def _table(title: str) -> Table:
    return Table(
        title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
        show_edge=False, pad_edge=False, collapse_padding=True,
    )  # fmt: skip


def _pairs(value: object, *, skip_zero: bool = False) -> str:
    if not isinstance(value, Mapping):
        return ""
    return ", ".join(f"{k} {v}" for k, v in value.items() if v or not skip_zero)


def _ago(iso: object, now: datetime.datetime) -> str:
    try:
        moment = datetime.datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return "?"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return f"{_duration(max(0.0, (now - moment).total_seconds()))} ago"


def _short(holder: str) -> str:
    """A device ID as its first 12 digits; "address …" as it is."""
    return holder[:12] if len(holder) == 64 and not holder.startswith("address") else holder


def _text(value: object) -> Text:
    """A table cell: never read as rich markup, control characters shown as '?'."""
    return Text("".join(c if c.isprintable() else "?" for c in str(value)))


def _clean_text(text: Text) -> Text:
    text.plain = "".join(c if c.isprintable() else "?" for c in text.plain)
    return text


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
