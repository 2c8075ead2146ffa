"""The dashboard in a real headless Chromium, driven over the DevTools protocol.

DevTools rather than `--dump-dom`: the test waits for the page to reach a state (a
MutationObserver promise) instead of guessing a virtual-time budget, changes the source
while the page runs, and reads every console message and uncaught exception.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ollana.admin import AdminListener, create_admin_app
from ollana.cluster.server import ServerState
from ollana.config import HostPort, Settings
from ollana.metrics import Metrics
from ollana.wake import RememberedServer
from tests.integration.test_status_live import address, admin_of, chat, cluster
from tests.support.admin_fakes import FakePool, FakeSource, FakeWatch, snapshot
from tests.support.waiting import until_read

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)

START_TIMEOUT = 20.0
WAIT_TIMEOUT = 8.0
DEVTOOLS = re.compile(r"DevTools listening on (ws://\S+)")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-default-apps", "--mute-audio", "--window-size=1366,1000",
    "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
)  # fmt: skip


# --- a minimal DevTools client -------------------------------------------------------------


class Page:
    """One browser tab over the DevTools protocol; collects console errors and exceptions."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: str) -> None:
        self._ws = ws
        self._session = session
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.network_errors: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, ws: aiohttp.ClientWebSocketResponse) -> Page:
        browser = Page(ws, "")
        target = await browser.send("Target.createTarget", url="about:blank")
        attached = await browser.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        browser._session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            await browser.send(f"{domain}.enable")
        return browser

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if self._session and not method.startswith("Target."):
            message["sessionId"] = self._session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_json(message)
        reply = await asyncio.wait_for(future, WAIT_TIMEOUT)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            else:
                self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(f"exception: {details.get('exception', details)}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(f"console.{params['type']}: {params['args']}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            target = self.network_errors if entry.get("source") == "network" else self.errors
            target.append(f"{entry.get('source')}: {entry.get('text')}")

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, condition: str) -> None:
        """Until a JS expression is true: checked now and on every change of the page."""
        script = f"""new Promise((resolve) => {{
            const check = () => {{ try {{ return Boolean({condition}); }} catch (e) {{ return false; }} }};
            if (check()) {{ resolve(true); return; }}
            const observer = new MutationObserver(() => {{
                if (check()) {{ observer.disconnect(); resolve(true); }}
            }});
            observer.observe(document, {{subtree: true, childList: true, attributes: true,
                                         characterData: true}});
        }})"""  # noqa: E501
        try:
            await asyncio.wait_for(self.evaluate(script), WAIT_TIMEOUT)
        except TimeoutError:
            body = await self.evaluate("document.body ? document.body.innerText : ''")
            raise AssertionError(f"page never reached {condition!r}; it shows:\n{body}") from None

    async def screenshot(self, name: str, fallback: Path) -> Path:
        """A PNG of the whole page, in $OLLANA_SCREENSHOTS (else `fallback`), to look at."""
        folder = Path(os.environ.get("OLLANA_SCREENSHOTS") or fallback)
        folder.mkdir(parents=True, exist_ok=True)
        size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = await self.send(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip
        )
        path = folder / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        assert path.read_bytes().startswith(b"\x89PNG")
        return path

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Page]:
    """A headless Chromium of its own (own profile, own process group) and one tab in it."""
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    stderr: list[str] = []
    try:
        url = await asyncio.wait_for(_devtools_url(proc.stderr, stderr), START_TIMEOUT)
        drain = asyncio.create_task(_drain(proc.stderr, stderr))
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, max_msg_size=0) as ws,
        ):
            page = await Page.open(ws)
            try:
                yield page
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(page.send("Browser.close"), 2.0)
                await page.close()
        await asyncio.wait_for(proc.wait(), 10.0)
        await drain
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def _devtools_url(stream: asyncio.StreamReader, lines: list[str]) -> str:
    while line := await stream.readline():
        text = line.decode(errors="replace")
        lines.append(text)
        if found := DEVTOOLS.search(text):
            return found.group(1)
    raise AssertionError("chromium exited before DevTools listened:\n" + "".join(lines))


