"""The admin API of running modes: /status, /metrics and /healthz follow real traffic and a
real pool (two emulated Ollamas, a server in front of each, one client), and `ollana status`
prints what they show."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families

from ollana.admin import AdminListener
from ollana.cli import main
from ollana.config import Settings, load_settings
from ollana.demo import pair
from ollana.emulator import EmulatorConfig, create_app, serving
from ollana.identity import DeviceStore, Identity, TLSManager, introduce, load_identity
from ollana.modes import ClientMode, ServerMode
from tests.support.discovery import LOOPBACK_BROADCAST
from tests.support.waiting import until_read

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Each server's Ollama has its own models, so that the page and the tables can tell them apart.
MODELS = (("llama3.2:latest", "qwen2.5:0.5b"), ("llama3.2:latest", "nomic-embed-text:latest"))
FIRST_PRIORITY = 10  # requests go to the first server while it is up
FAST_PROBES = 0.1
# Probes that never come during a test: only a failed request can find a server gone.
NO_PROBES = 3600.0
HISTORY_INTERVAL = 0.2  # the dashboard's samples: several within a test


@dataclasses.dataclass(frozen=True, slots=True)
class Cluster:
    """Two servers (each fronting its own emulated Ollama) and a client that knows both."""

    ollama_urls: tuple[str, ...]
    servers: tuple[ServerMode, ...]
    client: ClientMode

    @property
    def url(self) -> str:
        """Where apps talk to the client."""
        return f"http://127.0.0.1:{self.client.port}"


def mode_settings(home: Path, flags: Mapping[str, object]) -> Settings:
    base: dict[str, object] = {
        "home": str(home), "listen": "127.0.0.1:0", "discovery": False,
        "admin_listen": "127.0.0.1:0", "grace": 1.0,
    }  # fmt: skip
    return load_settings({**base, **flags}, env={}, config_file=home / "config.toml")


@contextlib.asynccontextmanager
async def cluster(root: Path, *, probe_interval: float = FAST_PROBES) -> AsyncIterator[Cluster]:
    """A running cluster whose servers are healthy, identified and have their models listed."""
    client_home = root / "client"
    timings: dict[str, object] = {
        "timings.probe_interval": str(probe_interval), "timings.probe_timeout": "1",
        "timings.history_interval": str(HISTORY_INTERVAL),
    }  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        urls: list[str] = []
        servers: list[ServerMode] = []
        for n, models in enumerate(MODELS):
            home = root / f"server{n}"
            pair(home, client_home)
            app = create_app(EmulatorConfig(models=models))
            port = await stack.enter_async_context(serving(app, "127.0.0.1", 0))
            urls.append(f"http://127.0.0.1:{port}")
            settings = mode_settings(home, {"mode": "server", "ollama": urls[-1], **timings})
            servers.append(await stack.enter_async_context(ServerMode(settings)))
        static = (f"127.0.0.1:{servers[0].port}@{FIRST_PRIORITY}", f"127.0.0.1:{servers[1].port}")
        settings = mode_settings(client_home, {"mode": "client", "servers": static, **timings})
        client = await stack.enter_async_context(ClientMode(settings))
        async with aiohttp.ClientSession() as session:
            await until_read(lambda: status(session, client), ready, "both servers ready")
            for server in servers:
                await until_read(partial(status, session, server), up, "the Ollama up")
        yield Cluster(tuple(urls), tuple(servers), client)


# --- reading the admin API -----------------------------------------------------------------


def admin_of(mode: ClientMode | ServerMode) -> AdminListener:
    assert mode.admin is not None, "the mode runs without its admin API"
    return mode.admin


async def status(session: aiohttp.ClientSession, mode: ClientMode | ServerMode) -> Any:
    async with session.get(admin_of(mode).url + "status") as response:
        assert response.status == 200
        return await response.json()


async def scrape(session: aiohttp.ClientSession, mode: ClientMode | ServerMode) -> Samples:
    async with session.get(admin_of(mode).url + "metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    """A family's samples summed over every label set."""
    return sum(value for (found, _), value in samples.items() if found == name)


def ready(doc: Any) -> bool:
    """Both servers healthy, identified (hello answered) and with their models listed."""
    servers = doc["servers"]
    return len(servers) == 2 and all(
        s["state"] == "healthy" and s["device_id"] and s["models"] for s in servers
    )


def up(doc: Any) -> bool:
    return bool(doc["ollama"] and doc["ollama"]["up"])


