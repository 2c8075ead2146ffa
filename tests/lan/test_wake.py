"""Wake-on-LAN across hosts: a request for a sleeping server's model wakes it and is answered."""

from __future__ import annotations

import math

import pytest

from ollana.wake.waker import RESEND_INTERVAL
from tests.lan.lab import Lab
from tests.lan.netns import Network
from tests.lan.wakeup import GENERATE, sleep_and_wake

pytestmark = pytest.mark.lan


@pytest.mark.parametrize("known", ["discovered", "static"])
async def test_a_request_for_a_sleeping_servers_model_wakes_it(
    network: Network, lab: Lab, known: str
) -> None:
    run = await sleep_and_wake(
        network, lab, requests=2, restart_client=True, static=known == "static"
    )

    # The client learnt the MAC from the server's announces; restarted while the server
    # sleeps, it still knows the server from its file, and shows it asleep.
    assert run.remembered["mac"] == run.mac
    [sleeping] = run.sleeping
    assert (sleeping["mac"], sleeping["address"]) == (run.mac, f"{run.server_address}:11435")
    assert sleeping["last_woken"] is None

    # Magic packets with the server's MAC, to the LAN's broadcast and to its last address.
    assert run.packets, "no datagram reached port 9"
    assert {p["mac"] for p in run.packets} == {run.mac}
    destinations = [p["to"] for p in run.packets]
    assert run.broadcast in destinations and run.server_address in destinations
    # One packet for both requests (and one more per RESEND_INTERVAL while the host starts).
    elapsed = max(p["t"] for p in run.packets) - min(p["t"] for p in run.packets)
    assert destinations.count(run.broadcast) <= 1 + math.floor(elapsed / RESEND_INTERVAL)

    # Both requests were answered by the woken server: a slow answer, not an error. (A
    # static server that slept through the client's start is labelled by its address until
    # a hello, retried while it sleeps, proves its ID: either may come first.)
    labels = {run.short_id}
    if known == "static":
        labels.add(f"{run.server_address}:11435")
    for reply in run.replies:
        assert reply.status == 200, reply.body
        assert reply.headers.get("x-ollana-server") in labels
        assert reply.json()["done"] is True
    assert run.after["counters"]["wake_packets"] == destinations.count(run.broadcast)
    assert run.after["sleeping"] == []  # up again
    print(
        f"\nrequest to answer {run.request_to_answer:.2f} s, of which the host's own start "
        f"{run.host_start:.2f} s: {run.overhead:.2f} s added by ollana"
    )


async def test_a_server_that_does_not_wake_gets_a_clear_503(network: Network, lab: Lab) -> None:
    run = await sleep_and_wake(
        network, lab, requests=1, host_wakes=False, env={"OLLANA_WAKE_TIMEOUT": "2"}
    )
    assert {p["mac"] for p in run.packets} == {run.mac}
    [reply] = run.replies
    assert reply.status == 503, reply.body
    error = reply.json()["error"]  # Ollama's error shape
    assert "woken" in error and "did not answer within 2 s" in error, error

    # --no-wake: the same request is answered at once, without waking anything.
    client = run.cluster.clients[0]
    await run.cluster.ollana["c"].stop()
    await lab.ollana(client, env={**run.cluster.env, "OLLANA_WAKE": "off"})
    reply = await client.http("POST", 11434, "/api/generate", GENERATE, timeout=30)
    assert reply.status == 503, reply.body
    assert "woken" not in reply.json()["error"]