async def _drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))


# --- tests ---------------------------------------------------------------------------------


def row(key: str) -> str:
    """The JS expression of the servers table row of one server."""
    return f"document.querySelector('#servers tr[data-key=\"{key}\"]')"


async def test_dashboard_follows_a_running_cluster(tmp_path: Path) -> None:
    async with (
        cluster(tmp_path) as running,
        aiohttp.ClientSession() as session,
        chromium(tmp_path / "profile") as page,
    ):
        first, second = running.servers
        await page.navigate(admin_of(running.client).url)
        await page.wait_for(
            "document.body.dataset.connection === 'live'"
            " && document.querySelectorAll('#servers tr[data-state=\"healthy\"]').length === 2"
        )
        rows = await page.evaluate(
            "[...document.querySelectorAll('#servers tr')].map(r => [r.dataset.key, r.innerText])"
        )
        shown = dict(rows)
        assert set(shown) == {first.device_id, second.device_id}
        for server in running.servers:
            assert address(server) in shown[server.device_id]
            assert server.device_id[:8] in shown[server.device_id]
        assert await page.evaluate("document.getElementById('healthy').textContent") == "2 / 2"
        mode = await page.evaluate("document.getElementById('mode').textContent")
        assert mode == "client mode"
        models = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#models tr')].map(r =>"
            " [r.dataset.model, [...r.querySelectorAll('.chip')].map(c => c.textContent).sort()]))"
        )
        assert models == {
            "llama3.2:latest": sorted([address(first), address(second)]),
            "nomic-embed-text:latest": [address(second)],
            "qwen2.5:0.5b": [address(first)],
        }

        # Traffic through the client shows as a request rate, and the model it used as loaded.
        for _ in range(3):
            await chat(session, running.url)
        await page.wait_for("/[1-9]/.test(document.getElementById('rate').textContent)")
        await page.wait_for(f"{row(first.device_id)}.querySelector('.chip.loaded') !== null")
        loaded = await page.evaluate(f"{row(first.device_id)}.querySelector('.chip').textContent")
        assert loaded == "llama3.2:latest"

        # Per server: its request rate, latency percentiles and tokens, and a sparkline.
        first_row = row(first.device_id)
        await page.wait_for(f"/[1-9]/.test({first_row}.querySelector('td.rate').textContent)")
        await page.wait_for("Number(document.getElementById('spark').dataset.points) >= 2")
        latency = await page.evaluate(f"{first_row}.querySelector('td.latency').textContent")
        assert re.fullmatch(r"[\d.]+( m?s)? · [\d.]+ m?s", latency), latency
        tokens = await page.evaluate(f"{first_row}.querySelector('td.tokens').textContent")
        assert float(tokens) > 0
        assert await page.evaluate(
            "document.querySelectorAll('#spark polyline').length === 1"
            " && document.querySelector('#spark polyline').getAttribute('points').split(' ')"
            ".length >= 2"
        )
        assert (
            await page.evaluate(
                "document.querySelector('#models tr[data-model=\"llama3.2:latest\"] td.num')"
                ".textContent"
            )
            == "3"
        )

        # Usage per server, once the store has written it: the first paint shows it, and the
        # rates of the minutes before.
        client_usage = running.client.usage
        assert client_usage is not None
        client_usage.flush_soon()
        await until_read(
            lambda: usage_rows(session, running.client), lambda rows: rows, "usage written"
        )
        await page.navigate(admin_of(running.client).url)
        usage_row = f"document.querySelector('#usage tr[data-device=\"{first.device_id}\"]')"
        await page.wait_for(f"{usage_row} !== null")
        assert await page.evaluate(f"{usage_row}.querySelector('td.requests').textContent") == "3"
        assert (
            await page.evaluate(f"Number({usage_row}.querySelector('svg.requests').dataset.points)")
            == 1
        )  # today
        assert await page.evaluate("document.getElementById('rate').textContent") != "–"
        await page.screenshot("client-mode", tmp_path / "shots")

        # A server dies: the client's probes find it down, and the page follows.
        await first.close()
        await page.wait_for(f"{row(first.device_id)}.dataset.state === 'down'")
        assert await page.evaluate(f"{row(second.device_id)}.dataset.state") == "healthy"
        assert await page.evaluate("document.getElementById('healthy').textContent") == "1 / 2"
        assert await page.evaluate("document.getElementById('servers-sub').textContent") == (
            "1 down"
        )
        assert page.errors == [] and page.network_errors == []


