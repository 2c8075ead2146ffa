"""The admin API over real sockets (/healthz, /status, /metrics, /), and `ollana status`."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families

from ollana.admin import AdminListener, create_admin_app, status_document
from ollana.cli import main
from ollana.cluster.server import ServerSnapshot, ServerState
from ollana.config import HostPort, Settings
from ollana.http.listener import ListenError
from ollana.identity import SeenDevice
from ollana.metrics import Metrics
from ollana.wake import RememberedServer
from tests.support.admin_fakes import (
    DEVICE,
    FakeDiscovery,
    FakePool,
    FakeSource,
    FakeWatch,
    snapshot,
)
from tests.support.ports import free_port

Client = TestClient[web.Request, web.Application]
SERVER_KEYS = {
    "key", "address", "device_id", "name", "state", "static", "priority", "inflight", "latency_ms",
    "ollama_version", "models", "loaded", "last_seen_seconds_ago", "requests", "failures",
    "problem",
    "connections",
}  # fmt: skip
TOP_KEYS = {
    "schema", "version", "mode", "device_id", "name", "pid", "started", "uptime_seconds", "listen",
    "open", "read_only", "discovery", "ollama", "servers", "nearby", "sleeping", "counters",
}  # fmt: skip


@pytest.fixture
def pool() -> FakePool:
    return FakePool([snapshot(1), snapshot(2, loaded=("llama3.2:latest",))])


@pytest.fixture
def metrics(pool: FakePool) -> Metrics:
    metrics = Metrics()
    metrics.watch_pool(pool)
    metrics.watch_discovery(FakeDiscovery())
    return metrics


@pytest.fixture
async def client(pool: FakePool, metrics: Metrics) -> AsyncIterator[Client]:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    seen = SeenDevice("ab" * 32, "10.0.0.9", "server", when, b"")
    asleep = RememberedServer(
        "ef" * 32, "gpu-box", ("10.0.0.7:11435",), "aa:bb:cc:dd:ee:ff", ("big:70b",),
        when.timestamp(), None,
    )  # fmt: skip
    held = {"ef" * 32: {"open": 3, "idle": 2}, "address 10.0.0.7": {"open": 1, "idle": 1}}
    source = FakeSource(
        pool=pool,
        seen=(seen,),
        extra={"connections": 4, "connections_by_device": held},
        remembered=(asleep,),
    )
    async with TestClient(TestServer(create_admin_app(source, metrics))) as client:
        yield client


# --- the API ---------------------------------------------------------------------------------


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {"status": "ok"}


async def test_status_document_schema(client: Client) -> None:
    response = await client.get("/status")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    doc = await response.json()
    assert set(doc) == TOP_KEYS
    assert doc["schema"] == 1
    assert doc["mode"] == "client"
    assert doc["device_id"] == DEVICE
    assert doc["listen"] == "127.0.0.1:41234"
    assert 90 <= doc["uptime_seconds"] < 3600
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["started"])
    assert doc["ollama"] is None
    assert [set(s) for s in doc["servers"]] == [SERVER_KEYS, SERVER_KEYS]
    first, second = doc["servers"]
    assert first["address"] == "10.0.0.1:11435"
    assert first["state"] == "healthy"
    assert first["models"] == ["llama3.2:latest"]
    assert second["loaded"] == ["llama3.2:latest"]
    assert doc["nearby"] == [
        {
            "device_id": "ab" * 32,
            "name": "",
            "address": "10.0.0.9",
            "role": "server",
            "last_seen": "2026-01-02T03:04:05Z",
        }
    ]
    assert doc["sleeping"] == [
        {
            "device_id": "ef" * 32,
            "name": "gpu-box",
            "address": "10.0.0.7:11435",
            "mac": "aa:bb:cc:dd:ee:ff",
            "models": ["big:70b"],
            "last_seen": "2026-01-02T03:04:05Z",
            "last_woken": None,
        }
    ]
    counters = doc["counters"]
    assert counters["requests"] == 0
    assert counters["connections"] == 4
    discovery = {
        "sent": 2,
        "received": 5,
        "send_errors": 0,
        "dropped": {"own": 1},
        "unanswered": {},
    }
    assert counters["discovery"] == discovery


async def test_status_follows_the_pool_and_the_counters(
    client: Client, pool: FakePool, metrics: Metrics
) -> None:
    pool.servers[1] = dataclasses.replace(pool.servers[1], state=ServerState.DOWN, inflight=0)
    pool.servers.append(snapshot(3, ServerState.SUSPECT, inflight=2))
    metrics.request_started(pool.servers[0].key)
    metrics.request_finished("/api/chat", 200, pool.servers[0].key, 0.2)
    metrics.request_finished("/api/tags", 503, "none", 0.0)
    metrics.retry("connect")
    doc = await (await client.get("/status")).json()
    assert [(s["address"], s["state"]) for s in doc["servers"]] == [
        ("10.0.0.1:11435", "healthy"),
        ("10.0.0.2:11435", "down"),
        ("10.0.0.3:11435", "suspect"),
    ]
    assert doc["servers"][2]["inflight"] == 2
    assert doc["counters"]["requests"] == 2
    assert doc["counters"]["requests_by_status"]["5xx"] == 1
    assert doc["counters"]["retries"] == 1


async def test_server_mode_status(metrics: Metrics) -> None:
    started = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC).timestamp()
    source = FakeSource(
        mode="server", ollama=FakeWatch(up=False, since=time.monotonic() - 5),
        settings=Settings(open=True), started_at=started,
    )  # fmt: skip
    doc = status_document(source, metrics)
    assert doc["started"] == "2026-01-02T03:04:05Z"
    assert isinstance(doc["uptime_seconds"], float) and doc["uptime_seconds"] > 0
    assert doc["servers"] == []
    assert doc["listen"] == "0.0.0.0:41234"
    assert doc["open"] is True and doc["read_only"] is True  # --open implies --read-only
    ollama = doc["ollama"]
    assert isinstance(ollama, dict)
    assert (ollama["up"], ollama["version"]) == (False, "0.5.7")
    assert 5 <= ollama["since_seconds"] < 60
    json.dumps(doc)


async def test_metrics_parse_and_move(client: Client, metrics: Metrics, pool: FakePool) -> None:
    async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(await response.text())
            for s in family.samples
        }

    before = await scrape()
    assert before[("ollana_pool_servers", (("state", "healthy"),))] == 2
    assert ("ollana_requests_total", ()) not in before
    key = pool.servers[0].key
    metrics.request_started(key)
    metrics.upstream_ttfb(key, 0.05)
    mid = await scrape()
    assert mid[("ollana_inflight", (("server", key),))] == 1
    metrics.request_finished("/api/generate", 200, key, 1.5)
    metrics.failover()
    metrics.tls_refused("unknown-device")
    pool.servers.pop()
    after = await scrape()
    labels = (("route", "/api/generate"), ("server", key), ("status", "200"))
    assert after[("ollana_requests_total", labels)] == 1
    assert after[("ollana_inflight", (("server", key),))] == 0
    assert after[("ollana_upstream_ttfb_seconds_count", (("server", key),))] == 1
    duration = ("ollana_request_duration_seconds_count", (("route", "/api/generate"),))
    assert after[duration] == 1
    assert after[("ollana_failovers_total", ())] == 1
    refused = ("ollana_tls_handshakes_refused_total", (("reason", "unknown-device"),))
    assert after[refused] == 1
    assert after[("ollana_pool_servers", (("state", "healthy"),))] == 1
    assert after[("ollana_discovery_datagrams_received_total", ())] == 5


async def test_dashboard_page_and_its_policy(
    client: Client,
) -> None:
    response = await client.get("/", headers={"Origin": "http://evil.example"})
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert "<title>ollana</title>" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no external resources"
    script = re.search(r"<script>(.*?)</script>", page, re.DOTALL)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    policy = response.headers["Content-Security-Policy"]
    assert f"script-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:11437", 200),
        ("127.0.0.1:11437", 200),
        ("[::1]:11437", 200),
        ("attacker.example", 403),
        ("attacker.example:11437", 403),
    ],
)
async def test_host_header_is_checked(client: Client, host: str, status: int) -> None:
    response = await client.get("/status", headers={"Host": host})
    assert response.status == status
    if status == 403:
        assert "not allowed" in (await response.json())["error"]


async def test_allowed_hosts_setting_is_honoured(metrics: Metrics) -> None:
    source = FakeSource(pool=FakePool([]), settings=Settings(allowed_hosts=("box.lan",)))
    async with TestClient(TestServer(create_admin_app(source, metrics))) as client:
        assert (await client.get("/healthz", headers={"Host": "box.lan:11437"})).status == 200
        assert (await client.get("/healthz", headers={"Host": "other.lan"})).status == 403


async def test_a_failing_source_answers_500_and_the_api_keeps_serving(metrics: Metrics) -> None:
    class Failing(FakePool):
        def snapshots(self) -> Sequence[ServerSnapshot]:
            raise RuntimeError("pool is gone")

    source = FakeSource(pool=Failing([]))
    async with TestClient(TestServer(create_admin_app(source, metrics))) as client:
        response = await client.get("/status")
        assert response.status == 500
        assert "pool is gone" in (await response.json())["error"]
        assert (await client.get("/healthz")).status == 200
        assert (await client.post("/status")).status == 405
        assert (await client.get("/nothing")).status == 404


async def test_admin_listener_binds_reports_and_closes_twice(metrics: Metrics) -> None:
    app = create_admin_app(FakeSource(pool=FakePool([])), metrics)
    async with AdminListener(app, HostPort("127.0.0.1", 0)) as listener:
        assert listener.port != 0
        assert listener.url == f"http://127.0.0.1:{listener.port}/"
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200 OK")
        writer.close()
        await writer.wait_closed()
        taken = HostPort("127.0.0.1", listener.port)
        busy = AdminListener(create_admin_app(FakeSource(), metrics), taken)
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{listener.port}"):
            await busy.start()
        await busy.close()
    await listener.close()


# --- `ollana status` ------------------------------------------------------------------------


async def invoke(*args: str, env: Mapping[str, str] | None = None) -> Result:
    """Run the command in a thread: it runs its own event loop, the API answers on this one."""
    return await asyncio.to_thread(CliRunner().invoke, main, ["status", *args], env=env)


async def test_status_command_prints_json(
    client: Client,
) -> None:
    result = await invoke("--json", "--admin", f"127.0.0.1:{client.port}")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == TOP_KEYS
    assert [s["address"] for s in doc["servers"]] == ["10.0.0.1:11435", "10.0.0.2:11435"]


async def test_status_command_prints_tables(client: Client, pool: FakePool) -> None:
    pool.servers[1] = dataclasses.replace(pool.servers[1], state=ServerState.DOWN)
    pool.servers.append(snapshot(3, models=("[red]boom[/red]", "bad\x1b[2Jname")))
    result = await invoke("--admin", f"127.0.0.1:{client.port}")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "client mode" in out
    assert "cdcdcdcd-cdcdcdcd" in out  # the device ID, grouped
    rows = {line.split()[0]: line.split() for line in out.splitlines() if "10.0.0." in line}
    assert rows["10.0.0.1:11435"][2] == "healthy"
    assert rows["10.0.0.2:11435"][2] == "down"
    assert "llama3.2:latest" in out
    assert "[red]boom[/red]" in out  # data is never read as markup
    assert "\x1b" not in out and "bad?[2Jname" in out
    assert "abababab" in out  # the nearby device, as a prefix `device allow` accepts
    assert "gpu-box" in out and "aa:bb:cc:dd:ee:ff" in out  # a sleeping server
    assert "connections" in out
    assert "efefefefefef 3 (2 idle), address 10.0.0.7 1 (1 idle)" in out


async def test_status_command_reads_the_admin_address_from_settings(
    client: Client, tmp_path: Path
) -> None:
    env = {"OLLANA_HOME": str(tmp_path), "OLLANA_ADMIN_LISTEN": f"0.0.0.0:{client.port}"}
    result = await invoke("--json", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "client"
    off = await invoke(env={"OLLANA_HOME": str(tmp_path), "OLLANA_ADMIN_LISTEN": "off"})
    assert off.exit_code == 1
    assert "admin API is off" in off.stderr


async def test_status_command_when_nothing_runs() -> None:
    port = free_port()
    result = await invoke("--admin", f"127.0.0.1:{port}")
    assert result.exit_code == 1
    assert result.stdout == ""
    message = f"no ollana is running at 127.0.0.1:{port} (start one with `ollana serve`)"
    assert message in result.stderr


async def test_status_command_when_something_else_answers() -> None:
    async with TestServer(web.Application()) as other:
        result = await invoke("--admin", f"127.0.0.1:{other.port}")
    assert result.exit_code == 1
    assert "is not an ollana admin API (HTTP 404)" in result.stderr


async def test_status_command_rejects_a_bad_address() -> None:
    result = await invoke("--admin", "127.0.0.1:http")
    assert result.exit_code == 1
    assert "not a number" in result.stderr
