"""The admin API's pairing calls: POST /pairing opens a window, GET /pairing tells its state;
requests a web page could make are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ollana.admin import create_admin_app
from ollana.identity import DeviceStore, load_identity
from ollana.identity.pairhttp import PairingDesk
from ollana.metrics import Metrics
from tests.support.admin_fakes import FakeSource

Client = TestClient[web.Request, web.Application]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[PairingDesk]:
    identity = load_identity(tmp_path)
    async with PairingDesk(identity, DeviceStore(tmp_path), "gpu box") as desk:
        yield desk


@pytest.fixture
async def client(desk: PairingDesk) -> AsyncIterator[Client]:
    app = create_admin_app(FakeSource(mode="server"), Metrics(), pairing=desk)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_post_opens_a_window_and_get_follows_it(client: Client, desk: PairingDesk) -> None:
    assert (await (await client.get("/pairing")).json())["state"] == "none"
    response = await client.post("/pairing", json={})
    assert response.status == 200
    opened = await response.json()
    assert opened["state"] == "open" and len(opened["code"]) == 6
    assert opened["name"] == "gpu box" and 110 < opened["expires_in"] <= 120
    state = await (await client.get("/pairing")).json()
    assert (state["state"], state["code"], state["peer"]) == ("open", opened["code"], None)
    # A new window closes the old one, with a code never offered before.
    again = await (await client.post("/pairing", json={})).json()
    assert again["code"] != opened["code"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "text/plain"}, 415),  # a form or fetch() a page sends without preflight
        ({**JSON, "Origin": "https://evil.example"}, 403),
        ({**JSON, "Host": "evil.example"}, 403),  # DNS rebinding
    ],
)
async def test_what_a_web_page_could_send_is_refused(
    client: Client, desk: PairingDesk, headers: dict[str, str], status: int
) -> None:
    response = await client.post("/pairing", data=b"{}", headers=headers)
    assert response.status == status
    assert "error" in await response.json()
    assert desk.window is None
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_client_mode_has_no_window_to_open() -> None:
    app = create_admin_app(FakeSource(mode="client"), Metrics())
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/pairing", json={})
        assert response.status == 409
        assert "ollana pair CODE" in (await response.json())["error"]