def by_address(doc: Any) -> dict[str, Any]:
    return {s["address"]: s for s in doc["servers"]}


def address(server: ServerMode) -> str:
    return f"127.0.0.1:{server.port}"


def tls_context(identity: Identity | None = None) -> ssl.SSLContext:
    """A TLS client that trusts any server, presenting this identity's certificate if any."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if identity is not None:
        context.load_cert_chain(identity.cert_path, identity.key_path)
    return context


async def chat(session: aiohttp.ClientSession, url: str, model: str = "llama3.2") -> str:
    """One whole chat answer through the client; returns the server that gave it."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    async with session.post(f"{url}/api/chat", json=body) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["done"] is True
        return response.headers["X-Ollana-Server"]


# --- tests ---------------------------------------------------------------------------------


async def test_healthz_on_both_modes(tmp_path: Path) -> None:
    async with cluster(tmp_path) as running, aiohttp.ClientSession() as session:
        modes: tuple[ClientMode | ServerMode, ...] = (running.client, *running.servers)
        for mode in modes:
            async with session.get(admin_of(mode).url + "healthz") as response:
                assert response.status == 200
                assert await response.json() == {"status": "ok"}


async def test_status_follows_the_pool(tmp_path: Path) -> None:
    async with cluster(tmp_path) as running, aiohttp.ClientSession() as session:
        first, second = running.servers
        doc = await status(session, running.client)
        assert doc["mode"] == "client"
        assert doc["device_id"] == running.client.device_id
        assert doc["listen"] == f"127.0.0.1:{running.client.port}"
        servers = by_address(doc)
        assert set(servers) == {address(first), address(second)}
        for server, models in zip(running.servers, MODELS, strict=True):
            shown = servers[address(server)]
            assert shown["key"] == shown["device_id"] == server.device_id
            assert shown["state"] == "healthy"
            assert shown["static"] is True
            assert shown["models"] == sorted(models)
            assert shown["ollama_version"] == "0.5.7"
            assert isinstance(shown["latency_ms"], float) and shown["latency_ms"] > 0
            assert shown["inflight"] == 0
        assert servers[address(first)]["priority"] == FIRST_PRIORITY
        samples = await scrape(session, running.client)
        assert sample(samples, "ollana_pool_servers", state="healthy") == 2
        assert sample(samples, "ollana_pool_servers", state="down") == 0

        await first.close()
        doc = await until_read(
            lambda: status(session, running.client),
            lambda doc: by_address(doc)[address(first)]["state"] == "down",
            "the stopped server down",
        )
        # A static server stays listed, down, so that its owner sees which one is gone.
        assert by_address(doc)[address(second)]["state"] == "healthy"
        samples = await scrape(session, running.client)
        assert sample(samples, "ollana_pool_servers", state="healthy") == 1
        assert sample(samples, "ollana_pool_servers", state="down") == 1
        # Requests now go to the one left.
        assert second.device_id.startswith(await chat(session, running.url))


async def test_metrics_move_with_traffic(tmp_path: Path) -> None:
    async with cluster(tmp_path) as running, aiohttp.ClientSession() as session:
        first = running.servers[0]
        labels = {await chat(session, running.url) for _ in range(3)}
        assert len(labels) == 1
        label = labels.pop()
        assert first.device_id.startswith(label)  # the higher priority took them all
        async with session.get(f"{running.url}/api/tags") as response:
            assert response.status == 200
            names = {m["name"] for m in (await response.json())["models"]}
        assert names == set(MODELS[0]) | set(MODELS[1])
        async with session.post(f"{running.url}/api/chat", json={"model": "nope"}) as response:
            assert response.status == 404

        client = await scrape(session, running.client)
        chats = {"route": "/api/chat", "status": "200", "server": label}
        assert sample(client, "ollana_requests_total", **chats) == 3
        assert sample(client, "ollana_requests_total", **{**chats, "status": "404"}) == 1
        # The merged list is answered by the client itself, from every server.
        tags = {"route": "/api/tags", "status": "200", "server": "none"}
        assert sample(client, "ollana_requests_total", **tags) == 1
        assert sample(client, "ollana_upstream_ttfb_seconds_count", server=label) == 4
        assert sample(client, "ollana_request_duration_seconds_count", route="/api/chat") == 4
        assert sample(client, "ollana_inflight", server=label) == 0
        assert total(client, "ollana_retries_total") == 0
        assert sample(client, "ollana_failovers_total") == 0
        counters = (await status(session, running.client))["counters"]
        assert counters["requests"] == 5
        assert counters["requests_by_status"] == {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 1, "5xx": 0}
        assert by_address(await status(session, running.client))[address(first)]["requests"] == 4

        # The server in front of the Ollama counts the same requests on its side.
        server = await scrape(session, first)
        local = {"route": "/api/chat", "status": "200", "server": "ollama"}
        assert sample(server, "ollana_requests_total", **local) == 3
        assert sample(server, "ollana_requests_total", **{**local, "status": "404"}) == 1
        assert sample(server, "ollana_upstream_ttfb_seconds_count", server="ollama") >= 4
        assert sample(server, "ollana_inflight", server="ollama") == 0
        other = await scrape(session, running.servers[1])
        assert sample(other, "ollana_requests_total", **local) == 0


