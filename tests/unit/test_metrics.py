"""Metrics: route labels, counters that move, bounded labels, live sources, exposition."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ollana.admin.status import totals
from ollana.cluster.server import ServerSnapshot, ServerState
from ollana.metrics import MAX_LABEL_VALUES, NO_SERVER, OTHER, Metrics
from ollana.ollama_api import route_label
from tests.support.admin_fakes import FakeDiscovery, FakePool, snapshot


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/api/chat", "/api/chat"),
        ("/api/generate", "/api/generate"),
        ("/api/tags", "/api/tags"),
        ("/", "/"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/models", "/v1/models"),
        ("/v1/models/llama3.2:latest", "/v1/models/:model"),
        ("/v1/models/", OTHER),
        ("/api/blobs/sha256:" + "a" * 64, "/api/blobs/:digest"),
        ("/api/blobs/sha256:abc/extra", OTHER),
        ("/api/chatty", OTHER),
        ("/API/chat", OTHER),
        ("/api/chat/", OTHER),
        ("/etc/passwd", OTHER),
        ("", OTHER),
    ],
)
def test_route_label(path: str, label: str) -> None:
    assert route_label(path) == label


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_request_moves_counters_gauge_and_histograms() -> None:
    metrics = Metrics()
    metrics.request_started("srv-a")
    assert value(metrics, "ollana_inflight", server="srv-a") == 1
    metrics.upstream_ttfb("srv-a", 0.003)
    metrics.request_finished("/api/chat", 200, "srv-a", 2.0)
    assert value(metrics, "ollana_inflight", server="srv-a") == 0
    labels = {"route": "/api/chat", "status": "200", "server": "srv-a"}
    assert value(metrics, "ollana_requests_total", **labels) == 1
    ttfb = "ollana_upstream_ttfb_seconds"
    assert value(metrics, f"{ttfb}_bucket", server="srv-a", le="0.0025") == 0
    assert value(metrics, f"{ttfb}_bucket", server="srv-a", le="0.005") == 1
    assert value(metrics, f"{ttfb}_sum", server="srv-a") == pytest.approx(0.003)
    duration = "ollana_request_duration_seconds"
    assert value(metrics, f"{duration}_count", route="/api/chat") == 1
    assert value(metrics, f"{duration}_bucket", route="/api/chat", le="1.0") == 0
    assert value(metrics, f"{duration}_bucket", route="/api/chat", le="2.5") == 1
    metrics.request_finished("/api/chat", 200, "srv-a", 1.0)
    assert value(metrics, "ollana_requests_total", **labels) == 2


def test_a_failed_attempt_and_an_unserved_request_leave_inflight_balanced() -> None:
    metrics = Metrics()
    metrics.request_started("srv-a")
    metrics.attempt_failed("srv-a")
    metrics.retry("connect")
    metrics.request_started("srv-b")
    metrics.request_finished("/api/generate", 200, "srv-b", 0.5)
    metrics.failover()
    metrics.request_finished("/api/tags", 503, NO_SERVER, 0.01)
    assert value(metrics, "ollana_inflight", server="srv-a") == 0
    assert value(metrics, "ollana_inflight", server="srv-b") == 0
    assert value(metrics, "ollana_inflight", server=NO_SERVER) is None
    assert value(metrics, "ollana_retries_total", reason="connect") == 1
    assert value(metrics, "ollana_failovers_total") == 1
    unserved = {"route": "/api/tags", "status": "503", "server": NO_SERVER}
    assert value(metrics, "ollana_requests_total", **unserved) == 1


def test_refusals_by_reason() -> None:
    metrics = Metrics()
    metrics.refused("origin")
    metrics.refused("origin")
    metrics.refused("read-only")
    metrics.tls_refused("unknown-device")
    assert value(metrics, "ollana_refusals_total", reason="origin") == 2
    assert value(metrics, "ollana_refusals_total", reason="read-only") == 1
    assert value(metrics, "ollana_tls_handshakes_refused_total", reason="unknown-device") == 1
    assert value(metrics, "ollana_retries_total", reason="origin") is None


def test_label_values_stay_bounded() -> None:
    metrics = Metrics()
    for n in range(MAX_LABEL_VALUES + 50):
        server = f"srv-{n}"
        metrics.request_started(server)
        metrics.upstream_ttfb(server, 0.1)
        metrics.request_finished("/api/chat", 200, server, 0.1)
        metrics.refused(f"reason-{n}")
    # A raw path slipped in by mistake is still folded.
    metrics.request_finished("/some/raw/path?x=1", 404, NO_SERVER, 0.1)
    families = {f.name: f for f in metrics.registry.collect()}
    servers = {s.labels["server"] for s in families["ollana_requests"].samples}
    assert len(servers) == MAX_LABEL_VALUES + 1
    assert OTHER in servers
    assert value(metrics, "ollana_inflight", server=OTHER) == 0
    other = {"route": "/api/chat", "status": "200", "server": OTHER}
    assert value(metrics, "ollana_requests_total", **other) == 50
    reasons = {s.labels["reason"] for s in families["ollana_refusals"].samples}
    assert len(reasons) == MAX_LABEL_VALUES + 1
    routes = {s.labels["route"] for s in families["ollana_requests"].samples}
    assert routes == {"/api/chat", OTHER}


def test_two_instances_do_not_share_a_registry() -> None:
    client, server = Metrics(), Metrics()
    client.refused("origin")
    assert value(client, "ollana_refusals_total", reason="origin") == 1
    assert value(server, "ollana_refusals_total", reason="origin") is None


def test_pool_and_discovery_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    states = (ServerState.HEALTHY, ServerState.HEALTHY, ServerState.DOWN)
    pool = FakePool([snapshot(n, state) for n, state in enumerate(states)])
    discovery = FakeDiscovery(sent=3, received=7, dropped={"magic": 2}, send_errors=1)
    metrics.watch_pool(pool)
    stop = metrics.watch_discovery(discovery)
    assert value(metrics, "ollana_pool_servers", state="healthy") == 2
    assert value(metrics, "ollana_pool_servers", state="suspect") == 0
    assert value(metrics, "ollana_pool_servers", state="down") == 1
    assert value(metrics, "ollana_discovery_datagrams_sent_total") == 3
    assert value(metrics, "ollana_discovery_datagrams_received_total") == 7
    assert value(metrics, "ollana_discovery_datagrams_dropped_total", reason="magic") == 2
    pool.servers[2] = snapshot(2, ServerState.HEALTHY)
    discovery.sent = 9
    assert value(metrics, "ollana_pool_servers", state="healthy") == 3
    assert value(metrics, "ollana_pool_servers", state="down") == 0
    assert value(metrics, "ollana_discovery_datagrams_sent_total") == 9
    stop()
    stop()
    assert value(metrics, "ollana_discovery_datagrams_sent_total") is None


def test_a_broken_source_does_not_break_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()

    class Broken:
        def snapshots(self) -> Sequence[ServerSnapshot]:
            raise RuntimeError("gone")

    metrics.watch_pool(Broken())
    metrics.refused("host")
    with caplog.at_level(logging.ERROR, logger="ollana.metrics"):
        text = metrics.render().decode()
    assert 'ollana_refusals_total{reason="host"} 1.0' in text
    assert "ollana_pool_servers" not in text
    assert "gone" in caplog.text


def test_render_is_parseable_text_format() -> None:
    metrics = Metrics()
    metrics.watch_pool(FakePool([snapshot(0, ServerState.SUSPECT)]))
    metrics.request_started("a")
    metrics.request_finished("/api/chat", 200, "a", 0.2)
    text = metrics.render().decode()
    assert metrics.content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["ollana_requests"].type == "counter"
    assert families["ollana_upstream_ttfb_seconds"].type == "histogram"
    assert families["ollana_request_duration_seconds"].type == "histogram"
    assert families["ollana_pool_servers"].type == "gauge"
    assert families["ollana_build_info"].samples[0].labels["version"]


def test_totals_for_the_status_page() -> None:
    metrics = Metrics()
    for status in (200, 200, 404, 502):
        metrics.request_started("a")
        metrics.request_finished("/api/chat", status, "a", 0.1)
    metrics.request_started("a")
    metrics.retry("reset")
    metrics.retry("reset")
    metrics.tls_refused("disabled")
    metrics.watch_discovery(FakeDiscovery(sent=4, received=7, dropped={"own": 4}, send_errors=1))
    assert totals(metrics) == {
        "requests": 4,
        "requests_by_status": {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1},
        "inflight": 1,
        "retries": 2,
        "failovers": 0,
        "refusals": {},
        "tls_refused": {"disabled": 1},
        "discovery": {
            "sent": 4,
            "received": 7,
            "send_errors": 1,
            "dropped": {"own": 4},
            "unanswered": {},
        },
    }


def test_a_status_outside_http_reads_other_and_a_broken_stream_is_a_5xx() -> None:
    metrics = Metrics()
    for status in (0, 600, 599):
        metrics.request_started("a")
        metrics.request_finished("/api/chat", status, "a", 0.1)
    assert value(metrics, "ollana_requests_total", route="/api/chat", status=OTHER, server="a") == 2
    assert value(metrics, "ollana_requests_total", route="/api/chat", status="599", server="a") == 1
    assert value(metrics, "ollana_inflight", server="a") == 0
    counted = totals(metrics)
    assert counted["requests"] == 3
    assert counted["requests_by_status"] == {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 1}


@pytest.mark.parametrize(
    "server",
    [
        "[fe80::1%eth0]:11435",  # a static server known by address only
        'quote"back\\slash',
        "new\nline",
        "ünïcode",
    ],
)
def test_label_values_survive_the_text_format(server: str) -> None:
    metrics = Metrics(process=False)
    metrics.request_started(server)
    metrics.upstream_ttfb(server, 0.01)
    metrics.request_finished("/api/chat", 200, server, 0.02)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    [requests] = families["ollana_requests"].samples
    assert requests.labels == {"route": "/api/chat", "status": "200", "server": server}
    counts = [s for s in families["ollana_upstream_ttfb_seconds"].samples
              if s.name.endswith("_count")]  # fmt: skip
    assert [(s.labels["server"], s.value) for s in counts] == [(server, 1.0)]


def test_process_families_only_when_asked() -> None:
    def names(metrics: Metrics) -> set[str]:
        return {f.name for f in text_string_to_metric_families(metrics.render().decode())}

    with_process, without = names(Metrics()), names(Metrics(process=False))
    assert "ollana_process_cpu_seconds" in with_process
    assert not any(name.startswith("ollana_process_") for name in without)
    assert "ollana_build_info" in without


def test_a_source_can_be_added_and_removed() -> None:
    metrics = Metrics(process=False)

    def extra() -> list[Metric]:
        family = GaugeMetricFamily("ollana_test_extra", "An extra family.", labels=("kind",))
        family.add_metric(("one",), 4)
        return [family]

    remove = metrics.add_source(extra)
    assert value(metrics, "ollana_test_extra", kind="one") == 4
    assert "ollana_test_extra" in {f.name for f in metrics.counted()}
    remove()
    remove()
    assert value(metrics, "ollana_test_extra", kind="one") is None
