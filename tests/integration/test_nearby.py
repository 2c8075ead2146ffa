"""The nearby-devices list as people see it (`ollana device list`, /status): devices heard
lately, a client by its host alone, and never this device itself, not even when a second
process runs with the same home; allowing oneself is refused."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result

from ollana.cli import main
from ollana.config import load_settings
from ollana.discovery import Query
from ollana.identity import (
    DeviceStore,
    SeenDevice,
    format_device_id,
    load_identity,
    short_device_id,
)
from ollana.identity.devicefile import render_seen
from ollana.identity.nearby import NEARBY_MAX_AGE
from ollana.modes import ClientMode, ServerMode
from tests.integration.cluster_fixtures import cluster
from tests.support.certs import make_cert
from tests.support.waiting import until, until_read

OWN_ID_REFUSED = "that is this device's own ID"


def device(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["device", *args], env={"OLLANA_HOME": str(home)})


async def status(session: aiohttp.ClientSession, mode: ClientMode | ServerMode) -> Any:
    assert mode.admin is not None
    async with session.get(mode.admin.url + "status") as response:
        assert response.status == 200
        return await response.json()


def nearby_lines(output: str) -> list[str]:
    """The lines of `ollana device list` under its nearby heading."""
    lines = output.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("Nearby devices"))
    return [line.strip() for line in lines[start + 1 :]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="loopback broadcast (Linux)")
async def test_a_second_process_with_this_home_is_no_stranger_and_clients_show_no_port(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as session:
        emulator = await c.emulator("llama3.2:latest")
        server = await c.server("server", emulator, admin_listen="127.0.0.1:0")
        own = server.device_id
        # A client run with the server's data directory: the same identity, queries and all.
        c.homes["twin"] = c.homes["server"]
        await c.client("twin")
        await until(lambda: c.observer.of(Query, own), "the twin's query")
        c.homes["stranger"] = tmp_path / "stranger"  # not paired with anyone
        stranger = (await c.client("stranger")).device_id

        # The stranger's query came after the twin's: once it is listed, both were heard.
        doc = await until_read(
            lambda: status(session, server), lambda d: d["nearby"], "the stranger listed"
        )
        assert [(n["device_id"], n["address"], n["role"]) for n in doc["nearby"]] == [
            (stranger, "127.0.0.1", "client")
        ]
        assert doc["device_id"] == own

        listed = device(c.homes["server"], "list")
        assert listed.exit_code == 0, listed.output
        assert listed.stdout.count(format_device_id(own)) == 1  # as "Device ID:" alone
        shown = nearby_lines(listed.stdout)
        assert shown[0].split()[:3] == [format_device_id(stranger), "127.0.0.1", "client"]
        document = json.loads(device(c.homes["server"], "list", "--json").stdout)
        assert [(d["id"], d["address"]) for d in document["nearby"]] == [(stranger, "127.0.0.1")]


async def test_nearby_lists_devices_heard_lately_and_never_this_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    own = load_identity(home)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    (fresh, fresh_der), (gone, gone_der) = make_cert(), make_cert()
    # As an earlier version left it: the own ID (from a process with this home), a client
    # with a port of 0, and a device that stopped long ago.
    (home / "seen.toml").write_text(
        render_seen(
            [
                SeenDevice(own.device_id, "127.0.0.1:0", "client", now, own.cert_der),
                SeenDevice(fresh, "192.0.2.7:0", "client", now, fresh_der, name="laptop"),
                SeenDevice(gone, "192.0.2.8:11435", "server", now - NEARBY_MAX_AGE * 1.1, gone_der),
            ]
        )
    )

    document = json.loads(device(home, "list", "--json").stdout)
    assert [(d["id"], d["address"]) for d in document["nearby"]] == [(fresh, "192.0.2.7")]
    listed = device(home, "list")
    assert [line.split()[:3] for line in nearby_lines(listed.stdout)] == [
        [format_device_id(fresh), "192.0.2.7", "client"]
    ]
    assert "last 10 minutes" in listed.stdout
    assert format_device_id(gone) not in listed.stdout
    # It can still be allowed by a prefix: seen.toml remembers it longer than it is nearby.
    assert device(home, "allow", gone[:16]).exit_code == 0

    flags = {"home": str(home), "mode": "client", "discovery": False}
    flags |= {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"}
    settings = load_settings(flags, env={}, config_file=home / "config.toml")
    async with ClientMode(settings) as client, aiohttp.ClientSession() as session:
        doc = await status(session, client)
    assert [(n["device_id"], n["address"], n["name"]) for n in doc["nearby"]] == [
        (fresh, "192.0.2.7", "laptop")
    ]


def test_allowing_this_device_itself_is_refused(tmp_path: Path) -> None:
    own = load_identity(tmp_path).device_id
    for typed in (own, format_device_id(own), own[:16]):
        refused = device(tmp_path, "allow", typed)
        assert refused.exit_code == 1, typed
        assert refused.stdout == ""
        assert f"Error: {OWN_ID_REFUSED} ({format_device_id(own)})" in refused.stderr
        assert "--home" in refused.stderr  # what to do instead, for two processes
    assert DeviceStore(tmp_path).allowed() == {}
    assert "(none)" in device(tmp_path, "list").stdout


async def app_error(session: aiohttp.ClientSession, client: ClientMode) -> str:
    """The error an app gets from the client when no server can take its request."""
    body = {"model": "llama3.2", "prompt": "hi", "stream": False}
    async with session.post(f"http://127.0.0.1:{client.port}/api/generate", json=body) as r:
        assert r.status == 503
        error: str = (await r.json())["error"]
        return error


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="loopback broadcast (Linux)")
async def test_an_unpaired_server_is_offered_while_it_is_heard_and_not_after_it_left(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as session:
        c.homes |= {"server": tmp_path / "server", "client": tmp_path / "client"}  # not paired
        server = await c.server("server", await c.emulator("llama3.2:latest"))
        client = await c.client("client", admin_listen="127.0.0.1:0", wait_for_server=0.2)
        hint = f"server {short_device_id(server.device_id)} at "

        def unpaired(doc: Any) -> int:
            return int(doc["counters"]["unpaired_servers"])

        await until_read(lambda: status(session, client), unpaired, "the unpaired server")
        assert hint in await app_error(session, client)
        # Not heard for longer than the age limit (shrunk here): no longer offered.
        client.unpaired_max_age = 0.0
        assert unpaired(await status(session, client)) == 0
        assert "not paired" not in await app_error(session, client)
        client.unpaired_max_age = NEARBY_MAX_AGE.total_seconds()
        assert unpaired(await status(session, client)) == 1
        # A server that stops says goodbye: it is not offered any more.
        await server.close()
        await until_read(lambda: status(session, client), lambda d: not unpaired(d), "goodbye")
        assert "not paired" not in await app_error(session, client)


async def test_a_static_server_with_this_home_is_named_as_this_device_not_to_allow(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as session:
        c.homes |= {"server": tmp_path / "server", "twin": tmp_path / "server"}
        server = await c.server("server", await c.emulator("llama3.2:latest"), discovery=False)
        static = f"127.0.0.1:{server.port}"
        twin = await c.client("twin", discovery=False, servers=static, admin_listen="127.0.0.1:0")
        doc = await until_read(
            lambda: status(session, twin),
            lambda d: d["servers"] and d["servers"][0]["problem"],
            "the static server's problem",
        )
        problem = doc["servers"][0]["problem"]
        assert "is this device itself" in problem and "--home" in problem
        assert "device allow" not in problem
        # Its hello did not make this device a nearby stranger of the server either.
        assert DeviceStore(c.homes["server"]).seen() == {}
        assert json.loads(device(c.homes["server"], "list", "--json").stdout)["nearby"] == []