async def test_dashboard_survives_a_restart_of_the_ollana(tmp_path: Path) -> None:
    healthy = snapshot(1, ServerState.HEALTHY, models=("llama3.2:latest",))
    source = FakeSource(FakePool([healthy, snapshot(2, ServerState.DOWN, models=())]))
    metrics = Metrics()
    listener = AdminListener(create_admin_app(source, metrics), HostPort("127.0.0.1", 0))
    await listener.start()
    try:
        async with chromium(tmp_path / "profile") as page:
            await page.navigate(listener.url)
            await page.wait_for(
                "document.body.dataset.connection === 'live'"
                " && document.querySelectorAll('#servers tr').length === 2"
            )

            # The ollana goes away: the page says so and keeps what it last knew.
            port = listener.port
            await listener.close()
            await page.wait_for("document.body.dataset.connection === 'disconnected'")
            text = await page.evaluate("document.getElementById('conn-text').textContent")
            assert text.startswith("disconnected, retrying")
            assert await page.evaluate("document.querySelectorAll('#servers tr').length") == 2

            # It comes back on the same port: the page reconnects by itself.
            source.pool.servers.pop()
            listener = AdminListener(app_again(source, metrics), HostPort("127.0.0.1", port))
            await listener.start()
            await page.wait_for(
                "document.body.dataset.connection === 'live'"
                " && document.querySelectorAll('#servers tr').length === 1"
            )
            assert await page.evaluate(f"{row(healthy.key)}.dataset.state") == "healthy"
            assert page.errors == []
    finally:
        await listener.close()


def app_again(source: FakeSource, metrics: Metrics) -> Any:
    """A fresh application object: one that has run cannot be started twice."""
    return create_admin_app(source, metrics)


async def test_server_mode_page_shows_the_local_ollama(tmp_path: Path) -> None:
    source = FakeSource(
        mode="server", device_id="ab" * 32, port=11435, ollama=FakeWatch(up=False),
        extra={"connections": 2},
    )  # fmt: skip
    async with AdminListener(
        create_admin_app(source, Metrics()), HostPort("127.0.0.1", 0)
    ) as listener, chromium(tmp_path / "profile") as page:  # fmt: skip
        await page.navigate(listener.url)
        await page.wait_for("document.getElementById('ollama-state').textContent === 'down'")
        hidden = await page.evaluate(
            "['servers-section', 'servers-card', 'ollama-card']"
            ".map(id => document.getElementById(id).hidden)"
        )
        assert hidden == [True, True, False]
        counters = await page.evaluate("document.getElementById('counters').innerText")
        assert "connections" in counters
        assert page.errors == [] and page.network_errors == []


async def test_client_page_lists_sleeping_servers(tmp_path: Path) -> None:
    asleep = RememberedServer(
        "ef" * 32, "gpu-box", ("10.0.0.7:11435",), "aa:bb:cc:dd:ee:ff", ("big:70b",), 1.0e9, None
    )
    source = FakeSource(pool=FakePool([]), remembered=(asleep,))
    async with AdminListener(
        create_admin_app(source, Metrics()), HostPort("127.0.0.1", 0)
    ) as listener, chromium(tmp_path / "profile") as page:  # fmt: skip
        await page.navigate(listener.url)
        await page.wait_for("!document.getElementById('sleeping-section').hidden")
        text = await page.evaluate("document.getElementById('sleeping').innerText")
        assert "gpu-box" in text and "aa:bb:cc:dd:ee:ff" in text and "never" in text
        assert page.errors == [] and page.network_errors == []


