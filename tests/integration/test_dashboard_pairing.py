"""The dashboard's actions in a real headless Chromium: pair with or dismiss a nearby device;
a page from another origin can trigger neither."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ollana.admin import AdminListener, create_admin_app
from ollana.config import HostPort
from ollana.identity import DeviceStore, SeenDevice, load_identity
from ollana.identity.pairhttp import PairingDesk
from ollana.metrics import Metrics
from tests.integration.test_dashboard import CHROMIUM, chromium
from tests.support.admin_fakes import FakeSource

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)

WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
LAPTOP, PHONE = "ab" * 32, "cd" * 32


def button(action: str, device: str) -> str:
    """The JS expression of one action button of the nearby table."""
    return (
        f"document.querySelector('#nearby button[data-action={action}][data-device=\"{device}\"]')"
    )


@pytest.fixture
def source() -> FakeSource:
    seen = (
        SeenDevice(LAPTOP, "10.0.0.9", "client", WHEN, b"", name="laptop"),
        SeenDevice(PHONE, "10.0.0.10", "client", WHEN, b"", name="phone"),
    )
    return FakeSource(mode="server", seen=seen)


@pytest.fixture
async def admin(
    tmp_path: Path, source: FakeSource
) -> AsyncIterator[tuple[AdminListener, PairingDesk]]:
    identity = load_identity(tmp_path / "home")
    async with PairingDesk(identity, DeviceStore(tmp_path / "home"), "gpu box") as desk:
        app = create_admin_app(source, Metrics(), pairing=desk)
        async with AdminListener(app, HostPort("127.0.0.1", 0)) as listener:
            yield listener, desk


async def test_the_dashboard_pairs_with_one_nearby_device_and_dismisses_another(
    tmp_path: Path, source: FakeSource, admin: tuple[AdminListener, PairingDesk]
) -> None:
    listener, desk = admin
    async with chromium(tmp_path / "profile") as page:
        await page.navigate(listener.url)
        await page.wait_for("document.querySelectorAll('#nearby tr').length === 2")
        names = await page.evaluate(
            "[...document.querySelectorAll('#nearby tr')].map(r => r.children[1].textContent)"
        )
        assert names == ["laptop", "phone"]

        await page.evaluate(button("pair", LAPTOP) + ".click()")
        await page.wait_for("!document.getElementById('pairing-section').hidden")
        assert desk.window is not None
        shown = await page.evaluate("document.getElementById('pairing-code').textContent")
        assert shown.replace(" ", "") == desk.window.code
        how = await page.evaluate("document.getElementById('pairing-how').textContent")
        assert how == f"On laptop ({LAPTOP[:8]}), run: ollana pair {desk.window.code}"

        await page.evaluate(button("dismiss", PHONE) + ".click()")
        await page.wait_for("document.querySelectorAll('#nearby tr').length === 1")
        assert source.dismissed == {PHONE}
        assert page.errors == [] and page.network_errors == []


EVIL = """<!doctype html><html><body><script>
window.results = [];
async function attempt(name, run) {
  try { const r = await run(); window.results.push([name, r === undefined ? "sent" : r]); }
  catch (e) { window.results.push([name, "blocked"]); }
}
(async () => {
  const admin = "ADMIN";
  await attempt("no-cors post", () => fetch(admin + "pairing",
    { method: "POST", mode: "no-cors", body: "{}", headers: { "Content-Type": "text/plain" } }));
  await attempt("post with a guessed token", () => fetch(admin + "pairing", { method: "POST",
    body: "{}", headers: { "Content-Type": "application/json", "X-Ollana-Token": "guess" } }));
  await attempt("read the page", async () => (await fetch(admin)).text());
  await attempt("dismiss", () => fetch(admin + "nearby/dismiss", { method: "POST",
    mode: "no-cors", body: JSON.stringify({ device_id: "DEVICE" }) }));
  window.done = true;
  document.body.append("done");  // a mutation: what the test's wait_for wakes on
})();
</script></body></html>"""


async def test_a_page_from_another_origin_can_change_nothing(
    tmp_path: Path, source: FakeSource, admin: tuple[AdminListener, PairingDesk]
) -> None:
    listener, desk = admin
    page_html = EVIL.replace("ADMIN", listener.url).replace("DEVICE", PHONE)

    async def evil(request: web.Request) -> web.Response:
        return web.Response(text=page_html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", evil)
    async with TestServer(app, host="127.0.0.1") as other, chromium(tmp_path / "p") as page:
        await page.navigate(str(other.make_url("/")))
        await page.wait_for("window.done === true")
        results = dict(json.loads(await page.evaluate("JSON.stringify(window.results)")))
    # Opaque no-cors requests go out, but carry no token: refused, nothing changes.
    assert results["post with a guessed token"] == "blocked"  # the preflight got no CORS answer
    assert results["read the page"] == "blocked"  # so the token cannot be read either
    assert desk.window is None
    assert source.dismissed == set()
