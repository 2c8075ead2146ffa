"""The admin API's state-changing calls: POST /pairing opens a window, POST /nearby/dismiss
forgets a nearby device; only with the dashboard page's token, never from another origin."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ollana.admin import create_admin_app
from ollana.admin.api import TOKEN_HEADER, page_token
from ollana.identity import DeviceStore, SeenDevice, load_identity
from ollana.identity.pairhttp import PairingDesk
from ollana.metrics import Metrics
from tests.support.admin_fakes import FakeSource

Client = TestClient[web.Request, web.Application]
NEAR = "cd" * 32


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[PairingDesk]:
    identity = load_identity(tmp_path)
    async with PairingDesk(identity, DeviceStore(tmp_path), "gpu box") as desk:
        yield desk


@pytest.fixture
def source() -> FakeSource:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    return FakeSource(mode="server", seen=(SeenDevice(NEAR, "10.0.0.9", "client", when, b""),))


@pytest.fixture
async def client(desk: PairingDesk, source: FakeSource) -> AsyncIterator[Client]:
    app = create_admin_app(source, Metrics(), pairing=desk)
    async with TestClient(TestServer(app)) as client:
        yield client


async def token_of(client: Client) -> dict[str, str]:
    """The headers the dashboard sends: its page's token."""
    token = page_token(await (await client.get("/")).text())
    assert token is not None and len(token) >= 40
    return {TOKEN_HEADER: token, "Content-Type": "application/json"}


async def test_post_opens_a_window_and_get_follows_it(client: Client) -> None:
    headers = await token_of(client)
    assert (await (await client.get("/pairing")).json())["state"] == "none"
    response = await client.post("/pairing", data=b"{}", headers=headers)
    assert response.status == 200
    opened = await response.json()
    assert opened["state"] == "open" and len(opened["code"]) == 6
    assert opened["name"] == "gpu box" and 110 < opened["expires_in"] <= 120
    state = await (await client.get("/pairing")).json()
    assert (state["state"], state["code"], state["peer"]) == ("open", opened["code"], None)
    # A new window closes the old one, with a code never offered before.
    again = await (await client.post("/pairing", data=b"{}", headers=headers)).json()
    assert again["code"] != opened["code"]


async def test_dismiss_forgets_a_nearby_device(client: Client, source: FakeSource) -> None:
    headers = await token_of(client)
    assert [d["device_id"] for d in (await (await client.get("/status")).json())["nearby"]]
    response = await client.post("/nearby/dismiss", json={"device_id": NEAR}, headers=headers)
    assert (response.status, await response.json()) == (
        200,
        {"dismissed": NEAR, "was_listed": True},
    )
    assert (await (await client.get("/status")).json())["nearby"] == []
    bad = await client.post("/nearby/dismiss", json={"device_id": "x"}, headers=headers)
    assert bad.status == 400


@pytest.mark.parametrize(
    ("path", "forged", "status"),
    [
        ("/pairing", {TOKEN_HEADER: None}, 403),  # what any page can send: no token
        ("/pairing", {TOKEN_HEADER: "a" * 43}, 403),
        ("/pairing", {"Origin": "https://evil.example"}, 403),
        ("/pairing", {"Host": "evil.example"}, 403),  # DNS rebinding
        ("/pairing", {"Content-Type": "text/plain"}, 415),
        ("/nearby/dismiss", {TOKEN_HEADER: None}, 403),
        ("/nearby/dismiss", {"Origin": "null"}, 403),
    ],
)
async def test_forged_requests_change_nothing(
    client: Client,
    desk: PairingDesk,
    source: FakeSource,
    path: str,
    forged: dict[str, str | None],
    status: int,
) -> None:
    headers = {**await token_of(client), **forged}
    sent = {k: v for k, v in headers.items() if v is not None}
    response = await client.post(path, data=f'{{"device_id": "{NEAR}"}}', headers=sent)
    assert response.status == status
    assert "error" in await response.json()
    assert "Access-Control-Allow-Origin" not in response.headers
    assert desk.window is None and source.dismissed == set()
    # GET is never a way to change anything.
    assert (await client.get(path)).status in {200, 405}
    assert desk.window is None and source.dismissed == set()


async def test_each_process_has_its_own_token(source: FakeSource) -> None:
    tokens = set()
    for _ in range(2):
        async with TestClient(TestServer(create_admin_app(source, Metrics()))) as client:
            tokens.add((await token_of(client))[TOKEN_HEADER])
    assert len(tokens) == 2


async def test_client_mode_has_no_window_to_open() -> None:
    app = create_admin_app(FakeSource(mode="client"), Metrics())
    async with TestClient(TestServer(app)) as client:
        headers = await token_of(client)
        response = await client.post("/pairing", data=b"{}", headers=headers)
        assert response.status == 409
        assert "ollana pair CODE" in (await response.json())["error"]
