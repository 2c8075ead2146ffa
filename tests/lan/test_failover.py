"""Servers that crash, stop, vanish or lose their Ollama while a client keeps sending requests."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.lan.lab import Cluster, Lab, eventually
from tests.lan.netns import Host, Network
from tests.lan.procs import RequestLoop

pytestmark = pytest.mark.lan

SETTLED = 12  # requests answered elsewhere after a fault before it is undone
STEP_TIMEOUT = 15.0
# The default time to forget a server and to retire its connections: requests in flight
# on a server that vanished must move on when it is ejected, not when it is forgotten.
PATIENT = {"OLLANA_TIMINGS_FORGET_AFTER": "15", "OLLANA_GRACE": "30"}


GENERATE = json.dumps({"model": "llama3.2", "prompt": "hi", "stream": False}).encode()


async def gone(lab: Lab, loop: RequestLoop, cluster: Cluster, failed: Host) -> None:
    """Wait until the client no longer routes to `failed`, then until the requests in flight
    then have finished and later ones were answered elsewhere."""
    client, device = cluster.clients[0], cluster.ids[failed.label]

    async def ejected() -> bool:
        server = (await lab.pool(client)).get(device)
        return server is None or server["state"] == "down"

    await eventually(ejected, timeout=STEP_TIMEOUT, what=f"{client.label} ejects {failed.label}")
    since = time.monotonic()
    await eventually(
        lambda: loop.settled(cluster.short(failed), since, SETTLED),
        timeout=STEP_TIMEOUT,
        what=lambda: f"{SETTLED} requests answered without {failed.label}\n{loop.report()}",
    )


async def back(lab: Lab, loop: RequestLoop, cluster: Cluster, host: Host) -> None:
    """Wait until the client holds `host` healthy again, and until the loop uses it."""
    client, label = cluster.clients[0], cluster.short(host)
    await lab.wait_healthy(client, {cluster.ids[host.label]}, timeout=STEP_TIMEOUT)
    # Requests rightly prefer a server that has the model loaded: a restarted Ollama has
    # none, so one pinned request loads it there first.
    reply = await client.http(
        "POST", 11434, "/api/generate", GENERATE, headers={"X-Ollana-Server": label}
    )
    assert (reply.status, reply.headers.get("x-ollana-server")) == (200, label), reply.body
    since = time.monotonic()
    await eventually(
        lambda: loop.served(label, since),
        timeout=STEP_TIMEOUT,
        what=lambda: f"the loop's requests reach {host.label} again\n{loop.report()}",
    )


async def test_no_request_fails_while_another_server_can_serve(network: Network, lab: Lab) -> None:
    lan = network.lan()
    a, b, c = (network.host(name, lan) for name in ("a", "b", "c"))
    cluster = await Cluster.start(lab, [a, b], [c], env=PATIENT)
    # Requests prefer a server with the model loaded: load it on both first.
    for host in (a, b):
        label = cluster.short(host)
        reply = await cluster.clients[0].http(
            "POST", 11434, "/api/generate", GENERATE, headers={"X-Ollana-Server": label}
        )
        assert (reply.status, reply.headers.get("x-ollana-server")) == (200, label), reply.body
    loop = await lab.request_loop(c, workers=3)
    both = time.monotonic()
    await eventually(
        lambda: loop.served(cluster.short(a), both) and loop.served(cluster.short(b), both),
        timeout=STEP_TIMEOUT, what=lambda: f"requests reach both servers\n{loop.report()}",
    )  # fmt: skip

    # A crashes: no goodbye; its port refuses connections.
    await cluster.ollana["a"].kill()
    await gone(lab, loop, cluster, a)
    await cluster.start_ollana(a)
    await back(lab, loop, cluster, a)

    # B stops cleanly: goodbye, then in-flight requests drain.
    assert await cluster.ollana["b"].stop(signal.SIGTERM) == 0
    await gone(lab, loop, cluster, b)
    await cluster.start_ollana(b)
    await back(lab, loop, cluster, b)

    # A vanishes from the LAN: no FIN, no reset, nothing; then comes back.
    a.cut()
    await gone(lab, loop, cluster, a)
    a.restore()
    await back(lab, loop, cluster, a)

    # B's Ollama stops while B's ollana keeps running; then it starts again.
    await cluster.ollama["b"].stop(signal.SIGTERM)
    await gone(lab, loop, cluster, b)
    await cluster.start_ollama(b)
    await back(lab, loop, cluster, b)

    records = await loop.stop()
    failed = [r for r in records if not r.ok]
    assert not failed, f"{len(failed)} of {len(records)} requests failed:\n" + "\n".join(
        map(str, failed)
    )


@pytest.mark.parametrize("fault", ["killed", "vanished"])
async def test_a_stream_whose_server_dies_ends_with_one_error_object(
    network: Network, lab: Lab, fault: str
) -> None:
    lan = network.lan()
    a, b, c = (network.host(name, lan) for name in ("a", "b", "c"))
    cluster = await Cluster.start(lab, [a, b], [c])
    stream = await lab.traffic(c, "stream", "--tokens", "5000")
    events = stream.lines

    def parsed() -> list[dict[str, object]]:
        return [json.loads(line) for line in events]

    await eventually(
        lambda: sum(e["event"] == "line" for e in parsed()) >= 3,
        timeout=10, what="the stream has started",
    )  # fmt: skip
    head = next(e for e in parsed() if e["event"] == "head")
    assert head["status"] == 200
    victim = next(h for h in (a, b) if cluster.short(h) == head["server"])
    if fault == "killed":
        await cluster.ollana[victim.label].kill()  # the kernel resets its connections
    else:
        victim.cut()  # nothing more arrives, not even a reset: the client must notice
    end = await eventually(
        lambda: next((e for e in parsed() if e["event"] == "end"), None),
        timeout=STEP_TIMEOUT, what=f"the stream ends after its server {fault}",
    )  # fmt: skip
    lines = [json.loads(str(e["text"])) for e in parsed() if e["event"] == "line"]
    errors = [line for line in lines if "error" in line]
    assert end["how"] == "eof", end  # closed cleanly, with the error inside the stream
    assert len(errors) == 1 and lines[-1] is errors[0], lines[-3:]
    assert isinstance(errors[0]["error"], str) and errors[0]["error"]
    assert all(line.get("done") is False for line in lines[:-1])  # never a false "done"
    assert await stream.proc.wait() == 0