async def test_a_server_that_dies_is_retried_and_failed_over(tmp_path: Path) -> None:
    async with (
        cluster(tmp_path, probe_interval=NO_PROBES) as running,
        aiohttp.ClientSession() as session,
    ):
        first, second = running.servers
        assert first.device_id.startswith(await chat(session, running.url))
        await first.close()
        # The pool has not noticed yet: the request goes to the first server, fails before
        # any byte came back, and the second one answers it.
        before = by_address(await status(session, running.client))
        assert before[address(first)]["state"] == "healthy"
        label = await chat(session, running.url)
        assert second.device_id.startswith(label)

        samples = await scrape(session, running.client)
        assert total(samples, "ollana_retries_total") == 1
        assert sample(samples, "ollana_failovers_total") == 1
        answered = {"route": "/api/chat", "status": "200", "server": label}
        assert sample(samples, "ollana_requests_total", **answered) == 1
        assert sample(samples, "ollana_inflight", server=first.device_id[:12]) == 0
        doc = await status(session, running.client)
        assert (doc["counters"]["retries"], doc["counters"]["failovers"]) == (1, 1)
        gone = by_address(doc)[address(first)]
        assert gone["state"] == "down"
        assert gone["failures"] == 1
        assert sample(samples, "ollana_pool_servers", state="down") == 1


async def test_server_status_shows_its_ollama_refusals_and_strangers(tmp_path: Path) -> None:
    async with cluster(tmp_path) as running, aiohttp.ClientSession() as session:
        first = running.servers[0]
        doc = await status(session, first)
        assert doc["mode"] == "server"
        assert doc["device_id"] == first.device_id
        assert doc["servers"] == []
        assert doc["ollama"]["url"] == running.ollama_urls[0]
        assert (doc["ollama"]["up"], doc["ollama"]["version"]) == (True, "0.5.7")
        assert doc["counters"]["tls_refused"] == {}
        base = f"https://127.0.0.1:{first.port}"

        # A device with no certificate gets through the handshake, and no further.
        async with session.get(f"{base}/api/tags", ssl=tls_context()) as response:
            assert response.status == 403
            assert "not allowed" in (await response.json())["error"]

        # A device that is not paired may introduce itself: it shows as nearby.
        stranger = TLSManager(load_identity(tmp_path / "stranger"), DeviceStore(tmp_path / "x"))
        assert await introduce(stranger, base) == first.device_id

        # Devices heard are written in batches, within a second.
        doc = await until_read(
            partial(status, session, first),
            lambda d: [n["device_id"] for n in d["nearby"]] == [stranger.identity.device_id],
            "the stranger listed as nearby",
        )
        assert doc["counters"]["tls_refused"] == {"no-certificate": 1}
        assert doc["counters"]["refused"] == 1
        samples = await scrape(session, first)
        refused = {"reason": "no-certificate"}
        assert sample(samples, "ollana_tls_handshakes_refused_total", **refused) == 1
        forbidden = {"route": "/api/tags", "status": "403", "server": "none"}
        assert sample(samples, "ollana_requests_total", **forbidden) == 1


async def test_an_unpaired_certificate_is_counted_as_refused(tmp_path: Path) -> None:
    async with cluster(tmp_path) as running, aiohttp.ClientSession() as session:
        first = running.servers[0]
        context = tls_context(load_identity(tmp_path / "stranger"))
        # One connection by hand (an HTTP client may try a second): in TLS 1.3 the client's
        # side of the handshake ends before the server has checked its certificate, so the
        # refusal shows as the connection closing.
        reader, writer = await asyncio.open_connection("127.0.0.1", first.port, ssl=context)
        try:
            writer.write(b"GET /api/tags HTTP/1.1\r\nHost: ollana\r\n\r\n")
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                assert await reader.read() == b""
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
        samples = await scrape(session, first)
        assert total(samples, "ollana_tls_handshakes_refused_total") == 1
        tls_refused = (await status(session, first))["counters"]["tls_refused"]
        assert sum(tls_refused.values()) == 1