async def usage_rows(session: aiohttp.ClientSession, mode: Any) -> list[Any]:
    async with session.get(admin_of(mode).url + "usage?by=day&since=1d") as response:
        assert response.status == 200
        rows: list[Any] = (await response.json())["rows"]
        return rows


async def test_server_page_shows_its_devices_models_and_usage(tmp_path: Path) -> None:
    async with (
        cluster(tmp_path) as running,
        aiohttp.ClientSession() as session,
        chromium(tmp_path / "profile") as page,
    ):
        first = running.servers[0]
        for _ in range(2):
            await chat(session, running.url)
        first_usage = first.usage
        assert first_usage is not None
        first_usage.flush_soon()
        await until_read(lambda: usage_rows(session, first), lambda rows: rows, "usage written")
        await page.navigate(admin_of(first).url)
        device = running.client.device_id
        device_row = f"document.querySelector('#devices tr[data-device=\"{device}\"]')"
        await page.wait_for(f"{device_row} !== null")
        assert await page.evaluate(f"{device_row}.querySelector('td.requests').textContent") == "2"
        shown = await page.evaluate(f"{device_row}.innerText")
        assert device[:8] in shown
        assert await page.evaluate(f"{device_row}.dataset.active") == "yes"  # connected now
        assert await page.evaluate("document.getElementById('servers-section').hidden")

        # Its own Ollama's models: installed, and the one the chats loaded.
        await page.wait_for(
            "document.querySelector('#models tr[data-model=\"llama3.2:latest\"] .chip.loaded')"
            " !== null"
        )
        models = await page.evaluate(
            "[...document.querySelectorAll('#models tr')].map(r => r.dataset.model).sort()"
        )
        assert models == ["llama3.2:latest", "qwen2.5:0.5b"]

        # Usage per device using it: the client's row.
        usage_row = f"document.querySelector('#usage tr[data-device=\"{device}\"]')"
        await page.wait_for(f"{usage_row} !== null")
        assert await page.evaluate(f"{usage_row}.querySelector('td.requests').textContent") == "2"
        assert await page.evaluate("document.getElementById('errors-empty').hidden") is False
        await page.screenshot("server-mode", tmp_path / "shots")
        assert page.errors == [] and page.network_errors == []


async def test_page_lists_the_last_errors_and_says_discovery_is_off(tmp_path: Path) -> None:
    source = FakeSource(pool=FakePool([]), settings=Settings(discovery=False))
    metrics = Metrics()
    cause = "no ollana server is available: discovery is off and no --server is configured"
    metrics.activity.finished("", status=503, route="/api/chat", model="llama3.2", cause=cause)
    metrics.activity.finished("ab" * 32, status=404, route="/api/chat", latency=0.01)
    async with AdminListener(
        create_admin_app(source, metrics), HostPort("127.0.0.1", 0)
    ) as listener, chromium(tmp_path / "profile") as page:  # fmt: skip
        await page.navigate(listener.url)
        await page.wait_for("document.querySelectorAll('#errors-list tr').length === 2")
        rows = await page.evaluate(
            "[...document.querySelectorAll('#errors-list tr')].map(r => r.innerText)"
        )
        assert "404" in rows[0] and "abababab" in rows[0]  # the newest first
        assert "503" in rows[1] and cause in rows[1] and "no server" in rows[1]
        empty = await page.evaluate("document.getElementById('servers-empty').textContent")
        assert "discovery is off" in empty and "waiting" not in empty
        assert "no discovery" in await page.evaluate("document.getElementById('flags').textContent")
        await page.screenshot("errors-no-discovery", tmp_path / "shots")
        assert page.errors == [] and page.network_errors == []