@contextlib.contextmanager
def discovery_port() -> Iterator[int]:
    """A free UDP port, held by a socket that shares it, so that no other test takes it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", 0))
        yield int(sock.getsockname()[1])


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="loopback broadcast is Linux behaviour"
)
async def test_a_discovered_server_joins_and_its_goodbye_removes_it(tmp_path: Path) -> None:
    with discovery_port() as port:
        lan: dict[str, object] = {
            "discovery": True, "discovery_port": port,
            "discovery_targets": (LOOPBACK_BROADCAST,), "timings.probe_interval": "0.1",
            "timings.announce_interval": "0.5", "timings.query_interval": "0.5",
        }  # fmt: skip
        pair(tmp_path / "server", tmp_path / "client")
        async with (
            serving(create_app(EmulatorConfig(models=MODELS[0])), "127.0.0.1", 0) as ollama,
            ClientMode(mode_settings(tmp_path / "client", {"mode": "client", **lan})) as client,
            aiohttp.ClientSession() as session,
        ):
            assert (await status(session, client))["servers"] == []
            flags = {"mode": "server", "ollama": f"http://127.0.0.1:{ollama}", **lan}
            async with ServerMode(mode_settings(tmp_path / "server", flags)) as server:
                doc = await until_read(
                    lambda: status(session, client),
                    lambda doc: (
                        [(s["device_id"], s["state"], s["models"]) for s in doc["servers"]]
                        == [(server.device_id, "healthy", sorted(MODELS[0]))]
                    ),
                    "the announced server healthy with its models",
                )
                shown = doc["servers"][0]
                assert shown["address"] == address(server)
                assert shown["static"] is False
                assert isinstance(shown["last_seen_seconds_ago"], float)
                heard = doc["counters"]["discovery"]
                assert heard["received"] >= 1 and heard["sent"] >= 1
                samples = await scrape(session, client)
                assert sample(samples, "ollana_pool_servers", state="healthy") == 1
                assert sample(samples, "ollana_discovery_datagrams_received_total") >= 1
            # Its goodbye removes it at once: no probe has to fail first.
            await until_read(
                lambda: status(session, client),
                lambda doc: doc["servers"] == [],
                "the server that said goodbye gone",
            )
            samples = await scrape(session, client)
            assert sample(samples, "ollana_pool_servers", state="healthy") == 0
            assert sample(samples, "ollana_pool_servers", state="down") == 0


# --- `ollana status` -------------------------------------------------------------------------


async def ollana_status(*args: str) -> Result:
    """Run the command in a thread: it runs its own event loop, the modes run on this one."""
    return await asyncio.to_thread(CliRunner().invoke, main, ["status", *args])


async def test_status_command_prints_the_live_cluster(tmp_path: Path) -> None:
    async with cluster(tmp_path) as running, aiohttp.ClientSession() as session:
        first, second = running.servers
        admin = f"127.0.0.1:{admin_of(running.client).port}"
        result = await ollana_status("--json", "--admin", admin)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["device_id"] == running.client.device_id
        assert {s["address"]: (s["device_id"], s["state"]) for s in doc["servers"]} == {
            address(first): (first.device_id, "healthy"),
            address(second): (second.device_id, "healthy"),
        }

        await first.close()
        await until_read(
            lambda: status(session, running.client),
            lambda doc: by_address(doc)[address(first)]["state"] == "down",
            "the stopped server down",
        )
        result = await ollana_status("--admin", admin)
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "client mode" in out
        rows = {line.split()[0]: line.split() for line in out.splitlines() if "127.0.0.1:" in line}
        assert rows[address(first)][2] == "down"
        assert rows[address(second)][2] == "healthy"
        assert rows[address(second)][1] == second.device_id[:8]
        for model in {*MODELS[0], *MODELS[1]}:
            assert model in out

        # The server's own status: its Ollama, no pool.
        server_admin = f"127.0.0.1:{admin_of(second).port}"
        result = await ollana_status("--admin", server_admin)
        assert result.exit_code == 0, result.output
        assert "server mode" in result.stdout
        assert f"up · 0.5.7 · {running.ollama_urls[1]}" in result.stdout
